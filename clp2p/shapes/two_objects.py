"""Scoring the two-object world: generations, edits of one object, reversals and word maps.

Pure numpy, no weights. A generated picture has no ground truth of its own, so every score
reads it back (:mod:`clp2p.shapes.reading`) and matches the caption's objects to what it sees;
an edit is then judged object by object: the edited one must show its new colour or class,
the other must stay where and as it was, and so must the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from clp2p.errors import Clp2pError
from clp2p.shapes import cleanliness, metrics, world
from clp2p.shapes.reading import ObjectMatch, ObjectsReading, match_objects, read_objects

TwoCombo = tuple[str, str, str, str, str]  # (colour 1, shape 1, colour 2, shape 2, background)

TWO_KINDS: tuple[str, ...] = ("colour", "shape")
"""Two-object edit kinds: one object's colour or its class."""


def objects_of(combo: TwoCombo) -> list[tuple[str, str]]:
    """The caption's objects ``[(colour, shape), (colour, shape)]``."""
    return [(combo[0], combo[1]), (combo[2], combo[3])]


def two_caption(combo: TwoCombo) -> str:
    """``"a red circle and a blue square on a white background"``."""
    return f"a {combo[0]} {combo[1]} and a {combo[2]} {combo[3]} on a {combo[4]} background"


def deck(count: int, deck_seed: int) -> list[TwoCombo]:
    """``count`` two-object captions: the 540 combinations shuffled by ``deck_seed``, dealt in
    order and reshuffled when used up, so no caption repeats before all were used."""
    combos = world.two_object_combinations()
    rng = np.random.default_rng(deck_seed)
    out: list[TwoCombo] = []
    while len(out) < count:
        out += [combos[j] for j in rng.permutation(len(combos))]
    return out[:count]


# ---- generation ---------------------------------------------------------------------------


def score_generation(combo: TwoCombo, image: np.ndarray) -> dict:
    """What a picture generated for ``combo`` shows: per caption object whether it was found
    with its colour and class (``colour_ok`` / ``shape_ok``: lists of two), ``present`` (the
    picture holds exactly two separate objects and each caption object has one), and the
    clean-picture checks of :mod:`clp2p.shapes.cleanliness`."""
    reading = read_objects(image)
    matches = match_objects(objects_of(combo), reading)
    found = cleanliness.clean(image, 2, combo[4])
    return {
        "present": len(reading.objects) == 2 and all(m.found for m in matches),
        "colour_ok": [m.colour_ok for m in matches],
        "shape_ok": [m.shape_ok for m in matches],
        "background_ok": reading.background == combo[4],
        "unmarked": not found["marked"],
        "background_clean": not found["tinted"],
        "read": [[m.read.colour, m.read.shape] if m.read else None for m in matches],
    }


def generation_figures(rows: list[dict]) -> dict[str, float]:
    """Fractions over pictures (``present``, ``background``, ``unmarked``,
    ``background_clean``, ``all``) and over objects (``colour``, ``shape``)."""
    n = len(rows)
    objects = [(c, s) for r in rows for c, s in zip(r["colour_ok"], r["shape_ok"], strict=True)]
    return {
        "colour": float(np.mean([c for c, _ in objects])),
        "shape": float(np.mean([s for _, s in objects])),
        "present": sum(r["present"] for r in rows) / n,
        "background": sum(r["background_ok"] for r in rows) / n,
        "all": sum(
            r["present"] and r["background_ok"] and all(r["colour_ok"]) and all(r["shape_ok"])
            for r in rows
        )
        / n,
        "unmarked": sum(r["unmarked"] for r in rows) / n,
        "background_clean": sum(r["background_clean"] for r in rows) / n,
    }


TWO_GOALS = {"colour": 0.95, "shape": 0.85, "present": 0.90}
"""Generation goals of the two-object captions: each object's colour and class, both objects
present and separate."""


# ---- edits ---------------------------------------------------------------------------------


TWO_METRICS: tuple[str, ...] = (
    "source_ok",
    "success",
    "edited_iou",
    "other_kept",
    "other_iou",
    "other_mad",
    "background_mad",
    "cycle_mad",
    "cycle_other_mad",
    "cold_mad",
    "cold_other_mad",
)
"""Metrics averaged into a two-object table cell, in column order."""


@dataclass(frozen=True)
class TwoEditPair:
    """An edit of one object of a two-object caption: ``kind`` (colour or class) of object
    ``which`` (0 or 1, caption order) from ``source`` to ``target``, rendered from ``seed``."""

    kind: str
    which: int
    source: TwoCombo
    target: TwoCombo
    seed: int

    kinds: ClassVar[tuple[str, ...]] = TWO_KINDS
    """Edit kinds of this world, in table order."""
    metric_names: ClassVar[tuple[str, ...]] = TWO_METRICS
    """Metrics averaged into a table cell of this world's pairs."""

    def score(self, source: np.ndarray, target: np.ndarray) -> dict:
        """:func:`score_two_edit` of this pair."""
        return score_two_edit(self, source, target)

    def score_reversal(self, source: np.ndarray, back: np.ndarray, prefix: str) -> dict:
        """:func:`score_two_cycle` of a reversal of this pair's edit."""
        return score_two_cycle(self, source, back, prefix)

    @property
    def source_prompt(self) -> str:
        return two_caption(self.source)

    @property
    def target_prompt(self) -> str:
        return two_caption(self.target)

    @property
    def changed(self) -> tuple[str, str]:
        """The swapped words (source, target)."""
        i = 2 * self.which + (0 if self.kind == "colour" else 1)
        return self.source[i], self.target[i]

    @property
    def blend_words(self) -> tuple[str, ...]:
        """Local blend's words: the swapped words and the edited object's other word, so the
        blend mask is the object in both prompts."""
        other = self.source[2 * self.which + (1 if self.kind == "colour" else 0)]
        return (*self.changed, other)

    def label(self) -> str:
        """Short text for figures, a line per object: ``red->green circle`` over ``blue square``."""
        a, b = self.changed
        objs = objects_of(self.source)
        edited = objs[self.which][1] if self.kind == "colour" else objs[self.which][0]
        other = " ".join(objs[1 - self.which])
        return f"{a}->{b} {edited}\n{other}"

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "object": self.which,
            "source": self.source_prompt,
            "target": self.target_prompt,
            "seed": self.seed,
        }


def _target(source: TwoCombo, kind: str, which: int, rng: np.random.Generator) -> TwoCombo:
    """``source`` with object ``which``'s colour (or class) changed to one the world allows:
    unlike the other object's and (colours) the background's; drawn with ``rng``."""
    values = list(source)
    i = 2 * which + (0 if kind == "colour" else 1)
    j = 2 * (1 - which) + (0 if kind == "colour" else 1)
    if kind == "colour":
        named = world.NAMED_COLOURS
        pool = [
            c
            for c in world.SHAPE_COLOURS
            if c not in (source[i], source[j]) and named[c] != named[source[4]]
        ]
    else:
        pool = [s for s in world.SHAPES if s not in (source[i], source[j])]
    values[i] = pool[rng.integers(len(pool))]
    return tuple(values)  # type: ignore[return-value]


def check_kinds(kinds: tuple[str, ...]) -> None:
    """One line naming the kinds a two-object picture cannot be edited by, if any."""
    other = [k for k in kinds if k not in TWO_KINDS]
    if other:
        raise Clp2pError(
            f"edit kinds {' '.join(other)}: two-object pictures have {' and '.join(TWO_KINDS)} "
            "edits; drop the others or edit one-object pictures"
        )


def make_two_pairs(
    count: int, first_seed: int, deck_seed: int, kinds: tuple[str, ...] = TWO_KINDS
) -> list[TwoEditPair]:
    """``count`` edits, kinds and edited object taking turns, sources dealt from
    :func:`deck`, render seeds ``first_seed, first_seed + 1, ...``."""
    check_kinds(kinds)
    rng = np.random.default_rng(deck_seed + 10_000)
    sources = deck(count, deck_seed)
    pairs = []
    for i, source in enumerate(sources):
        kind = kinds[i % len(kinds)]
        which = (i // len(kinds)) % 2
        pairs.append(
            TwoEditPair(kind, which, source, _target(source, kind, which, rng), first_seed + i)
        )
    return pairs


def _region_mad(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float | None:
    return metrics.mean_abs_diff(a[region], b[region]) if region.any() else None


def _matched(combo: TwoCombo, image: np.ndarray) -> tuple[ObjectsReading, list[ObjectMatch]]:
    reading = read_objects(image)
    return reading, match_objects(objects_of(combo), reading)


def score_two_edit(pair: TwoEditPair, source: np.ndarray, target: np.ndarray) -> dict:
    """Scores of one edit from uint8 (H, W, 3) images.

    - ``source_ok``: the source shows both caption objects with their colours and classes.
    - ``success``: the edited object shows its new colour (class), found in the target.
    - ``edited_iou``: mask IoU of the edited object, source vs target (colour edits only).
    - ``other_kept``: the other object reads with its colour and class in the target.
    - ``other_iou``: its mask IoU source vs target; ``other_mad``: the mean absolute pixel
      difference over its masks (union of source and target).
    - ``background_mad``: the same outside every object mask of both pictures.
    """
    _, src = _matched(pair.source, source)
    _, tgt = _matched(pair.target, target)
    e, o = pair.which, 1 - pair.which
    ok = tgt[e].colour_ok if pair.kind == "colour" else tgt[e].shape_ok
    src_other, tgt_other = src[o].read, tgt[o].read
    if src_other is not None and tgt_other is not None:
        other_iou = metrics.mask_iou(src_other.mask, tgt_other.mask)
        other_region = src_other.mask | tgt_other.mask
    else:
        other_iou = 0.0
        other_region = src_other.mask if src_other is not None else np.zeros(source.shape[:2], bool)
    edited_iou = None
    if pair.kind == "colour" and src[e].read is not None:
        edited_iou = metrics.mask_iou(src[e].read.mask, tgt[e].read.mask) if tgt[e].read else 0.0
    anything = np.zeros(source.shape[:2], dtype=bool)
    for m in (*src, *tgt):
        if m.read is not None:
            anything |= m.read.mask
    return {
        "source_ok": all(m.colour_ok and m.shape_ok for m in src),
        "success": bool(ok),
        "edited_iou": edited_iou,
        "other_kept": tgt[o].colour_ok and tgt[o].shape_ok,
        "other_iou": other_iou,
        "other_mad": _region_mad(source, target, other_region),
        "background_mad": _region_mad(source, target, ~anything),
    }


def score_two_cycle(
    pair: TwoEditPair, source: np.ndarray, back: np.ndarray, prefix: str = "cycle"
) -> dict:
    """A -> B -> A of a two-object edit: the mean absolute difference of the reversal to the
    source (``{prefix}_mad``), and the untouched object's part of it (``{prefix}_other_mad``,
    over its masks in both pictures): a reversal must put both objects back."""
    _, src = _matched(pair.source, source)
    _, got = _matched(pair.source, back)
    o = 1 - pair.which
    region = np.zeros(source.shape[:2], dtype=bool)
    for m in (src[o], got[o]):
        if m.read is not None:
            region |= m.read.mask
    return {
        f"{prefix}_mad": metrics.mean_abs_diff(back, source),
        f"{prefix}_other_mad": _region_mad(source, back, region),
    }


# ---- word maps -----------------------------------------------------------------------------


LOCALISE_THRESHOLD = 0.5
"""A word's map, normalised by its maximum, covers the pixels above this."""


def map_iou(map_image: np.ndarray, mask: np.ndarray) -> float:
    """IoU of a word's map at the image's size (float (H, W), as the heatmap panel upsamples
    it), normalised by its maximum and thresholded at ``LOCALISE_THRESHOLD``, with a bool
    (H, W) object mask."""
    peak = float(map_image.max())
    if peak <= 0:
        return 0.0
    return metrics.mask_iou(map_image / peak > LOCALISE_THRESHOLD, mask)
