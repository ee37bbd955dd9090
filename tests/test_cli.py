"""The clp2p command line on a tiny model folder: outputs, re-runs and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clp2p.cli import main

SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"


def _common(model_dir):
    return ["--model", str(model_dir), "--steps", "3", "--width", "32", "--height", "32"]


def test_edit_writes_images_heatmaps_and_a_record_that_reruns(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "edit",
        "--source",
        SRC,
        "--target",
        TGT,
        "--target",
        "a red big circle on a white background",
        "--preset",
        "p2p",
        "--v-inject",
        "0.5",
        "--v-blend",
        "0.5",
        "--out",
        str(out),
    ]
    assert main(argv + _common(tiny_model_dir)) == 0
    assert "swap, refine" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"source.png", "target-1.png", "target-2.png", "edit.json", "heatmaps"} <= names
    heat = {p.name for p in (out / "heatmaps").iterdir()}
    assert {"source-red.png", "target-1-blue.png", "target-2-big.png"} <= heat
    assert Image.open(out / "heatmaps" / "target-1-blue.png").size == (256, 256)
    record = json.loads((out / "edit.json").read_text())
    t1 = record["targets"][0]["params"]
    assert t1["kind"] == "swap" and t1["k"] == 0.3 and t1["cross"] == "0.8"
    assert t1["v_inject"] == "0.5" and t1["blend_words"] == ["red", "blue"]
    assert record["settings"] == {"seed": 0, "steps": 3, "guidance": 7.5, "width": 32, "height": 32}

    again = tmp_path / "again"
    assert main(["edit", "--from", str(out / "edit.json"), "--out", str(again)]) == 0
    for name in ("source.png", "target-1.png", "target-2.png"):
        assert np.array_equal(
            np.asarray(Image.open(out / name)), np.asarray(Image.open(again / name))
        )


def test_generate_writes_a_png(tiny_model_dir, tmp_path):
    out = tmp_path / "g.png"
    assert main(["generate", "--prompt", SRC, "--out", str(out)] + _common(tiny_model_dir)) == 0
    assert Image.open(out).size == (32, 32)


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--target", "a blue big circle on a white background", "--edit", "swap"],
            "--edit refine",
        ),
        (["--target", TGT, "--blend-words", "dog", "--k", "0.3"], "'dog' is not in the prompt"),
        (["--target", TGT, "--reweight", "dog=2"], "'dog' is not in the prompt"),
        (["--target", TGT, "--cross", "1.5"], "outside [0, 1]"),
        (["--target", TGT, "--self", "0.8:0.2"], "starts after it ends"),
        (["--target", TGT, "--k", "-0.1"], "outside [0, 1]"),
        (["--target", TGT, "--reweight", "blue"], "WORD=SCALE"),
        (["--target", "red " * 80], "shorten it"),
        (["--target", TGT, "--width", "30"], "multiple of"),
        (["--target", TGT, "--v-blend", "0.5"], "--v-inject"),
    ],
)
def test_edit_errors_are_one_line_and_leave_nothing(
    tiny_model_dir, tmp_path, capsys, extra, message
):
    out = tmp_path / "out"
    argv = ["edit", "--source", SRC, "--out", str(out)] + _common(tiny_model_dir) + extra
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clp2p: error:") and "\n" not in err
    assert message in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_missing_model_path_is_a_clear_error(tmp_path, capsys):
    argv = [
        "edit",
        "--source",
        SRC,
        "--target",
        TGT,
        "--model",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "not found" in capsys.readouterr().err


def test_hub_id_not_in_cache_names_the_repo(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    argv = [
        "generate",
        "--prompt",
        SRC,
        "--model",
        "someone/not-a-model",
        "--out",
        str(tmp_path / "x.png"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "someone/not-a-model" in err and "--allow-download" in err


def test_folder_without_model_index_is_rejected(tmp_path, capsys):
    argv = ["generate", "--prompt", SRC, "--model", str(tmp_path), "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    assert "model_index.json" in capsys.readouterr().err
