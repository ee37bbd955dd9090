"""``clp2p eval shapes --task generate`` and ``--task localise``: what the model draws for a
caption, and where its word maps sit.

- ``generate``: one picture per seed of the held-out range (:data:`seeds.GENERATE`), for
  one-object captions (round-robin over all 54) and for two-object captions (dealt from a
  seeded deck of all 540); each read back against its caption, with the clean-picture checks.
- ``localise``: two-object pictures whose every word map (each object's colour word and
  shape word) is taken at every attention grid and over several step ranges, upsampled to
  the picture as the heatmap panel shows it, thresholded at half its maximum, and scored by
  IoU with the object's mask as read from the picture. Only pictures whose two objects read
  as asked are scored (their count is reported).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from clp2p.model.params import Branch
from clp2p.model.settings import RenderSettings
from clp2p.shapes import seeds, two_objects, world
from clp2p.shapes.evaluate import run_tasks
from clp2p.shapes.scoring import caption

GOALS = {"colour": 0.95, "background": 0.95, "shape": 0.85, "unmarked": 0.95}
GOALS["background_clean"] = 0.95
"""Generation goals of one-object captions: fraction of samples whose attribute reads back as
prompted, that carry no stray marks, and whose background is its named colour (within 8
levels). Two-object captions: :data:`two_objects.TWO_GOALS`."""

STEP_PARTS = 3
"""The localisation task scores all steps and each third of them."""


def generate_work(worker, payload: tuple) -> dict:
    """A task of :func:`run_generate`: one picture of a caption, read back."""
    from clp2p.shapes import metrics

    seed, asked, settings = payload
    if len(asked) == 3:
        image = worker.engine.generate(caption(asked), replace(settings, seed=seed)).images[0]
        reading = metrics.read_image(image)
        return {"read": (reading.colour, reading.shape, reading.background), "image": image}
    prompt = two_objects.two_caption(asked)
    image = worker.engine.generate(prompt, replace(settings, seed=seed)).images[0]
    return {"scores": two_objects.score_generation(asked, image), "image": image}


def run_generate(
    runner, samples: int, settings: RenderSettings, first_seed: int = seeds.GENERATE.first
) -> dict:
    """``samples`` one-object pictures (seed ``first_seed + i`` asks for combination
    i mod 54) and ``samples`` two-object ones (the same seeds, captions from the held-out
    deck), on ``runner``'s workers."""
    from clp2p.shapes import check

    combos = world.combinations()
    one = [(first_seed + i, combos[i % len(combos)], settings) for i in range(samples)]
    deck = two_objects.deck(samples, seeds.GENERATE.deck)
    two = [(first_seed + i, combo, settings) for i, combo in enumerate(deck)]
    outcomes = run_tasks(runner, generate_work, one + two, "generate")
    out = [
        check.Sample(seed, asked, tuple(o["read"]), o["image"])
        for (seed, asked, _), o in zip(one, outcomes[:samples], strict=True)
    ]
    figures = check.score(out)
    rows = [o["scores"] for o in outcomes[samples:]]
    two_figures = two_objects.generation_figures(rows)
    return {
        "task": "generate",
        "n": samples,
        "first_seed": first_seed,
        "figures": figures,
        "by_class": {
            name: check.per_class(out, i)
            for i, name in enumerate(("colour", "shape", "background"))
        },
        "goals": {k: {"goal": g, "met": figures[k] >= g} for k, g in GOALS.items()},
        "samples": out[: len(combos)],
        "two": {
            "figures": two_figures,
            "goals": {
                k: {"goal": g, "met": two_figures[k] >= g} for k, g in two_objects.TWO_GOALS.items()
            },
            "captions": [two_objects.two_caption(c) for c in deck],
            "rows": rows,
            "images": [o["image"] for o in outcomes[samples : samples + 36]],
        },
    }


# ---- localisation -------------------------------------------------------------------------


def step_ranges(steps: int, parts: int = STEP_PARTS) -> dict[str, tuple[int, int]]:
    """``{"all": (0, steps), "1/3": (0, a), "2/3": (a, b), "3/3": (b, steps)}``."""
    cuts = [round(steps * i / parts) for i in range(parts + 1)]
    out = {"all": (0, steps)}
    out |= {
        f"{i + 1}/{parts}": (cuts[i], cuts[i + 1]) for i in range(parts) if cuts[i] < cuts[i + 1]
    }
    return out


WORD_KINDS: tuple[str, ...] = ("colour", "shape")
"""The kinds of an object's words whose maps localisation scores, in caption order."""


def localise_work(worker, payload: tuple) -> dict:
    """A task of :func:`run_localise`: render one two-object caption keeping the word maps
    of every grid, read the picture, and score each object's words at every grid and step
    range (``{"grid": {"range": {"colour": [iou, ...], "shape": [...]}}}``); ``None`` when
    the picture's objects do not read as asked."""
    from clp2p.engine.engine import HeatmapOptions, RenderOptions
    from clp2p.shapes.reading import match_objects, read_objects

    seed, combo, settings = payload
    engine = worker.engine
    options = RenderOptions(heatmaps=HeatmapOptions(max_pixels=1 << 30, components=0))
    settings = replace(settings, seed=seed)
    result = engine.render([Branch(two_objects.two_caption(combo))], settings, options=options)
    image, maps = result.images[0], result.attention
    wanted = two_objects.objects_of(combo)
    matches = match_objects(wanted, read_objects(image))
    readable = all(m.found and m.colour_ok and m.shape_ok for m in matches)
    if not readable:
        return {"scores": None, "image": image, "default_grid": list(maps.default_grid)}
    masks = [m.read.mask for m in matches]
    scores = word_ious(maps, wanted, masks, settings.steps)
    return {"scores": scores, "image": image, "default_grid": list(maps.default_grid)}


def word_ious(maps, wanted: list[tuple[str, str]], masks: list[np.ndarray], steps: int) -> dict:
    """``{"HxW": {range: {"colour": [IoU per object], "shape": [...]}}}``: the map of each
    caption object's colour and shape word in branch 0 of ``maps``
    (:class:`~clp2p.attention.maps.AttentionMaps`) at every grid and step range, upsampled
    to the masks' size as the heatmap panel shows it, against that object's bool mask."""
    from clp2p.attention.heatmap import upsample

    size = masks[0].shape
    scores: dict = {}
    for grid in maps.grids:
        per_range = {}
        for name, window in step_ranges(steps).items():
            cell: dict[str, list[float]] = {kind: [] for kind in WORD_KINDS}
            for words, mask in zip(wanted, masks, strict=True):
                for kind, word in zip(WORD_KINDS, words, strict=True):
                    word_map = upsample(maps.word_map(0, word, grid, window), size)
                    cell[kind].append(two_objects.map_iou(word_map, mask))
            per_range[name] = cell
        scores[f"{grid[0]}x{grid[1]}"] = per_range
    return scores


def localisation_table(rows: list[dict | None]) -> dict:
    """``{grid: {range: {"colour": mean IoU, "shape": mean IoU, "words": mean of both}}}``
    over the readable pictures of ``rows`` (None rows skipped)."""
    scored = [r for r in rows if r is not None]
    out: dict = {}
    if not scored:
        return out
    for grid, ranges in scored[0].items():
        out[grid] = {}
        for name in ranges:
            ious = {k: [v for r in scored for v in r[grid][name][k]] for k in WORD_KINDS}
            out[grid][name] = {k: float(np.mean(v)) for k, v in ious.items()}
            out[grid][name]["words"] = float(np.mean(sum(ious.values(), [])))
    return out


LOCALISE_GOAL = 0.5
"""Mean IoU a grid's word maps must reach (colour words and shape words each) to localise."""


def sharpest_grid(table: dict, kinds: tuple[str, ...] = WORD_KINDS) -> str | None:
    """The largest grid (most cells) whose all-steps maps localise: the mean IoU of each word
    kind of ``kinds`` (colour words, shape words) at least ``LOCALISE_GOAL``; None when no
    grid does."""

    def cells(grid: str) -> int:
        h, w = grid.split("x")
        return int(h) * int(w)

    good = [
        g
        for g, ranges in table.items()
        if min(ranges["all"][kind] for kind in kinds) >= LOCALISE_GOAL
    ]
    return max(good, key=cells, default=None)


def run_localise(
    runner, count: int, settings: RenderSettings, first_seed: int = seeds.LOCALISE.first
) -> dict:
    """Word-map localisation over ``count`` two-object pictures of the held-out range."""
    deck = two_objects.deck(count, seeds.LOCALISE.deck)
    payloads = [(first_seed + i, combo, settings) for i, combo in enumerate(deck)]
    outcomes = run_tasks(runner, localise_work, payloads, "localise")
    rows = [o["scores"] for o in outcomes]
    table = localisation_table(rows)
    return {
        "task": "localise",
        "n": count,
        "scored": sum(r is not None for r in rows),
        "first_seed": first_seed,
        "threshold": two_objects.LOCALISE_THRESHOLD,
        "goal": LOCALISE_GOAL,
        "table": table,
        "sharpest": sharpest_grid(table),
        "sharpest_by_kind": {kind: sharpest_grid(table, (kind,)) for kind in WORD_KINDS},
        "engine_default_grid": outcomes[0]["default_grid"] if outcomes else None,
        "captions": [two_objects.two_caption(c) for c in deck],
        "images": [o["image"] for o in outcomes[:12]],
    }
