"""Which weights rendered each picture of a session (schema version 7): kept on the node,
named when the loaded model's weights are others, in the CLI and in the studio."""

from __future__ import annotations

import json

import pytest

from clp2p.cli.main import main
from clp2p.engine.fingerprint import weights_fingerprint
from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.presets import preset
from clp2p.model.session import (
    Session,
    other_weights,
    other_weights_message,
    weights_tag,
)
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.session_render import SessionRenderer, apply
from clp2p_studio.tree import OTHER_WEIGHTS

A = "a red circle on a white background"
B = "a blue circle on a white background"
SETTINGS = RenderSettings(seed=3, steps=2, guidance=7.5, width=32, height=32)
OLD, NEW = "a" * limits.WEIGHTS_CHARS, "b" * limits.WEIGHTS_CHARS


def test_a_render_keeps_the_weights_that_made_it_and_the_file_keeps_them(tiny_engine, tmp_path):
    session = Session.new(A, SETTINGS, "tiny")
    session, n2 = session.add_edit("n1", B, preset("p2p"))
    renderer = SessionRenderer(tiny_engine)
    render = renderer.render(session, n2)
    tag = weights_tag(weights_fingerprint(tiny_engine.pipe))
    assert render.weights == tag and len(tag) == limits.WEIGHTS_CHARS
    session = apply(session, render)
    assert session.node(n2).weights == tag and session.node("n1").weights == ""
    path = tmp_path / "s.json"
    session_io.save(session, path, {render.hash: render.image})
    nodes = json.loads(path.read_text())["nodes"]
    assert nodes[1]["weights"] == tag and "weights" not in nodes[0]  # none: unknown
    assert session_io.load(path)[0].nodes == session.nodes


def test_a_version_6_file_loads_with_its_weights_unknown():
    session = Session.new(A, SETTINGS, "tiny").update("n1", status="rendered", image="0" * 64)
    data = session_io.to_json(session)
    data["schema_version"] = 6
    loaded = session_io.from_json(data)
    assert loaded.node("n1").weights == ""
    assert other_weights(loaded, NEW) == [] and other_weights_message(loaded, NEW) == ""


@pytest.mark.parametrize("bad", ["XYZ", "A" * 16, "a" * 15, "a" * 64, 7, None])
def test_a_bad_weights_field_is_one_line(bad):
    data = session_io.to_json(Session.new(A, SETTINGS, "tiny"))
    data["nodes"][0]["weights"] = bad
    with pytest.raises(Clp2pError) as err:
        session_io.from_json(data)
    assert str(err.value).startswith("$.nodes[0].weights: ") and "\n" not in str(err.value)


def test_a_node_refuses_weights_that_are_not_a_tag():
    with pytest.raises(Clp2pError, match="16 lowercase hex digits"):
        Session.new(A, SETTINGS, "tiny").update("n1", weights="not hex")


def test_pictures_made_with_other_weights_are_named_in_one_line():
    s = Session.new(A, SETTINGS, "shapes")
    s, n2 = s.add_edit("n1", B, preset("p2p"))
    s, n3 = s.add_edit("n1", B, preset("cl-p2p"))
    s = s.update("n1", status="rendered", image="1" * 64, weights=OLD)
    s = s.update(n2, status="rendered", image="2" * 64, weights=NEW)
    s = s.update(n3, status="rendered", image="3" * 64)  # rendered before weights were kept
    assert other_weights(s, NEW) == ["n1"] and other_weights(s, OLD) == [n2]
    message = other_weights_message(s, NEW)
    assert message.startswith("n1: rendered with other weights of 'shapes' (aaaa")
    assert f"loaded: {NEW}" in message and "\n" not in message
    assert other_weights(s, "") == []  # no model loaded: nothing to compare


def test_the_cli_says_which_weights_made_a_differing_picture(tiny_model_dir, tmp_path, capsys):
    from tiny import tiny_pipeline

    other = tmp_path / "other-tiny"
    tiny_pipeline(seed=1).save_pretrained(str(other))  # same model, other weights
    f = str(tmp_path / "s.json")
    common = ["--steps", "2", "--width", "32", "--height", "32"]
    assert main(["session", "new", f, "--prompt", A, "--model", str(tiny_model_dir), *common]) == 0
    assert main(["session", "render", f]) == 0
    made = session_io.load(f)[0].node("n1").weights
    capsys.readouterr()
    assert main(["session", "show", f]) == 0
    assert f"rendered weights {made}" in capsys.readouterr().out
    assert main(["session", "render", f, "--model", str(other)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"n1: rendered with other weights of '{tiny_model_dir}' ({made}; ")
    assert out[1].startswith(f"n1: DIFFERS (rendered with weights {made})")
    assert session_io.load(f)[0].node("n1").weights == made  # the stored picture stays


def _labels(window) -> list[str]:
    root = window.tree.tree_model.item(0)
    return [root.text()] + [root.child(i).text() for i in range(root.rowCount())]


def test_the_studio_marks_pictures_that_other_weights_made(window, loop, tmp_path):
    window.tree.select("n1")
    window.params.target.setText(B)
    window.params.run_button.click()
    loop.run_until_complete(window.jobs.join())
    made = window.backend.weights
    assert [n.weights for n in window.doc.session.nodes] == [made, made]
    path = str(tmp_path / "s.json")
    window.doc.save(path)
    assert [n.weights for n in session_io.load(path)[0].nodes] == [made, made]
    assert not any(OTHER_WEIGHTS in label for label in _labels(window))
    window.backend.weights = NEW  # the model's files were replaced by other weights
    loop.run_until_complete(window.engine_jobs.load_model())
    assert [label.split("  ")[0] for label in _labels(window)] == [
        f"n1 {OTHER_WEIGHTS}",
        f"n2 {OTHER_WEIGHTS}",
    ]
    assert window.canvas.label("right") == "n2 (swap), other weights"
    assert window.messages[-1].startswith("n1, n2: rendered with other weights")
    assert window.engine_jobs.engine_label.toolTip() == f"weights {NEW}"
    window.engine_jobs.render_node("n2")
    loop.run_until_complete(window.jobs.join())
    assert [n.weights for n in window.doc.session.nodes] == [NEW, NEW]
    assert not any(OTHER_WEIGHTS in label for label in _labels(window))
