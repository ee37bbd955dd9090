"""``clp2p bench refine``: the two ways a refinement may map the padding after the end token
(``--refine-pad reference``, prompt-to-prompt's reference implementation and the default, and
``shifted``), measured on the shapes world. Each pair is a shapes-world swap whose target
prompt carries one more token (a trailing ``,``), rendered as a refinement with cross 0.8 and
self 0.4, once per mode from the same noise: the table gives each mode's edit scores and how
far apart the two targets are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clp2p import atomic
from clp2p.model.params import CrossWindow, EditParams, StepWindow
from clp2p.model.settings import RenderSettings

EDIT = EditParams(
    kind="refine",
    cross=CrossWindow(StepWindow(0.0, 0.8)),
    self_window=StepWindow(0.0, 0.4),
    self_res=16,
    k=0.0,
    preset="refine-bench",
)
SETTINGS = RenderSettings(steps=30, guidance=4.0)  # the shapes model's evaluation settings


def run_refine_bench(
    pairs: int = 12, json_path: str | None = None, threads: int | None = None
) -> dict:
    import torch

    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import quiet_libraries
    from clp2p.shapes.scoring import make_pairs, score_edit, summarise

    quiet_libraries()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    engine = Engine.load("shapes", "cpu", "fp32")
    rows: dict[str, list[dict]] = {"reference": [], "shifted": []}
    apart = []
    for pair in make_pairs(pairs):
        settings = RenderSettings(pair.seed, SETTINGS.steps, SETTINGS.guidance)
        target = f"{pair.target_prompt} ,"
        images = {}
        for mode in rows:
            params = EDIT.with_(refine_pad=mode)
            result = engine.edit(pair.source_prompt, [(target, params)], settings)
            images[mode] = result.images[1]
            rows[mode].append(score_edit(pair, result.images[0], result.images[1]))
        diff = np.abs(images["reference"].astype(int) - images["shifted"].astype(int))
        apart.append({"pair": pair.label(), "mean": float(diff.mean()), "max": int(diff.max())})
        print(f"{pair.label()}: modes apart by mean {diff.mean():.2f}, max {diff.max()} levels")
    names = ("success", "kept", "keep_mad", "iou")
    report = {
        "benchmark": "refine-pad",
        "edit": EDIT.to_json(),
        "settings": {"steps": SETTINGS.steps, "guidance": SETTINGS.guidance},
        "modes": {mode: summarise(r, names) for mode, r in rows.items()},
        "apart": {
            "mean_levels": float(np.mean([a["mean"] for a in apart])),
            "max_levels": int(max(a["max"] for a in apart)),
            "pairs": apart,
        },
    }
    for mode, summary in report["modes"].items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float))
        print(f"{mode}: {shown}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(json_path, report)
    return report
