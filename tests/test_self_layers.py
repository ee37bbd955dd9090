"""Self-attention injection by layer range (``--self-layers A:B``) and the FreePromptEditing
preset: layers are numbered in the order the UNet runs them, a range selects exactly those
layers, sessions keep it, the CLI and the studio take it, and the presets take their SDXL form
for SDXL models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clp2p.attention.grids import self_layer_numbers
from clp2p.attention.processor import controlled_attention
from clp2p.cli.main import main
from clp2p.engine.families import is_xl
from clp2p.errors import Clp2pError
from clp2p.model.params import EditParams, parse_layers
from clp2p.model.presets import preset
from clp2p.model.session import SCHEMA_VERSION, Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

SRC = "a red circle on a white background"
TGT = "a blue square on a white background"
SETTINGS = RenderSettings(seed=1, steps=3, guidance=5.0, width=32, height=32)


class _Order:
    """An attention hook that notes the order the self-attention layers run in."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def self_attention(self, layer, attn, q, k, v, mask):
        self.seen.append(layer)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scale)

    def cross_attention(self, layer, attn, q, k, v, mask):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scale)


@pytest.mark.parametrize("xl", [False, True])
def test_layers_are_numbered_in_the_order_the_unet_runs_them(xl):
    from tiny import tiny_pipeline, tiny_xl_pipeline

    unet = (tiny_xl_pipeline() if xl else tiny_pipeline()).unet
    numbers = self_layer_numbers(unet.attn_processors)
    hook = _Order()
    cond = 64 if xl else 32
    added = {"text_embeds": torch.zeros(1, 32), "time_ids": torch.zeros(1, 6)} if xl else None
    with torch.no_grad(), controlled_attention(unet, hook):
        unet(torch.zeros(1, 4, 16, 16), 1, torch.zeros(1, 77, cond), added_cond_kwargs=added)
    assert [numbers[name] for name in hook.seen] == list(range(1, len(numbers) + 1))
    # attn_processors lists the up blocks before the middle block: not the running order
    assert list(numbers) != [n for n in unet.attn_processors if ".attn1." in n]


def test_a_range_selects_exactly_its_layers(tiny_engine):
    n = len(tiny_engine.self_layers)
    base = preset("cl-p2p").with_(kind="swap", self_res=None, self_window=_all())
    every = tiny_engine.edit(SRC, [(TGT, base)], SETTINGS).images[1]
    whole = tiny_engine.edit(SRC, [(TGT, base.with_(self_layers=(1, n)))], SETTINGS).images[1]
    assert np.array_equal(every, whole)
    none = base.with_(self_window=_none())
    plain = tiny_engine.edit(SRC, [(TGT, none)], SETTINGS).images[1]
    some = tiny_engine.edit(SRC, [(TGT, base.with_(self_layers=(2, 3)))], SETTINGS).images[1]
    assert not np.array_equal(some, every) and not np.array_equal(some, plain)
    with pytest.raises(Clp2pError, match=f"selects no layer: the model has {n}"):
        tiny_engine.edit(SRC, [(TGT, base.with_(self_layers=(n + 1, n + 5)))], SETTINGS)


def _all():
    from clp2p.model.params import StepWindow

    return StepWindow(0.0, 1.0)


def _none():
    from clp2p.model.params import StepWindow

    return StepWindow(0.0, 0.0)


def test_fpe_preset_and_its_sdxl_form(tiny_engine):
    fpe = preset("fpe")
    assert fpe.self_layers == (4, 14) and fpe.self_res is None and fpe.cross.default.empty
    assert fpe.self_window.start == 0 and fpe.self_window.end == 1 and fpe.k == 0
    xl = preset("fpe", xl=True)
    assert xl.self_layers is None and xl.self_res == 32
    assert preset("p2p", xl=True).self_res == 32 and preset("p2p").self_res == 16
    result = tiny_engine.edit(SRC, [(TGT, fpe.with_(kind="swap"))], SETTINGS)
    assert not np.array_equal(result.images[0], result.images[1])


@pytest.mark.parametrize("text", ["5", "a:b", "0:3", "4:2", "1:2000", "4:14:1", ""])
def test_bad_layer_ranges_are_refused_in_one_line(text):
    with pytest.raises(Clp2pError, match="self layers") as err:
        parse_layers(text)
    assert "\n" not in str(err.value)


def test_sessions_keep_the_range_and_older_files_migrate(tmp_path):
    session = Session.new(SRC, SETTINGS, "shapes")
    session, node = session.add_edit("n1", TGT, preset("fpe"))
    path = tmp_path / "s.json"
    session_io.save(session, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION >= 4
    assert data["nodes"][1]["params"]["self_layers"] == "4:14"
    assert session_io.load(path)[0].node(node).params.self_layers == (4, 14)
    # a version-3 file (no self_layers anywhere) loads, its edits on every layer
    session, _ = Session.new(SRC, SETTINGS, "shapes").add_edit("n1", TGT, EditParams())
    session_io.save(session, path)
    data = json.loads(path.read_text())
    data["schema_version"] = 3
    path.write_text(json.dumps(data))
    assert session_io.load(path)[0].node("n2").params.self_layers is None
    data["nodes"][1]["params"]["self_layers"] = "9999:9999"  # the schema admits, the model not
    data["schema_version"] = 4
    path.write_text(json.dumps(data))
    with pytest.raises(Clp2pError, match="self layers"):
        session_io.load(path)


def test_cli_takes_the_range_and_refuses_a_bad_one(tmp_path, capsys):
    path = tmp_path / "s.json"
    assert main(["session", "new", str(path), "--prompt", SRC, "--steps", "3"]) == 0
    add = ["session", "add", str(path), "--parent", "n1", "--target", TGT]
    assert main([*add, "--preset", "fpe"]) == 0
    assert main([*add, "--self-layers", "2:5"]) == 0
    nodes = session_io.load(path)[0].nodes
    assert [n.params.self_layers for n in nodes[1:]] == [(4, 14), (2, 5)]
    capsys.readouterr()
    before = path.read_bytes()
    assert main([*add, "--self-layers", "7"]) == 2
    err = capsys.readouterr().err
    assert "--self-layers '7'" in err and err.count("\n") == 1
    assert path.read_bytes() == before


def test_sdxl_models_are_told_from_their_files(tmp_path, tiny_model_dir):
    from safetensors.torch import save_file

    from clp2p.engine.families import XL_KEY
    from tiny import save_tiny_xl

    assert is_xl(str(save_tiny_xl(tmp_path / "xl")))
    assert not is_xl(str(tiny_model_dir)) and not is_xl("shapes") and not is_xl(None)
    single = tmp_path / "xl.safetensors"
    save_file({XL_KEY: torch.zeros(2)}, str(single))
    assert is_xl(str(single))
    assert not is_xl(str(tmp_path / "missing")) and not is_xl("someone/not-cached")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model_index.json").write_text("{not json")
    assert not is_xl(str(tmp_path / "bad"))


def test_studio_panel_shows_and_reads_the_range(qtbot):
    from clp2p_studio.params_panel import ParamsPanel

    panel = ParamsPanel()
    qtbot.addWidget(panel)
    panel._apply_params(preset("fpe"))
    assert panel.self_layers.text() == "4:14"
    assert panel.params().self_layers == (4, 14)
    panel.self_layers.setText("all")
    assert panel.params().self_layers is None
    panel.self_layers.setText("3")
    with pytest.raises(Clp2pError, match="self layers"):
        panel.params()
