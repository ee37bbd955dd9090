"""The shapes world: one or two flat-coloured shapes on a plain background, with a caption.

The first world (:class:`Scene`, :func:`sample_scene`, :func:`prompt`, :func:`render`) holds one
shape per picture. The second (:class:`MultiScene` of :class:`Object` values,
:func:`sample_one_or_two`, :func:`caption`, :func:`render_objects`) holds one or two, which
differ in colour and in class, so a model trained on it must bind each colour word to its
shape's place.

Every scene is drawn from a seeded ``numpy.random.Generator``, so a seed fixes the data set.
Geometry lives in unit coordinates (the image spans ``[0, 1]`` on both axes) and is rasterised
at any pixel size by testing pixel centres, which keeps the masks exact and the image flat.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations, product

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

TWO_SIZE_RANGE: tuple[float, float] = (0.25, 0.40)
"""Side of each object's bounding box in a two-object scene, as a fraction of the image side.
Two of the largest still fit side by side inside the frame with the gap between them
(2 x 0.40 + 0.08 + 2 x 0.04 = 0.96), so no size pair is impossible; the smallest is 16 px at
64 px, 4 cells of a 16 x 16 latent."""

OBJECT_GAP = 2 * MARGIN
"""Smallest gap between the bounding boxes of two objects, along x or along y, as a fraction of
the side: 5 px at 64 px, more than one cell of the VAE's 4x-down latent at any image size, so no
latent cell holds both objects. With half that gap a 1.5 px blur (a stand-in for the VAE's soft
edges) merged 5% of the pairs at 64 px into one component; with this gap none, even at 2 px."""

TWO_OBJECT_FRACTION = 0.5
"""Default share of two-object scenes in :func:`sample_one_or_two`."""

PLACEMENT_TRIES = 100
"""Positions tried for one draw of two sizes before the sizes are drawn again."""

PLACEMENT_ROUNDS = 1000
"""Size draws before :func:`sample_two` gives up (it never does with the ranges above)."""


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


@dataclass(frozen=True)
class Object:
    """One shape of a :class:`MultiScene`.

    Attributes:
        colour: key of ``SHAPE_COLOURS``.
        shape: one of ``SHAPES``.
        centre: (x, y) of the bounding-box centre in unit image coordinates, y downwards.
        size: side of the square bounding box, as a fraction of the image side.
    """

    colour: str
    shape: str
    centre: tuple[float, float]
    size: float


@dataclass(frozen=True)
class MultiScene:
    """A scene of one or two objects.

    Attributes:
        background: key of ``BACKGROUND_COLOURS``; differs from every object's colour.
        objects: in caption order. Two objects differ in colour and in class, and their boxes
            are at least ``OBJECT_GAP`` apart; the caption order says nothing about where they
            are (positions are drawn independently of it).
    """

    background: str
    objects: tuple[Object, ...]

    @classmethod
    def from_scene(cls, scene: Scene) -> MultiScene:
        """The one-object scene of the first world."""
        obj = Object(scene.colour, scene.shape, scene.centre, scene.size)
        return cls(scene.background, (obj,))


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
    return object_mask(Object(scene.colour, scene.shape, scene.centre, scene.size), size)


def object_mask(obj: Object, size: int) -> np.ndarray:
    """Exact mask of one object: bool (size, size), True where a pixel centre is inside."""
    coords = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")  # (H, W) each, unit coordinates
    cx, cy = obj.centre
    half = obj.size / 2
    dx, dy = x - cx, y - cy
    if obj.shape == "circle":
        return dx * dx + dy * dy <= half * half
    if obj.shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if obj.shape == "triangle":
        # Apex at the top centre, base along the bottom edge: width grows linearly with y.
        depth = (dy + half) / obj.size  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= half * depth)
    raise ValueError(f"unknown shape {obj.shape!r}")


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


def two_object_combinations() -> list[tuple[str, str, str, str, str]]:
    """All (colour 1, shape 1, colour 2, shape 2, background) of two-object captions, in a fixed
    order: ordered pairs of distinct colours and of distinct classes, on a background unlike
    both colours (540 with the palettes above)."""
    return [
        (c1, s1, c2, s2, b)
        for c1, c2 in permutations(SHAPE_COLOURS, 2)
        for s1, s2 in permutations(SHAPES, 2)
        for b in BACKGROUND_COLOURS
        if NAMED_COLOURS[b] not in (NAMED_COLOURS[c1], NAMED_COLOURS[c2])
    ]


def _pick_two(rng: np.random.Generator, names: list[str]) -> tuple[str, str]:
    first, second = rng.choice(len(names), size=2, replace=False)
    return names[first], names[second]


def sample_two(
    rng: np.random.Generator,
    colours: tuple[str, str] | None = None,
    shapes: tuple[str, str] | None = None,
    background: str | None = None,
) -> MultiScene:
    """Draw a two-object scene; fixed attributes are kept, the others drawn uniformly.

    Colours and classes are ordered pairs of distinct values; the background is drawn among
    those unlike both colours. Sizes come from ``TWO_SIZE_RANGE`` and positions are uniform
    over the placements that keep both boxes ``MARGIN`` inside every edge and ``OBJECT_GAP``
    apart (rejection sampling: ``PLACEMENT_TRIES`` positions per size draw, then new sizes).
    """
    colours = colours or _pick_two(rng, list(SHAPE_COLOURS))
    shapes = shapes or _pick_two(rng, list(SHAPES))
    if not (set(colours) <= set(SHAPE_COLOURS) and set(shapes) <= set(SHAPES)):
        raise ValueError(f"not shape colours and classes of the world: {colours}, {shapes}")
    if NAMED_COLOURS[colours[0]] == NAMED_COLOURS[colours[1]] or shapes[0] == shapes[1]:
        raise ValueError(f"two objects must differ in colour and class: {colours}, {shapes}")
    if background is None:
        allowed = [b for b in BACKGROUND_COLOURS if _unlike(b, colours)]
        background = allowed[rng.integers(len(allowed))]
    if background not in BACKGROUND_COLOURS or not _unlike(background, colours):
        raise ValueError(f"background {background!r} is not one for {colours}")
    return MultiScene(background, _place_two(rng, colours, shapes))


def _unlike(background: str, colours: tuple[str, ...]) -> bool:
    return all(NAMED_COLOURS[background] != NAMED_COLOURS[c] for c in colours)


def _place_two(
    rng: np.random.Generator, colours: tuple[str, str], shapes: tuple[str, str]
) -> tuple[Object, Object]:
    for _ in range(PLACEMENT_ROUNDS):
        sizes = rng.uniform(*TWO_SIZE_RANGE, size=2)  # (object,)
        low = (sizes / 2 + MARGIN)[:, None]  # (object, 1): lowest centre on either axis
        centres = rng.uniform(low, 1 - low, size=(PLACEMENT_TRIES, 2, 2))  # (try, object, xy)
        apart = np.abs(centres[:, 0] - centres[:, 1]) >= sizes.sum() / 2 + OBJECT_GAP
        fits = np.flatnonzero(apart.any(axis=1))  # separated along x or along y
        if fits.size:
            xy = centres[fits[0]]
            return (
                Object(colours[0], shapes[0], (float(xy[0, 0]), float(xy[0, 1])), float(sizes[0])),
                Object(colours[1], shapes[1], (float(xy[1, 0]), float(xy[1, 1])), float(sizes[1])),
            )
    raise RuntimeError("no placement of two objects: TWO_SIZE_RANGE is too large to fit")


def sample_one_or_two(
    rng: np.random.Generator, two_fraction: float = TWO_OBJECT_FRACTION
) -> MultiScene:
    """A two-object scene with probability ``two_fraction`` (:func:`sample_two`), else a
    one-object scene drawn exactly as :func:`sample_scene` draws it."""
    if rng.random() < two_fraction:
        return sample_two(rng)
    return MultiScene.from_scene(sample_scene(rng))


def caption(scene: MultiScene) -> str:
    """Caption of a scene, objects in scene order: ``"a red circle on a white background"``
    (as :func:`prompt`) or ``"a red circle and a blue square on a white background"``."""
    things = " and ".join(f"a {obj.colour} {obj.shape}" for obj in scene.objects)
    return f"{things} on a {scene.background} background"


def render_objects(scene: MultiScene, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a scene of one or two objects.

    Returns:
        image: uint8 (size, size, 3) sRGB.
        masks: bool (objects, size, size), one exact mask per object in scene order.
    """
    masks = np.stack([object_mask(obj, size) for obj in scene.objects])  # (K, S, S)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[...] = BACKGROUND_COLOURS[scene.background]
    for obj, mask in zip(scene.objects, masks, strict=True):
        image[mask] = SHAPE_COLOURS[obj.colour]
    return image, masks
