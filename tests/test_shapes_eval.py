"""``clp2p eval shapes``: scoring on ground-truth scenes, the pair generator, and tiny runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clp2p.cli import eval as eval_cli
from clp2p.model.settings import RenderSettings
from clp2p.shapes import evaluate, report, world
from clp2p.shapes.scoring import (
    KINDS,
    EditPair,
    attribute_values,
    make_pairs,
    score_cycle,
    score_edit,
    summarise,
)

SCENE = world.Scene("red", "circle", "white", (0.45, 0.55), 0.5)


def _pair(kind: str, target: tuple[str, str, str]) -> EditPair:
    return EditPair(kind, ("red", "circle", "white"), target, seed=0)


def _image(scene: world.Scene) -> np.ndarray:
    return world.render(scene, 64)[0]


def test_perfect_colour_swap_scores_full_marks():
    score = score_edit(
        _pair("colour", ("blue", "circle", "white")),
        _image(SCENE),
        _image(replace(SCENE, colour="blue")),
    )
    assert score["source_ok"] and score["success"] and score["kept"]
    assert score["iou"] == 1.0 and score["keep_mad"] == 0.0


def test_wrong_colour_and_lost_background_score_zero():
    pair = _pair("colour", ("blue", "circle", "white"))
    wrong = score_edit(pair, _image(SCENE), _image(replace(SCENE, colour="green")))
    assert not wrong["success"] and wrong["kept"]
    drifted = score_edit(
        pair, _image(SCENE), _image(replace(SCENE, colour="blue", background="gray"))
    )
    assert drifted["success"] and not drifted["kept"] and drifted["keep_mad"] > 100


def test_moved_shape_lowers_mask_iou():
    pair = _pair("colour", ("blue", "circle", "white"))
    moved = replace(SCENE, colour="blue", centre=(0.55, 0.55))
    assert score_edit(pair, _image(SCENE), _image(moved))["iou"] < 0.8


def test_background_swap_keeps_the_shape_colour():
    pair = _pair("background", ("red", "circle", "black"))
    score = score_edit(pair, _image(SCENE), _image(replace(SCENE, background="black")))
    assert score["success"] and score["kept"] and score["iou"] == 1.0
    assert score["keep_mad"] == 0.0  # the shape's pixels did not change


def test_shape_swap_has_no_structure_score():
    pair = _pair("shape", ("red", "square", "white"))
    score = score_edit(pair, _image(SCENE), _image(replace(SCENE, shape="square")))
    assert score["success"] and score["kept"] and score["iou"] is None
    wrong = score_edit(pair, _image(SCENE), _image(replace(SCENE, shape="triangle")))
    assert not wrong["success"]


def test_cycle_error_is_zero_on_return_and_grows_with_change():
    a = _image(SCENE)
    assert score_cycle(a, a) == {"cycle_mad": 0.0, "cycle_iou": 1.0}
    drift = score_cycle(a, _image(replace(SCENE, centre=(0.5, 0.5), colour="orange")))
    assert drift["cycle_mad"] > 5 and drift["cycle_iou"] < 1.0


def test_summary_skips_missing_metrics():
    rows = [{"success": True, "iou": None}, {"success": False, "iou": 0.5}]
    out = summarise(rows, ("success", "iou", "cycle_mad"))
    assert out == {"n": 2, "success": 0.5, "iou": 0.5, "cycle_mad": None}


def test_pairs_are_deterministic_and_cover_every_attribute():
    pairs = make_pairs(54)
    assert pairs == make_pairs(54) and pairs != make_pairs(54, seed=1)
    assert len({p.seed for p in pairs}) == len(pairs)
    for kind in KINDS:
        mine = [p for p in pairs if p.kind == kind]
        assert len(mine) == 18
        i = KINDS.index(kind)
        for p in mine:
            assert p.source[i] != p.target[i]
            assert all(p.source[j] == p.target[j] for j in range(3) if j != i)
            assert p.source in world.combinations() and p.target in world.combinations()
        values = set(attribute_values(kind))
        assert {p.source[i] for p in mine} == values
        assert {p.target[i] for p in mine} == values
    # Sources spread over the whole caption space, not a corner of it.
    assert len({p.source for p in pairs}) >= 40


SETTINGS = RenderSettings(steps=3, guidance=5.0)


def test_tiny_edit_run_returns_the_table(tiny_engine, tmp_path: Path):
    pairs = make_pairs(1)
    result = evaluate.run_edit(tiny_engine, pairs, SETTINGS, evaluate.VSetting())
    assert list(result["table"]) == ["none", "p2p", "cl-p2p", "fpe", "cl-p2p+v", "p2p@0.2"]
    assert result["methods"]["p2p@0.2"]["blend_start"] == 0.2
    for cells in result["table"].values():
        assert set(cells) == {pairs[0].kind, "all"}
        assert cells["all"]["n"] == 1
        assert set(cells["all"]) >= {"success", "iou", "kept", "cycle_mad", "cycle_iou"}
    # No injection is the target prompt generated from the source's noise, and its way back
    # is the source again.
    (_, images), *_ = result["examples"]
    alone = tiny_engine.generate(pairs[0].target_prompt, replace(SETTINGS, seed=pairs[0].seed))
    assert np.abs(images.targets["none"].astype(int) - alone.images[0]).max() <= 1
    assert result["table"]["none"]["all"]["cycle_mad"] < 0.5
    assert "`cl-p2p+v`" in report.edit_table(result["table"])
    eval_cli.write_json(tmp_path / "edit.json", result)
    assert (tmp_path / "edit.json").stat().st_size > 0
    paths = eval_cli.write_figures(result, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_tiny_v_search_and_sweep(tiny_engine, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(evaluate, "V_WINDOWS", (1.0,))
    monkeypatch.setattr(evaluate, "V_BLENDS", (0.5,))
    monkeypatch.setattr(evaluate, "V_LAYERS", ("self", "both"))
    search = evaluate.run_v_search(tiny_engine, make_pairs(1), SETTINGS)
    assert set(search["cells"]) == {"cl-p2p", "v1/b0.5/self", "v1/b0.5/both"}
    assert set(search["best"]) == {"cycle", "cold"}
    # The chain reversal without V replays the source's attention: it returns exactly to A,
    # so no V setting can lower its cycle error.
    assert search["cells"]["cl-p2p"]["cycle_mad"] == 0.0 and search["best"]["cycle"] is None
    assert "`cl-p2p`" in report.v_search_table(search)
    monkeypatch.setattr(evaluate, "SWEEP_K", (0.0, 0.3))
    monkeypatch.setattr(evaluate, "SWEEP_CROSS", (0.2,))
    monkeypatch.setattr(evaluate, "SWEEP_SELF", (0.2, 0.8))
    pairs = make_pairs(1, kinds=("colour",))
    sweep = evaluate.run_sweep(tiny_engine, pairs, SETTINGS)
    assert set(sweep["cells"]) == {"0/0.2/0.2", "0/0.2/0.8", "0.3/0.2/0.2", "0.3/0.2/0.8"}
    assert "k = 0.3" in report.sweep_tables(sweep)
    one = eval_cli.write_figures(sweep, tmp_path)
    assert all(p.stat().st_size > 0 for p in one)
    # each world and blend mode keeps its own figures: a two-object run with the source's
    # pixels kept does not overwrite the one-object sweep's
    two = eval_cli.write_figures({**sweep, "objects": 2, "blend_pixels": True}, tmp_path)
    assert [p.name for p in one] == ["eval-sweep.png", "eval-sweep-grid.png"]
    assert [p.name for p in two] == ["eval-sweep-two-px.png", "eval-sweep-two-px-grid.png"]


def test_tiny_generate_run_scores_against_the_goals(tiny_engine):
    from clp2p.shapes.generation import run_generate

    result = run_generate(tiny_engine, 2, SETTINGS)
    clean = {"unmarked", "background_clean"}
    assert set(result["figures"]) == {"colour", "shape", "background", "all"} | clean
    assert set(result["goals"]) == {"colour", "shape", "background"} | clean
    assert [s.asked for s in result["samples"]] == world.combinations()[:2]


def test_cli_eval_edit_writes_json(tiny_model_dir, tmp_path: Path, capsys):
    import json

    from clp2p.cli.main import main

    out = tmp_path / "edit.json"
    argv = ["eval", "shapes", "--task", "edit", "--pairs", "1", "--steps", "2"]
    assert main([*argv, "--model", str(tiny_model_dir), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["task"] == "edit" and data["settings"]["steps"] == 2
    assert set(data["table"]) == {"none", "p2p", "cl-p2p", "fpe", "cl-p2p+v", "p2p@0.2"}
    assert len(data["pairs"]) == 1 and "examples" not in data
    assert "| swap | method |" in capsys.readouterr().out


SHAPES_MODEL = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"


@pytest.mark.skipif(
    not (SHAPES_MODEL / "model_index.json").is_file(), reason="shapes model not trained"
)
@pytest.mark.timeout(60)
def test_shapes_model_colour_swap_keeps_geometry_with_cl_p2p():
    from clp2p.engine.engine import Engine
    from clp2p.model.presets import preset
    from clp2p.shapes.check import CheckConfig

    engine = Engine.load(str(SHAPES_MODEL), "cpu", "fp32")
    settings = RenderSettings(steps=CheckConfig.steps, guidance=CheckConfig.guidance)
    edits = {"none": evaluate.NO_INJECTION, "cl-p2p": preset("cl-p2p").with_(kind="swap")}
    ious = {"none": [], "cl-p2p": []}
    for pair in COLOUR_PAIRS:
        images = evaluate.render_pair(engine, pair, edits, settings, cycle=False)
        scores = evaluate.score_pair(pair, images)
        assert scores["cl-p2p"]["success"], pair
        assert scores["cl-p2p"]["iou"] >= 0.8, (pair, scores["cl-p2p"]["iou"])
        for name in ious:
            ious[name].append(scores[name]["iou"])
    assert np.mean(ious["none"]) < np.mean(ious["cl-p2p"]), ious


COLOUR_PAIRS = make_pairs(3, kinds=("colour",))


def test_tiny_picture_cycle_reverses_the_edited_picture(tiny_engine, monkeypatch):
    from clp2p.model.presets import preset
    from clp2p.shapes import picture_cycle

    monkeypatch.setattr(picture_cycle, "V_WINDOWS", (1.0,))
    monkeypatch.setattr(picture_cycle, "V_BLENDS", (0.5,))
    monkeypatch.setattr(picture_cycle, "V_LAYERS", ("self",))
    pairs = make_pairs(1)
    result = picture_cycle.run_picture_cycle(tiny_engine, pairs, SETTINGS)
    assert list(result["cells"]) == ["none", "p2p", "cl-p2p", "fpe", "v1/b0.5/self"]
    for cell in result["cells"].values():
        assert cell["n"] == 1 and cell["picture_mad"] >= 0 and 0 <= cell["picture_iou"] <= 1
    assert result["best"] in (None, "v1/b0.5/self")
    versus = result["versus"]["v1/b0.5/self"]
    assert versus["lower"] + versus["higher"] <= 1
    assert versus["ci95"][0] <= versus["mean"] <= versus["ci95"][1]
    assert "`v1/b0.5/self`" in picture_cycle.picture_cycle_table(result)
    # The reversal edits the picture it is given: another picture, another reversal.
    pair, settings = pairs[0], replace(SETTINGS, seed=pairs[0].seed)
    edit = preset("cl-p2p").with_(kind="swap")
    one = tiny_engine.generate(pair.target_prompt, settings).images[0]
    other = tiny_engine.generate(pair.target_prompt, replace(settings, seed=pair.seed + 1))
    back_one = picture_cycle.picture_cycle(tiny_engine, pair, edit, settings, one)
    back_other = picture_cycle.picture_cycle(tiny_engine, pair, edit, settings, other.images[0])
    assert np.abs(back_one.astype(int) - back_other).mean() > 1


def test_v_settings_are_read_or_refused_clearly():
    from clp2p.errors import Clp2pError

    assert eval_cli._v_setting("0.2/0.3/both") == evaluate.VSetting(0.2, 0.3, "both")
    for bad in ("0.2/0.3", "0.2/x/self", "0.2/0.3/all", "0/0.3/self", "0.2/1.5/cross"):
        with pytest.raises(Clp2pError, match="--v-settings"):
            eval_cli._v_setting(bad)
