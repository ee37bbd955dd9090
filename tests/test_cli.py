"""The clp2p command line on a tiny model folder: outputs, re-runs and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clp2p.cli.main import main

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


def test_session_commands_build_render_and_replay(tiny_model_dir, tmp_path, capsys):
    f = str(tmp_path / "s.json")
    common = ["--model", str(tiny_model_dir), "--steps", "3", "--width", "32", "--height", "32"]
    assert main(["session", "new", f, "--prompt", SRC] + common) == 0
    assert main(["session", "add", f, "--parent", "n1", "--target", TGT, "--preset", "p2p"]) == 0
    assert main(["session", "add", f, "--parent", "n2", "--kind", "cycle"]) == 0
    assert (
        main(["session", "add", f, "--parent", "n1", "--kind", "reweight", "--reweight", "red=2"])
        == 0
    )
    assert main(["session", "render", f, "--out", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert "n3: new" in out and "mae=" in out
    assert {p.name for p in (tmp_path / "img").iterdir()} == {
        "n1.png",
        "n2.png",
        "n3.png",
        "n4.png",
    }
    assert main(["session", "render", f, "--no-cache"]) == 0
    assert "DIFFERS" not in capsys.readouterr().out
    assert main(["session", "show", f]) == 0
    shown = capsys.readouterr().out
    assert "n3 cycle (reverses n1)" in shown and "n4 reweight" in shown
    exported = str(tmp_path / "x.json")
    assert main(["session", "export", f, "--out", exported, "--embed-images"]) == 0
    assert '"data:image/png;base64,' in (tmp_path / "x.json").read_text()


def test_session_render_lists_nodes_that_differ(tiny_model_dir, tmp_path, capsys):
    import json as _json

    f = tmp_path / "s.json"
    common = ["--model", str(tiny_model_dir), "--steps", "2", "--width", "32", "--height", "32"]
    assert main(["session", "new", str(f), "--prompt", SRC] + common) == 0
    assert main(["session", "render", str(f)]) == 0
    data = _json.loads(f.read_text())
    data["nodes"][0]["image"] = "0" * 64
    f.write_text(_json.dumps(data))
    capsys.readouterr()
    assert main(["session", "render", str(f)]) == 1
    assert "differ from the stored images: n1" in capsys.readouterr().out


def test_bad_session_file_is_one_line_and_untouched(tmp_path, capsys):
    f = tmp_path / "s.json"
    f.write_text('{"format": "clp2p-session", "schema_version": 1, "nodes": [')
    before = f.read_bytes()
    assert main(["session", "show", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clp2p: error: $: not valid JSON") and "\n" not in err
    assert f.read_bytes() == before


def test_edit_also_writes_a_one_edit_session(tiny_model_dir, tmp_path):
    from clp2p.workflows import session_io

    out = tmp_path / "out"
    argv = ["edit", "--source", SRC, "--target", TGT, "--out", str(out)] + _common(tiny_model_dir)
    assert main(argv) == 0
    session, images = session_io.load(out / "session.json")
    assert [n.kind for n in session.nodes] == ["root", "swap"]
    assert np.array_equal(
        images[session.node("n2").image], np.asarray(Image.open(out / "target-1.png"))
    )
