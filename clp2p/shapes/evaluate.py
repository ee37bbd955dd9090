"""``clp2p eval shapes``: score generation and editing on the shapes world, through the engine.

Tasks:

- ``generate``: one image per seed, seeds spread round-robin over every caption; the fraction
  whose shape colour, shape class and background read back as asked.
- ``edit``: colour, shape and background swaps under no injection (the target prompt
  re-generated with the source's seed), ``p2p``, ``cl-p2p`` and ``cl-p2p`` with V injection,
  each with its cycle A -> B -> A rendered as one chain; optionally a search for the V setting
  on a separate set of pairs first.
- ``sweep``: colour swaps over the study's grid k x cross x self.
- ``picture-cycle``: the reversal of the edited picture itself, imported by inversion
  (:mod:`clp2p.shapes.picture_cycle`), under the methods and a grid of V settings.

Each pair (each seed of ``generate``) is a task of the sweep runner
(:mod:`clp2p.workflows.runner`): in this process, or spread over Ray workers. Every method of
one pair is one render with all branches in one batch: the branches share the
source's noise, so the regenerated target is ``engine.generate(target, same seed)`` up to
float rounding.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import product

import numpy as np

from clp2p.model.params import (
    REFERENCE_BLEND_START,
    V_LAYER_KINDS,
    Branch,
    CrossWindow,
    EditParams,
    StepWindow,
)
from clp2p.model.presets import preset
from clp2p.model.settings import RenderSettings
from clp2p.shapes.scoring import KINDS, METRICS, EditPair, summarise

NO_INJECTION = EditParams(
    kind="swap",
    cross=CrossWindow(StepWindow()),
    self_window=StepWindow(),
    k=0.0,
    preset="none",
)
"""An edit that injects nothing: the target branch is a plain generation from the same noise."""

V_WINDOWS: tuple[float, ...] = (0.2, 0.5, 0.8, 1.0)
V_BLENDS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
V_LAYERS: tuple[str, ...] = V_LAYER_KINDS  # the V search tries every kind of layer
"""The V injection search grid: window end x beta x layer kind."""

SWEEP_K: tuple[float, ...] = (0.0, 0.3, 0.6)
SWEEP_CROSS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
SWEEP_SELF: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
"""The study's hyperparameter grid (seeds 001/002)."""


@dataclass(frozen=True)
class VSetting:
    """V injection: window end (fraction of the steps), beta, and the layers it touches."""

    # The search's pick (docs/shapes-eval.md): the only setting with a lower cold cycle error
    # at equal success on the search pairs; on the held-out pairs its gain is within noise.
    window: float = 0.2
    blend: float = 0.1
    layers: str = "cross"

    def params(self, base: EditParams | None = None) -> EditParams:
        base = base or preset("cl-p2p")
        return base.with_(
            v_window=StepWindow(0.0, self.window), v_blend=self.blend, v_layers=self.layers
        )

    def name(self) -> str:
        return f"v{self.window:g}/b{self.blend:g}/{self.layers}"


def base_methods() -> dict[str, EditParams]:
    """No injection, the P2P defaults, the CL P2P values and FreePromptEditing's, as word
    swaps."""
    return {
        "none": NO_INJECTION,
        "p2p": preset("p2p").with_(kind="swap"),
        "cl-p2p": preset("cl-p2p").with_(kind="swap"),
        "fpe": preset("fpe").with_(kind="swap"),
    }


TWO_BLEND_K = 0.3
"""Local blend's k for the two-object edit table's ``+lb`` methods: prompt-to-prompt's default
k, and the sweep's pick. On the two-object sweep, blending latents alone, no k > 0 beat k = 0
on the mean (the decoder repainted two of 12 pictures); decoded with the source's statistics
(``blend_norm``) or keeping its pixels, k 0.3 keeps the other object better than k = 0 at
equal success, and 0.6 is the same within 0.1 (``docs/shapes-eval.md``)."""


def methods(v: VSetting, blend_k: float | None = None) -> dict[str, EditParams]:
    """The edit task's methods, in table order: ``p2p`` also as the reference blends
    (``p2p@0.2``: from :data:`REFERENCE_BLEND_START` of the steps); with ``blend_k`` also
    ``p2p`` and ``cl-p2p`` with local blend at that k (on the changed words, as the engine
    picks them), ``cl-p2p``'s from the first step and from the reference's start."""
    out = base_methods() | {"cl-p2p+v": v.params().with_(kind="swap")}
    late = f"@{REFERENCE_BLEND_START:g}"
    out["p2p" + late] = out["p2p"].with_(blend_start=REFERENCE_BLEND_START)
    if blend_k is not None:
        out["p2p+lb"] = out["p2p"].with_(k=blend_k)
        out["cl-p2p+lb"] = out["cl-p2p"].with_(k=blend_k)
        out["cl-p2p+lb" + late] = out["cl-p2p+lb"].with_(blend_start=REFERENCE_BLEND_START)
        for name in ("cl-p2p+lb", "cl-p2p+lb" + late):  # also keeping the source's pixels
            out[name.replace("lb", "lb+px")] = out[name].with_(blend_pixels=True)
        # decoded with the source's decoder statistics, without and with its pixels
        out["cl-p2p+lb+norm"] = out["cl-p2p+lb"].with_(blend_norm=True)
        out["cl-p2p+lb+norm+px"] = out["cl-p2p+lb+norm"].with_(blend_pixels=True)
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _eta(done: int, total: int, start: float) -> str:
    elapsed = time.perf_counter() - start
    left = elapsed / done * (total - done) if done else 0.0
    return f"{done}/{total}, {elapsed:.0f} s, ~{left:.0f} s left"


# ---- rendering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairImages:
    """uint8 (H, W, 3) images of one pair: the source, and per method the target and (when
    cycles were rendered) two reversals back to the source prompt: ``backs`` edits the
    method's own target (the session's chain), ``colds`` edits a plain generation of the
    target prompt (what prompt-to-prompt without a session can do, as in the CL P2P study)."""

    source: np.ndarray
    targets: dict[str, np.ndarray]
    backs: dict[str, np.ndarray]
    colds: dict[str, np.ndarray]


def _blend_on_object(pair: EditPair, params: EditParams) -> EditParams:
    """``params`` with local blend on the pair's own blend words (a two-object pair's edited
    object: its swapped word and its other word, in both prompts) when it blends and names no
    words; else ``params``."""
    if params.k <= 0 or params.blend_words or not pair.blend_words:
        return params
    return params.with_(blend_words=pair.blend_words)


def render_pair(
    engine,
    pair: EditPair,
    edits: dict[str, EditParams],
    settings: RenderSettings,
    cycle: bool = True,
    chunk: int = 40,
    batch_branches: bool = False,
) -> PairImages:
    """Render ``pair`` under every edit of ``edits`` (name -> params) from the pair's seed.

    A call renders ``[A, B_1 .. B_m, A_1 .. A_m]`` where ``A_i`` edits ``B_i`` back to the
    source prompt with the same parameters; with ``cycle`` a second call renders
    ``[B, A'_1 .. A'_m]``, the cold reversals from a plain generation ``B`` of the target
    prompt. At most ``chunk`` edits share one call (in one UNet batch with
    ``batch_branches``)."""
    from clp2p.engine.engine import HeatmapOptions, RenderOptions

    settings = replace(settings, seed=pair.seed)
    quiet = RenderOptions(batch_branches=batch_branches, heatmaps=HeatmapOptions(max_pixels=0))
    edits = {name: _blend_on_object(pair, params) for name, params in edits.items()}
    names = list(edits)
    targets, backs, colds = {}, {}, {}
    source = None
    for first in range(0, len(names), chunk):
        group = names[first : first + chunk]
        branches = [Branch(pair.source_prompt)]
        branches += [Branch(pair.target_prompt, 0, edits[n]) for n in group]
        if cycle:
            branches += [Branch(pair.source_prompt, 1 + i, edits[n]) for i, n in enumerate(group)]
        result = engine.render(branches, settings, options=quiet)
        source = result.images[0]
        for i, n in enumerate(group):
            targets[n] = result.images[1 + i]
            if cycle:
                backs[n] = result.images[1 + len(group) + i]
        if cycle:
            branches = [Branch(pair.target_prompt)]
            branches += [Branch(pair.source_prompt, 0, edits[n]) for n in group]
            result = engine.render(branches, settings, options=quiet)
            colds |= {n: result.images[1 + i] for i, n in enumerate(group)}
    return PairImages(source, targets, backs, colds)


def score_pair(pair, images: PairImages) -> dict[str, dict]:
    """Per edit name, the pair's scores of the edit and, with cycles, of its reversals
    (``cycle_*`` for the chain, ``cold_*`` for the cold reversal): an :class:`EditPair` or a
    :class:`~clp2p.shapes.two_objects.TwoEditPair` scores its own world."""
    out = {}
    for name, target in images.targets.items():
        row = pair.score(images.source, target)
        for prefix, reversals in (("cycle", images.backs), ("cold", images.colds)):
            if name in reversals:
                row.update(pair.score_reversal(images.source, reversals[name], prefix))
        out[name] = row
    return out


def table(per_pair: list[dict], pairs: list, names: list[str]) -> dict:
    """``{method: {kind or "all": summary}}`` from per-pair scores (``{method: row}``)."""
    kinds, columns = (pairs[0].kinds, pairs[0].metric_names) if pairs else (KINDS, METRICS)
    out = {}
    for name in names:
        cells = {}
        for kind in (*kinds, "all"):
            rows = [
                scores[name]
                for pair, scores in zip(pairs, per_pair, strict=True)
                if kind in ("all", pair.kind)
            ]
            if rows:
                cells[kind] = summarise(rows, columns)
        out[name] = cells
    return out


# ---- tasks -------------------------------------------------------------------------------


def run_tasks(runner, work, payloads: list, what: str) -> list[dict]:
    """:func:`~clp2p.workflows.runner.run_ordered` with a progress bar (ETA) on stderr."""
    from tqdm import tqdm

    from clp2p.workflows.runner import run_ordered

    with tqdm(total=len(payloads), desc=what, unit="task", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        return run_ordered(runner, work, payloads, what, progress)


def pair_work(worker, payload: tuple) -> dict:
    """A task of :func:`_score_all`: one pair rendered and scored on a worker's engine."""
    pair, edits, settings, cycle, batch_branches, keep = payload
    images = render_pair(worker.engine, pair, edits, settings, cycle, batch_branches=batch_branches)
    return {"scores": score_pair(pair, images), "images": images if keep else None}


def _score_all(
    runner,
    pairs: list[EditPair],
    edits: dict[str, EditParams],
    settings: RenderSettings,
    cycle: bool,
    what: str,
    keep_images: int = 0,
    batch_branches: bool = False,
) -> tuple[list[dict], list[tuple[EditPair, PairImages]]]:
    """Scores of every pair under every edit (on ``runner``'s workers: a pool, or an
    engine), and the images of the first ``keep_images`` pairs of each kind."""
    seen: dict[str, int] = {}
    payloads = []
    for pair in pairs:
        keep = seen.get(pair.kind, 0) < keep_images
        seen[pair.kind] = seen.get(pair.kind, 0) + keep
        payloads.append((pair, edits, settings, cycle, batch_branches, keep))
    outcomes = run_tasks(runner, pair_work, payloads, what)
    kept = [(p, o["images"]) for p, o in zip(pairs, outcomes, strict=True) if o["images"]]
    return [o["scores"] for o in outcomes], kept


def run_v_search(
    runner, pairs: list[EditPair], settings: RenderSettings, batch_branches: bool = False
) -> dict:
    """Score every V setting of the search grid against plain ``cl-p2p`` on ``pairs``.

    For each cycle protocol (``cycle``: the session's chain, ``cold``: reversal from a plain
    generation of B), the best setting lowers that cycle error (mean absolute difference) most
    among those whose edit success is not below plain ``cl-p2p``'s; None when none lowers it.
    """
    grid = [VSetting(w, b, layer) for layer, w, b in product(V_LAYERS, V_WINDOWS, V_BLENDS)]
    edits = {"cl-p2p": preset("cl-p2p").with_(kind="swap")}
    edits |= {v.name(): v.params().with_(kind="swap") for v in grid}
    per_pair, _ = _score_all(
        runner, pairs, edits, settings, True, "v search", batch_branches=batch_branches
    )
    cells = {name: cell["all"] for name, cell in table(per_pair, pairs, list(edits)).items()}
    base = cells["cl-p2p"]
    best = {}
    for protocol in ("cycle", "cold"):
        key = f"{protocol}_mad"
        eligible = [
            v
            for v in grid
            if cells[v.name()]["success"] >= base["success"] - 1e-9
            and cells[v.name()][key] < base[key]
        ]
        chosen = min(eligible, key=lambda v, key=key: cells[v.name()][key], default=None)
        best[protocol] = None if chosen is None else chosen.__dict__
    # When no setting helps, the mildest one: highest success, then lowest cycle errors.
    mildest = min(
        grid,
        key=lambda v: (-cells[v.name()]["success"], cells[v.name()]["cold_mad"]),
    )
    return {
        "pairs": [p.to_json() for p in pairs],
        "baseline": base,
        "grid": [v.__dict__ for v in grid],
        "cells": cells,
        "best": best,
        "mildest": mildest.__dict__,
    }


def run_edit(
    runner,
    pairs: list[EditPair],
    settings: RenderSettings,
    v: VSetting,
    search_pairs: list[EditPair] | None = None,
    batch_branches: bool = False,
    blend_k: float | None = None,
) -> dict:
    """The edit table, after an optional V search whose winner becomes ``cl-p2p+v``; with
    ``blend_k`` also the local-blend methods of :func:`methods`."""
    search = None
    if search_pairs:
        search = run_v_search(runner, search_pairs, settings, batch_branches)
        v = VSetting(**(search["best"]["cycle"] or search["best"]["cold"] or search["mildest"]))
        _log(f"v search: best {search['best']}, using {v.name()}")
    edits = methods(v, blend_k)
    per_pair, examples = _score_all(
        runner, pairs, edits, settings, True, "edit", 1, batch_branches=batch_branches
    )
    return {
        "task": "edit",
        "v": v.__dict__,
        "methods": {n: p.to_json() for n, p in edits.items()},
        "table": table(per_pair, pairs, list(edits)),
        "pairs": [dict(p.to_json(), scores=s) for p, s in zip(pairs, per_pair, strict=True)],
        "v_search": search,
        "examples": examples,
    }


def sweep_edits(pixels: bool = False, norm: bool = False) -> dict[str, EditParams]:
    """Every cell of the k x cross x self grid, named ``k/cross/self`` (local blend keeping
    the source's pixels with ``pixels``, decoded with the source's statistics with ``norm``)."""
    return {
        f"{k:g}/{c:g}/{s:g}": preset("cl-p2p").with_(
            kind="swap",
            k=k,
            blend_pixels=pixels,
            blend_norm=norm,
            cross=CrossWindow(StepWindow(0.0, c)),
            self_window=StepWindow(0.0, s),
        )
        for k, c, s in product(SWEEP_K, SWEEP_CROSS, SWEEP_SELF)
    }


def run_sweep(
    runner, pairs: list[EditPair], settings: RenderSettings, batch_branches=False, **blend
) -> dict:
    """Colour swaps over the study's grid (see :func:`sweep_edits`, which takes ``blend``:
    ``pixels``, ``norm``); the surfaces of success and mask IoU."""
    edits = sweep_edits(**blend)
    pixels, norm = blend.get("pixels", False), blend.get("norm", False)
    per_pair, examples = _score_all(
        runner, pairs, edits, settings, False, "sweep", 2, batch_branches=batch_branches
    )
    cells = {name: cell["all"] for name, cell in table(per_pair, pairs, list(edits)).items()}
    return {
        "task": "sweep",
        "axes": {"k": SWEEP_K, "cross": SWEEP_CROSS, "self": SWEEP_SELF},
        "blend_pixels": pixels,
        "blend_norm": norm,
        "cells": cells,
        "pairs": [dict(p.to_json(), scores=s) for p, s in zip(pairs, per_pair, strict=True)],
        "examples": examples,
    }


def timed(task: Callable[[], dict]) -> dict:
    """Run a task and add its wall time in seconds."""
    start = time.perf_counter()
    out = task()
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out
