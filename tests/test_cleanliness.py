"""The clean-picture checks: stray marks away from the objects and the background's colour
error, on ground truth, with a mark drawn in, and with a tinted background."""

from __future__ import annotations

import numpy as np

from clp2p.shapes import cleanliness, world


def _scene(seed: int, two: bool):
    rng = np.random.default_rng(seed)
    scene = world.sample_two(rng) if two else world.MultiScene.from_scene(world.sample_scene(rng))
    image, _ = world.render_objects(scene, 64)
    return scene, image


def test_ground_truth_is_clean():
    for seed in range(40):
        scene, image = _scene(seed, two=seed % 2 == 0)
        result = cleanliness.clean(image, len(scene.objects), scene.background)
        assert result == {"stray": 0, "marked": False, "background_error": 0.0, "tinted": False}


def test_a_squiggle_near_the_corner_is_a_mark():
    scene, image = _scene(3, two=False)
    marked = image.copy()
    marked[3:6, 3] = (255, 0, 0)
    marked[5, 4:7] = (0, 200, 255)  # six pixels in two colours, clear of the object
    result = cleanliness.clean(marked, 1, scene.background)
    assert result["marked"] and result["stray"] == 6


def test_a_tinted_background_is_measured_in_levels():
    rng = np.random.default_rng(5)
    scene = world.MultiScene.from_scene(world.sample_scene(rng, background="white"))
    image, masks = world.render_objects(scene, 64)
    tinted = image.copy()
    tinted[~masks.any(0)] = (255, 236, 245)  # a pink "white"
    result = cleanliness.clean(tinted, 1, "white")
    assert result["tinted"] and result["background_error"] == 19.0 and not result["marked"]
