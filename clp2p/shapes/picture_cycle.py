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

from clp2p.model.params import Branch, EditParams
from clp2p.model.settings import RenderSettings
from clp2p.shapes.evaluate import VSetting, _eta, _log, base_methods
from clp2p.shapes.scoring import EditPair, summarise
from clp2p.shapes.two_objects import TwoEditPair

V_WINDOWS: tuple[float, ...] = (0.2, 0.5, 1.0)
V_BLENDS: tuple[float, ...] = (0.1, 0.3, 0.6)
V_LAYERS: tuple[str, ...] = ("self", "cross", "both")
METRICS: tuple[str, ...] = ("success", "iou", "kept", "picture_mad", "picture_iou")
TWO_METRICS: tuple[str, ...] = (
    "success",
    "other_kept",
    "other_iou",
    "other_mad",
    "picture_mad",
    "picture_other_mad",
)
"""Columns of a two-object pair's picture cycle: the reversal must put the other object back."""


def _scores(pair, source: np.ndarray, target: np.ndarray, back: np.ndarray) -> dict:
    """The edit's scores and its picture cycle error, for a one- or two-object pair."""
    row = pair.score(source, target) | pair.score_reversal(source, back, "picture")
    if isinstance(pair, TwoEditPair):  # the other object is what a two-object edit keeps
        row["kept"] = row["other_kept"]
    return row


def picture_cycle_edits(candidates: list[VSetting] | None = None) -> dict[str, EditParams]:
    """The methods of the edit table and V settings, by name: ``candidates``, or this task's
    whole grid when None."""
    edits = base_methods()
    if candidates is None:
        candidates = [
            VSetting(window, blend, layers)
            for layers, window, blend in product(V_LAYERS, V_WINDOWS, V_BLENDS)
        ]
    for v in candidates:
        edits[v.name()] = v.params().with_(kind="swap")
    return edits


def picture_cycle(
    engine,
    pair: EditPair,
    edit: EditParams,
    settings: RenderSettings,
    target: np.ndarray,
    batch_branches: bool = False,
) -> np.ndarray:
    """The reversal of the edited picture ``target`` (H, W, 3 uint8) back to the source
    prompt: ``target`` is inverted (direct) under the target prompt, then edited with
    ``edit``."""
    from clp2p.engine.engine import HeatmapOptions, RenderOptions
    from clp2p.engine.inversion import invert

    inversion = invert(engine, target, pair.target_prompt, settings, "direct").inversion
    branches = [Branch(pair.target_prompt), Branch(pair.source_prompt, 0, edit)]
    quiet = RenderOptions(batch_branches=batch_branches, heatmaps=HeatmapOptions(max_pixels=0))
    return engine.render(branches, settings, options=quiet, inversion=inversion).images[1]


def run_picture_cycle(
    engine,
    pairs: list[EditPair],
    settings: RenderSettings,
    candidates: list[VSetting] | None = None,
    batch_branches: bool = False,
) -> dict:
    """Every method of :func:`picture_cycle_edits` on every pair: the edit's scores and its
    picture cycle error. ``best``: the V setting with the lowest picture cycle error among
    those whose edit success and kept attributes are not below plain ``cl-p2p``'s (None when
    none is lower); ``versus``: per V setting, its paired difference to ``cl-p2p``."""
    from clp2p.engine.engine import HeatmapOptions, RenderOptions

    edits = picture_cycle_edits(candidates)
    names = list(edits)
    quiet = RenderOptions(batch_branches=batch_branches, heatmaps=HeatmapOptions(max_pixels=0))
    rows: dict[str, list[dict]] = {name: [] for name in names}
    start = time.perf_counter()
    for i, pair in enumerate(pairs):
        pair_settings = replace(settings, seed=pair.seed)
        branches = [Branch(pair.source_prompt)]
        branches += [Branch(pair.target_prompt, 0, edits[name]) for name in names]
        forward = engine.render(branches, pair_settings, options=quiet)
        source = forward.images[0]
        for j, name in enumerate(names):
            target = forward.images[1 + j]
            back = picture_cycle(engine, pair, edits[name], pair_settings, target, batch_branches)
            rows[name].append(_scores(pair, source, target, back))
        _log(f"picture cycle: {_eta(i + 1, len(pairs), start)}")
    columns = TWO_METRICS if pairs and isinstance(pairs[0], TwoEditPair) else METRICS
    cells = {name: summarise(rows[name], (*columns, "kept")) for name in names}
    base = cells["cl-p2p"]
    v_names = [n for n in names if n.startswith("v")]
    eligible = [
        n
        for n in v_names
        if cells[n]["success"] >= base["success"] - 1e-9
        and cells[n]["kept"] >= base["kept"] - 1e-9
        and cells[n]["picture_mad"] < base["picture_mad"]
    ]
    return {
        "task": "picture-cycle",
        "pairs": [p.to_json() for p in pairs],
        "cells": cells,
        "rows": rows,
        "best": min(eligible, key=lambda n: cells[n]["picture_mad"], default=None),
        "versus": {n: paired_difference(rows["cl-p2p"], rows[n]) for n in v_names},
    }


def paired_difference(base: list[dict], other: list[dict], draws: int = 10000) -> dict:
    """Picture cycle MAD of ``other`` minus ``base`` pair by pair: mean, a 95% bootstrap
    interval of the mean (fixed seed), and on how many pairs ``other`` is lower / higher."""
    diffs = np.array(
        [b["picture_mad"] - a["picture_mad"] for a, b in zip(base, other, strict=True)]
    )
    rng = np.random.default_rng(0)
    means = diffs[rng.integers(0, len(diffs), (draws, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diffs.mean()),
        "ci95": [float(low), float(high)],
        "lower": int((diffs < 0).sum()),
        "higher": int((diffs > 0).sum()),
    }


def picture_cycle_table(result: dict, top: int = 10) -> str:
    """The methods, then the ``top`` V settings by picture cycle error."""
    from clp2p.shapes.report import COLUMNS, _fmt, _row

    columns = dict(COLUMNS)
    columns["picture_mad"] = ("picture cycle MAD", "f1")
    columns["picture_iou"] = ("picture cycle IoU", "f2")
    columns["picture_other_mad"] = ("picture cycle MAD other object", "f1")
    cells = result["cells"]
    keys = TWO_METRICS if "other_mad" in cells["cl-p2p"] else METRICS
    v_names = sorted((n for n in cells if n.startswith("v")), key=lambda n: cells[n]["picture_mad"])
    shown = ["none", "p2p", "cl-p2p", *v_names[:top]]
    titles = [columns[k][0] for k in keys]
    lines = [
        _row(["method", "n", *titles, "vs `cl-p2p` (95% interval)", "lower / higher"]),
        _row(["---"] * (4 + len(keys))),
    ]
    for name in shown:
        cell = cells[name]
        values = [_fmt(cell[k], columns[k][1]) for k in keys]
        versus = result["versus"].get(name)
        if versus is None:
            extra = ["", ""]
        else:
            low, high = versus["ci95"]
            extra = [
                f"{versus['mean']:+.2f} ({low:+.2f} .. {high:+.2f})",
                f"{versus['lower']} / {versus['higher']}",
            ]
        lines.append(_row([f"`{name}`", str(cell["n"]), *values, *extra]))
    return "\n".join(lines)
