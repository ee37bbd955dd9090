"""``clp2p bench inversion``: the three inversion methods on pictures of the shapes world
(exact renders of scenes, which no model made): cost (UNet passes, wall time, relative to
null-text inversion), reconstruction PSNR against the picture, and a ``cl-p2p`` colour swap
of the inverted picture scored against the ground truth (target colour, mask IoU with the
picture)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from clp2p import atomic
from clp2p.model.imported import METHODS, psnr
from clp2p.model.params import Branch
from clp2p.model.presets import preset
from clp2p.model.settings import RenderSettings

GOAL_IOU = 0.85


def _pictures(count: int, size: int):
    """(pair, picture) for ``count`` colour swaps: the picture is the exact render of a scene
    with the pair's source caption."""
    from clp2p.shapes import world
    from clp2p.shapes.scoring import make_pairs

    out = []
    for pair in make_pairs(count, kinds=("colour",), seed=7):
        rng = np.random.default_rng(pair.seed)
        colour, shape, background = pair.source
        scene = world.sample_scene(rng, colour, shape, background)
        out.append((pair, world.render(scene, size)[0]))
    return out


def _invert_and_edit(engine, pair, picture: np.ndarray, settings, method: str):
    """Invert ``picture`` with ``method`` and swap its colour (cl-p2p); the row of scores, and
    the reconstruction and the edit."""
    from clp2p.engine.inversion import invert
    from clp2p.shapes.scoring import score_edit

    result = invert(engine, picture, pair.source_prompt, settings, method)
    start = time.perf_counter()
    edit = preset("cl-p2p").with_(kind="swap")
    render = engine.render(
        [Branch(pair.source_prompt), Branch(pair.target_prompt, 0, edit)],
        settings,
        inversion=result.inversion,
    )
    reconstruction, edited = render.images
    score = score_edit(pair, picture, edited)
    row = {
        "pair": pair.to_json(),
        "psnr": psnr(reconstruction, picture),
        "forward": result.unet_forward,
        "backward": result.unet_backward,
        "invert_s": result.seconds,
        "edit_s": time.perf_counter() - start,
        "success": bool(score["success"]),
        "iou": score["iou"],
    }
    return row, [reconstruction, edited]


def _summary(per_method: dict[str, list[dict]]) -> dict:
    """Mean scores per method, times and passes relative to null-text."""
    reference = np.mean([r["invert_s"] for r in per_method["null-text"]])
    reference_passes = np.mean([r["forward"] for r in per_method["null-text"]])
    summary = {}
    for method, rows in per_method.items():
        seconds = float(np.mean([r["invert_s"] for r in rows]))
        forward = float(np.mean([r["forward"] for r in rows]))
        summary[method] = {
            "psnr_db": float(np.mean([r["psnr"] for r in rows])),
            "unet_forward": forward,
            "unet_backward": float(np.mean([r["backward"] for r in rows])),
            "invert_s": seconds,
            "time_vs_null_text": seconds / reference,
            "passes_vs_null_text": forward / reference_passes,
            "swap_success": float(np.mean([r["success"] for r in rows])),
            "swap_iou": float(np.mean([r["iou"] for r in rows])),
        }
    return summary


def run_inversion_bench(
    json_path: str | None = None,
    model: str | None = None,
    pairs: int = 12,
    threads: int | None = None,
    examples: str | None = None,
) -> dict:
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import quiet_libraries
    from clp2p.shapes.check import CheckConfig

    quiet_libraries()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    engine = Engine.load(model or "shapes", "cpu", "fp32")
    settings = engine.resolve_settings(
        RenderSettings(steps=CheckConfig.steps, guidance=CheckConfig.guidance)
    )
    cases = _pictures(pairs, settings.width)
    per_method: dict[str, list[dict]] = {m: [] for m in METHODS}
    vae_psnr, shown = [], []
    for n, (pair, picture) in enumerate(cases):
        vae_psnr.append(psnr(engine.decode(engine.encode_image(picture))[0], picture))
        row_images = [picture]
        for method in METHODS:
            row, images = _invert_and_edit(engine, pair, picture, settings, method)
            per_method[method].append(row)
            row_images += images
        shown.append((pair, row_images))
        print(
            f"[{n + 1}/{len(cases)}] {pair.label()}: "
            + ", ".join(
                f"{m} {per_method[m][-1]['psnr']:.1f} dB "
                f"{'ok' if per_method[m][-1]['success'] else 'miss'} "
                f"IoU {per_method[m][-1]['iou']:.2f}"
                for m in METHODS
            ),
            flush=True,
        )
    summary = _summary(per_method)
    report = {
        "benchmark": "inversion",
        "model": engine.name,
        "settings": {"steps": settings.steps, "guidance": settings.guidance},
        "pairs": len(cases),
        "vae_round_trip_psnr_db": float(np.mean(vae_psnr)),
        "methods": summary,
        "goal_iou": GOAL_IOU,
        "rows": per_method,
    }
    _print_report(report)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(json_path, report)
    if examples:
        _figure(shown[:6], examples)
    return report


def _print_report(report: dict) -> None:
    for method, s in report["methods"].items():
        print(
            f"{method:16s} PSNR {s['psnr_db']:.2f} dB, {s['unet_forward']:.0f} forward + "
            f"{s['unet_backward']:.0f} backward passes, {s['invert_s']:.2f} s "
            f"(x{s['time_vs_null_text']:.3f} of null-text), colour swap {s['swap_success']:.0%} "
            f"with mask IoU {s['swap_iou']:.3f}"
        )
    print(f"VAE round trip (the ceiling): {report['vae_round_trip_psnr_db']:.2f} dB\n")
    print(markdown_table(report))


def markdown_table(report: dict) -> str:
    """The docs' table of one run."""
    lines = [
        "| method | reconstruction PSNR | UNet passes (forward + backward) | time | time vs "
        "null-text | colour swap hit | mask IoU with the picture |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in report["methods"].items():
        lines.append(
            f"| `{method}` | {s['psnr_db']:.2f} dB | {s['unet_forward']:.0f} + "
            f"{s['unet_backward']:.0f} | {s['invert_s']:.2f} s | x{s['time_vs_null_text']:.3f} | "
            f"{s['swap_success']:.0%} | {s['swap_iou']:.3f} |"
        )
    lines.append(
        f"| VAE round trip (ceiling) | {report['vae_round_trip_psnr_db']:.2f} dB | | | | | |"
    )
    return "\n".join(lines)


def _figure(shown, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ["picture"] + [f"{m}\n{what}" for m in METHODS for what in ("rebuilt", "edited")]
    fig, axes = plt.subplots(len(shown), len(titles), figsize=(len(titles) * 1.3, len(shown) * 1.5))
    for row, (pair, images) in enumerate(shown):
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=7)
        axes[row, 0].set_ylabel(pair.label(), fontsize=6)
    fig.suptitle("Inverted shapes pictures: reconstruction and a cl-p2p colour swap", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
