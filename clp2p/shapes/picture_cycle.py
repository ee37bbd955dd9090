"""``clp2p eval shapes --task picture-cycle``: cycle consistency of an edit applied to pictures.

The edit task measures two reversals A -> B -> A: the session's chain (exact by construction)
and the cold one that starts from a plain generation of B. Neither edits the picture the
first edit produced. Here the reversal does, as a user without the session would: the edited
picture B' is imported (direct inversion under B's prompt, which reproduces it up to the VAE's
round trip) and edited back to A's prompt with the same parameters. Its distance to A is the
**picture cycle error**; it is the protocol under which V injection's claim (blending source
and target values makes edits reversible) can show, since the reversal's source then carries
what the first edit kept of A.
"""

from __future__ import annotations

import time
from dataclasses import replace
from itertools import product

import numpy as np

from clp2p.params import EditParams, RenderSettings, preset
from clp2p.plan import Branch
from clp2p.shapes.evaluate import NO_INJECTION, VSetting, _eta, _log
from clp2p.shapes.scoring import EditPair, score_cycle, score_edit, summarise

V_WINDOWS: tuple[float, ...] = (0.2, 0.5, 1.0)
V_BLENDS: tuple[float, ...] = (0.1, 0.3, 0.6)
V_LAYERS: tuple[str, ...] = ("self", "cross", "both")
METRICS: tuple[str, ...] = ("success", "iou", "kept", "picture_mad", "picture_iou")


def picture_cycle_edits() -> dict[str, EditParams]:
    """The methods of the edit table and the V settings of this task's grid, by name."""
    edits = {
        "none": NO_INJECTION,
        "p2p": preset("p2p").with_(kind="swap"),
        "cl-p2p": preset("cl-p2p").with_(kind="swap"),
    }
    for layers, window, blend in product(V_LAYERS, V_WINDOWS, V_BLENDS):
        v = VSetting(window, blend, layers)
        edits[v.name()] = v.params().with_(kind="swap")
    return edits


def picture_cycle(
    engine, pair: EditPair, edit: EditParams, settings: RenderSettings, target: np.ndarray
) -> np.ndarray:
    """The reversal of the edited picture ``target`` (H, W, 3 uint8) back to the source
    prompt: ``target`` is inverted (direct) under the target prompt, then edited with
    ``edit``."""
    from clp2p.engine import HeatmapOptions
    from clp2p.inversion import invert

    inversion = invert(engine, target, pair.target_prompt, settings, "direct").inversion
    branches = [Branch(pair.target_prompt), Branch(pair.source_prompt, 0, edit)]
    quiet = HeatmapOptions(max_pixels=0)
    return engine.render(branches, settings, heatmaps=quiet, inversion=inversion).images[1]


def run_picture_cycle(engine, pairs: list[EditPair], settings: RenderSettings) -> dict:
    """Every method of :func:`picture_cycle_edits` on every pair: the edit's scores and its
    picture cycle error; ``best``: the V setting with the lowest picture cycle error among
    those whose edit success is not below plain ``cl-p2p``'s (None when none is lower)."""
    from clp2p.engine import HeatmapOptions

    edits = picture_cycle_edits()
    names = list(edits)
    quiet = HeatmapOptions(max_pixels=0)
    rows: dict[str, list[dict]] = {name: [] for name in names}
    start = time.perf_counter()
    for i, pair in enumerate(pairs):
        pair_settings = replace(settings, seed=pair.seed)
        branches = [Branch(pair.source_prompt)]
        branches += [Branch(pair.target_prompt, 0, edits[name]) for name in names]
        forward = engine.render(branches, pair_settings, heatmaps=quiet)
        source = forward.images[0]
        for j, name in enumerate(names):
            target = forward.images[1 + j]
            row = score_edit(pair, source, target)
            back = picture_cycle(engine, pair, edits[name], pair_settings, target)
            row.update(score_cycle(source, back, "picture"))
            rows[name].append(row)
        _log(f"picture cycle: {_eta(i + 1, len(pairs), start)}")
    cells = {name: summarise(rows[name], METRICS) for name in names}
    base = cells["cl-p2p"]
    v_names = [n for n in names if n.startswith("v")]
    eligible = [
        n
        for n in v_names
        if cells[n]["success"] >= base["success"] - 1e-9
        and cells[n]["picture_mad"] < base["picture_mad"]
    ]
    best = min(eligible, key=lambda n: cells[n]["picture_mad"], default=None)
    paired = None
    if best is not None:
        diffs = [
            b["picture_mad"] - a["picture_mad"]
            for a, b in zip(rows["cl-p2p"], rows[best], strict=True)
        ]
        paired = {"mean": float(np.mean(diffs)), "lower": int(sum(d < 0 for d in diffs))}
    return {
        "task": "picture-cycle",
        "pairs": [p.to_json() for p in pairs],
        "cells": cells,
        "rows": rows,
        "best": best,
        "best_vs_cl_p2p": paired,
    }


def picture_cycle_table(result: dict, top: int = 10) -> str:
    """The methods, then the ``top`` V settings by picture cycle error."""
    from clp2p.shapes.report import COLUMNS, _fmt, _row

    columns = dict(COLUMNS)
    columns["picture_mad"] = ("picture cycle MAD", "f1")
    columns["picture_iou"] = ("picture cycle IoU", "f2")
    cells = result["cells"]
    v_names = sorted((n for n in cells if n.startswith("v")), key=lambda n: cells[n]["picture_mad"])
    shown = ["none", "p2p", "cl-p2p", *v_names[:top]]
    lines = [
        _row(["method", "n", *(columns[k][0] for k in METRICS)]),
        _row(["---"] * (2 + len(METRICS))),
    ]
    for name in shown:
        cell = cells[name]
        values = [_fmt(cell[k], columns[k][1]) for k in METRICS]
        lines.append(_row([f"`{name}`", str(cell["n"]), *values]))
    return "\n".join(lines)
