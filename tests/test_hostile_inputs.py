"""Hostile session files and folders: nothing outside a session's folder is read or written,
nothing is decoded before its size is known, and every refusal is one line."""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.session import Session, image_hash
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

PROMPT = "a red circle on a white background"


def _saved(tmp_path, size: int = 64):
    """A one-node session with a rendered root image saved beside it."""
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    key = image_hash(image)
    session = Session.new(PROMPT, RenderSettings(steps=4, width=size, height=size), "shapes")
    session = session.update("n1", status="rendered", image=key)
    path = tmp_path / "s.json"
    session_io.save(session, path, {key: image})
    return path, key, image


def _set_ref(path, key: str, ref: str) -> None:
    doc = json.loads(path.read_text())
    doc["images"][key] = ref
    path.write_text(json.dumps(doc))


def test_an_image_ref_outside_the_folder_is_never_read(tmp_path):
    path, key, image = _saved(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(image).save(outside / f"{key}.png")
    for ref in (
        str(outside / f"{key}.png"),  # absolute
        f"../elsewhere/{key}.png",
        f"s.images/../elsewhere/{key}.png",
        f"elsewhere/{key}.png",  # not a .images folder
    ):
        _set_ref(path, key, ref)
        _, images = session_io.load(path)
        assert key not in images, ref


def test_a_link_out_of_the_images_folder_is_not_followed(tmp_path):
    path, key, image = _saved(tmp_path)
    secret = tmp_path / "secret.png"
    Image.fromarray(image).save(secret)
    target = tmp_path / "s.images" / f"{key}.png"
    target.unlink()
    target.symlink_to(secret)
    _, images = session_io.load(path)
    assert key not in images


def test_exporting_never_copies_a_file_from_outside(tmp_path):
    path, key, image = _saved(tmp_path)
    outside = tmp_path / "x.images"
    outside.mkdir()
    Image.fromarray(image).save(outside / f"{key}.png")
    (tmp_path / "s.images" / f"{key}.png").unlink()
    _set_ref(path, key, f"../x.images/{key}.png")
    assert main(["session", "export", str(path), "--out", str(tmp_path / "out" / "e.json")]) == 0
    assert not (tmp_path / "out" / "e.images").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_the_images_folder_does_not_hang_the_load(tmp_path):
    path, key, _ = _saved(tmp_path)
    target = tmp_path / "s.images" / f"{key}.png"
    target.unlink()
    os.mkfifo(target)
    _, images = session_io.load(path)  # returns: a FIFO is not a regular file
    assert key not in images


def test_a_picture_larger_than_the_session_is_not_decoded(tmp_path):
    path, key, _ = _saved(tmp_path)
    big = tmp_path / "s.images" / f"{key}.png"
    Image.new("RGB", (12000, 12000)).save(big)  # 144 Mpx, a small file
    assert big.stat().st_size < 1_000_000
    _, images = session_io.load(path)
    assert key not in images


def test_a_planted_link_at_an_image_target_is_replaced_not_followed(tmp_path):
    path, key, image = _saved(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "s.images" / f"{key}.png"
    target.unlink()
    target.symlink_to(victim)
    session, images = session_io.load(path)
    session_io.save(session, path, {key: image})
    assert victim.read_text() == "keep me"
    assert not target.is_symlink()
    assert key in session_io.load(path)[1]


def test_a_damaged_image_file_is_written_again(tmp_path):
    path, key, image = _saved(tmp_path)
    target = tmp_path / "s.images" / f"{key}.png"
    target.write_bytes(b"")  # emptied
    session, _ = session_io.load(path)
    session_io.save(session, path, {key: image})
    assert key in session_io.load(path)[1]


def test_saving_keeps_the_files_mode_and_leaves_no_temporary_files(tmp_path):
    path, key, image = _saved(tmp_path)
    os.chmod(path, 0o640)
    session, images = session_io.load(path)
    session_io.save(session, path, images)
    assert path.stat().st_mode & 0o777 == 0o640
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def _zip_bomb(member_size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("latents.npy", b"\0" * member_size)
    return buf.getvalue()


def test_inversion_arrays_are_size_checked_before_they_are_inflated(tmp_path):
    path, key, image = _saved(tmp_path)
    doc = json.loads(path.read_text())
    bomb = _zip_bomb(400 * 2**20)  # 400 MiB of zeros, a small file
    name = "0" * 64
    (tmp_path / "s.images" / f"{name}.npz").write_bytes(bomb)
    doc["inversion"] = {
        "method": "direct",
        "input": key,
        "data": f"s.images/{name}.npz",
        "data_hash": name,
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(Clp2pError, match="larger than this session's pictures can have"):
        session_io.load(path)


def test_cli_file_errors_are_one_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "s.json"
    os.chmod(folder, 0o500)
    try:
        code = main(["session", "new", str(target), "--prompt", PROMPT])
    finally:
        os.chmod(folder, 0o700)
    err = capsys.readouterr().err
    if os.geteuid() == 0:  # root writes anyway
        assert code == 0
        return
    assert code == 2 and err.startswith("clp2p: error: cannot use") and err.count("\n") == 1


def test_a_failing_node_loses_no_other_render(tmp_path, capsys):
    path = str(tmp_path / "s.json")
    assert main(["session", "new", path, "--prompt", PROMPT, "--steps", "3"]) == 0
    blue, green = "a blue circle on a white background", "a green circle on a white background"
    # valid as a node, refused at render time: 'dog' is not a word of the target
    assert (
        main(["session", "add", path, "--parent", "n1", "--target", blue, "--cross=0.2,dog=0.5"])
        == 0
    )
    assert main(["session", "add", path, "--parent", "n1", "--target", green]) == 0
    capsys.readouterr()
    assert main(["session", "render", path]) == 2
    out = capsys.readouterr().out
    assert "n2: FAILED cross-attention word 'dog' is not in the prompt" in out
    assert "1 node(s) failed: n2; the others are saved" in out
    session, images = session_io.load(path)
    assert [n.status for n in session.nodes] == ["rendered", "new", "rendered"]
    assert all(session.node(n).image in images for n in ("n1", "n3"))


@pytest.mark.parametrize(
    "record",
    [
        {"format": "clp2p-edit"},  # no fields
        {"format": "clp2p-edit", "source": "a", "model": "shapes", "settings": [], "targets": []},
        {
            "format": "clp2p-edit",
            "source": "a red circle",
            "model": "shapes",
            "settings": {"seed": 0, "steps": 4, "guidance": 4, "width": None, "height": None},
            "targets": [{"prompt": "a blue circle", "params": {"k": "high"}}],
        },
    ],
)
def test_damaged_edit_records_are_one_line(tmp_path, capsys, record):
    path = tmp_path / "edit.json"
    path.write_text(json.dumps(record))
    assert main(["edit", "--from", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clp2p: error: --from '{path}'") and err.count("\n") == 1


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_damaged_checkpoints_are_one_line(tmp_path, capsys, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not a checkpoint" * 100)
    code = main(
        ["generate", "--model", str(path), "--prompt", "a", "--out", str(tmp_path / "a.png")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "is not a readable SD checkpoint" in err and err.count("\n") == 1


def test_a_chain_thousands_deep_shows(tmp_path, capsys):
    session = Session.new(PROMPT, RenderSettings(steps=4), "shapes")
    from clp2p.model.presets import preset

    parent = "n1"
    for i in range(1500):
        colour = "blue" if i % 2 == 0 else "red"
        session, parent = session.add_edit(
            parent, f"a {colour} circle on a white background", preset("cl-p2p")
        )
    path = tmp_path / "deep.json"
    session_io.save(session, path)
    assert main(["session", "show", str(path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1502


def test_the_token_limit_follows_the_text_encoder(tiny_engine):
    """A hand-assembled folder whose tokenizer claims no limit (10**30) still renders: the
    limit is what the text encoder's position embeddings take."""
    tokenizer = tiny_engine.pipe.tokenizer
    saved = tokenizer.model_max_length
    tokenizer.model_max_length = int(1e30)
    try:
        from clp2p.engine.engine import Engine

        engine = Engine(tiny_engine.pipe, _choice(tiny_engine), name="tiny")
        assert engine.max_tokens == tiny_engine.pipe.text_encoder.config.max_position_embeddings
    finally:
        tokenizer.model_max_length = saved


def _choice(engine):
    from clp2p.engine.loading import DeviceChoice

    return DeviceChoice(engine.device, engine.dtype)


# ---- outputs checked before a render -------------------------------------------------------
def _read_only_folder(tmp_path):
    """A folder this process cannot write in: a 0o500 folder, or for root (who writes there
    anyway) the read-only /proc/sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        os.chmod(folder, 0o500)
        return folder
    if os.access("/proc/sys", os.W_OK):
        pytest.skip("no folder here is read-only to root")
    return Path("/proc/sys")


@pytest.mark.parametrize("command", ["generate", "edit", "invert"])
def test_an_output_in_a_read_only_place_is_refused_before_loading(
    tmp_path, capsys, monkeypatch, command
):
    from clp2p.engine.engine import Engine

    monkeypatch.setattr(Engine, "load", classmethod(lambda *a, **k: pytest.fail("loaded")))
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64)).save(picture)
    out = {"generate": "x.png", "edit": "e", "invert": "s.json"}[command]
    argv = {
        "generate": ["generate", "--prompt", PROMPT],
        "edit": ["edit", "--source", PROMPT, "--target", "a blue circle on a white background"],
        "invert": ["invert", str(picture), "--prompt", PROMPT],
    }[command]
    folder = _read_only_folder(tmp_path)
    try:
        code = main([*argv, "--out", str(folder / "clp2p-new" / out)])
    finally:
        if folder.is_relative_to(tmp_path):
            os.chmod(folder, 0o700)
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write in '{folder}'" in err and err.count("\n") == 1, err
    assert not (folder / "clp2p-new").exists()


# ---- sizes the schema allows that no memory holds: refused before allocating -----------
REFUSAL = r"^{size} needs about [\d.]+ GiB on cpu, [\d.]+ GiB is available: choose a smaller size$"


def test_a_size_that_would_not_fit_is_refused_before_a_render_allocates(tiny_engine):
    settings = RenderSettings(steps=1, width=8192, height=8192)
    start = time.perf_counter()
    with pytest.raises(Clp2pError, match=REFUSAL.format(size="8192x8192")):
        tiny_engine.generate(PROMPT, settings)
    with pytest.raises(Clp2pError, match=REFUSAL.format(size="4096x8192")):
        tiny_engine.encode_image(np.zeros((8192, 4096, 3), np.uint8))  # where inversions start
    assert time.perf_counter() - start < 10


def test_the_estimate_follows_free_memory_batching_and_dtype(tiny_engine, monkeypatch):
    import torch

    from clp2p.engine import loading

    pipe, cpu = tiny_engine.pipe, tiny_engine.device
    need = loading.peak_bytes(pipe, cpu, tiny_engine.dtype, (32, 32))
    apart = loading.peak_bytes(pipe, cpu, tiny_engine.dtype, (32, 32), branches=3)
    together = loading.peak_bytes(pipe, cpu, tiny_engine.dtype, (32, 32), branches=3, per_pass=3)
    assert need < apart < together
    unfused = torch.device("mps")  # no fused attention: the self-attention matrix counts
    full = loading.peak_bytes(pipe, unfused, torch.float32, (512, 512))
    assert full > 2 * loading.peak_bytes(pipe, cpu, torch.float32, (512, 512))
    assert full > loading.peak_bytes(pipe, unfused, torch.bfloat16, (512, 512))
    settings = RenderSettings(steps=1, width=32, height=32)
    monkeypatch.setattr(loading, "available_memory", lambda device: need - 1)
    with pytest.raises(Clp2pError, match=REFUSAL.format(size="32x32")):
        tiny_engine.generate(PROMPT, settings)
    monkeypatch.setattr(loading, "available_memory", lambda device: need)
    assert tiny_engine.generate(PROMPT, settings).images[0].shape == (32, 32, 3)


def _meta_pipe(folder):
    """A pipeline of ``folder``'s UNet and VAE configs without weights (meta tensors)."""
    from types import SimpleNamespace

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    return SimpleNamespace(unet=unet, vae=vae)


def test_ordinary_sizes_fit_and_8192_squared_does_not():
    import torch

    from clp2p.engine.loading import attention_heads, available_memory, peak_bytes
    from clp2p.resources import resources_dir, shapes_model_dir

    sd15 = _meta_pipe(resources_dir() / "configs" / "sd15")
    assert attention_heads(sd15.unet) == {0: 8, 1: 8, 2: 8, 3: 8}
    cpu, gib = torch.device("cpu"), 2**30
    assert peak_bytes(sd15, cpu, torch.float32, (512, 512)) < gib
    assert peak_bytes(sd15, torch.device("cuda"), torch.float16, (512, 512)) < gib / 2
    assert peak_bytes(sd15, cpu, torch.float32, (8192, 8192)) > 100 * gib
    shapes = _meta_pipe(shapes_model_dir())
    assert peak_bytes(shapes, cpu, torch.float32, (64, 64)) < 10 * 2**20
    assert 0 < available_memory(cpu) < 2**50


def test_the_cli_refuses_a_size_no_memory_holds_in_one_line(tmp_path, capsys, tiny_model_dir):
    """With the shipped shapes model (generate) and through an inversion (invert)."""
    huge = ["--width", "8192", "--height", "8192", "--steps", "2"]
    out = tmp_path / "g.png"
    assert main(["generate", "--prompt", PROMPT, "--out", str(out), *huge]) == 2
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture)
    session = tmp_path / "i.json"
    model = ["--model", str(tiny_model_dir)]
    assert main(["invert", str(picture), "--prompt", PROMPT, "--out", str(session), *model, *huge])
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2
    for line in errors:
        assert re.match("clp2p: error: " + REFUSAL.format(size="8192x8192")[1:], line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
