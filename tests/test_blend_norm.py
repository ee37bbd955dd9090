"""Local blend with its source's decoder statistics (``EditParams.blend_norm``): a blended edit
is decoded with the mean and variance each VAE decoder norm took over its source's latent.
Latent blending keeps the source's latent outside the mask, but the decoder normalises over
the whole latent, so the edited region can shift those statistics and the decoder repaints
the whole picture (on the shapes model a gray background comes out white); with the source's
statistics it does not. The decoder hooks and the shapes model here; the switch itself (file,
CLI, studio, record cache) in ``test_blend_switches``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from clp2p.engine.vae import DecoderNorms
from clp2p.model.presets import preset

SHAPES = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"
SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
TWO = "a red circle and a orange square on a gray background"


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).eval()


def _decode(vae, z):
    with torch.no_grad():
        return vae.decode(z).sample


def test_own_statistics_decode_as_the_decoder_does_and_others_change_it(tiny_vae):
    norms = DecoderNorms(tiny_vae)
    a, b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8) * 3 + 1
    with norms.recording() as stats_a:
        plain_a = _decode(tiny_vae, a)
    assert len(stats_a) == len(norms.norms) > 0  # each norm runs once in this decoder
    assert torch.equal(plain_a, _decode(tiny_vae, a))  # recording changes nothing
    with norms.using(stats_a):
        again = _decode(tiny_vae, a)
    torch.testing.assert_close(again, plain_a, atol=1e-5, rtol=1e-4)
    with norms.using(stats_a):
        b_as_a = _decode(tiny_vae, b)
    assert (b_as_a - _decode(tiny_vae, b)).abs().mean() > 1e-2
    assert all("forward" not in m.__dict__ for m in norms.norms)  # nothing outlives a block


def test_statistics_that_do_not_fit_the_decode_are_refused(tiny_vae):
    norms = DecoderNorms(tiny_vae)
    with norms.recording() as stats:
        _decode(tiny_vae, torch.randn(1, 4, 8, 8))
    with pytest.raises(RuntimeError, match="norms"), norms.using(stats[:-1]):  # too few
        _decode(tiny_vae, torch.randn(1, 4, 8, 8))
    three = [(m.repeat(3, 1, 1), v.repeat(3, 1, 1)) for m, v in stats]
    with pytest.raises(RuntimeError, match="statistics of shape"), norms.using(three):
        _decode(tiny_vae, torch.randn(2, 4, 8, 8))  # another batch
    assert all("forward" not in m.__dict__ for m in norms.norms)  # each norm its own again


@pytest.fixture(scope="module")
def shapes_engine():
    from clp2p.engine.engine import Engine

    return Engine.load(str(SHAPES), "cpu", "fp32")


def test_on_the_shapes_model_latents_alone_repaint_and_pixels_or_source_norm_do_not(
    shapes_engine,
):
    # a tuning pair of the two-object sweep whose blended colour swap the decoder repaints:
    # the latents outside the mask are the source's, yet the gray background comes out white
    source, target = TWO, TWO.replace("orange", "blue")
    settings = shapes_engine.card.settings(seed=30009)  # 64 px, 30 steps, guidance 4
    params = preset("cl-p2p").with_(kind="swap", k=0.3, blend_words=("orange", "blue", "square"))
    variants = [params, params.with_(blend_pixels=True), params.with_(blend_norm=True)]
    out = shapes_engine.edit(source, [(target, p) for p in variants], settings)
    src, alone, pixels, norm = (im.astype(int) for im in out.images)
    assert all(np.array_equal(out.latents[1], z) for z in out.latents[2:])  # decoded 3 ways
    right = np.s_[:, 40:]  # the red circle's side, away from the square on the left
    assert np.abs(alone[right] - src[right]).mean() > 20
    assert np.array_equal(pixels[right], src[right])  # pasted over the source's picture
    corner = np.s_[:6, -6:]  # background far from both objects
    assert np.abs(alone[corner] - src[corner]).mean() > 20
    assert np.abs(norm[corner] - src[corner]).mean() < 3  # decoded as the source was
    square = np.s_[20:44, 4:28]  # the edited square: blue
    assert norm[square][..., 2].mean() > norm[square][..., 0].mean() + 40


def test_an_edit_back_decodes_to_the_picture_it_started_from(shapes_engine):
    # A -> B (blend_norm) -> back to A (blend_norm, from B): the reversal's latent is A's, and
    # it is decoded with the statistics B took from A, so it is A's picture to float rounding
    # (a latent 1e-6 away can round one value of the 8-bit picture to its neighbour)
    from clp2p.model.params import Branch

    source, target = TWO, TWO.replace("orange", "blue")
    settings = shapes_engine.card.settings(seed=30009)
    words = ("orange", "blue", "square")
    params = preset("cl-p2p").with_(kind="swap", k=0.3, blend_words=words, blend_norm=True)
    out = shapes_engine.render(
        [Branch(source), Branch(target, 0, params), Branch(source, 1, params)], settings
    )
    a, b, back = out.images
    np.testing.assert_allclose(out.latents[2], out.latents[0], atol=1e-5)  # float rounding
    off = np.abs(back.astype(int) - a.astype(int))
    assert off.max() <= 1 and np.count_nonzero(off) <= 0.001 * off.size
    assert np.abs(b.astype(int) - a.astype(int)).mean() > 1  # B is another picture


def test_half_precision_statistics_are_taken_a_group_at_a_time_and_agree():
    from clp2p.engine.vae import group_stats

    x = torch.randn(1, 8, 6, 6)
    mean, var = group_stats(x, 4)
    half_mean, half_var = group_stats(x.half(), 4)
    assert half_mean.dtype == torch.float32 and half_mean.shape == (1, 4, 1)
    torch.testing.assert_close(half_mean, mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(half_var, var, atol=2e-3, rtol=1e-2)
