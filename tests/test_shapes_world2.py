"""The one-or-two-object shapes world: its sampler's rules, captions, and reading pictures back
(CPU, numpy; the tokenizer test loads the real CLIP vocabulary, no weights)."""

from __future__ import annotations

from collections import deque
from functools import cache

import numpy as np
import pytest

from clp2p.shapes import metrics, model, reading, scoring, world


@cache
def _two_object_scenes(n: int = 6000, seed: int = 0) -> tuple[world.MultiScene, ...]:
    rng = np.random.default_rng(seed)
    return tuple(world.sample_two(rng) for _ in range(n))


def _box(obj: world.Object) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the object's bounding box in unit coordinates."""
    (cx, cy), half = obj.centre, obj.size / 2
    return cx - half, cy - half, cx + half, cy + half


def _wanted(scene: world.MultiScene) -> list[tuple[str, str]]:
    return [(obj.colour, obj.shape) for obj in scene.objects]


def test_two_objects_differ_keep_apart_and_stay_inside_the_frame():
    scenes = _two_object_scenes()
    for scene in scenes:
        a, b = scene.objects
        assert a.colour != b.colour and a.shape != b.shape
        assert world.NAMED_COLOURS[scene.background] not in (
            world.NAMED_COLOURS[a.colour],
            world.NAMED_COLOURS[b.colour],
        )
        for obj in (a, b):
            assert world.TWO_SIZE_RANGE[0] <= obj.size <= world.TWO_SIZE_RANGE[1]
            left, top, right, bottom = _box(obj)
            assert min(left, top) >= world.MARGIN and max(right, bottom) <= 1 - world.MARGIN
        (al, at, ar, ab), (bl, bt, br, bb) = _box(a), _box(b)
        gap = max(bl - ar, al - br, bt - ab, at - bb)  # along x or along y
        assert gap >= world.OBJECT_GAP
    captions = {world.caption(s) for s in scenes}
    assert {tuple(scoring.read_objects_caption(c)[0]) for c in captions} <= {
        ((c1, s1), (c2, s2)) for c1, s1, c2, s2, _ in world.two_object_combinations()
    }
    assert len(captions) == len(world.two_object_combinations()) == 540  # every caption drawn


def test_rendered_objects_are_exact_flat_and_never_touch():
    frame = int(world.MARGIN * 64)  # whole pixels of the frame at 64 px
    for scene in _two_object_scenes()[:300]:
        image, masks = world.render_objects(scene, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert masks.shape == (2, 64, 64) and masks.dtype == bool
        assert all(mask.any() for mask in masks)
        assert not (metrics.dilate(masks[0]) & masks[1]).any()  # not even diagonal neighbours
        for obj, mask in zip(scene.objects, masks, strict=True):
            assert np.all(image[mask] == world.SHAPE_COLOURS[obj.colour])
        assert np.all(image[~(masks[0] | masks[1])] == world.BACKGROUND_COLOURS[scene.background])
        inner = np.zeros((64, 64), bool)
        inner[frame:-frame, frame:-frame] = True
        assert not (masks.any(axis=0) & ~inner).any()


def test_same_seed_gives_same_scenes_and_pixels():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [world.sample_one_or_two(rng) for _ in range(30)]

    a, b = draw(3), draw(3)
    assert a == b
    pairs = zip(a, b, strict=True)
    assert all(
        np.array_equal(world.render_objects(x)[0], world.render_objects(y)[0]) for x, y in pairs
    )
    assert draw(4) != a


def test_the_two_object_share_is_a_setting_and_single_objects_are_the_first_world():
    rng = np.random.default_rng(1)
    scenes = [world.sample_one_or_two(rng, two_fraction=0.3) for _ in range(2000)]
    twos = sum(len(s.objects) == 2 for s in scenes)
    assert 0.27 < twos / len(scenes) < 0.33
    for scene in (s for s in scenes if len(s.objects) == 1):
        (obj,) = scene.objects
        assert world.SIZE_RANGE[0] <= obj.size <= world.SIZE_RANGE[1]
        one = world.Scene(obj.colour, obj.shape, scene.background, obj.centre, obj.size)
        assert world.caption(scene) == world.prompt(one)
        image, masks = world.render_objects(scene, 64)
        assert np.array_equal(image, world.render(one, 64)[0])
        assert np.array_equal(masks[0], world.render(one, 64)[1])
    assert all(len(world.sample_one_or_two(rng, 0.0).objects) == 1 for _ in range(50))


def test_fixed_attributes_are_kept_and_impossible_ones_refused():
    rng = np.random.default_rng(2)
    scene = world.sample_two(rng, ("red", "blue"), ("triangle", "circle"), "gray")
    assert _wanted(scene) == [("red", "triangle"), ("blue", "circle")]
    assert scene.background == "gray"
    assert world.caption(scene) == "a red triangle and a blue circle on a gray background"
    with pytest.raises(ValueError):
        world.sample_two(rng, colours=("red", "red"))
    with pytest.raises(ValueError):
        world.sample_two(rng, shapes=("square", "square"))
    with pytest.raises(ValueError):
        world.sample_two(rng, colours=("white", "red"))  # not a shape colour
    with pytest.raises(ValueError):
        world.sample_two(rng, shapes=("star", "circle"))
    with pytest.raises(ValueError):
        world.sample_two(rng, background="red")


def _all_captions() -> list[str]:
    ones = [f"a {c} {s} on a {b} background" for c, s, b in world.combinations()]
    twos = [
        f"a {c1} {s1} and a {c2} {s2} on a {b} background"
        for c1, s1, c2, s2, b in world.two_object_combinations()
    ]
    return ones + twos


def test_captions_round_trip_through_the_parser():
    for c1, s1, c2, s2, b in world.two_object_combinations():
        objects = (world.Object(c1, s1, (0.3, 0.3), 0.3), world.Object(c2, s2, (0.7, 0.7), 0.3))
        text = world.caption(world.MultiScene(b, objects))
        assert scoring.read_objects_caption(text) == (((c1, s1), (c2, s2)), b)
        assert scoring.read_caption(text) is None  # the one-object parser is unchanged
    for c, s, b in world.combinations():
        text = world.caption(world.MultiScene(b, (world.Object(c, s, (0.5, 0.5), 0.5),)))
        assert scoring.read_objects_caption(text) == (((c, s),), b)
        assert scoring.read_caption(text) == (c, s, b)


@pytest.mark.parametrize(
    "text",
    [
        "a red circle and a red square on a white background",  # one colour twice
        "a red circle and a blue circle on a white background",  # one class twice
        "a red circle or a blue square on a white background",
        "a red circle and the blue square on a white background",
        "a red circle and a blue square on a white",
        "a red circle and a blue square and a green triangle on a white background",
        "a white circle and a blue square on a white background",
        "two red circles on a white background",
        "",
    ],
)
def test_other_texts_do_not_parse(text):
    assert scoring.read_objects_caption(text) is None


def test_the_longest_caption_fits_the_text_encoder():
    cfg = model.ModelConfig()
    tok = model.load_tokenizer(cfg)
    captions = _all_captions()
    lengths = [len(ids) for ids in tok(captions).input_ids]  # with BOS and EOS
    # One token per word, so prompt-to-prompt's word swaps align token for token.
    assert lengths == [len(c.split()) + 2 for c in captions]
    assert max(lengths) == 13 <= cfg.max_tokens


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("size", "sigma", "count"), [(64, 0, 400), (96, 0, 100), (128, 0, 100), (64, 12, 200)]
)
def test_two_objects_read_back_from_ground_truth(size, sigma, count):
    noise = np.random.default_rng(5)
    scenes = _two_object_scenes()[:count]
    found = colour = shape = iou = background = 0
    for scene in scenes:
        image, masks = world.render_objects(scene, size)
        picture = reading.read_objects(_noisy(image, noise, sigma) if sigma else image)
        matches = reading.match_objects(_wanted(scene), picture, masks)
        background += picture.background == scene.background
        found += len(picture.objects) == 2 and all(m.found for m in matches)
        colour += sum(m.colour_ok for m in matches)
        shape += sum(m.shape_ok for m in matches)
        iou += sum(m.iou > 0.95 for m in matches)
    n = len(scenes)
    low = 1.0 if sigma == 0 else 0.95  # measured: 100% everywhere, with and without noise
    assert found >= low * n and background >= low * n
    assert colour >= low * 2 * n and iou >= low * 2 * n
    assert shape >= (0.97 if sigma == 0 else 0.95) * 2 * n


def test_objects_are_read_left_to_right_and_one_object_pictures_as_before():
    rng = np.random.default_rng(6)
    for scene in _two_object_scenes()[:50]:
        picture = reading.read_objects(world.render_objects(scene, 64)[0])
        xs = [obj.centre[0] for obj in picture.objects]
        assert xs == sorted(xs)
        want = sorted(scene.objects, key=lambda obj: obj.centre[0])
        assert [o.colour for o in picture.objects] == [o.colour for o in want]
    for _ in range(50):
        image = world.render(world.sample_scene(rng), 64)[0]
        one, picture = metrics.read_image(image), reading.read_objects(image)
        (obj,) = picture.objects
        assert (one.background, one.colour, one.shape) == (
            picture.background,
            obj.colour,
            obj.shape,
        )
        assert np.array_equal(one.mask, obj.mask)


def test_nothing_or_specks_read_as_no_objects():
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert reading.read_objects(image) == reading.ObjectsReading("gray", ())
    scene = world.sample_two(np.random.default_rng(7), background="black")
    image, masks = world.render_objects(scene, 64)
    free = np.argwhere(~metrics.dilate(metrics.dilate(masks.any(axis=0))))
    for y, x in free[:: len(free) // 6][:6]:  # six 2x2 specks of white on the background
        image[y : y + 2, x : x + 2] = 255
    assert len(reading.read_objects(image).objects) == 2


def _picture(*objects: world.Object) -> tuple[reading.ObjectsReading, np.ndarray]:
    scene = world.MultiScene("white", objects)
    image, masks = world.render_objects(scene, 64)
    return reading.read_objects(image), masks


LEFT, RIGHT = (0.28, 0.5), (0.72, 0.5)


def test_matching_catches_swapped_attributes_wrong_colours_and_missing_objects():
    caption = [("red", "circle"), ("blue", "square")]
    # Bound right: the positions do not matter, only colour and class.
    right, masks = _picture(
        world.Object("blue", "square", LEFT, 0.3), world.Object("red", "circle", RIGHT, 0.3)
    )
    matches = reading.match_objects(caption, right, masks[::-1])
    assert all(m.found and m.colour_ok and m.shape_ok and m.iou > 0.99 for m in matches)
    # The classes swapped between the colours: both found, colours right, classes wrong.
    swapped, _ = _picture(
        world.Object("red", "square", LEFT, 0.3), world.Object("blue", "circle", RIGHT, 0.3)
    )
    matches = reading.match_objects(caption, swapped)
    assert [(m.found, m.colour_ok, m.shape_ok, m.iou) for m in matches] == [
        (True, True, False, None),
        (True, True, False, None),
    ]
    # The square drawn green: found by elimination, colour wrong, class right.
    green, _ = _picture(
        world.Object("red", "circle", LEFT, 0.3), world.Object("green", "square", RIGHT, 0.3)
    )
    second = reading.match_objects(caption, green)[1]
    assert (second.found, second.colour_ok, second.shape_ok) == (True, False, True)
    assert second.read.colour == "green"
    # Only the circle drawn: the square is not found, and its IoU is 0.
    alone, masks = _picture(world.Object("red", "circle", LEFT, 0.3))
    true_masks = [masks[0], np.zeros_like(masks[0])]
    first, second = reading.match_objects(caption, alone, true_masks)
    assert first.found and first.iou > 0.99
    assert (second.found, second.colour_ok, second.shape_ok, second.iou) == (False,) * 3 + (0.0,)


def _flood_fill_labels(mask: np.ndarray) -> np.ndarray:
    """Reference 4-connected labelling, numbered by each component's first pixel."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        labels[start] = labels.max() + 1
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = labels[start]
                    queue.append((ny, nx))
    return labels


def test_component_labels_match_a_flood_fill():
    rng = np.random.default_rng(8)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 24, size=2))) < rng.uniform(0.2, 0.8)
        assert np.array_equal(metrics.components(mask), _flood_fill_labels(mask))
    snake = np.zeros((21, 21), bool)
    snake[::2] = True
    snake[1::4, -1] = snake[3::4, 0] = True
    assert metrics.components(snake).max() == 1


def test_the_training_set_mixes_one_and_two_object_scenes_and_keeps_the_first_world():
    from clp2p.shapes.model import ModelConfig
    from clp2p.shapes.train import TrainConfig, make_dataset

    mcfg = ModelConfig()
    images, captions, _ = make_dataset(TrainConfig(dataset_size=40, two_fraction=0.5), mcfg)
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    two = [c for c in captions if " and " in c]
    assert 10 <= len(two) <= 30
    assert all(scoring.read_objects_caption(c) is not None for c in captions)
    # two_fraction 0: the first model's data set, scene for scene
    images, captions, _ = make_dataset(TrainConfig(dataset_size=5, two_fraction=0.0), mcfg)
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng) for _ in range(5)]
    assert captions == [world.prompt(s) for s in scenes]
    assert np.array_equal(images, np.stack([world.render(s, 64)[0] for s in scenes]))
