"""``clp2p bench sweep``: how a sweep scales from one in-process worker to Ray workers.

One shapes-world sweep (a colour swap over cross x self, one seed) is rendered three times
into fresh folders: in this process on one CPU thread, in this process on every core, and on
a local Ray instance with one single-threaded worker per core. Each run reports its start-up
(the model loaded; Ray started and its workers loaded) and the items' own wall time; the
throughput is items per second of the latter, and every run's images are compared with the
first run's, bit for bit (on the CPU, a render on another number of threads may round
differently: the all-cores run shows how often)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clp2p import atomic
from clp2p.model.params import EditParams
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.model.sweep import Grid, sweep_items

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"
GRID = ("cross=0.2,0.4,0.6,0.8", "self=0.2,0.4,0.6,0.8")  # 16 items
SETTINGS = RenderSettings(seed=1000, steps=30, guidance=4.0)  # the shapes model's evaluation's


def items(grid: tuple[str, ...] = GRID, settings: RenderSettings = SETTINGS) -> list:
    session = Session.new(SOURCE, settings, "shapes")
    params: EditParams = preset("cl-p2p")
    return sweep_items(session, "n1", TARGET, params, Grid.parse(list(grid)))


def _pixels(folder: Path, key: str) -> np.ndarray:
    with Image.open(folder / "items" / key[:16] / "result.png") as im:
        return np.asarray(im.convert("RGB"))


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _timed(name: str, pool, todo: list, folder: Path) -> dict:
    from clp2p.workflows.sweep import run_items

    start = time.perf_counter()
    with pool:
        pool.wait()  # every worker has loaded the model
        ready = time.perf_counter()
        report = run_items(todo, folder, pool, {"kind": "bench"})
        end = time.perf_counter()
    seconds = end - ready
    row = {
        "run": name,
        "where": pool.where,
        "workers": pool.size,
        "startup_s": round(ready - start, 2),
        "items_s": round(seconds, 2),
        "total_s": round(end - start, 2),
        "items_per_s": round(len(todo) / seconds, 4),
        "failed": report.failed,
    }
    print(
        f"{name:28s} start-up {row['startup_s']:6.1f} s  items {row['items_s']:6.1f} s  "
        f"{row['items_per_s']:.3f} items/s",
        flush=True,
    )
    return row


def run_sweep_bench(
    grid: tuple[str, ...] = GRID, steps: int = SETTINGS.steps, json_path: str | None = None
) -> dict:
    from clp2p.workflows.runner import LocalPool, RayPool, Worker
    from clp2p.workflows.service import ModelSpec

    cores = os.cpu_count() or 1
    spec = ModelSpec("shapes", "cpu", "fp32")
    todo = items(grid, RenderSettings(SETTINGS.seed, steps, SETTINGS.guidance))
    keys = [i.key() for i in todo]
    runs = [
        ("in-process, 1 thread", lambda: LocalPool(Worker(spec, 1))),
        (f"in-process, {cores} threads", lambda: LocalPool(Worker(spec, cores))),
        (f"Ray, {cores} workers x 1 thread", lambda: RayPool(spec, "auto", cores, 1)),
    ]
    rows, folders = [], []
    with tempfile.TemporaryDirectory(prefix="clp2p-bench-sweep-") as tmp:
        for i, (name, make) in enumerate(runs):
            folder = Path(tmp) / f"run{i}"
            rows.append(_timed(name, make(), todo, folder))
            folders.append(folder)
        for row, folder in zip(rows, folders, strict=True):
            diffs = [_diff(_pixels(folders[0], k), _pixels(folder, k)) for k in keys]
            row["same_images"] = not any(diffs)
            row["items_differing"] = sum(d > 0 for d in diffs)
            row["max_level_difference"] = max(diffs)
    base = rows[0]["items_per_s"]
    for row in rows:
        row["speedup"] = round(row["items_per_s"] / base, 3)
    ray, both = rows[2], rows[1]
    result = {
        "items": len(todo),
        "grid": list(grid),
        "steps": steps,
        "cores": cores,
        "runs": rows,
        "goals": {
            "ray_vs_one_thread": {
                "goal": 1.6,
                "value": ray["speedup"],
                "met": ray["speedup"] >= 1.6,
            },
            "ray_vs_all_cores": {
                "goal": 1.0,
                "value": round(ray["items_per_s"] / both["items_per_s"], 3),
                "met": ray["items_per_s"] >= both["items_per_s"],
            },
            # the same thread count as the first run: the same bits (on the CPU, another number
            # of threads may round a matrix product differently: see the all-cores run)
            "ray_same_images": ray["same_images"],
        },
    }
    for name, goal in result["goals"].items():
        print(f"{name}: {goal}")
    if json_path:
        atomic.write_json(Path(json_path), result, indent=1)
    return result
