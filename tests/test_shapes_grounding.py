"""Token grounding (clp2p.shapes.grounding): the targets, the loss, the capture, and a
grounded training run that exports a loadable pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clp2p.shapes import grounding, world
from clp2p.shapes.model import ModelConfig, load_tokenizer


@pytest.fixture(scope="module")
def words():
    return grounding.word_ids(load_tokenizer(ModelConfig()))


def _ids(captions: list[str]) -> np.ndarray:
    tok = load_tokenizer(ModelConfig())
    return tok(captions, padding="max_length", return_tensors="np").input_ids


def test_every_colour_and_class_word_is_one_token(words):
    assert set(words) == {*world.SHAPE_COLOURS, *world.SHAPES}
    assert len(set(words.values())) == len(words)


def test_positions_name_each_objects_words_in_caption_order(words):
    ids = _ids(
        [
            "a red circle and a blue square on a white background",
            "a green triangle on a black background",
        ]
    )
    where = grounding.positions(ids, words)
    assert where.shape == (2, 2, 2)
    # BOS a red circle and a blue square ...: red at 2, circle at 3, blue at 6, square at 7
    assert where[0].tolist() == [[2, 3], [6, 7]]
    assert where[1].tolist() == [[2, 3], [-1, -1]]
    # the background colour word is never an object's
    assert words.get("white") is None


def test_positions_refuse_a_caption_that_is_not_the_worlds(words):
    with pytest.raises(ValueError, match="colours"):
        grounding.positions(_ids(["a red and blue circle"]), words)


def test_latent_masks_hold_each_objects_share_of_every_cell():
    scene = world.sample_two(np.random.default_rng(3))
    _, masks = world.render_objects(scene, 64)
    cells = grounding.latent_masks(masks, 16)
    assert cells.shape == (2, 16, 16) and cells.dtype == np.uint8
    share = cells.astype(float) / 255
    assert np.allclose(share.sum(axis=(1, 2)) * 16, masks.sum(axis=(1, 2)), atol=2)
    one = grounding.latent_masks(masks[:1], 16)
    assert one[1].max() == 0 and np.array_equal(one[0], cells[0])


def _maps_on(masks: torch.Tensor, targets: list[int], tokens: int = 8) -> torch.Tensor:
    """(B, heads, Q, T) probabilities: pixels of object k attend to token targets[k] (its
    colour word) and targets[k] + 1 (its shape word); every other pixel to token 0."""
    b, k, side, _ = masks.shape
    probs = torch.zeros(b, 2, side * side, tokens)
    flat = masks.reshape(b, k, -1)
    probs[..., 0] = 1.0
    for obj, token in enumerate(targets):
        on = flat[:, obj] > 0.5  # (B, Q)
        for t in (token, token + 1):
            probs[:, :, :, t] = torch.where(on[:, None], 0.5, probs[:, :, :, t])
        probs[:, :, :, 0] = torch.where(on[:, None], 0.0, probs[:, :, :, 0])
    return probs


def test_the_loss_is_low_on_maps_that_sit_on_their_objects_and_high_on_swapped_ones():
    masks = torch.zeros(1, 2, 16, 16)
    masks[0, 0, 2:6, 2:6] = 1
    masks[0, 1, 9:14, 8:13] = 1
    where = torch.tensor([[[2, 3], [5, 6]]])
    good = grounding.grounding_loss([_maps_on(masks, [2, 5])], masks, where)
    bad = grounding.grounding_loss([_maps_on(masks, [5, 2])], masks, where)
    assert set(good) == set(grounding.TERMS)
    assert good["token"].item() < 0.01 and bad["token"].item() > 0.99
    assert good["pixel"].item() < bad["pixel"].item()
    assert good["word"].item() < 0.01 and bad["word"].item() > 1.0
    # the 8x8 grid of the same maps is scored against the masks pooled to 8x8
    coarse = torch.nn.functional.avg_pool2d(masks, 2)
    token8 = grounding.grounding_loss([_maps_on(coarse, [2, 5])], masks, where)["token"]
    assert token8.item() < 0.3


def test_only_the_word_term_sees_a_colour_word_that_is_a_speckle_on_its_object():
    # the shape word covers each object and carries the colour; the colour word's map is one
    # bright cell inside its object: all of its attention is inside, and the pair covers it
    masks = torch.zeros(1, 2, 16, 16)
    masks[0, 0, 2:6, 2:6] = 1
    masks[0, 1, 9:14, 8:13] = 1
    where = torch.tensor([[[2, 3], [5, 6]]])
    covering = _maps_on(masks, [2, 5])
    speckled = covering.clone()
    for colour, (y, x) in ((2, (3, 3)), (5, (10, 9))):
        speckled[..., 3 if colour == 2 else 6] += speckled[..., colour]  # the shape word takes it
        speckled[..., colour] = 0
        speckled[..., y * 16 + x, colour] = 0.01
    good = grounding.grounding_loss([covering], masks, where)
    speckle = grounding.grounding_loss([speckled], masks, where)
    assert speckle["token"].item() < 0.01  # all of the colour word's attention is inside
    assert abs(speckle["pixel"].item() - good["pixel"].item()) < 0.05
    assert speckle["word"].item() > good["word"].item() + 0.5


def test_rows_without_objects_do_not_count_and_no_objects_gives_zero_with_a_gradient():
    masks = torch.zeros(2, 2, 16, 16)
    masks[:, 0, 2:6, 2:6] = 1
    maps = _maps_on(masks, [2, 5])
    where = torch.tensor([[[2, 3], [-1, -1]], [[5, 6], [-1, -1]]])  # row 1 names the wrong words
    one_row = grounding.grounding_loss([maps[:1]], masks[:1], where[:1])["token"]
    both = grounding.grounding_loss([maps], masks, where)["token"]
    assert one_row.item() < 0.01 and both.item() > 0.4
    dropped = torch.full_like(where, -1)
    maps.requires_grad_(True)
    terms = grounding.grounding_loss([maps], masks, dropped)
    assert all(term.item() == 0 for term in terms.values())
    sum(terms.values()).backward()
    assert maps.grad is not None


def test_the_capture_computes_the_unets_own_attention_and_keeps_its_cross_maps():
    from diffusers.models.attention_processor import AttnProcessor2_0

    from clp2p.attention.processor import controlled_attention
    from clp2p.shapes.model import build_unet

    cfg = ModelConfig()
    torch.manual_seed(0)
    unet = build_unet(cfg).eval()
    unet.set_attn_processor(AttnProcessor2_0())
    z, text = torch.randn(2, 4, 16, 16), torch.randn(2, cfg.max_tokens, cfg.text_hidden)
    with torch.no_grad():
        plain = unet(z, torch.tensor([10, 500]), text).sample
    capture = grounding.AttentionCapture()
    with torch.no_grad(), controlled_attention(unet, capture):
        captured = unet(z, torch.tensor([10, 500]), text).sample
    maps = capture.take()
    assert torch.allclose(plain, captured, atol=1e-5)
    assert sorted({m.shape[2] for m in maps}) == [16, 64, 256]  # 4x4 (mid), 8x8, 16x16
    assert len(maps) == sum("attn2" in name for name in unet.attn_processors)
    assert all(torch.allclose(m.sum(-1), torch.ones(())) for m in maps)
    assert capture.take() == []


def test_a_grounded_training_run_logs_its_terms_and_exports_a_stock_pipeline(tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    from clp2p.shapes import train

    train.main(
        [
            "--out", str(tmp_path / "out"),
            "--work-dir", str(tmp_path / "work"),
            "--figures", str(tmp_path / "fig"),
            "--set", "two_fraction=0.6", "dataset_size=12", "vae_steps=2", "vae_batch=4",
            "steps=4", "batch=4", "log_every=2", "warmup=1",
            "grounding=0.3", "grounding_pixel=0.2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert " token " in out and " pixel " in out and " denoise " in out
    header = (tmp_path / "fig" / "shapes-loss.csv").read_text().splitlines()[0]
    assert {"denoise", "token", "pixel"} <= set(header.split(","))
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "out", safety_checker=None)
    assert type(next(iter(pipe.unet.attn_processors.values()))).__name__ == "AttnProcessor2_0"
    assert " word " not in out  # the base run has no word term

    train.main(
        [
            "--init", str(tmp_path / "out"),
            "--out", str(tmp_path / "tuned"),
            "--work-dir", str(tmp_path / "work-tune"),
            "--figures", str(tmp_path / "fig-tune"),
            "--set", "two_fraction=0.6", "dataset_size=12", "batch=4", "steps=2", "log_every=1",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "kept the VAE" in out and " word " in out and f"lr={train.FINETUNE['lr']}" in out
    tuned = StableDiffusionPipeline.from_pretrained(tmp_path / "tuned", safety_checker=None)
    for part in ("vae", "unet", "text_encoder"):
        before = dict(getattr(pipe, part).named_parameters())
        after = dict(getattr(tuned, part).named_parameters())
        same = all(torch.equal(before[name], after[name]) for name in before)
        assert same == (part == "vae"), part  # the VAE is kept; the rest started from it ...
        moved = max((before[name] - after[name]).abs().max().item() for name in before)
        assert moved < 1e-3, part  # ... and moved a little
