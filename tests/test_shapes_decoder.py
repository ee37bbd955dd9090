"""The decoder stage of the shapes model: a grown VAE starts as the same function, the encoder
stays bit-exact through training, the result loads as a stock pipeline, and a rerun resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from clp2p.shapes import train, train_decoder
from clp2p.shapes.model import ModelConfig, build_vae


def test_growing_a_vae_keeps_its_encoder_and_decoder_outputs():
    torch.manual_seed(0)
    vae = build_vae(ModelConfig()).eval()
    with torch.no_grad():  # the randomly initialised decoder is not the identity anywhere
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    bigger = train_decoder.grow(vae, 1)
    assert bigger.config.layers_per_block == vae.config.layers_per_block + 1
    assert sum(p.numel() for p in bigger.parameters()) > sum(p.numel() for p in vae.parameters())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z, z2 = vae.encode(x).latent_dist.mean, bigger.encode(x).latent_dist.mean
        y, y2 = vae.decode(z).sample, bigger.decode(z).sample
    assert torch.allclose(z, z2, atol=1e-5)
    assert torch.allclose(y, y2, atol=1e-5)
    assert train_decoder.grow(vae, 0) is vae


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder")
    train.main(
        [
            "--out", str(root / "model"),
            "--work-dir", str(root / "work"),
            "--figures", str(root / "fig"),
            "--set", "dataset_size=8", "vae_steps=2", "vae_batch=4", "steps=2", "batch=4",
            "log_every=1", "warmup=1",
        ]
    )  # fmt: skip
    return root / "model"


def test_the_decoder_stage_moves_only_the_decoder_and_exports_a_stock_pipeline(
    tiny_model, tmp_path, capsys
):
    args = ["--init", str(tiny_model), "--out", str(tmp_path / "out")]
    args += ["--work-dir", str(tmp_path / "work"), "--figures", str(tmp_path / "fig")]
    args += ["--set", "steps=3", "scenes=8", "batch=4"]
    train_decoder.main([*args, "log_every=1", "checkpoint_every=1"])
    assert "[decoder] step 3/3" in capsys.readouterr().out
    curve = (tmp_path / "fig" / "shapes-decoder-loss.csv").read_text().splitlines()
    assert curve[0] == "stage,step,loss,lr,minutes" and len(curve) == 4
    before = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    after = StableDiffusionPipeline.from_pretrained(tmp_path / "out", safety_checker=None)
    for part in ("unet", "text_encoder"):
        old, new = getattr(before, part).state_dict(), getattr(after, part).state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old), part
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z, z2 = before.vae.encode(x).latent_dist.mean, after.vae.encode(x).latent_dist.mean
        y, y2 = before.vae.decode(z).sample, after.vae.decode(z).sample
    assert torch.allclose(z, z2, atol=1e-5)  # the encoder is frozen: latents stay valid
    assert not torch.allclose(y, y2, atol=1e-4)  # the decoder learnt
    assert after.vae.config.scaling_factor == before.vae.config.scaling_factor

    # a rerun in the same work dir resumes from the last checkpoint and exports the same VAE
    train_decoder.main([*args, "log_every=1"])
    assert "resumed the decoder stage at step 3" in capsys.readouterr().out
    again = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    old, new = after.vae.state_dict(), again.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("stepz=3", "FIELD is one of seed, scenes"),
        ("steps=many", "steps takes a whole number"),
        ("x", "x:"),
        ("spliced_share=nan", "spliced_share takes a number from 0 to 1"),
        ("denoised_share=-0.5", "denoised_share takes a number from 0 to 1"),
        ("two_fraction=1e300", "two_fraction takes a number from 0 to 1"),
        ("batch=0", "batch takes a whole number, at least 1"),
        ("seed=-1", "seed takes a whole number, 0 or more"),
    ],
)
def test_a_bad_override_ends_with_one_line_naming_it(tmp_path, capsys, item, says):
    args = ["--init", str(tmp_path), "--out", str(tmp_path / "out"), "--set", item]
    with pytest.raises(SystemExit) as exit_:
        train_decoder.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in err and "Traceback" not in err


def test_the_denoisers_own_latents_are_drawn_seeded_kept_and_resumed(tiny_model, tmp_path, capsys):
    from clp2p.shapes import denoised

    vae = AutoencoderKL.from_pretrained(tiny_model / "vae")
    drawn = denoised.scenes(5, 3, 0.6)
    assert {len(s.objects) for s in drawn} <= {1, 2}
    first = denoised.denoised_latents(tiny_model, vae, drawn, 3, tmp_path / "a")
    assert first.shape == (5, vae.config.latent_channels, 16, 16)
    assert "denoised latents: 5/5" in capsys.readouterr().out
    again = denoised.denoised_latents(tiny_model, vae, drawn, 3, tmp_path / "b")
    assert torch.equal(first, again)  # every scene's noise is seeded
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(denoised, "_pipeline", None)  # all kept: the pipeline is not loaded
        kept = denoised.denoised_latents(tiny_model, vae, drawn, 3, tmp_path / "a")
    assert "resumed the denoised latents at 5" in capsys.readouterr().out
    assert torch.equal(first, kept)
    other = denoised.denoised_latents(tiny_model, vae, drawn, 4, tmp_path / "a")
    assert not torch.equal(first, other)  # another seed is drawn anew, not resumed
    fewer = denoised.denoised_latents(tiny_model, vae, drawn[1:], 4, tmp_path / "a")
    assert len(fewer) == 4 and "resumed" not in capsys.readouterr().out  # other scenes: anew


def test_more_scenes_of_the_same_draw_go_on_from_the_kept_latents(tiny_model, tmp_path, capsys):
    from clp2p.shapes import denoised

    vae = AutoencoderKL.from_pretrained(tiny_model / "vae")
    drawn = denoised.scenes(7, 3, 0.6)
    assert drawn[:4] == denoised.scenes(4, 3, 0.6)  # the first scenes of a longer draw
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(denoised, "BATCH", 2)
        first = denoised.denoised_latents(tiny_model, vae, drawn[:3], 5, tmp_path / "a")
        capsys.readouterr()
        more = denoised.denoised_latents(tiny_model, vae, drawn, 5, tmp_path / "a")
        # kept: 3 latents, of which the whole batches (2) are taken and the rest drawn again
        assert "resumed the denoised latents at 2" in capsys.readouterr().out
        fresh = denoised.denoised_latents(tiny_model, vae, drawn, 5, tmp_path / "b")
    assert torch.equal(more[:2], first[:2])  # the kept batch
    assert torch.equal(more, fresh)  # as if drawn in one go


def test_kept_latents_that_cannot_serve_are_drawn_anew(tmp_path):
    from clp2p.shapes import denoised

    drawn = denoised.scenes(3, 3, 0.6)
    path = tmp_path / "denoised.pt"
    for junk in (b"not a tensor file", None):
        if junk is None:
            torch.save({"weights": torch.ones(2)}, path)  # foreign: no latents, no key
        else:
            path.write_bytes(junk)
        assert denoised._resumed(path, drawn, 5) == []
    latents = torch.ones(3, 4, 2, 2)
    torch.save({"key": denoised._key(drawn, 5), "latents": latents}, path)  # the whole draw
    assert torch.equal(torch.cat(denoised._resumed(path, drawn, 5)), latents)
    assert denoised._resumed(path, drawn, 6) == []  # another noise seed


def test_the_decoder_stage_mixes_the_denoisers_latents_into_its_batches(tiny_model, tmp_path):
    args = ["--init", str(tiny_model), "--out", str(tmp_path / "out")]
    args += ["--work-dir", str(tmp_path / "work"), "--figures", str(tmp_path / "fig")]
    args += ["--set", "steps=2", "scenes=8", "batch=4", "denoised=6", "denoised_share=0.5"]
    train_decoder.main(args)
    kept = torch.load(tmp_path / "work" / "denoised.pt", weights_only=True)
    assert kept["latents"].shape[0] == 6
    data = train_decoder.Pairs(
        np.zeros((8, 64, 64, 3), np.uint8), np.full((6, 64, 64, 3), 255, np.uint8), kept["latents"]
    )
    cfg = train_decoder.DecoderConfig(batch=4, denoised_share=0.5)
    mean = torch.zeros(8, 4, 16, 16)
    z, pixels = train_decoder._batch(cfg, data, mean, mean, 0.0, torch.Generator().manual_seed(0))
    assert z.shape == (4, 4, 16, 16) and (pixels[:2] == -1).all() and (pixels[2:] == 1).all()
    assert any(torch.equal(z[2], row) for row in kept["latents"])


def test_spliced_batches_paste_another_scenes_objects_alike_in_latent_and_pixels():
    gray, red = (128, 128, 128), (255, 0, 0)
    images = np.zeros((2, 64, 64, 3), np.uint8)
    images[0] = gray
    images[1] = gray
    images[1, 40:48, 8:16] = red  # latent cells 10-11 x 2-3, grown by one: 9-12 x 1-4
    cells = train_decoder.object_cells(images, 16)
    assert not cells[0].any()
    assert cells[1].nonzero().min(0).values.tolist() == [9, 1]
    assert cells[1].nonzero().max(0).values.tolist() == [12, 4] and int(cells[1].sum()) == 16
    z = torch.stack([torch.zeros(4, 16, 16), torch.ones(4, 16, 16)])
    gen = torch.Generator().manual_seed(0)
    while True:  # a draw where scene 0 takes scene 1's objects
        out, pixels = train_decoder.splice(z, images, cells, gen)
        if out[0].any():
            break
    assert torch.equal(out[0][:, cells[1]], torch.ones(4, 16)) and int(out[0].sum()) == 4 * 16
    assert (pixels[0, 36:52, 4:20] == images[1, 36:52, 4:20]).all()  # cells 9-12 x 1-4
    assert (pixels[0, :36] == gray).all() and (pixels[0, :, 20:] == gray).all()


def test_the_spliced_share_of_a_batch(tmp_path):
    images = np.zeros((8, 64, 64, 3), np.uint8)
    images[:, 20:30, 20:30] = 200
    data = train_decoder.Pairs(images)
    mean = torch.arange(8.0)[:, None, None, None].expand(8, 4, 16, 16).contiguous()
    cfg = train_decoder.DecoderConfig(batch=8, spliced_share=0.5)
    gen = torch.Generator().manual_seed(1)
    z, _ = train_decoder._batch(cfg, data, mean, torch.zeros_like(mean), 0.0, gen)
    plain = [len(torch.unique(row)) == 1 for row in z]
    assert all(plain[4:]) and not all(plain[:4])  # only the first half may mix two scenes


def test_splicing_partners_share_a_background():
    images = np.zeros((5, 8, 8, 3), np.uint8)
    images[[0, 2, 4]] = 255  # white; 1 and 3 black
    images[4, 2:4, 2:4] = (255, 0, 0)
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        pick = train_decoder.partners(images, gen).tolist()
        assert pick[0] in (2, 4) and pick[2] in (0, 4) and pick[4] in (0, 2)
        assert pick[1] == 3 and pick[3] == 1
    assert train_decoder.partners(images[:1], gen).tolist() == [0]  # alone: itself
