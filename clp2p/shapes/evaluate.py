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

Every method of one pair is one render with all branches in one batch: the branches share the
source's noise, so the regenerated target is ``engine.generate(target, same seed)`` up to
float rounding.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait make a shared 2-core machine crawl (measured here:
# one render 70x slower while another torch process ran); they must sleep instead. This has to
# be set before torch loads its OpenMP runtime, and the CLI imports this module first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np

from clp2p.params import CrossWindow, EditParams, RenderSettings, StepWindow, preset
from clp2p.plan import Branch
from clp2p.shapes import world
from clp2p.shapes.scoring import (
    KINDS,
    EditPair,
    caption,
    make_pairs,
    score_cycle,
    score_edit,
    summarise,
)

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
V_LAYERS: tuple[str, ...] = ("self", "cross", "both")
"""The V injection search grid: window end x beta x layer kind."""

SWEEP_K: tuple[float, ...] = (0.0, 0.3, 0.6)
SWEEP_CROSS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
SWEEP_SELF: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
"""The study's hyperparameter grid (seeds 001/002)."""

GOALS = {"colour": 0.95, "background": 0.95, "shape": 0.85}
"""Generation goals: fraction of samples whose attribute reads back as prompted."""


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


def methods(v: VSetting) -> dict[str, EditParams]:
    """The edit task's methods, in table order."""
    return {
        "none": NO_INJECTION,
        "p2p": preset("p2p").with_(kind="swap"),
        "cl-p2p": preset("cl-p2p").with_(kind="swap"),
        "cl-p2p+v": v.params().with_(kind="swap"),
    }


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


def render_pair(
    engine,
    pair: EditPair,
    edits: dict[str, EditParams],
    settings: RenderSettings,
    cycle: bool = True,
    chunk: int = 40,
) -> PairImages:
    """Render ``pair`` under every edit of ``edits`` (name -> params) from the pair's seed.

    A call renders ``[A, B_1 .. B_m, A_1 .. A_m]`` where ``A_i`` edits ``B_i`` back to the
    source prompt with the same parameters; with ``cycle`` a second call renders
    ``[B, A'_1 .. A'_m]``, the cold reversals from a plain generation ``B`` of the target
    prompt. At most ``chunk`` edits share one call."""
    from clp2p.engine import HeatmapOptions

    settings = replace(settings, seed=pair.seed)
    quiet = HeatmapOptions(max_pixels=0)
    names = list(edits)
    targets, backs, colds = {}, {}, {}
    source = None
    for first in range(0, len(names), chunk):
        group = names[first : first + chunk]
        branches = [Branch(pair.source_prompt)]
        branches += [Branch(pair.target_prompt, 0, edits[n]) for n in group]
        if cycle:
            branches += [Branch(pair.source_prompt, 1 + i, edits[n]) for i, n in enumerate(group)]
        result = engine.render(branches, settings, heatmaps=quiet)
        source = result.images[0]
        for i, n in enumerate(group):
            targets[n] = result.images[1 + i]
            if cycle:
                backs[n] = result.images[1 + len(group) + i]
        if cycle:
            branches = [Branch(pair.target_prompt)]
            branches += [Branch(pair.source_prompt, 0, edits[n]) for n in group]
            result = engine.render(branches, settings, heatmaps=quiet)
            colds |= {n: result.images[1 + i] for i, n in enumerate(group)}
    return PairImages(source, targets, backs, colds)


def score_pair(pair: EditPair, images: PairImages) -> dict[str, dict]:
    """Per edit name, the scores of :func:`score_edit` and, with cycles, of
    :func:`score_cycle` (``cycle_*`` for the chain, ``cold_*`` for the cold reversal)."""
    out = {}
    for name, target in images.targets.items():
        row = score_edit(pair, images.source, target)
        if name in images.backs:
            row.update(score_cycle(images.source, images.backs[name]))
        if name in images.colds:
            row.update(score_cycle(images.source, images.colds[name], "cold"))
        out[name] = row
    return out


def table(per_pair: list[dict], pairs: list[EditPair], names: list[str]) -> dict:
    """``{method: {kind or "all": summary}}`` from per-pair scores (``{method: row}``)."""
    out = {}
    for name in names:
        cells = {}
        for kind in (*KINDS, "all"):
            rows = [
                scores[name]
                for pair, scores in zip(pairs, per_pair, strict=True)
                if kind in ("all", pair.kind)
            ]
            if rows:
                cells[kind] = summarise(rows)
        out[name] = cells
    return out


# ---- tasks -------------------------------------------------------------------------------


def run_generate(engine, samples: int, settings: RenderSettings) -> dict:
    """``samples`` images through the engine; seed i asks for combination i mod 54."""
    from clp2p.shapes import check, metrics

    combos = world.combinations()
    start = time.perf_counter()
    out: list[check.Sample] = []
    for seed in range(samples):
        asked = combos[seed % len(combos)]
        image = engine.generate(caption(asked), replace(settings, seed=seed)).images[0]
        reading = metrics.read_image(image)
        read = (reading.colour, reading.shape, reading.background)
        out.append(check.Sample(seed, asked, read, image))
        if (seed + 1) % 25 == 0:
            _log(f"generate: {_eta(seed + 1, samples, start)}")
    figures = check.score(out)
    return {
        "task": "generate",
        "n": samples,
        "figures": figures,
        "by_class": {
            name: check.per_class(out, i)
            for i, name in enumerate(("colour", "shape", "background"))
        },
        "goals": {k: {"goal": g, "met": figures[k] >= g} for k, g in GOALS.items()},
        "samples": out[: len(combos)],
    }


def _score_all(
    engine,
    pairs: list[EditPair],
    edits: dict[str, EditParams],
    settings: RenderSettings,
    cycle: bool,
    what: str,
    keep_images: int = 0,
) -> tuple[list[dict], list[tuple[EditPair, PairImages]]]:
    """Scores of every pair under every edit, and the images of the first ``keep_images``
    pairs of each kind."""
    start = time.perf_counter()
    per_pair, kept = [], []
    seen: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        images = render_pair(engine, pair, edits, settings, cycle=cycle)
        per_pair.append(score_pair(pair, images))
        if seen.get(pair.kind, 0) < keep_images:
            seen[pair.kind] = seen.get(pair.kind, 0) + 1
            kept.append((pair, images))
        _log(f"{what}: {_eta(i + 1, len(pairs), start)}")
    return per_pair, kept


def run_v_search(engine, pairs: list[EditPair], settings: RenderSettings) -> dict:
    """Score every V setting of the search grid against plain ``cl-p2p`` on ``pairs``.

    For each cycle protocol (``cycle``: the session's chain, ``cold``: reversal from a plain
    generation of B), the best setting lowers that cycle error (mean absolute difference) most
    among those whose edit success is not below plain ``cl-p2p``'s; None when none lowers it.
    """
    grid = [VSetting(w, b, layer) for layer, w, b in product(V_LAYERS, V_WINDOWS, V_BLENDS)]
    edits = {"cl-p2p": preset("cl-p2p").with_(kind="swap")}
    edits |= {v.name(): v.params().with_(kind="swap") for v in grid}
    per_pair, _ = _score_all(engine, pairs, edits, settings, True, "v search")
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
    engine,
    pairs: list[EditPair],
    settings: RenderSettings,
    v: VSetting,
    search_pairs: list[EditPair] | None = None,
) -> dict:
    """The edit table, after an optional V search whose winner becomes ``cl-p2p+v``."""
    search = None
    if search_pairs:
        search = run_v_search(engine, search_pairs, settings)
        v = VSetting(**(search["best"]["cycle"] or search["best"]["cold"] or search["mildest"]))
        _log(f"v search: best {search['best']}, using {v.name()}")
    edits = methods(v)
    per_pair, examples = _score_all(engine, pairs, edits, settings, True, "edit", keep_images=1)
    return {
        "task": "edit",
        "v": v.__dict__,
        "methods": {n: p.to_json() for n, p in edits.items()},
        "table": table(per_pair, pairs, list(edits)),
        "pairs": [dict(p.to_json(), scores=s) for p, s in zip(pairs, per_pair, strict=True)],
        "v_search": search,
        "examples": examples,
    }


def sweep_edits() -> dict[str, EditParams]:
    """Every cell of the k x cross x self grid, named ``k/cross/self``."""
    return {
        f"{k:g}/{c:g}/{s:g}": preset("cl-p2p").with_(
            kind="swap",
            k=k,
            cross=CrossWindow(StepWindow(0.0, c)),
            self_window=StepWindow(0.0, s),
        )
        for k, c, s in product(SWEEP_K, SWEEP_CROSS, SWEEP_SELF)
    }


def run_sweep(engine, pairs: list[EditPair], settings: RenderSettings) -> dict:
    """Colour swaps over the study's grid; the surfaces of success and mask IoU."""
    edits = sweep_edits()
    per_pair, examples = _score_all(engine, pairs, edits, settings, False, "sweep", keep_images=2)
    cells = {name: cell["all"] for name, cell in table(per_pair, pairs, list(edits)).items()}
    return {
        "task": "sweep",
        "axes": {"k": SWEEP_K, "cross": SWEEP_CROSS, "self": SWEEP_SELF},
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


# ---- command line ------------------------------------------------------------------------

DEFAULT_PAIRS = {"edit": 60, "sweep": 12, "picture-cycle": 36}
DEFAULT_SEARCH_PAIRS = 12
SEARCH_FIRST_SEED = 5000  # the V search uses other pairs and noise than the confirmation
PICTURE_CONFIRM_SEED = 7000  # held-out pairs of the picture cycle (its search: seeds 1000+)


def add_eval_parser(sub) -> None:
    """``clp2p eval shapes --task generate|edit|sweep``."""
    from clp2p.cli import _add_model_args

    p = sub.add_parser("eval", help="evaluations against a ground truth")
    esub = p.add_subparsers(dest="eval", required=True)
    s = esub.add_parser("shapes", help="generation and edits scored on the shapes world")
    s.add_argument("--task", required=True, choices=("generate", "edit", "sweep", "picture-cycle"))
    s.add_argument("--samples", type=int, default=200, help="generate: images (seeds)")
    s.add_argument(
        "--pairs", type=int, help="edit / sweep / picture-cycle: edit pairs (default 60 / 12 / 36)"
    )
    s.add_argument(
        "--search-pairs",
        type=int,
        default=0,
        help="edit: first search the V setting on this many other pairs (e.g. 12); "
        "picture-cycle: run the V grid on this many pairs instead of the held-out check",
    )
    s.add_argument("--v-inject", type=float, default=VSetting.window, help="V window end")
    s.add_argument("--v-blend", type=float, default=VSetting.blend, help="V beta")
    s.add_argument("--v-layers", choices=V_LAYERS, default=VSetting.layers)
    s.add_argument(
        "--v-settings",
        nargs="+",
        metavar="WINDOW/BETA/LAYERS",
        help="picture-cycle: the V settings to check on the held-out pairs (e.g. 0.2/0.3/both)",
    )
    s.add_argument("--json", help="write the results to this file")
    s.add_argument("--figures", help="write the figures (eval-*.png) into this folder")
    s.add_argument("--steps", type=int, help="DDIM steps (default: the model check's)")
    s.add_argument("--guidance", type=float, help="CFG scale (default: the model check's)")
    _add_model_args(s)


def _v_setting(text: str) -> VSetting:
    """``0.2/0.3/both`` -> VSetting(0.2, 0.3, "both"); a clear error otherwise."""
    from clp2p.errors import Clp2pError

    parts = text.split("/")
    try:
        window, blend, layers = float(parts[0]), float(parts[1]), parts[2]
    except (IndexError, ValueError):
        raise Clp2pError(
            f"--v-settings {text!r}: write WINDOW/BETA/LAYERS, e.g. 0.2/0.3/both"
        ) from None
    if len(parts) != 3 or layers not in V_LAYERS or not (0 < window <= 1 and 0 < blend <= 1):
        raise Clp2pError(
            f"--v-settings {text!r}: window and beta in (0, 1], layers one of {', '.join(V_LAYERS)}"
        )
    return VSetting(window, blend, layers)


def write_json(path: Path, result: dict) -> None:
    import json

    clean = {k: v for k, v in result.items() if k not in ("examples", "images", "samples")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_figures(result: dict, folder: Path) -> list[Path]:
    from clp2p.shapes import figures

    task = result["task"]
    if task == "generate":
        from clp2p.shapes import check

        out = [folder / "eval-generate.png"]
        check.save_grid(result["samples"], out[0])
        return out
    if task == "picture-cycle":
        return []
    if task == "edit":
        out = [folder / "eval-edit.png", folder / "eval-examples.png"]
        figures.edit_bars(result["table"], out[0])
        figures.edit_examples(result["examples"], list(result["methods"]), out[1])
        return out
    out = [folder / "eval-sweep.png", folder / "eval-sweep-grid.png"]
    figures.sweep_heatmaps(result, out[0])
    figures.sweep_grid(result, result["examples"], out[1])
    return out


def _report(result: dict) -> str:
    from clp2p.shapes import report

    if result["task"] == "generate":
        return report.generate_table(result)
    if result["task"] == "edit":
        text = report.edit_table(result["table"])
        if result["v_search"]:
            text = report.v_search_table(result["v_search"]) + "\n\n" + text
        return text
    if result["task"] == "picture-cycle":
        from clp2p.shapes.picture_cycle import picture_cycle_table

        return picture_cycle_table(result)
    return report.sweep_tables(result)


def cmd_eval(args) -> int:
    """Run one task, print its markdown table, write JSON and figures when asked."""
    import os

    import torch

    from clp2p.cli import engine_from

    torch.set_num_threads(os.cpu_count() or 1)
    if args.model is None:
        args.model = "shapes"
    engine = engine_from(args)
    # Many branches per render here: one batch is faster, and scores do not need the
    # bit-exactness across renders that sessions rely on.
    engine.batch_branches = True
    from clp2p.shapes.check import CheckConfig

    settings = RenderSettings(
        seed=0,
        steps=args.steps or CheckConfig.steps,
        guidance=CheckConfig.guidance if args.guidance is None else args.guidance,
    )
    task = args.task
    if task == "generate":
        result = timed(lambda: run_generate(engine, args.samples, settings))
    elif task == "edit":
        pairs = make_pairs(args.pairs or DEFAULT_PAIRS["edit"])
        search = None
        if args.search_pairs:
            search = make_pairs(args.search_pairs, seed=1, first_seed=SEARCH_FIRST_SEED)
        v = VSetting(args.v_inject, args.v_blend, args.v_layers)
        result = timed(lambda: run_edit(engine, pairs, settings, v, search))
    elif task == "picture-cycle":
        from clp2p.shapes.picture_cycle import run_picture_cycle

        if args.search_pairs:  # the whole V grid on the search pairs
            pairs = make_pairs(args.search_pairs)
            result = timed(lambda: run_picture_cycle(engine, pairs, settings))
        else:  # the given V setting on held-out pairs, other captions and noise
            pairs = make_pairs(
                args.pairs or DEFAULT_PAIRS[task], seed=2, first_seed=PICTURE_CONFIRM_SEED
            )
            candidates = [VSetting(args.v_inject, args.v_blend, args.v_layers)]
            if args.v_settings:
                candidates = [_v_setting(text) for text in args.v_settings]
            result = timed(lambda: run_picture_cycle(engine, pairs, settings, candidates))
    else:
        pairs = make_pairs(args.pairs or DEFAULT_PAIRS["sweep"], kinds=("colour",))
        result = timed(lambda: run_sweep(engine, pairs, settings))
    result["model"] = engine.name
    result["settings"] = {"steps": settings.steps, "guidance": settings.guidance}
    print(_report(result))
    print(f"\n{task}: {result['seconds']:.0f} s")
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    if args.figures:
        for path in write_figures(result, Path(args.figures)):
            print(f"wrote {path}")
    return 0
