"""Local blend's two switches, each off by default as prompt-to-prompt: ``blend_pixels``
(session version 6) keeps the source's pixels outside the mask, ``blend_norm`` (version 8)
decodes the edit with its source's decoder statistics. Each is refused in one line when it is
not a bool, written to the session file only when set (an older file has none, which means
off), set and cleared by the CLI, and shown and read by the studio's panel; an edit of an edit
that has one renders from its parent's cached record as it does cold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.params import EditParams
from clp2p.model.presets import preset
from clp2p.model.session import SCHEMA_VERSION, Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.session_render import SessionRenderer, apply

SHAPES = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"
TWO = "a red circle and a orange square on a gray background"

SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
# field, its label in messages, the session version that added it
SWITCHES = [("blend_pixels", "blend pixels", 6), ("blend_norm", "blend norm", 8)]


@pytest.mark.parametrize("field, label, version", SWITCHES)
@pytest.mark.parametrize("bad", ["yes", 1, None, 0.0])
def test_a_switch_that_is_not_a_bool_is_one_line(field, label, version, bad):
    with pytest.raises(Clp2pError) as err:
        EditParams(k=0.3, **{field: bad})
    message = str(err.value)
    assert label in message and "true or false" in message and "\n" not in message


@pytest.mark.parametrize("field, label, version", SWITCHES)
def test_the_file_holds_the_switch_only_when_set_and_an_older_file_has_none(
    tmp_path, field, label, version
):
    session = Session.new(SRC, RenderSettings(steps=4), "shapes")
    session, plain = session.add_edit("n1", TGT, preset("p2p").with_(k=0.3))
    session, on = session.add_edit("n1", TGT, preset("p2p").with_(k=0.3, **{field: True}))
    path = tmp_path / "s.json"
    session_io.save(session, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION >= version
    params = {n["id"]: n["params"] for n in data["nodes"] if n["params"]}
    assert field not in params[plain] and params[on][field] is True
    assert getattr(session_io.load(path)[0].node(on).params, field) is True
    del data["nodes"][2]["params"][field]
    data["schema_version"] = version - 1  # written before the switch: off
    path.write_text(json.dumps(data))
    assert getattr(session_io.load(path)[0].node(on).params, field) is False


@pytest.mark.parametrize("field, label, version", SWITCHES)
def test_a_file_whose_switch_is_not_a_bool_is_refused_in_one_line(tmp_path, field, label, version):
    session = Session.new(SRC, RenderSettings(steps=4), "shapes")
    session, _ = session.add_edit("n1", TGT, preset("p2p").with_(k=0.3, **{field: True}))
    path = tmp_path / "s.json"
    session_io.save(session, path)
    data = json.loads(path.read_text())
    data["nodes"][1]["params"][field] = "yes"
    path.write_text(json.dumps(data))
    with pytest.raises(Clp2pError) as err:
        session_io.load(path)
    assert field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("field, label, version", SWITCHES)
def test_cli_sets_and_clears_the_switch(tmp_path, field, label, version):
    path = tmp_path / "s.json"
    flag = "--" + field.replace("_", "-")
    assert main(["session", "new", str(path), "--prompt", SRC, "--steps", "3"]) == 0
    add = ["session", "add", str(path), "--parent", "n1", "--target", TGT, "--k", "0.3"]
    assert main([*add, flag]) == 0
    assert main([*add, "--no-" + flag[2:]]) == 0
    nodes = session_io.load(path)[0].nodes
    assert [getattr(n.params, field) for n in nodes[1:]] == [True, False]


@pytest.mark.parametrize("field, label, version", SWITCHES)
def test_studio_panel_shows_and_reads_the_switch(qtbot, field, label, version):
    from clp2p_studio.params_panel import ParamsPanel

    panel = ParamsPanel()
    qtbot.addWidget(panel)
    box = getattr(panel, field)
    panel._apply_params(preset("p2p").with_(k=0.3, **{field: True}))
    assert box.isChecked() and getattr(panel.params(), field) is True
    assert "prompt-to-prompt" in box.toolTip()
    panel._apply_params(preset("cl-p2p"))
    assert getattr(panel.params(), field) is False


@pytest.fixture(scope="module")
def shapes_engine():
    from clp2p.engine.engine import Engine

    return Engine.load(str(SHAPES), "cpu", "fp32")


@pytest.mark.parametrize("field, label, version", SWITCHES)
def test_a_child_renders_from_the_cache_like_a_cold_render(shapes_engine, field, label, version):
    s = Session.new(TWO, shapes_engine.card.settings(seed=30009, steps=10), "shapes")
    blend = preset("cl-p2p").with_(k=0.3, **{field: True})
    s, n2 = s.add_edit("n1", TWO.replace("orange", "blue"), blend)
    s, n3 = s.add_edit(n2, TWO.replace("orange", "blue").replace("red", "green"), blend)
    renderer = SessionRenderer(shapes_engine)
    for node_id in ("n1", n2, n3):
        r = renderer.render(s, node_id)
        s = apply(s, r)
        assert r.computed == 1  # each from its parent's record (its picture, its latents)
    cold = SessionRenderer(shapes_engine).render(s, n3, use_cache=False)
    assert cold.computed == 3 and np.array_equal(r.image, cold.image)
    s2, n4 = s.add_edit(n2, s.node(n3).prompt, blend.with_(**{field: False}))
    plain = SessionRenderer(shapes_engine).render(s2, n4, use_cache=False)
    assert np.array_equal(plain.latents, cold.latents)  # the same latents, other pixels
    assert not np.array_equal(plain.image, cold.image)
