"""``clp2p bench records``: what conversational editing costs at the model sizes the product
is for. An SD-architecture pipeline with random weights (SD 1.5 at 512 px, or SD 2.1 with
v-prediction at 768 px: the same tensor sizes and FLOPs as the real models) renders one root
with every attention tensor recorded; from its layers the bench sizes a node's record for each
edit kind (the p2p and cl-p2p presets and a full-injection edit), as kept today
(:data:`~clp2p.model.reuse.FULL`) and as a session of that edit keeps it
(:meth:`~clp2p.model.reuse.RecordSpec.serving`), projected to 50 steps, and how many such
records the default cache budget holds. With ``--timing`` it renders a depth-4 chain of each
edit node by node from the cache and each node cold from the root, and checks the pixels are
the same."""

from __future__ import annotations

import os
from pathlib import Path

from clp2p import atomic
from clp2p.model.params import CrossWindow, EditParams, StepWindow
from clp2p.model.presets import PRESETS, preset
from clp2p.model.reuse import FULL, RecordSpec
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.resources import resources_dir

ARCHS = {"sd15": ("sd15", 512), "sd2": ("sd21", 768), "sdxl": ("sdxl", 1024)}  # configs, size
EDITS = {
    "p2p": preset("p2p"),
    "cl-p2p": preset("cl-p2p"),
    "full": EditParams(
        cross=CrossWindow(StepWindow(0.0, 0.8)),
        self_window=StepWindow(0.0, 0.8),
        self_res=None,
        v_window=StepWindow(0.0, 0.5),
        v_blend=0.5,
        v_layers="both",
        preset="full",
    ),
}
CHAIN = [
    "a photo of a cat sitting on a wooden bench in a park",
    "a photo of a dog sitting on a wooden bench in a park",
    "a photo of a dog sitting on a stone bench in a park",
    "a photo of a dog sitting on a stone bench in a garden",
    "a photo of a fox sitting on a stone bench in a garden",
]
GOALS = {"record_gib_50": 0.75, "ratio_depth1": 0.55, "ratio_depth4": 0.30}
PROJECTED_STEPS = 50


def run_records_bench(
    arch: str = "sd15",
    size: int | None = None,
    steps: int = 2,
    timing: bool = False,
    json_path: str | None = None,
    threads: int | None = None,
    timed: list[str] | None = None,
    cold_depths: list[int] | None = None,
    dtype: str = "fp32",
) -> dict:
    import torch

    from clp2p.bench.overhead import build_sd15_random
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import choose_device, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    folder, native = ARCHS[arch]
    size = size or native
    pipe = build_sd15_random(resources_dir() / "configs" / folder)
    choice = choose_device("cpu", dtype)  # bf16: the half-precision records of a GPU's fp16
    engine = Engine(pipe.to(dtype=choice.dtype), choice, name=f"{arch}-random")
    print(f"{arch} architecture, random weights, {size} px, on {engine.device} ({engine.dtype})")
    edits = edits_for(engine.text.xl)
    rows = _sizes(engine, size, edits)
    if timing:
        for row in rows:
            if row["edit"] in (timed or EDITS):
                row.update(_timing(engine, edits[row["edit"]], size, steps, cold_depths))
    report = {
        "benchmark": "records",
        "arch": arch,
        "size": size,
        "device": str(engine.device),
        "dtype": str(engine.dtype),
        "steps_timed": steps if timing else None,
        "goals": GOALS,
        "rows": rows,
    }
    if json_path:
        _carry_timing(report, Path(json_path))
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(json_path, report)
    return report


def _carry_timing(report: dict, path: Path) -> None:
    """Keep the timings an earlier run of the same configuration wrote to ``path`` for the
    edits this run did not time, so edits can be timed one run at a time."""
    import json

    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    same = ("arch", "size", "device", "dtype")
    if not isinstance(old, dict) or any(old.get(k) != report[k] for k in same):
        return
    earlier = {r.get("edit"): r for r in old.get("rows", []) if isinstance(r, dict)}
    for row in report["rows"]:
        before = earlier.get(row["edit"], {})
        if "cached_s" not in row and "cached_s" in before:
            row.update({k: v for k, v in before.items() if k not in row})
    if report["steps_timed"] is None:
        report["steps_timed"] = old.get("steps_timed")


def edits_for(xl: bool) -> dict[str, EditParams]:
    """The benchmark's edits in their form for the model (the presets' SDXL form on SDXL)."""
    return {n: preset(n, xl) if n in PRESETS else p for n, p in EDITS.items()}


def _sizes(engine, size: int, edits: dict[str, EditParams]) -> list[dict]:
    """Per edit kind: a node's record today and compact, projected to 50 steps."""
    from clp2p.attention.records import KEEP_ALL, Recording, layer_sizes, projected_bytes
    from clp2p.model.params import Branch
    from clp2p.workflows.record_cache import DEFAULT_BUDGET

    one_step = RenderSettings(seed=0, steps=1, guidance=7.5, width=size, height=size)
    result = engine.render([Branch(CHAIN[0])], one_step, recording=Recording(None, KEEP_ALL, FULL))
    layers, per_step = layer_sizes(result.records[0])
    full = projected_bytes(layers, FULL, PROJECTED_STEPS, per_step)
    print(f"a record keeping everything: {full / PROJECTED_STEPS / 2**20:.1f} MiB per step")
    rows = []
    for name, params in edits.items():
        spec = RecordSpec.serving([params])
        compact = projected_bytes(layers, spec, PROJECTED_STEPS, per_step)
        row = {
            "edit": name,
            "full_gib_50": round(full / 2**30, 3),
            "compact_gib_50": round(compact / 2**30, 3),
            "fraction": round(compact / full, 3),
            "records_in_default_budget": DEFAULT_BUDGET // compact,
            "depth6_chain_cached": 6 * compact <= DEFAULT_BUDGET,
            # what a depth-6 chain needs on disk beyond the memory budget (--spill-mib)
            "depth6_spill_gib": round(max(0, 6 * compact - DEFAULT_BUDGET) / 2**30, 2),
        }
        print(
            f"{name}: a node's record at {PROJECTED_STEPS} steps {row['compact_gib_50']:.3f} GiB "
            f"(everything: {row['full_gib_50']:.2f} GiB, x{row['fraction']:.3f}); the default "
            f"budget ({DEFAULT_BUDGET / 2**30:.0f} GiB) holds {row['records_in_default_budget']}"
            f"; a depth-6 chain needs {row['depth6_spill_gib']:.2f} GiB of spill on disk"
        )
        rows.append(row)
    return rows


def _timing(
    engine, params: EditParams, size: int, steps: int, cold_depths: list[int] | None = None
) -> dict:
    """A depth-4 chain of ``params`` rendered node by node from the cache, against each node
    of ``cold_depths`` (default: all) rendered cold from the root (one UNet pass per branch),
    and whether the pixels agree."""
    from clp2p.workflows.session_render import SessionRenderer, apply

    settings = RenderSettings(seed=0, steps=steps, guidance=7.5, width=size, height=size)
    session = Session.new(CHAIN[0], settings, engine.name)
    ids = ["n1"]
    for prompt in CHAIN[1:]:
        session, node_id = session.add_edit(ids[-1], prompt, params)
        ids.append(node_id)
    renderer = SessionRenderer(engine)
    session = apply(session, renderer.render(session, "n1"))
    out: dict = {"cached_s": {}, "cold_s": {}, "ratio": {}, "same_pixels": True}
    for depth, node_id in enumerate(ids[1:], start=1):
        warm = renderer.render(session, node_id)
        session = apply(session, warm)
        if depth not in (cold_depths or range(1, 5)):
            out["cached_s"][depth] = round(warm.seconds, 2)
            out["same_pixels"] &= warm.computed == 1
            print(f"  {params.preset} depth {depth}: cached {warm.seconds:.1f} s", flush=True)
            continue
        cold = SessionRenderer(engine).render(session, node_id, use_cache=False)
        out["cached_s"][depth] = round(warm.seconds, 2)
        out["cold_s"][depth] = round(cold.seconds, 2)
        out["ratio"][depth] = round(warm.seconds / cold.seconds, 3)
        out["same_pixels"] &= warm.hash == cold.hash and warm.computed == 1
        print(
            f"  {params.preset} depth {depth}: from the cache {warm.seconds:.1f} s "
            f"({warm.computed} branch), cold {cold.seconds:.1f} s, x{out['ratio'][depth]:.3f}, "
            f"same pixels {warm.hash == cold.hash}",
            flush=True,
        )
    return out
