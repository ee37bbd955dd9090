"""Reading a picture of one or two objects back, in pure numpy, and matching it to a caption.

The background is read as :mod:`clp2p.shapes.metrics` reads it (median border colour). The
foreground (pixels far from it) splits into 4-connected components; the largest two that are
big enough are the objects, each read for its colour and class exactly as a one-object picture
is. Objects never touch in the world (``world.OBJECT_GAP``), so one component is one object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clp2p.shapes import metrics, world

MAX_OBJECTS = 2
"""Most objects a picture of the world holds."""

MIN_OBJECT_AREA = world.TWO_SIZE_RANGE[0] ** 2 / 8
"""Smallest component read as an object, as a fraction of the image area (after a 3x3 opening):
a quarter of the smallest object the world draws, a triangle of side 0.25 that covers
0.25^2 / 2 of the image. That is 32 px at 64 px; specks of noise stay far below it."""


@dataclass(frozen=True)
class ReadObject:
    """One object seen in a picture.

    Attributes:
        colour: nearest of the nine named colours (a shape read as a background colour is
            simply a wrong colour).
        shape: class from :func:`metrics.shape_class`.
        mask: bool (H, W), the object's component with its holes filled.
    """

    colour: str
    shape: str
    mask: np.ndarray

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the mask's centroid in unit image coordinates, y downwards."""
        ys, xs = np.nonzero(self.mask)
        height, width = self.mask.shape
        return (float(xs.mean() + 0.5) / width, float(ys.mean() + 0.5) / height)


@dataclass(frozen=True)
class ObjectsReading:
    """What the reader sees in a picture: the background's named colour and the objects,
    sorted left to right by their centroids (an empty tuple when nothing stands out)."""

    background: str
    objects: tuple[ReadObject, ...]


@dataclass(frozen=True)
class ObjectMatch:
    """How one caption object shows in a reading.

    Attributes:
        found: some read object was assigned to it.
        colour_ok: that object has the caption's colour.
        shape_ok: that object has the caption's class.
        iou: mask IoU of that object with the true mask, 0.0 if none was found; None when no
            true mask was given.
        read: the assigned object, or None.
    """

    found: bool
    colour_ok: bool
    shape_ok: bool
    iou: float | None
    read: ReadObject | None


def object_masks(
    image: np.ndarray,
    max_objects: int = MAX_OBJECTS,
    distance: float = metrics.FOREGROUND_DISTANCE,
) -> list[np.ndarray]:
    """Masks of the largest foreground components of uint8 (H, W, 3), at most ``max_objects``,
    each bool (H, W) with holes filled, largest first.

    Components are ranked by the pixels that survive a 3x3 opening (as in
    :func:`metrics.foreground_mask`, so a thin streak of noise cannot win) and kept when that
    count reaches ``MIN_OBJECT_AREA`` of the image; each keeps its full extent.
    """
    bg = metrics.background_rgb(image)
    far = np.linalg.norm(image.astype(np.float64) - bg, axis=-1) > distance  # (H, W)
    labels = metrics.components(far)
    opened = metrics.dilate(metrics.erode(far))
    weights = np.bincount(labels.ravel(), weights=opened.ravel(), minlength=labels.max() + 1)
    weights[0] = -1  # the background
    least = MIN_OBJECT_AREA * far.size
    ranked = [int(k) for k in np.argsort(-weights, kind="stable") if weights[k] >= least]
    return [_fill_holes(labels == k) for k in ranked[:max_objects]]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """:func:`metrics.fill_holes` of one component, done inside its bounding box: every hole
    lies there, and the box's padded frame connects to whatever lies outside."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = np.pad(mask[top:bottom, left:right], 1)  # (h + 2, w + 2), frame off
    filled = mask.copy()
    filled[top:bottom, left:right] = metrics.fill_holes(box)[1:-1, 1:-1]
    return filled


def read_objects(image: np.ndarray, max_objects: int = MAX_OBJECTS) -> ObjectsReading:
    """Background and objects (colour, class, mask) of uint8 (H, W, 3), objects left to right."""
    background = metrics.nearest_colour(metrics.background_rgb(image))
    found = [
        ReadObject(metrics.mask_colour(image, mask), metrics.shape_class(mask), mask)
        for mask in object_masks(image, max_objects)
    ]
    found.sort(key=lambda obj: obj.centre[0])
    return ObjectsReading(background, tuple(found))


def match_objects(
    wanted: Sequence[tuple[str, str]],
    reading: ObjectsReading,
    masks: Sequence[np.ndarray] | None = None,
) -> list[ObjectMatch]:
    """Match caption objects ``(colour, shape)`` to the objects of a reading, in caption order.

    A caption object first takes an unassigned read object of its colour (caption colours
    differ; among several of that colour, the one of its class, then the largest). Caption
    objects left over then take the remaining read objects: the one overlapping their true
    mask most when ``masks`` (bool (H, W) per caption object) are given, else the one of
    their class, then the largest. So a red circle drawn green is found with a wrong colour,
    and an object that was never drawn is not found.
    """
    truth = list(masks) if masks is not None else [None] * len(wanted)
    assigned: dict[int, int] = {}  # caption index -> read index
    for i, (colour, shape) in enumerate(wanted):
        same = [j for j, obj in enumerate(reading.objects) if obj.colour == colour]
        if same:
            assigned[i] = max(same, key=lambda j: _preference(reading.objects[j], shape, None))
    for i, (_, shape) in enumerate(wanted):
        free = [j for j in range(len(reading.objects)) if j not in assigned.values()]
        if i not in assigned and free:
            mask = truth[i]
            assigned[i] = max(free, key=lambda j: _preference(reading.objects[j], shape, mask))
    return [
        _match(want, reading.objects[assigned[i]] if i in assigned else None, truth[i])
        for i, want in enumerate(wanted)
    ]


def _preference(obj: ReadObject, shape: str, mask: np.ndarray | None) -> tuple[float, bool, int]:
    """Sort key of a candidate: overlap with the true mask (if any), right class, area."""
    overlap = 0.0 if mask is None else metrics.mask_iou(obj.mask, mask)
    return overlap, obj.shape == shape, int(obj.mask.sum())


def _match(want: tuple[str, str], obj: ReadObject | None, mask: np.ndarray | None) -> ObjectMatch:
    iou = None if mask is None else 0.0 if obj is None else metrics.mask_iou(obj.mask, mask)
    if obj is None:
        return ObjectMatch(False, False, False, iou, None)
    return ObjectMatch(True, obj.colour == want[0], obj.shape == want[1], iou, obj)
