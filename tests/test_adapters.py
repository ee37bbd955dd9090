"""LoRA weights and textual-inversion embeddings from local files: loaded through diffusers'
loaders, their words edited like any other, named in sessions by path and content hash, and
refused in one line when missing, changed, damaged or made for another model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clp2p.cli.main import main
from clp2p.engine.engine import Engine
from clp2p.errors import Clp2pError
from clp2p.model.params import CrossWindow, StepWindow
from clp2p.model.presets import preset
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.adapters import adapters_from

SETTINGS = RenderSettings(seed=4, steps=3, guidance=5.0, width=32, height=32)
SRC = "a red circle on a white background"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A LoRA for the tiny model's UNet and two embeddings (one and two vectors)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from tiny import tiny_pipeline

    folder = tmp_path_factory.mktemp("adapters")
    unet = tiny_pipeline(seed=1).unet
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=layers)
    lora = folder / "style.safetensors"
    (folder / "pytorch_lora_weights.safetensors").rename(lora)
    torch.manual_seed(0)
    one, two = folder / "shape.safetensors", folder / "duo.safetensors"
    save_file({"emb_params": torch.randn(1, 32)}, str(one))
    save_file({"emb_params": torch.randn(2, 32)}, str(two))
    return {"lora": lora, "one": one, "two": two, "folder": folder}


def _engine(model_dir, loras=(), embeddings=()) -> Engine:
    adapters = adapters_from(list(loras), list(embeddings))
    return Engine.load(str(model_dir), "cpu", "fp32", adapters=adapters)


def test_a_lora_changes_the_picture_and_its_scale_counts(tiny_model_dir, files):
    base = _engine(tiny_model_dir).generate(SRC, SETTINGS).images[0]
    styled = _engine(tiny_model_dir, [f"{files['lora']}:1.5"]).generate(SRC, SETTINGS).images[0]
    off = _engine(tiny_model_dir, [f"{files['lora']}:0"]).generate(SRC, SETTINGS).images[0]
    assert not np.array_equal(base, styled)
    assert np.array_equal(base, off)


@pytest.mark.parametrize("which, vectors", [("one", 1), ("two", 2)])
def test_an_embedding_token_is_a_word_to_swap_and_reweight(tiny_model_dir, files, which, vectors):
    engine = _engine(tiny_model_dir, embeddings=[f"{files[which]}:<thing>"])
    prompt = "a red <thing> on a white background"
    tokens = engine.tokens(prompt)
    assert len(tokens.spans[2]) == vectors  # the token spans all of its vectors
    swapped = engine.edit(prompt, [(SRC, preset("p2p").with_(kind="swap"))], SETTINGS)
    assert not np.array_equal(swapped.images[0], swapped.images[1])
    weighted = preset("cl-p2p").with_(
        kind="reweight", reweight=(("<thing>", 8.0),), cross=CrossWindow(StepWindow(0, 1))
    )
    result = engine.edit(prompt, [(prompt, weighted)], SETTINGS)
    assert not np.array_equal(result.images[0], result.images[1])
    assert result.attention.word_map(0, "<thing>").shape[:2] in result.attention.grids


def test_sessions_name_the_files_and_refuse_missing_or_changed_ones(tmp_path, files, capsys):
    import shutil

    lora = tmp_path / "mine.safetensors"
    shutil.copy(files["lora"], lora)
    model = str(session_model(tmp_path))
    path = tmp_path / "s.json"
    new = ["session", "new", str(path), "--prompt", "a red <shape> on a white background"]
    args = [*new, "--model", model, "--steps", "3", "--width", "32", "--height", "32"]
    assert main([*args, "--lora", f"{lora}:0.5", "--embedding", str(files["one"])]) == 0
    session = session_io.load(path)[0]
    kinds = [(a.kind, a.scale, a.token) for a in session.adapters]
    assert kinds == [("lora", 0.5, ""), ("embedding", 1.0, "<shape>")]
    stored = json.loads(path.read_text())["adapters"]
    assert stored[0]["path"] == str(lora) and len(stored[0]["sha256"]) == 64
    assert main(["session", "render", str(path)]) == 0
    capsys.readouterr()
    lora.write_bytes(lora.read_bytes() + b" ")  # another file under the same name
    assert main(["session", "render", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not the file the session was made with" in err and err.count("\n") == 1
    lora.unlink()
    assert main(["session", "render", str(path)]) == 2
    err = capsys.readouterr().err
    assert "which is missing" in err and str(lora) in err and err.count("\n") == 1


def session_model(tmp_path):
    from tiny import save_tiny

    return save_tiny(tmp_path / "model")


@pytest.mark.parametrize(
    "make, spec, message",
    [
        (lambda f: f.write_bytes(b"not weights"), "{f}", "not readable"),
        (
            lambda f: save_file({"x.lora_A.weight": torch.zeros(2, 2)}, str(f)),
            "{f}",
            "does not fit",
        ),
        (lambda f: f.write_bytes(b"x"), "{f}:strong", "scale 'strong'"),
        (lambda f: None, "{f}.txt", "give a .safetensors"),
        (lambda f: None, "{f}", "cannot read it"),
    ],
)
def test_bad_lora_files_are_refused_in_one_line(tmp_path, tiny_model_dir, make, spec, message):
    f = tmp_path / "bad.safetensors"
    make(f)
    with pytest.raises(Clp2pError, match=message) as err:
        _engine(tiny_model_dir, [spec.format(f=f)])
    assert "\n" not in str(err.value)


def test_an_embedding_of_the_wrong_width_is_refused(tmp_path, tiny_model_dir):
    f = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.zeros(1, 768)}, str(f))
    with pytest.raises(Clp2pError, match="does not fit this model"):
        _engine(tiny_model_dir, embeddings=[str(f)])


def test_the_studio_refuses_a_session_made_with_other_adapters(tiny_model_dir, files):
    from clp2p.model.session import Session
    from clp2p.workflows.service import check_adapters

    engine = _engine(tiny_model_dir, [str(files["lora"])])
    plain = Session.new(SRC, SETTINGS, str(tiny_model_dir))
    with pytest.raises(Clp2pError, match="made with the LoRAs and embeddings: none"):
        check_adapters(plain, engine)
    check_adapters(Session.new(SRC, SETTINGS, "m", engine.adapters), engine)


def test_model_dialog_keeps_the_adapter_lines(qtbot):
    from clp2p.workflows.service import ModelSpec
    from clp2p_studio.model_dialog import ModelDialog

    spec = ModelSpec(loras=("/a/style.safetensors:0.7",), embeddings=("/a/e.pt:<cat>",))
    dialog = ModelDialog(spec)
    qtbot.addWidget(dialog)
    out = dialog.spec()
    assert (out.loras, out.embeddings) == (spec.loras, spec.embeddings)
    assert not out.same_model(ModelSpec())
