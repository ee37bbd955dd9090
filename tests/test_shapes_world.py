"""The shapes world generator and its ground-truth metrics (CPU, no weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clp2p.shapes import metrics, model, world


def _scenes(n: int, seed: int = 0) -> list[world.Scene]:
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng) for _ in range(n)]


def test_same_seed_gives_same_scenes_and_pixels():
    a, b = _scenes(20, seed=3), _scenes(20, seed=3)
    assert a == b
    pairs = zip(a, b, strict=True)
    assert all(np.array_equal(world.render(x)[0], world.render(y)[0]) for x, y in pairs)
    assert _scenes(20, seed=4) != a


def test_scenes_respect_the_world_rules():
    for scene in _scenes(500):
        image, mask = world.render(scene, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == bool
        assert world.NAMED_COLOURS[scene.colour] != world.NAMED_COLOURS[scene.background]
        assert world.SIZE_RANGE[0] <= scene.size <= world.SIZE_RANGE[1]
        # Fully inside: the frame is pure background.
        assert not mask[0].any() and not mask[-1].any()
        assert not mask[:, 0].any() and not mask[:, -1].any()
        assert np.all(image[mask] == world.SHAPE_COLOURS[scene.colour])
        assert np.all(image[~mask] == world.BACKGROUND_COLOURS[scene.background])


def test_prompt_format_and_single_word_names():
    scene = world.Scene("red", "circle", "white", (0.5, 0.5), 0.5)
    assert world.prompt(scene) == "a red circle on a white background"
    names = [*world.SHAPE_COLOURS, *world.BACKGROUND_COLOURS, *world.SHAPES]
    assert all(name.isalpha() for name in names)
    assert len(world.SHAPE_COLOURS) >= 6 and len(world.BACKGROUND_COLOURS) >= 3


def test_every_combination_is_sampled():
    seen = {(s.colour, s.shape, s.background) for s in _scenes(2000)}
    assert seen == set(world.combinations())


def test_readings_of_rendered_scenes_are_at_least_99_percent_right():
    scenes = _scenes(400, seed=1)
    right = {"colour": 0, "background": 0, "shape": 0, "iou": 0}
    for scene in scenes:
        image, mask = world.render(scene, 64)
        reading = metrics.read_image(image)
        right["colour"] += reading.colour == scene.colour
        right["background"] += reading.background == scene.background
        right["shape"] += reading.shape == scene.shape
        right["iou"] += metrics.mask_iou(reading.mask, mask) > 0.99
    assert all(count >= 0.99 * len(scenes) for count in right.values()), right


def test_readings_survive_noise():
    rng = np.random.default_rng(2)
    scenes = _scenes(200, seed=5)
    right = 0
    for scene in scenes:
        image, _ = world.render(scene, 64)
        noisy = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        reading = metrics.read_image(noisy)
        right += (reading.colour, reading.shape, reading.background) == (
            scene.colour,
            scene.shape,
            scene.background,
        )
    assert right >= 0.97 * len(scenes)


def test_empty_image_reads_as_no_shape():
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    reading = metrics.read_image(image)
    assert (reading.background, reading.colour, reading.shape) == ("gray", "none", "none")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [((0, 4), (0, 4), 1.0), ((0, 4), (2, 6), 1 / 3), ((0, 2), (4, 6), 0.0)],
)
def test_mask_iou(a, b, expected):
    ma, mb = np.zeros(8, bool), np.zeros(8, bool)
    ma[slice(*a)], mb[slice(*b)] = True, True
    assert metrics.mask_iou(ma, mb) == pytest.approx(expected)


def test_mean_abs_diff_in_pixel_units():
    a = np.zeros((4, 4, 3), np.uint8)
    assert metrics.mean_abs_diff(a, a + 10) == pytest.approx(10.0)


SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"


def test_tiny_components_fit_together():
    cfg = model.ModelConfig(
        image_size=32,
        vae_channels=(16, 16, 16),
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        unet_channels=(16, 16, 16),
        unet_heads=2,
    )
    vae, unet = model.build_vae(cfg), model.build_unet(cfg)
    text = model.build_text_encoder(cfg)
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
        assert latents.shape == (1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        ids = model.load_tokenizer(cfg)(
            ["a red circle on a white background"],
            padding="max_length",
            max_length=cfg.max_tokens,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        assert ids.shape == (1, cfg.max_tokens)
        cond = text(ids).last_hidden_state
        eps = unet(latents, torch.tensor([10]), cond).sample
    assert eps.shape == latents.shape


@pytest.mark.skipif(not (SHIPPED / "model_index.json").exists(), reason="model not trained")
def test_shipped_model_loads_offline_and_samples():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED, local_files_only=True)
    assert pipe.safety_checker is None
    assert pipe.tokenizer.model_max_length == pipe.text_encoder.config.max_position_embeddings
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    weights = sum(p.stat().st_size for p in SHIPPED.rglob("*.safetensors"))
    assert weights <= 40 * 2**20
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a red circle on a white background",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 64, 64, 3)


def test_tokenizer_uses_the_real_clip_vocabulary():
    cfg = model.ModelConfig()
    tok = model.load_tokenizer(cfg)
    ids = tok(
        ["a red circle on a white background"],
        padding="max_length",
        max_length=cfg.max_tokens,
        truncation=True,
    ).input_ids[0]
    assert len(tok) == model.VOCAB_SIZE
    # One token per word, and different words get different ids (the first training run was
    # silently trained on BOS + EOS only because the vocabulary failed to load).
    assert ids[0] == model.BOS_ID and ids[8] == model.EOS_ID
    assert tok.convert_ids_to_tokens(ids[1:8]) == [
        "a</w>",
        "red</w>",
        "circle</w>",
        "on</w>",
        "a</w>",
        "white</w>",
        "background</w>",
    ]
