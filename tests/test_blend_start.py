"""Local blend's start (``EditParams.blend_start``): prompt-to-prompt's reference waits 20% of
the steps before it blends, clp2p blends from the first by default. The option in the model,
the session file (version 5; older files keep blending from the first step), the CLI and the
studio."""

from __future__ import annotations

import json

import pytest

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.params import EditParams
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_a_start_outside_zero_to_one_is_one_line(bad):
    with pytest.raises(Clp2pError) as err:
        EditParams(k=0.3, blend_start=bad)
    message = str(err.value)
    assert "blend start" in message and "[0, 1)" in message and "\n" not in message


def test_the_file_holds_a_start_only_when_there_is_one_and_a_version_4_file_has_none(tmp_path):
    session = Session.new(SRC, RenderSettings(steps=4), "shapes")
    session, plain = session.add_edit("n1", TGT, preset("p2p"))
    session, late = session.add_edit("n1", TGT, preset("p2p").with_(blend_start=0.2))
    path = tmp_path / "s.json"
    session_io.save(session, path)
    data = json.loads(path.read_text())
    params = {n["id"]: n["params"] for n in data["nodes"] if n["params"]}
    assert "blend_start" not in params[plain] and params[late]["blend_start"] == 0.2
    loaded = session_io.load(path)[0]
    assert loaded.node(late).params.blend_start == 0.2
    assert loaded.node(plain).params == session.node(plain).params
    del data["nodes"][2]["params"]["blend_start"]
    data["schema_version"] = 4  # written before the option: blends from the first step
    path.write_text(json.dumps(data))
    assert session_io.load(path)[0].node(late).params.blend_start == 0.0


def test_cli_sets_the_start_and_names_its_flag_when_it_is_bad(tmp_path, capsys):
    path = tmp_path / "s.json"
    assert main(["session", "new", str(path), "--prompt", SRC, "--steps", "3"]) == 0
    add = ["session", "add", str(path), "--parent", "n1", "--target", TGT, "--k", "0.3"]
    assert main([*add, "--blend-start", "0.2"]) == 0
    assert session_io.load(path)[0].nodes[1].params.blend_start == 0.2
    capsys.readouterr()
    assert main([*add, "--blend-start", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--blend-start" in err and "\n" not in err
    assert len(session_io.load(path)[0].nodes) == 2  # nothing was added


def test_studio_panel_shows_and_reads_the_start(qtbot):
    from clp2p_studio.params_panel import ParamsPanel

    panel = ParamsPanel()
    qtbot.addWidget(panel)
    panel._apply_params(preset("p2p").with_(blend_start=0.2))
    assert panel.blend_start.value() == pytest.approx(0.2)
    assert panel.params().blend_start == pytest.approx(0.2)
    panel._apply_params(preset("cl-p2p"))
    assert panel.params().blend_start == 0.0
