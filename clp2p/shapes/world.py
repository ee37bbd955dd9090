"""The shapes world: one flat-coloured shape on a plain background, with its caption.

Every scene is drawn from a seeded ``numpy.random.Generator``, so a seed fixes the data set.
Geometry lives in unit coordinates (the image spans ``[0, 1]`` on both axes) and is rasterised
at any pixel size by testing pixel centres, which keeps the mask exact and the image flat.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

RGB = tuple[int, int, int]

SHAPE_COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 180),
    "orange": (245, 135, 20),
}
"""Named colours a shape can take (sRGB, 0-255)."""

BACKGROUND_COLOURS: dict[str, RGB] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
"""Named colours a background can take (sRGB, 0-255)."""

NAMED_COLOURS: dict[str, RGB] = {**SHAPE_COLOURS, **BACKGROUND_COLOURS}
"""Every named colour of the world; the metrics classify against this palette."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
"""Shape classes, all axis-aligned; the triangle points up."""

SIZE_RANGE: tuple[float, float] = (0.35, 0.70)
"""Side of the shape's bounding box as a fraction of the image side."""

MARGIN = 0.04
"""Smallest gap between the shape and the image edge, as a fraction of the side; it keeps a
clean background frame for the metrics."""


@dataclass(frozen=True)
class Scene:
    """One world state.

    Attributes:
        colour: key of ``SHAPE_COLOURS``.
        shape: one of ``SHAPES``.
        background: key of ``BACKGROUND_COLOURS``; never the same colour as ``colour``.
        centre: (x, y) of the bounding-box centre in unit image coordinates, y downwards.
        size: side of the square bounding box, as a fraction of the image side.
    """

    colour: str
    shape: str
    background: str
    centre: tuple[float, float]
    size: float


def combinations() -> list[tuple[str, str, str]]:
    """All allowed (colour, shape, background) triples, in a fixed order."""
    return [
        (c, s, b)
        for c, s, b in product(SHAPE_COLOURS, SHAPES, BACKGROUND_COLOURS)
        if NAMED_COLOURS[c] != NAMED_COLOURS[b]
    ]


def sample_scene(
    rng: np.random.Generator,
    colour: str | None = None,
    shape: str | None = None,
    background: str | None = None,
) -> Scene:
    """Draw a scene; fixed attributes are kept, the others drawn uniformly.

    The shape lies fully inside the image, at least ``MARGIN`` from every edge.
    """
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(SHAPE_COLOURS)[rng.integers(len(SHAPE_COLOURS))]
    if background is None:
        allowed = [b for b in BACKGROUND_COLOURS if NAMED_COLOURS[b] != NAMED_COLOURS[colour]]
        background = allowed[rng.integers(len(allowed))]
    if NAMED_COLOURS[background] == NAMED_COLOURS[colour]:
        raise ValueError(f"shape colour {colour!r} equals background {background!r}")
    size = float(rng.uniform(*SIZE_RANGE))
    half = size / 2 + MARGIN
    cx, cy = (float(v) for v in rng.uniform(half, 1 - half, size=2))
    return Scene(colour, shape, background, (cx, cy), size)


def prompt(scene: Scene) -> str:
    """Caption of a scene: ``"a {colour} {shape} on a {background} background"``."""
    return f"a {scene.colour} {scene.shape} on a {scene.background} background"


def shape_mask(scene: Scene, size: int) -> np.ndarray:
    """Exact mask of the shape: bool (size, size), True where a pixel centre is inside."""
    coords = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")  # (H, W) each, unit coordinates
    cx, cy = scene.centre
    half = scene.size / 2
    dx, dy = x - cx, y - cy
    if scene.shape == "circle":
        return dx * dx + dy * dy <= half * half
    if scene.shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if scene.shape == "triangle":
        # Apex at the top centre, base along the bottom edge: width grows linearly with y.
        depth = (dy + half) / scene.size  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= half * depth)
    raise ValueError(f"unknown shape {scene.shape!r}")


def render(scene: Scene, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a scene.

    Returns:
        image: uint8 (size, size, 3) sRGB.
        mask: bool (size, size), True on the shape.
    """
    mask = shape_mask(scene, size)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[...] = BACKGROUND_COLOURS[scene.background]
    image[mask] = SHAPE_COLOURS[scene.colour]
    return image, mask
