"""Real-image inversion: the three methods on tiny models of both prediction types, the
session root they make, its JSON storage, the CLI and bad image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clp2p.attention.records import KEEP_ALL, Recording
from clp2p.engine.inversion import invert
from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.imported import Inversion, fit_image, read_image
from clp2p.model.params import RECORDED, Branch
from clp2p.model.presets import preset
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.picture_import import import_image
from clp2p.workflows.session_render import SessionRenderer, apply

SETTINGS = RenderSettings(seed=0, steps=6, guidance=3.0, width=32, height=32)
PROMPT = "a red circle on a white background"
TARGET = "a blue circle on a white background"


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def engine(request):
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import choose_device
    from tiny import tiny_pipeline

    return Engine(tiny_pipeline(request.param), choose_device("cpu", "fp32"), name="tiny")


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A 32x32 red disc on white, as a user's picture would look (no model made it)."""
    y, x = np.mgrid[:32, :32]
    image = np.full((32, 32, 3), 255, np.uint8)
    image[(x - 15) ** 2 + (y - 17) ** 2 < 80] = (220, 30, 30)
    return image


def _final_latent(engine, inversion: Inversion, guidance: float = SETTINGS.guidance):
    from dataclasses import replace

    result = engine.render(
        [Branch(PROMPT)], replace(SETTINGS, guidance=guidance), inversion=inversion
    )
    return result.latents[0], result.images[0]


def test_ddim_inversion_ends_at_the_image_latent(engine, picture):
    result = invert(engine, picture, PROMPT, SETTINGS, "negative-prompt")
    latents = result.inversion.latents
    assert latents.shape == (SETTINGS.steps + 1, 4, 16, 16)
    z0 = engine.encode_image(picture)[0].numpy()
    np.testing.assert_array_equal(latents[-1], z0)
    assert result.unet_forward == SETTINGS.steps and result.unet_backward == 0
    assert not np.allclose(latents[0], z0)  # the start is noised


def test_direct_inversion_reconstructs_exactly_what_the_vae_gives_back(engine, picture):
    inversion = invert(engine, picture, PROMPT, SETTINGS, "direct").inversion
    latent, image = _final_latent(engine, inversion)
    np.testing.assert_array_equal(latent, inversion.latents[-1])
    assert np.array_equal(image, engine.decode(engine.encode_image(picture))[0])


def test_negative_prompt_inversion_is_the_unguided_sampler(engine, picture):
    """With the source prompt as the negative prompt, guidance cancels out for the source."""
    inversion = invert(engine, picture, PROMPT, SETTINGS, "negative-prompt").inversion
    guided, _ = _final_latent(engine, inversion)
    plain, _ = _final_latent(engine, inversion, guidance=1.0)
    # equal up to float32 rounding of the two halves of the guidance batch over the steps
    np.testing.assert_allclose(guided, plain, atol=1e-4)


def test_null_text_optimisation_brings_the_source_back_closer(engine, picture):
    result = invert(engine, picture, PROMPT, SETTINGS, "null-text", inner_steps=10)
    inversion = result.inversion
    assert inversion.uncond.shape[0] == SETTINGS.steps
    assert result.unet_backward > 0 and result.unet_forward > SETTINGS.steps
    empty = engine.unconditional().tokens.numpy()
    plain = Inversion(
        "null-text",
        PROMPT,
        inversion.latents,
        np.repeat(empty, SETTINGS.steps, axis=0),
        SETTINGS.guidance,
    )
    z0 = inversion.latents[-1]
    optimised = np.abs(_final_latent(engine, inversion)[0] - z0).mean()
    unoptimised = np.abs(_final_latent(engine, plain)[0] - z0).mean()
    # random tiny models answer the unconditional embedding weakly: a modest but sure gain
    assert optimised < 0.92 * unoptimised


def test_imported_session_edits_reload_and_render_without_inverting_again(
    engine, picture, tmp_path, monkeypatch
):
    big = np.asarray(Image.fromarray(picture).resize((64, 48)))  # any size: fitted on import
    session, images = import_image(engine, big, PROMPT, SETTINGS, "direct", fit="fit")
    assert session.imported.input in images and images[session.imported.input].shape == (32, 32, 3)
    root = session.root
    assert root.status == "rendered" and "psnr" in root.metrics
    session, n2 = session.add_edit("n1", TARGET, preset("cl-p2p"))
    renderer = SessionRenderer(engine)
    session = apply(session, renderer.render(session, "n1"))
    child = renderer.render(session, n2)
    assert child.computed == 1  # from the root's record
    cold = SessionRenderer(engine).render(session, n2, use_cache=False)
    assert cold.hash == child.hash
    session = apply(session, child)
    images[child.hash] = child.image

    for embed in (False, True):
        path = tmp_path / f"s{int(embed)}.json"
        session_io.save(session, path, images, embed=embed)
        monkeypatch.setattr("clp2p.workflows.picture_import.invert", _forbidden)
        loaded, loaded_images = session_io.load(path)
        assert loaded.imported == session.imported
        assert session.imported.input in loaded_images
        fresh = SessionRenderer(engine)
        for node in loaded.nodes:
            assert fresh.render(loaded, node.id).hash == node.image


def _forbidden(*args, **kwargs):
    raise AssertionError("a loaded session must not invert again")


def test_inverted_root_must_match_the_render_settings(engine, picture):
    inversion = invert(engine, picture, PROMPT, SETTINGS, "negative-prompt").inversion
    with pytest.raises(Clp2pError, match="import it again"):
        engine.render(
            [Branch(PROMPT)], RenderSettings(steps=4, width=32, height=32), inversion=inversion
        )


def test_session_file_with_missing_or_changed_inversion_arrays_is_refused(
    engine, picture, tmp_path
):
    session, images = import_image(engine, picture, PROMPT, SETTINGS, "negative-prompt")
    path = tmp_path / "s.json"
    session_io.save(session, path, images)
    npz = next((tmp_path / "s.images").glob("*.npz"))
    data = json.loads(path.read_text())
    data["inversion"]["data_hash"] = "0" * 64
    bad = tmp_path / "changed.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(Clp2pError, match=r"\$\.inversion\.data"):
        session_io.load(bad)
    npz.unlink()
    before = path.read_text()
    with pytest.raises(Clp2pError, match=r"\$\.inversion\.data: cannot read .*\.images folder"):
        session_io.load(path)
    assert path.read_text() == before


def test_version_1_files_still_load(tmp_path):
    s = session_io.parse(
        json.dumps(
            {
                "format": "clp2p-session",
                "schema_version": 1,
                "model": "tiny",
                "settings": {"seed": 0, "steps": 4, "guidance": 3.0, "width": 32, "height": 32},
                "nodes": [{"id": "n1", "parent": None, "kind": "root", "prompt": PROMPT}],
            }
        )
    )
    assert s.imported is None and s.root.prompt == PROMPT


def test_inversion_can_be_cancelled(engine, picture):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(RenderCancelled):
        invert(engine, picture, PROMPT, SETTINGS, "null-text", cancel=cancel)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"not an image at all", "damaged or not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged or not an image"),
        ("gif", "convert it to PNG, JPEG or WebP"),
    ],
)
def test_bad_image_files_get_a_clear_error(tmp_path, content, message):
    path = tmp_path / "picture.png"
    if content == "gif":
        Image.new("RGB", (16, 16)).save(path, format="GIF")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(Clp2pError, match=message):
        read_image(path)


def test_fit_and_crop(picture):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :, 1] = 200
    wide[5:15, 15:25] = 255
    cropped = fit_image(wide, 32, 32, "crop")
    fitted = fit_image(wide, 32, 32, "fit")
    assert cropped.shape == fitted.shape == (32, 32, 3)
    assert (cropped[:, :, 1] >= 190).all()  # no padding: the frame is filled
    assert tuple(fitted[0, 0]) == (0, 200, 0)  # padded with the border's median colour
    with pytest.raises(Clp2pError, match="crop .* or fit"):
        fit_image(wide, 32, 32, "stretch")


def test_cli_invert_writes_a_session_that_replays(tmp_path, tiny_model_dir, picture):
    from clp2p.cli.main import main

    image = tmp_path / "in.jpg"
    Image.fromarray(picture).save(image, quality=95)
    out = tmp_path / "s.json"
    common = ["--model", str(tiny_model_dir), "--steps", "4", "--width", "32", "--height", "32"]
    args = ["invert", str(image), "--prompt", PROMPT, "--method", "negative-prompt"]
    assert main([*args, *common, "--out", str(out)]) == 0
    assert main([*args, *common, "--out", str(out)]) == 2  # exists: never overwritten silently
    assert main(["session", "add", str(out), "--parent", "n1", "--target", TARGET]) == 0
    assert main(["session", "render", str(out), "--model", str(tiny_model_dir)]) == 0
    loaded, _ = session_io.load(out)
    assert (
        loaded.imported.file == "in.jpg" and loaded.imported.inversion.method == "negative-prompt"
    )
    bad = tmp_path / "bad.webp"
    bad.write_bytes(b"RIFF0000WEBPjunk")
    assert (
        main(["invert", str(bad), "--prompt", PROMPT, *common, "--out", str(tmp_path / "b.json")])
        == 2
    )
    assert not (tmp_path / "b.json").exists()


def test_v_prediction_inversion_uses_v_arithmetic():
    """Guard: the split of a v-prediction output gives the clean latent and noise that
    produced it."""
    from clp2p.engine.inversion import _split

    torch.manual_seed(0)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    alpha = torch.tensor(0.3)
    z = alpha.sqrt() * x0 + (1 - alpha).sqrt() * eps
    v = alpha.sqrt() * eps - (1 - alpha).sqrt() * x0
    got_x0, got_eps = _split(v, z, alpha, "v_prediction")
    torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=1e-5)


def test_recorded_source_of_an_inverted_root_is_used_from_the_cache(engine, picture):
    inversion = invert(engine, picture, PROMPT, SETTINGS, "direct").inversion
    keep = Recording(keep=KEEP_ALL)
    root = engine.render([Branch(PROMPT)], SETTINGS, inversion=inversion, recording=keep)
    child = engine.render(
        [Branch(TARGET, RECORDED, preset("cl-p2p"))],
        SETTINGS,
        inversion=inversion,
        recording=Recording(source=root.records[0]),
    )
    both = engine.render(
        [Branch(PROMPT), Branch(TARGET, 0, preset("cl-p2p"))], SETTINGS, inversion=inversion
    )
    np.testing.assert_array_equal(child.latents[0], both.latents[1])


def test_imported_sessions_keep_the_settings_their_inversion_needs(engine, picture):
    from dataclasses import replace

    session, _ = import_image(engine, picture, PROMPT, SETTINGS, "null-text", inner_steps=1)
    assert session.imported.inversion.guidance == SETTINGS.guidance
    kept = session.with_settings(replace(SETTINGS, seed=5, width=None, height=None))
    assert kept.settings.width == 32 and kept.settings.seed == 5
    for change, message in (
        ({"steps": 4}, "inverted with 6 steps"),
        ({"guidance": 5.0}, "optimised for guidance 3"),
        ({"width": 64, "height": 64}, "at this size"),
    ):
        with pytest.raises(Clp2pError, match=message):
            session.with_settings(replace(SETTINGS, **change))
    with pytest.raises(Clp2pError, match="raise guidance above 1"):
        invert(engine, picture, PROMPT, replace(SETTINGS, guidance=1.0), "null-text")


def test_inversion_arrays_are_validated():
    latents = np.zeros((5, 4, 8, 8), np.float32)
    with pytest.raises(Clp2pError, match="only they, carry embeddings"):
        Inversion("null-text", PROMPT, latents)
    with pytest.raises(Clp2pError, match="only they, carry embeddings"):
        Inversion("direct", PROMPT, latents, np.zeros((4, 7, 32), np.float32))
    with pytest.raises(Clp2pError, match="not \\(steps, tokens, width\\)"):
        Inversion("null-text", PROMPT, latents, np.zeros(4, np.float32))
    with pytest.raises(Clp2pError, match="not \\(steps \\+ 1, C, h, w\\)"):
        Inversion("direct", PROMPT, np.zeros((5, 4), np.float32))


def test_inversion_data_must_live_beside_the_session(engine, picture, tmp_path):
    session, images = import_image(engine, picture, PROMPT, SETTINGS, "direct")
    path = tmp_path / "s.json"
    session_io.save(session, path, images)
    data = json.loads(path.read_text())
    for ref in ("/etc/passwd", "../s.images/" + "0" * 64 + ".npz", "/dev/zero"):
        data["inversion"]["data"] = ref
        with pytest.raises(Clp2pError, match="beside the session file"):
            session_io.parse(json.dumps(data), tmp_path)


def test_import_reports_progress_through_the_reconstruction(engine, picture):
    seen = []
    import_image(
        engine, picture, PROMPT, SETTINGS, "direct", on_step=lambda d, t: seen.append((d, t))
    )
    totals = {t for _, t in seen}
    assert totals == {2 * SETTINGS.steps} and seen[-1] == (2 * SETTINGS.steps, 2 * SETTINGS.steps)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


SHAPES = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"


@pytest.mark.skipif(not (SHAPES / "model_index.json").is_file(), reason="no shapes model")
def test_shapes_pictures_invert_and_take_a_cl_p2p_colour_swap():
    """Exact renders of shapes-world scenes (no model made them): the direct inversion
    rebuilds them at the VAE's ceiling and a cl-p2p colour swap hits the target colour
    while keeping the picture's silhouette (mask IoU 0.85 on average)."""
    from clp2p.bench.inversion import _pictures
    from clp2p.engine.engine import Engine
    from clp2p.shapes.check import CheckConfig
    from clp2p.shapes.scoring import score_edit

    engine = Engine.load(str(SHAPES), "cpu", "fp32")
    settings = engine.resolve_settings(
        RenderSettings(steps=CheckConfig.steps, guidance=CheckConfig.guidance)
    )
    edit = preset("cl-p2p").with_(kind="swap")
    ious = []
    for pair, picture in _pictures(3, settings.width):
        inversion = invert(engine, picture, pair.source_prompt, settings, "direct").inversion
        result = engine.render(
            [Branch(pair.source_prompt), Branch(pair.target_prompt, 0, edit)],
            settings,
            inversion=inversion,
        )
        rebuilt, edited = result.images
        assert np.array_equal(rebuilt, engine.decode(engine.encode_image(picture))[0])
        score = score_edit(pair, picture, edited)
        assert score["success"], (pair.label(), score["read"])
        ious.append(score["iou"])
    assert min(ious) >= 0.8 and np.mean(ious) >= 0.85, ious
