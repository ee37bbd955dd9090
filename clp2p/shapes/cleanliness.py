"""Clean pictures: two checks of a generated picture besides reading its objects back.

- **Stray marks**: pixels whose colour is none of the picture's colours (the background's and
  each object's) nor a blend of two of them, as an object's soft edge is. A picture of flat
  colours holds nothing else; the first shipped model drew a small rainbow-coloured squiggle
  at the top left of most of its shapes.
- **Background error**: how far the background's mean colour is from the named colour the
  caption asks for, in levels (0-255) of its worst channel: the first model's "white" came out
  tinted pink or cyan.

Pure numpy, like the rest of the reading (:mod:`clp2p.shapes.metrics`,
:mod:`clp2p.shapes.reading`)."""

from __future__ import annotations

import numpy as np

from clp2p.shapes import metrics, reading, world

STRAY_DISTANCE = metrics.FOREGROUND_DISTANCE  # as far from the background as a shape is
STRAY_MIN_PIXELS = 3  # fewer stray pixels than this in a picture count as noise
OBJECT_EDGE = 2  # pixels around each object that belong to its (soft) edge
BACKGROUND_GOAL = 8.0  # levels: a background within this of its named colour is clean


def _masks(image: np.ndarray, objects: int | list) -> list[np.ndarray]:
    """The object masks: given, or the ``objects`` largest foreground components."""
    if isinstance(objects, list):
        return objects
    return reading.object_masks(image, max_objects=objects)


def background_region(image: np.ndarray, objects: int | list) -> np.ndarray:
    """bool (H, W): the pixels away from the ``objects`` largest foreground components (the
    caption's objects) by more than ``OBJECT_EDGE`` pixels."""
    masks = _masks(image, objects)
    near = np.zeros(image.shape[:2], dtype=bool)
    for mask in masks:
        near |= mask
    for _ in range(OBJECT_EDGE):
        near = metrics.dilate(near)
    return ~near


def _segment_distance(pixels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RGB distance of each of (N, 3) ``pixels`` to the segment from ``a`` to ``b``: how far
    it is from every blend of the two colours."""
    ab = b - a
    t = np.clip((pixels - a) @ ab / max(float(ab @ ab), 1e-9), 0.0, 1.0)  # (N,)
    return np.linalg.norm(pixels - (a + t[:, None] * ab), axis=-1)


def stray_pixels(image: np.ndarray, objects: int | list) -> int:
    """How many pixels are farther than ``STRAY_DISTANCE`` from every blend of two of the
    picture's colours: the background's (its border) and each of the ``objects`` largest
    components' (their median)."""
    colours = [metrics.background_rgb(image)]
    colours += [np.median(image[m].astype(np.float64), axis=0) for m in _masks(image, objects)]
    pixels = image.reshape(-1, 3).astype(np.float64)
    if len(colours) == 1:
        near = np.linalg.norm(pixels - colours[0], axis=-1)
    else:
        pairs = [(a, b) for i, a in enumerate(colours) for b in colours[i + 1 :]]
        near = np.min([_segment_distance(pixels, a, b) for a, b in pairs], axis=0)
    return int((near > STRAY_DISTANCE).sum())


def background_error(image: np.ndarray, objects: int | list, background: str) -> float:
    """Levels between the mean colour of :func:`background_region` and the named
    ``background`` colour, on the channel where they differ most."""
    region = background_region(image, objects)
    if not region.any():
        return float("nan")
    mean = image[region].astype(np.float64).mean(axis=0)  # (3,)
    return float(np.abs(mean - np.array(world.BACKGROUND_COLOURS[background])).max())


def clean(image: np.ndarray, objects: int, background: str) -> dict:
    """Both checks of one picture: ``stray`` (pixels), ``marked`` (at least
    ``STRAY_MIN_PIXELS`` of them), ``background_error`` (levels) and ``tinted`` (above
    ``BACKGROUND_GOAL``)."""
    masks = _masks(image, objects)  # found once for both checks
    stray = stray_pixels(image, masks)
    error = background_error(image, masks, background)
    return {
        "stray": stray,
        "marked": stray >= STRAY_MIN_PIXELS,
        "background_error": error,
        "tinted": not error <= BACKGROUND_GOAL,
    }
