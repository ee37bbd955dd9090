"""Edit pairs of the shapes world and how an edit is scored against the ground truth.

Pure numpy, no weights: a pair says which attribute an edit changes (shape colour, shape class
or background colour), from which scene caption to which, under which seed; the scores read the
rendered images back with :mod:`clp2p.shapes.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from clp2p.shapes import metrics, world

KINDS: tuple[str, ...] = ("colour", "shape", "background")
"""Edit kinds, named by the attribute they change; the index is the attribute's position in a
``(colour, shape, background)`` triple."""

Attributes = tuple[str, str, str]  # (colour, shape, background)


def attribute_values(kind: str) -> tuple[str, ...]:
    """Every value the attribute changed by ``kind`` can take."""
    return {
        "colour": tuple(world.SHAPE_COLOURS),
        "shape": world.SHAPES,
        "background": tuple(world.BACKGROUND_COLOURS),
    }[kind]


def caption(attrs: Attributes) -> str:
    """The world's caption of a ``(colour, shape, background)`` triple."""
    colour, shape, background = attrs
    return f"a {colour} {shape} on a {background} background"


METRICS: tuple[str, ...] = (
    "success",
    "iou",
    "kept",
    "keep_mad",
    "cycle_mad",
    "cycle_iou",
    "cold_mad",
    "cold_iou",
)
"""Metrics averaged into a table cell, in column order."""


@dataclass(frozen=True)
class EditPair:
    """One word swap: ``source`` -> ``target`` differ only in the attribute ``kind``."""

    kind: str
    source: Attributes
    target: Attributes
    seed: int

    kinds: ClassVar[tuple[str, ...]] = KINDS
    """Edit kinds of this world, in table order."""
    metric_names: ClassVar[tuple[str, ...]] = METRICS
    """Metrics averaged into a table cell of this world's pairs."""
    blend_words: ClassVar[tuple[str, ...]] = ()
    """Local blend's words when an edit blends: none, so the engine's default (the changed
    words) applies; the one object is the whole edit."""

    def score(self, source: np.ndarray, target: np.ndarray) -> dict:
        """:func:`score_edit` of this pair."""
        return score_edit(self, source, target)

    def score_reversal(self, source: np.ndarray, back: np.ndarray, prefix: str) -> dict:
        """:func:`score_cycle` of a reversal of this pair's edit."""
        return score_cycle(source, back, prefix)

    @property
    def index(self) -> int:
        """Position of the changed attribute in the triples."""
        return KINDS.index(self.kind)

    @property
    def source_prompt(self) -> str:
        return caption(self.source)

    @property
    def target_prompt(self) -> str:
        return caption(self.target)

    def label(self) -> str:
        """Short text for figures, e.g. ``red->blue circle/white``."""
        i = self.index
        rest = [v for j, v in enumerate(self.source) if j != i]
        return f"{self.source[i]}->{self.target[i]} {'/'.join(rest)}"

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "source": self.source_prompt,
            "target": self.target_prompt,
            "seed": self.seed,
        }


def _allowed(attrs: Attributes) -> bool:
    colour, _, background = attrs
    return world.NAMED_COLOURS[colour] != world.NAMED_COLOURS[background]


def make_pairs(
    count: int, kinds: tuple[str, ...] = KINDS, seed: int = 0, first_seed: int = 1000
) -> list[EditPair]:
    """``count`` pairs, deterministic for a given ``seed``.

    Kinds take turns; within a kind the target value goes round-robin over the attribute's
    values. Sources are drawn without replacement from a shuffled deck of every caption
    (:func:`world.combinations`, reshuffled when used up): each pair takes the first caption
    left whose attribute differs from the target value, so small sets already cover every
    colour, shape and background on both sides and no caption repeats before all were used.
    Render seeds are ``first_seed, first_seed + 1, ...``: another ``first_seed`` gives other
    noise.
    """
    rng = np.random.default_rng(seed)
    combos = world.combinations()
    deck: list[Attributes] = []
    made = dict.fromkeys(kinds, 0)
    pairs = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        index = KINDS.index(kind)
        values = attribute_values(kind)
        want = values[made[kind] % len(values)]
        made[kind] += 1
        source = None
        while source is None:
            fits = [j for j, c in enumerate(deck) if c[index] != want]
            if fits:
                source = deck.pop(fits[0])
            else:
                deck += [combos[j] for j in rng.permutation(len(combos))]
        target = tuple(want if j == index else v for j, v in enumerate(source))
        if not _allowed(target):
            raise ValueError(f"{caption(target)!r} is not a caption of the world")
        pairs.append(EditPair(kind, source, target, first_seed + i))  # type: ignore[arg-type]
    return pairs


def _read_triple(reading: metrics.Reading) -> Attributes:
    return (reading.colour, reading.shape, reading.background)


def _region_mad(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float | None:
    """Mean absolute difference (0-255) of two uint8 (H, W, 3) images over a bool (H, W)."""
    if not region.any():
        return None
    return metrics.mean_abs_diff(a[region], b[region])


def score_edit(pair: EditPair, source: np.ndarray, target: np.ndarray) -> dict:
    """Scores of one edit from uint8 (H, W, 3) images.

    - ``source_ok``: the source shows all three attributes of its caption.
    - ``success``: the target shows the target value of the changed attribute.
    - ``iou``: foreground mask IoU source vs target (colour and background swaps only: a shape
      swap is meant to change the mask).
    - ``kept``: the attributes the edit must not touch read as in the source (colour swap: the
      background; background swap: the shape colour; shape swap: both colours).
    - ``keep_mad``: mean absolute pixel difference where nothing should change: outside both
      masks for colour and shape swaps, inside both masks for background swaps.
    """
    src, tgt = metrics.read_image(source), metrics.read_image(target)
    src_attrs, tgt_attrs = _read_triple(src), _read_triple(tgt)
    i = pair.index
    keep = {"colour": (2,), "shape": (0, 2), "background": (0,)}[pair.kind]
    # Where nothing should change: the shape for a background swap, else the background.
    region = src.mask & tgt.mask if pair.kind == "background" else ~(src.mask | tgt.mask)
    return {
        "source_ok": src_attrs == pair.source,
        "success": tgt_attrs[i] == pair.target[i],
        "iou": None if pair.kind == "shape" else metrics.mask_iou(src.mask, tgt.mask),
        "kept": all(tgt_attrs[j] == src_attrs[j] for j in keep),
        "keep_mad": _region_mad(source, target, region),
        "read": list(tgt_attrs),
    }


def score_cycle(source: np.ndarray, back: np.ndarray, prefix: str = "cycle") -> dict:
    """Cycle error of A -> B -> A: mean absolute pixel difference (0-255) of the reversal to
    the source (``{prefix}_mad``), and the IoU of their foreground masks (``{prefix}_iou``)."""
    iou = metrics.mask_iou(metrics.foreground_mask(back), metrics.foreground_mask(source))
    return {f"{prefix}_mad": metrics.mean_abs_diff(back, source), f"{prefix}_iou": iou}


def summarise(rows: list[dict], names: tuple[str, ...] = METRICS) -> dict:
    """Mean of each metric over the rows that have it (booleans count as 0/1), and ``n``."""
    out: dict = {"n": len(rows)}
    for name in names:
        values = [float(r[name]) for r in rows if r.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def read_caption(text: str) -> Attributes | None:
    """The ``(colour, shape, background)`` of a world caption, None for any other text."""
    words = text.strip().lower().split()
    if len(words) != 7 or [words[0], words[3], words[4], words[6]] != [
        "a",
        "on",
        "a",
        "background",
    ]:
        return None
    attrs = (words[1], words[2], words[5])
    if attrs not in set(world.combinations()):
        return None
    return attrs  # type: ignore[return-value]


def edit_scores(
    source_prompt: str, target_prompt: str, source: np.ndarray, edited: np.ndarray
) -> dict:
    """The ``clp2p.scores`` plug-in of the shapes model (named by its card): for an edit
    between two world captions that differ in one attribute, :func:`score_edit` against the
    ground truth (the pair's kind, success, mask IoU, kept attributes, kept-region MAD);
    ``{}`` for any other pair of prompts."""
    src, tgt = read_caption(source_prompt), read_caption(target_prompt)
    if src is None or tgt is None:
        return {}
    changed = [i for i in range(3) if src[i] != tgt[i]]
    if len(changed) != 1:
        return {}
    pair = EditPair(KINDS[changed[0]], src, tgt, seed=0)
    row = score_edit(pair, source, edited)
    row.pop("read")
    return {"edit": pair.kind, **row}


CaptionObjects = tuple[tuple[tuple[str, str], ...], str]  # (((colour, shape), ...), background)


def read_objects_caption(text: str) -> CaptionObjects | None:
    """The objects ``((colour, shape), ...)`` and background of a caption of the one-or-two
    object world (:func:`world.caption`), objects in caption order: ``"a red circle and a blue
    square on a white background"`` gives ``((("red", "circle"), ("blue", "square")), "white")``
    and a one-object caption one pair. None for any other text, including captions the world
    never writes (two objects of one colour or one class, a background like a shape's colour).
    """
    words = text.strip().lower().split()
    if len(words) not in (7, 11) or words[-4:-2] != ["on", "a"] or words[-1] != "background":
        return None
    head, background = words[:-4], words[-2]  # "a c s" or "a c s and a c s"
    parts = [head] if len(head) == 3 else [head[:3], head[4:]]
    if (len(head) == 7 and head[3] != "and") or any(part[0] != "a" for part in parts):
        return None
    objects = tuple((part[1], part[2]) for part in parts)
    flat = (*(word for pair in objects for word in pair), background)
    allowed = world.combinations() if len(objects) == 1 else world.two_object_combinations()
    return (objects, background) if flat in set(allowed) else None
