"""``clp2p bench session``: rendering a depth-4 chain node by node with the record cache,
against rendering each node cold from the root (one UNet pass per branch, the engine's
default; the same chain in one batch is timed for reference)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from clp2p import atomic
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings

GOAL = 0.6
CHAIN = [
    "a red circle on a white background",
    "a blue circle on a white background",
    "a blue square on a white background",
    "a blue square on a black background",
    "a green square on a black background",
]


def run_session_bench(
    json_path: str | None = None,
    model: str | None = None,
    repeats: int = 3,
    threads: int | None = None,
):
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import quiet_libraries
    from clp2p.workflows.session_render import SessionRenderer, apply

    quiet_libraries()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    engine = Engine.load(model or "shapes", "cpu", "fp32")
    settings = RenderSettings(seed=7, steps=50, guidance=7.5)
    session = Session.new(CHAIN[0], settings, engine.name)
    ids = ["n1"]
    for prompt in CHAIN[1:]:
        session, node_id = session.add_edit(ids[-1], prompt, preset("cl-p2p"))
        ids.append(node_id)
    SessionRenderer(engine).render(session, ids[1], use_cache=False)  # warm-up
    rows = []
    renderer = SessionRenderer(engine)
    session = apply(session, renderer.render(session, ids[0]))
    for depth, node_id in enumerate(ids[1:], start=1):
        row, warm = _depth_row(engine, renderer, session, node_id, depth, repeats)
        session = apply(session, warm)
        rows.append(row)
    per_node = renderer.cache.nbytes / len(renderer.cache)
    print(f"cache: {len(renderer.cache)} records, {per_node / 2**20:.2f} MiB per node")
    report = {
        "benchmark": "session",
        "model": engine.name,
        "settings": {"steps": settings.steps, "guidance": settings.guidance},
        "goal_ratio": GOAL,
        "rows": rows,
        "cache_mib_per_node": round(per_node / 2**20, 3),
        "met": all(r["ratio"] <= GOAL for r in rows),
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(json_path, report)
    return report


def _depth_row(engine, renderer, session, node_id: str, depth: int, repeats: int):
    """Best times of ``node_id`` cold, cold in one batch and after its cached parent, and how
    far the cached render is from the cold one; the row and the cached render."""
    from clp2p.engine.engine import RenderOptions
    from clp2p.workflows.session_render import SessionRenderer

    cold_times, warm_times, batched_times = [], [], []
    for _ in range(repeats):
        cold = SessionRenderer(engine).render(session, node_id, use_cache=False)
        cold_times.append(cold.seconds)
        batched = SessionRenderer(engine).render(  # for reference: the chain in one batch
            session, node_id, use_cache=False, options=RenderOptions(batch_branches=True)
        )
        batched_times.append(batched.seconds)
        parent_key = renderer.cache.nbytes
        warm = renderer.render(session, node_id)
        warm_times.append(warm.seconds)
    assert warm.computed == 1, "the parent's record should have been cached"
    row = {
        "node": node_id,
        "depth": depth,
        "cold_s": round(min(cold_times), 4),
        "cached_s": round(min(warm_times), 4),
        "ratio": round(min(warm_times) / min(cold_times), 3),
        "cold_batched_s": round(min(batched_times), 4),
        "ratio_to_batched": round(min(warm_times) / min(batched_times), 3),
        "latent_max_abs_diff": float(np.abs(warm.latents - cold.latents).max()),
        "image_max_abs_diff": int(np.abs(warm.image.astype(int) - cold.image).max()),
        "float_image_max_abs_diff": _float_image_diff(engine, warm.latents, cold.latents),
        "cache_bytes_after": renderer.cache.nbytes,
        "record_mib": round((renderer.cache.nbytes - parent_key) / 2**20, 2)
        if depth == 1
        else None,
    }

    print(
        f"depth {depth} ({node_id}): cold {row['cold_s']:.3f} s, after parent {row['cached_s']:.3f}"
        f" s, x{row['ratio']:.3f} (goal <= {GOAL}); max |latent diff| "
        f"{row['latent_max_abs_diff']:.2e}, max |image diff| {row['float_image_max_abs_diff']:.2e}"
        f" (of 1), max |8-bit pixel diff| {row['image_max_abs_diff']}; cold in one batch "
        f"{row['cold_batched_s']:.3f} s (x{row['ratio_to_batched']:.3f})",
        flush=True,
    )
    return row, warm


def _float_image_diff(engine, a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference of the decoded images in [0, 1] (before 8-bit rounding)."""
    vae = engine.pipe.vae
    with torch.inference_mode():
        z = torch.from_numpy(np.stack([a, b])).to(engine.device, vae.dtype)
        images = vae.decode(z / vae.config.scaling_factor).sample.float().clamp(-1, 1) / 2 + 0.5
    return float((images[0] - images[1]).abs().max())
