"""The two-object evaluation: scores on ground-truth scenes, pairs, word-map localisation,
the model card's attention grid, and tiny runs of every task through the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clp2p.attention.grids import blend_grid
from clp2p.attention.maps import AttentionMaps
from clp2p.cli import eval as eval_cli
from clp2p.errors import Clp2pError
from clp2p.model.align import word_tokens
from clp2p.model.card import DEFAULT_GRID_FRACTION, ModelCard
from clp2p.model.settings import RenderSettings
from clp2p.shapes import evaluate, generation, report, seeds, two_objects, world
from clp2p.shapes.scoring import read_objects_caption
from clp2p.shapes.two_objects import TwoEditPair, make_two_pairs

RED = world.Object("red", "circle", (0.25, 0.3), 0.3)
BLUE = world.Object("blue", "square", (0.7, 0.7), 0.35)
COMBO = ("red", "circle", "blue", "square", "white")


def _picture(*objects: world.Object, background: str = "white") -> np.ndarray:
    return world.render_objects(world.MultiScene(background, objects), 64)[0]


def test_ground_truth_generation_reads_as_asked():
    row = two_objects.score_generation(COMBO, _picture(RED, BLUE))
    assert row["present"] and row["colour_ok"] == [True, True] and row["shape_ok"] == [True, True]
    assert row["background_ok"] and row["unmarked"] and row["background_clean"]
    missing = two_objects.score_generation(COMBO, _picture(RED))
    assert not missing["present"] and missing["colour_ok"] == [True, False]
    swapped = two_objects.score_generation(COMBO, _picture(replace(RED, colour="green"), BLUE))
    assert swapped["colour_ok"] == [False, True] and swapped["present"]
    figures = two_objects.generation_figures([row, missing])
    assert figures["present"] == 0.5 and figures["colour"] == 0.75 and figures["all"] == 0.5


def test_perfect_edit_of_one_object_keeps_the_other_exactly():
    pair = TwoEditPair("colour", 0, COMBO, ("green", *COMBO[1:]), seed=0)
    after = _picture(replace(RED, colour="green"), BLUE)
    score = two_objects.score_two_edit(pair, _picture(RED, BLUE), after)
    assert score["source_ok"] and score["success"] and score["other_kept"]
    assert score["other_iou"] == 1.0 and score["other_mad"] == 0.0
    assert score["background_mad"] == 0.0 and score["edited_iou"] == 1.0


def test_an_edit_that_moves_or_recolours_the_other_object_is_caught():
    pair = TwoEditPair("colour", 0, COMBO, ("green", *COMBO[1:]), seed=0)
    source = _picture(RED, BLUE)
    moved = two_objects.score_two_edit(
        pair, source, _picture(replace(RED, colour="green"), replace(BLUE, centre=(0.62, 0.7)))
    )
    assert moved["success"] and moved["other_iou"] < 0.8 and moved["other_mad"] > 20
    both = two_objects.score_two_edit(
        pair, source, _picture(replace(RED, colour="green"), replace(BLUE, colour="orange"))
    )
    assert both["success"] and not both["other_kept"] and both["other_mad"] > 100
    failed = two_objects.score_two_edit(pair, source, source)
    assert not failed["success"] and failed["other_mad"] == 0.0


def test_shape_edit_and_cycle_scores():
    pair = TwoEditPair("shape", 1, COMBO, (*COMBO[:3], "triangle", "white"), seed=0)
    assert pair.changed == ("square", "triangle")
    source = _picture(RED, BLUE)
    target = _picture(RED, replace(BLUE, shape="triangle"))
    score = two_objects.score_two_edit(pair, source, target)
    assert score["success"] and score["other_iou"] == 1.0 and score["edited_iou"] is None
    cycle = two_objects.score_two_cycle(pair, source, source)
    assert cycle == {"cycle_mad": 0.0, "cycle_other_mad": 0.0}
    drift = two_objects.score_two_cycle(
        pair, source, _picture(replace(RED, centre=(0.3, 0.3)), BLUE)
    )
    assert drift["cycle_mad"] > 0 and drift["cycle_other_mad"] > 0


def test_two_object_pairs_are_valid_deterministic_and_alternate():
    pairs = make_two_pairs(40, 100, 3)
    assert pairs == make_two_pairs(40, 100, 3) and pairs != make_two_pairs(40, 100, 4)
    assert [p.seed for p in pairs] == list(range(100, 140))
    assert {p.kind for p in pairs} == {"colour", "shape"} and {p.which for p in pairs} == {0, 1}
    for pair in pairs:
        assert read_objects_caption(pair.source_prompt) is not None
        assert read_objects_caption(pair.target_prompt) is not None, pair
        diff = [i for i in range(5) if pair.source[i] != pair.target[i]]
        assert diff == [2 * pair.which + (pair.kind == "shape")]
    assert len(make_two_pairs(6, 0, 0, kinds=("colour",))) == 6
    edited, other = pairs[0].label().split("\n")  # figure titles: a line per object
    assert "->" in edited and "->" not in other


def test_seed_ranges_do_not_overlap_and_tuning_differs_from_held_out():
    ranges = {name: value for name, value in vars(seeds).items() if isinstance(value, seeds.Range)}
    used = sorted((r.first, name) for name, r in ranges.items())
    held = [seeds.GENERATE, seeds.EDIT_HELD_OUT, seeds.TWO_EDIT_HELD_OUT, seeds.LOCALISE]
    tuning = [seeds.EDIT_TUNING, seeds.V_SEARCH, seeds.TWO_TUNING]
    assert not {r.first for r in held} & {r.first for r in tuning}
    assert len(used) >= 9


def test_map_iou_thresholds_at_half_the_peak():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    assert two_objects.map_iou(mask.astype(float) * 3, mask) == 1.0
    assert two_objects.map_iou(np.ones((8, 8)), mask) == pytest.approx(9 / 64)
    assert two_objects.map_iou(np.zeros((8, 8)), mask) == 0.0


def _maps(prompt: str, where: dict[str, tuple[slice, slice]], grids=((4, 4), (2, 2))):
    """AttentionMaps of one branch whose word maps are 1 on ``where[word]`` at the 4x4 grid
    and flat at the 2x2 one."""
    tokens = word_tokens(prompt)
    cross = {}
    for h, w in grids:
        data = np.full((6, 1, h, w, tokens.length), 0.1, np.float32)  # (steps, B, h, w, T)
        if (h, w) == (4, 4):
            for word, (rows, cols) in where.items():
                (pos,) = tokens.find(word)
                data[:, 0, :, :, pos] = 0.0
                data[:, 0, rows, cols, pos] = 1.0
        cross[(h, w)] = data
    empty = np.zeros((1, 0, 4, 4), np.float32)
    return AttentionMaps((tokens,), cross, (2, 2), (4, 4), empty, np.zeros((1, 0), np.float32))


def test_word_maps_on_their_objects_localise_and_flat_ones_do_not():
    left, right = (slice(0, 2), slice(0, 2)), (slice(2, 4), slice(2, 4))
    maps = _maps(
        two_objects.two_caption(COMBO),
        {"red": left, "circle": left, "blue": right, "square": right},
    )
    masks = [np.zeros((64, 64), bool), np.zeros((64, 64), bool)]
    masks[0][:32, :32] = True
    masks[1][32:, 32:] = True
    scores = generation.word_ious(maps, two_objects.objects_of(COMBO), masks, steps=6)
    assert set(scores) == {"4x4", "2x2"} and set(scores["4x4"]) == {"all", "1/3", "2/3", "3/3"}
    sharp = scores["4x4"]["all"]
    assert min(sharp["colour"] + sharp["shape"]) > 0.7
    assert max(scores["2x2"]["all"]["colour"]) < 0.3
    table = generation.localisation_table([scores, None])
    assert table["4x4"]["all"]["words"] > 0.7 and generation.sharpest_grid(table) == "4x4"
    assert "4x4" in report.localise_table(
        {"scored": 1, "n": 2, "goal": 0.5, "sharpest": "4x4", "table": table}
    )
    swapped = _maps(two_objects.two_caption(COMBO), {"red": right, "blue": left})
    crossed = generation.word_ious(swapped, two_objects.objects_of(COMBO), masks, steps=6)
    assert max(crossed["4x4"]["all"]["colour"]) < 0.1
    # colour words crossed, shape words on their objects: only the shape words localise
    half = _maps(
        two_objects.two_caption(COMBO),
        {"red": right, "blue": left, "circle": left, "square": right},
    )
    half_scores = generation.word_ious(half, two_objects.objects_of(COMBO), masks, steps=6)
    crossed_table = generation.localisation_table([half_scores])
    assert generation.sharpest_grid(crossed_table) is None
    assert generation.sharpest_grid(crossed_table, ("colour",)) is None
    assert generation.sharpest_grid(crossed_table, ("shape",)) == "4x4"
    by_kind = {"colour": None, "shape": "4x4"}
    text = report.localise_table(
        {"scored": 1, "n": 1, "goal": 0.5, "sharpest": None, "table": crossed_table}
        | {"sharpest_by_kind": by_kind}
    )
    assert "grid: none; colour words: none, shape words: 4x4" in text


def test_step_ranges_cover_the_steps():
    assert generation.step_ranges(30) == {
        "all": (0, 30),
        "1/3": (0, 10),
        "2/3": (10, 20),
        "3/3": (20, 30),
    }
    assert generation.step_ranges(2) == {"all": (0, 2), "1/3": (0, 1), "3/3": (1, 2)}


def test_model_card_attention_grid(tmp_path: Path):
    grids = {256: (16, 16), 64: (8, 8), 16: (4, 4)}
    assert blend_grid(grids, (16, 16)) == (4, 4)  # prompt-to-prompt's quarter
    assert blend_grid(grids, (16, 16), 1.0) == (16, 16)
    assert blend_grid(grids, (16, 16), 0.5) == (8, 8)
    card = tmp_path / "clp2p.json"
    card.write_text(json.dumps({"format": "clp2p-model-card", "attention_grid": 1}))
    assert ModelCard.read(tmp_path).attention_grid == 1.0
    assert ModelCard().attention_grid == DEFAULT_GRID_FRACTION
    for bad in (0, 1.5, "1", True, None):
        card.write_text(json.dumps({"format": "clp2p-model-card", "attention_grid": bad}))
        with pytest.raises(Clp2pError, match="attention_grid must be a fraction"):
            ModelCard.read(tmp_path)


SETTINGS = RenderSettings(steps=3, guidance=5.0)


def test_tiny_two_object_edit_run_with_local_blend(tiny_engine, tmp_path: Path):
    pairs = make_two_pairs(2, 0, 0)
    result = evaluate.run_edit(tiny_engine, pairs, SETTINGS, evaluate.VSetting(), blend_k=0.3)
    names = ["none", "p2p", "cl-p2p", "fpe", "cl-p2p+v", "p2p@0.2", "p2p+lb", "cl-p2p+lb"]
    extra = ["cl-p2p+lb@0.2", "cl-p2p+lb+px", "cl-p2p+lb+px@0.2"]
    extra += ["cl-p2p+lb+norm", "cl-p2p+lb+norm+px"]
    assert list(result["table"]) == [*names, *extra]
    cell = result["table"]["cl-p2p+lb"]
    assert set(cell) == {"colour", "shape", "all"}
    assert set(cell["all"]) >= {"success", "other_mad", "other_iou", "cycle_other_mad"}
    assert result["methods"]["cl-p2p+lb"]["k"] == 0.3
    assert "blend_start" not in result["methods"]["cl-p2p+lb"]  # from the first step
    assert result["methods"]["cl-p2p+lb@0.2"]["blend_start"] == 0.2  # as the reference
    assert result["methods"]["cl-p2p+lb+px"]["blend_pixels"] is True
    assert "blend_pixels" not in result["methods"]["cl-p2p+lb"]
    assert result["methods"]["cl-p2p+lb+norm"]["blend_norm"] is True
    assert "blend_pixels" not in result["methods"]["cl-p2p+lb+norm"]
    assert result["methods"]["cl-p2p+lb+norm+px"]["blend_pixels"] is True
    assert "blend_norm" not in result["methods"]["cl-p2p+lb+px"]
    text = report.edit_table(result["table"])
    assert "other object MAD" in text and "`cl-p2p+lb`" in text
    assert all(p.stat().st_size > 0 for p in eval_cli.write_figures(result, tmp_path))


def test_tiny_localise_and_generate_runs(tiny_engine, tmp_path: Path):
    result = generation.run_localise(tiny_engine, 1, SETTINGS)
    assert result["n"] == 1 and result["engine_default_grid"] is not None
    assert result["scored"] in (0, 1)
    generated = generation.run_generate(tiny_engine, 2, SETTINGS)
    assert set(generated["two"]["figures"]) >= {"colour", "shape", "present"}
    assert set(generated["two"]["goals"]) == {"colour", "shape", "present"}
    assert "two objects" in report.generate_table(generated)
    assert all(p.stat().st_size > 0 for p in eval_cli.write_figures(generated, tmp_path))


@pytest.mark.parametrize("task", ["edit", "sweep", "localise", "generate"])
def test_cli_eval_two_object_tasks(task, tiny_model_dir, tmp_path: Path, capsys, monkeypatch):
    from clp2p.cli.main import main

    monkeypatch.setattr(evaluate, "SWEEP_K", (0.0, 0.3))
    monkeypatch.setattr(evaluate, "SWEEP_CROSS", (0.4,))
    monkeypatch.setattr(evaluate, "SWEEP_SELF", (0.4,))
    out = tmp_path / f"{task}.json"
    argv = ["eval", "shapes", "--task", task, "--steps", "2", "--model", str(tiny_model_dir)]
    argv += ["--json", str(out)]
    argv += ["--samples", "1"] if task == "generate" else ["--pairs", "1"]
    argv += ["--objects", "2"] if task in ("edit", "sweep") else []
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["task"] == task and "images" not in data and "examples" not in data
    if task == "edit":
        assert (
            "cl-p2p+lb" in data["table"]
            and data["pairs"][0]["seed"] == seeds.TWO_EDIT_HELD_OUT.first
        )
    capsys.readouterr()


def test_the_cards_attention_grid_is_the_heatmaps_and_blends_grid(tiny_engine):
    from clp2p.engine.engine import Engine
    from clp2p.engine.fingerprint import engine_identity
    from clp2p.model.params import Branch

    full = Engine(tiny_engine.pipe, tiny_engine_choice(), "tiny", ModelCard(attention_grid=1.0))
    settings = RenderSettings(steps=2, guidance=5.0)
    quarter = tiny_engine.render([Branch("a red circle")], settings).attention
    whole = full.render([Branch("a red circle")], settings).attention
    largest = max(whole.grids, key=lambda g: g[0] * g[1])
    assert whole.default_grid == largest != quarter.default_grid
    assert engine_identity(full) != engine_identity(tiny_engine)


def tiny_engine_choice():
    from clp2p.engine.loading import choose_device

    return choose_device("cpu", "fp32")


def test_check_script_samples_two_object_captions(tiny_model_dir):
    from clp2p.shapes import check

    pipe = check.load_pipeline(tiny_model_dir)
    cfg = check.CheckConfig(samples=2, steps=2, batch=2)
    images, rows = check.generate_two(pipe, cfg)
    assert len(images) == 2 and images[0].dtype == np.uint8 and len(rows) == 2
    assert set(two_objects.generation_figures(rows)) >= set(two_objects.TWO_GOALS)


def test_the_shipped_card_is_the_one_the_training_script_writes():
    from clp2p.model.card import CARD_FILE
    from clp2p.resources import shapes_model_dir
    from clp2p.shapes.model import CARD

    shipped = json.loads((shapes_model_dir() / CARD_FILE).read_text())
    assert shipped == CARD
    grid = CARD.get("attention_grid", DEFAULT_GRID_FRACTION)
    assert ModelCard.read(shapes_model_dir()).attention_grid == grid


def test_vae_ceiling_reads_ground_truth_through_the_vae(tiny_model_dir):
    from clp2p.shapes import check

    pipe = check.load_pipeline(tiny_model_dir)
    ceiling = check.vae_ceiling(pipe.vae, scenes=2)
    assert set(ceiling) == {"one", "two"}
    for figures in ceiling.values():
        assert set(figures) == {"colour", "shape", "mad", "marked"}
        assert 0 <= figures["colour"] <= 1 and figures["mad"] > 0  # an untrained VAE blurs


def test_local_blend_of_a_two_object_edit_masks_the_edited_object_in_both_prompts():
    from clp2p.model.presets import preset
    from clp2p.shapes.evaluate import _blend_on_object
    from clp2p.shapes.scoring import make_pairs

    pair = make_two_pairs(2, 10, 0, kinds=("colour",))[0]
    edited = two_objects.objects_of(pair.source)[pair.which]
    blended = _blend_on_object(pair, preset("cl-p2p").with_(kind="swap", k=0.3))
    assert set(blended.blend_words) == {*pair.changed, edited[1]}
    assert all(w in pair.source_prompt or w in pair.target_prompt for w in blended.blend_words)
    plain = preset("cl-p2p").with_(kind="swap")
    assert _blend_on_object(pair, plain) is plain  # no blend: nothing to mask
    chosen = plain.with_(k=0.3, blend_words=("circle",))
    assert _blend_on_object(pair, chosen) is chosen  # the user's words stay
    one = make_pairs(1, seed=0)[0]
    assert _blend_on_object(one, plain.with_(k=0.3)).blend_words == ()


def test_the_sweep_keeps_the_sources_pixels_only_when_asked():
    assert all(p.blend_pixels for p in evaluate.sweep_edits(pixels=True).values())
    assert not any(p.blend_pixels for p in evaluate.sweep_edits().values())


def test_the_sweep_decodes_with_the_sources_statistics_only_when_asked():
    assert all(p.blend_norm for p in evaluate.sweep_edits(norm=True).values())
    assert not any(p.blend_norm or p.blend_pixels for p in evaluate.sweep_edits().values())
    assert eval_cli.figure_stem({"objects": 2, "blend_norm": True}) == "-two-norm"
    assert eval_cli.figure_stem({"objects": 2, "blend_norm": True, "blend_pixels": True}) == (
        "-two-norm-px"
    )


def test_cli_eval_edit_takes_only_the_kinds_asked(tiny_model_dir, tmp_path: Path, capsys):
    from clp2p.cli.main import main

    out = tmp_path / "edit.json"
    argv = ["eval", "shapes", "--task", "edit", "--objects", "2", "--pairs", "2", "--steps", "2"]
    argv += ["--model", str(tiny_model_dir), "--json", str(out)]
    assert main([*argv, "--kinds", "colour"]) == 0
    assert [p["kind"] for p in json.loads(out.read_text())["pairs"]] == ["colour", "colour"]
    capsys.readouterr()
    assert main([*argv, "--kinds", "background"]) == 2
    err = capsys.readouterr().err.strip()
    assert "kinds background" in err and "colour and shape" in err and "\n" not in err
    sweep = ["eval", "shapes", "--task", "sweep", "--kinds", "colour", "--model", "shapes"]
    assert main(sweep) == 2  # refused before any model loads
    assert "only --task edit" in capsys.readouterr().err
