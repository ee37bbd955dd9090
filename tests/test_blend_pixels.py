"""Local blend's pixels (``EditParams.blend_pixels``): an edit's decoded picture keeps its
source's pixels outside the blend mask, where prompt-to-prompt keeps only the source's latents.
On the shapes model a colour swap with latent blending alone moves the other object and the
background (the VAE's decoder normalises over the whole latent); with pixels they stay. The
option in the model, the session file (version 6; older files blend latents only), the record
cache and its disk spill, the CLI and the studio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clp2p.attention.blend import lay_over
from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.params import EditParams
from clp2p.model.presets import preset
from clp2p.model.session import SCHEMA_VERSION, Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.session_render import SessionRenderer, apply

SHAPES = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"
SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
TWO = "a red circle and a orange square on a gray background"


@pytest.mark.parametrize("bad", ["yes", 1, None, 0.0])
def test_a_switch_that_is_not_a_bool_is_one_line(bad):
    with pytest.raises(Clp2pError) as err:
        EditParams(k=0.3, blend_pixels=bad)
    message = str(err.value)
    assert "blend pixels" in message and "true or false" in message and "\n" not in message


def test_lay_over_keeps_the_source_exactly_outside_the_softened_mask():
    source = np.full((16, 16, 3), 10, np.uint8)
    edit = np.full((16, 16, 3), 250, np.uint8)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True  # pixels 4..11 at 4 pixels a cell
    out = lay_over(source, edit, mask, 4)
    assert (out[6:10, 6:10] == 250).all()  # the inside, away from the softened edge
    inside = np.zeros((16, 16), bool)
    inside[2:14, 2:14] = True  # the mask grown by the softening (half a cell)
    assert (out[~inside] == 10).all()
    edge = out[2:14, 2:14, 0]
    assert ((edge >= 10) & (edge <= 250)).all() and len(np.unique(edge)) > 2


def test_the_file_holds_the_switch_only_when_set_and_a_version_5_file_has_none(tmp_path):
    session = Session.new(SRC, RenderSettings(steps=4), "shapes")
    session, plain = session.add_edit("n1", TGT, preset("p2p").with_(k=0.3))
    session, pixels = session.add_edit("n1", TGT, preset("p2p").with_(k=0.3, blend_pixels=True))
    path = tmp_path / "s.json"
    session_io.save(session, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION >= 6
    params = {n["id"]: n["params"] for n in data["nodes"] if n["params"]}
    assert "blend_pixels" not in params[plain] and params[pixels]["blend_pixels"] is True
    assert session_io.load(path)[0].node(pixels).params.blend_pixels is True
    del data["nodes"][2]["params"]["blend_pixels"]
    data["schema_version"] = 5  # written before the option: latents only
    path.write_text(json.dumps(data))
    assert session_io.load(path)[0].node(pixels).params.blend_pixels is False


def test_a_file_whose_switch_is_not_a_bool_is_refused_in_one_line(tmp_path):
    session = Session.new(SRC, RenderSettings(steps=4), "shapes")
    session, _ = session.add_edit("n1", TGT, preset("p2p").with_(k=0.3, blend_pixels=True))
    path = tmp_path / "s.json"
    session_io.save(session, path)
    data = json.loads(path.read_text())
    data["nodes"][1]["params"]["blend_pixels"] = "yes"
    path.write_text(json.dumps(data))
    with pytest.raises(Clp2pError) as err:
        session_io.load(path)
    assert "blend_pixels" in str(err.value) and "\n" not in str(err.value)


def test_cli_sets_and_clears_the_switch(tmp_path):
    path = tmp_path / "s.json"
    assert main(["session", "new", str(path), "--prompt", SRC, "--steps", "3"]) == 0
    add = ["session", "add", str(path), "--parent", "n1", "--target", TGT, "--k", "0.3"]
    assert main([*add, "--blend-pixels"]) == 0
    assert main([*add, "--no-blend-pixels"]) == 0
    nodes = session_io.load(path)[0].nodes
    assert [n.params.blend_pixels for n in nodes[1:]] == [True, False]


def test_studio_panel_shows_and_reads_the_switch(qtbot):
    from clp2p_studio.params_panel import ParamsPanel

    panel = ParamsPanel()
    qtbot.addWidget(panel)
    panel._apply_params(preset("p2p").with_(k=0.3, blend_pixels=True))
    assert panel.blend_pixels.isChecked() and panel.params().blend_pixels
    assert "prompt-to-prompt" in panel.blend_pixels.toolTip()
    panel._apply_params(preset("cl-p2p"))
    assert panel.params().blend_pixels is False


@pytest.fixture(scope="module")
def shapes_engine():
    from clp2p.engine.engine import Engine

    return Engine.load(str(SHAPES), "cpu", "fp32")


def test_on_the_shapes_model_pixels_keep_the_other_object_where_latents_alone_do_not(
    shapes_engine,
):
    # a tuning pair of the two-object sweep whose colour swap local blend wrecked: the
    # latents outside the mask are the source's, the decoded picture moved everywhere
    source, target = TWO, TWO.replace("orange", "blue")
    settings = shapes_engine.card.settings(seed=30009)  # 64 px, 30 steps, guidance 4
    params = preset("cl-p2p").with_(kind="swap", k=0.3, blend_words=("orange", "blue", "square"))
    both = shapes_engine.edit(
        source, [(target, params), (target, params.with_(blend_pixels=True))], settings
    )
    src, latents_only, pixels = (im.astype(int) for im in both.images)
    assert np.array_equal(both.latents[1], both.latents[2])
    right = np.s_[:, 40:]  # the red circle's side, away from the square on the left
    assert np.abs(latents_only[right] - src[right]).mean() > 20
    assert np.array_equal(pixels[right], src[right])


def test_a_child_with_pixels_renders_from_the_cache_like_a_cold_render(shapes_engine):
    s = Session.new(TWO, shapes_engine.card.settings(seed=30009, steps=10), "shapes")
    blend = preset("cl-p2p").with_(k=0.3, blend_pixels=True)
    s, n2 = s.add_edit("n1", TWO.replace("orange", "blue"), blend)
    s, n3 = s.add_edit(n2, TWO.replace("orange", "blue").replace("red", "green"), blend)
    renderer = SessionRenderer(shapes_engine)
    for node_id in ("n1", n2, n3):
        r = renderer.render(s, node_id)
        s = apply(s, r)
        assert r.computed == 1  # each from its parent's record, which holds its picture
    cold = SessionRenderer(shapes_engine).render(s, n3, use_cache=False)
    assert cold.computed == 3 and np.array_equal(r.image, cold.image)
    s2, n4 = s.add_edit(n2, s.node(n3).prompt, blend.with_(blend_pixels=False))
    plain = SessionRenderer(shapes_engine).render(s2, n4, use_cache=False)
    assert np.array_equal(plain.latents, cold.latents)  # the same latents, other pixels
    assert not np.array_equal(plain.image, cold.image)
