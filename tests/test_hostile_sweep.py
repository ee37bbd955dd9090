"""Hostile `clp2p sweep` and `clp2p batch` command lines and manifests, one test each: every
refusal is exit status 2 and one stderr line `clp2p: error: ...` (no traceback), it comes
before the model loads, the session named is unchanged, and nothing is written: no results
folder, no item, no file left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clp2p.cli.main import main
from clp2p.engine.engine import Engine
from clp2p.model.imported import ImportedImage, Inversion
from clp2p.model.presets import preset
from clp2p.model.session import Session, image_hash
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

PROMPT = "a red circle on a white background"
TARGET = "a blue circle on a white background"
LONG = "red " * 25_000  # 100k characters
BAD_UTF8 = "a \udc80\udcff circle"  # how Python shows argv bytes that are not UTF-8


def sw(*extra: str, source: tuple = ("--source", PROMPT), out: str = "{tmp}/out") -> list[str]:
    return ["sweep", *source, "--target", TARGET, "--steps", "2", *extra, "--out", out]


def on(session: str, *extra: str) -> list[str]:
    return sw(*extra, source=("--session", session))


def many(name: str, count: int) -> str:
    return f"{name}=" + ",".join(f"{i / count:.4f}" for i in range(count))


SWEEP = {
    "unknown-axis": sw("--grid", "zoom=1,2"),
    "empty-values": sw("--grid", "k="),
    "an-empty-value": sw("--grid", "k=0.1,"),
    "no-equals": sw("--grid", "k"),
    "no-name": sw("--grid", "=0.1"),
    "k-2": sw("--grid", "k=0,2"),
    "k-nan": sw("--grid", "k=nan"),
    "cross-backwards": sw("--grid", "cross=0.9:0.1"),
    "cross-text": sw("--grid", "cross=soon"),
    "duplicate-axis": sw("--grid", "k=0.1", "--grid", "k=0.2"),
    "seed-as-an-axis": sw("--grid", "seed=1,2"),
    "reweight-no-word": sw("--grid", "reweight:=2"),
    "reweight-word-huge": sw("--grid", "reweight:" + "x" * 300 + "=2"),
    "reweight-inf": sw("--grid", "reweight:blue=inf"),
    "self-res-zero": sw("--grid", "self-res=0"),
    "self-res-text": sw("--grid", "self-res=big"),
    "self-layers-reversed": sw("--grid", "self-layers=14:4"),
    "preset-unknown": sw("--grid", "preset=p3p"),
    "v-layers-unknown": sw("--grid", "v-layers=all"),
    "beta-without-v-window": sw("--grid", "beta=0.5"),
    "grid-over-max-items": sw("--grid", many("k", 101), "--grid", many("cross", 100)),
    "seeds-times-grid-over-max-items": sw("--grid", "k=0,0.5", "--seeds", "0-5000"),
    "seeds-backwards": sw("--seeds", "5-1"),
    "seeds-negative": sw("--seeds=-1"),
    "seeds-text": sw("--seeds", "many"),
    "seeds-2**64": sw("--seeds", str(2**64)),
    "seeds-empty": sw("--seeds", "0,,2"),
    "node-without-session": sw("--node", "n2", "--grid", "k=0.1"),
    "session-and-source": sw("--session", "{s}"),
    "neither-session-nor-source": sw(source=()),
    "no-out": ["sweep", "--source", PROMPT, "--target", TARGET],
    "source-empty": sw(source=("--source", "")),
    "source-100k": sw(source=("--source", LONG)),
    "target-not-utf8": ["sweep", "--source", PROMPT, "--target", BAD_UTF8, "--out", "{tmp}/o"],
    "steps-nan": sw("--steps", "nan"),
    "session-node-nowhere": on("{s}", "--node", "n9"),
    "session-missing": on("{tmp}/none.json"),
    "session-not-a-session": on("{file}"),
    "session-a-folder": on("{dir}"),
    "session-imported-root-with-seeds": on("{imported}", "--seeds", "1-2"),
    "session-target-100k": on("{s}", "--node", "n2", "--target", LONG),
    "out-a-file": sw(out="{file}"),
    "out-under-a-file": sw(out="{file}/out"),  # refused only after the model loads
    "workers-without-ray": sw("--workers", "2"),
    "workers-zero": sw("--workers", "0"),
    "threads-negative": sw("--threads=-1"),  # torch refuses it: an internal error
    "threads-zero": sw("--threads", "0"),  # taken as every core
    "threads-text": sw("--threads", "all"),
}
# manifest text -> a piece of the one line that refuses it
LINE = {"prompt": PROMPT, "target": TARGET}
MANIFEST = {
    "not-json": (b"{prompt: 1}\n", "line 1: not a JSON object"),
    "a-json-list": (json.dumps([LINE]).encode() + b"\n", "one JSON object"),
    "json-null": (b"null\n", "one JSON object"),
    "a-number": (b"3\n", "one JSON object"),
    "second-line-bad": ((json.dumps(LINE) + "\n{\n").encode(), "line 2"),
    "unknown-field": (json.dumps(LINE | {"colour": "red"}).encode(), "unknown field 'colour'"),
    "seed-text": (json.dumps(LINE | {"seed": "x"}).encode(), "seed"),
    "seed-negative": (json.dumps(LINE | {"seed": -1}).encode(), "seed"),
    "k-text": (json.dumps(LINE | {"k": "a"}).encode(), "line 1"),
    "k-2": (json.dumps(LINE | {"k": 2}).encode(), "'k': 2 is greater than the maximum of 1"),
    "steps-half": (
        json.dumps(LINE | {"steps": 2.5}).encode(),
        "'steps': 2.5 is not of type 'integer'",
    ),
    "steps-true": (json.dumps(LINE | {"steps": True}).encode(), "'steps': True is not of type"),
    "prompt-a-number": (json.dumps(LINE | {"prompt": 3}).encode(), "'prompt' must be text"),
    "no-prompt": (json.dumps({"target": TARGET}).encode(), "'prompt' must be text"),
    "prompt-100k": (json.dumps(LINE | {"prompt": LONG}).encode(), "shorten it"),
    "reweight-text": (
        json.dumps(LINE | {"reweight": "blue"}).encode(),
        "'reweight': 'blue' is not of type 'object'",
    ),
    "negative-a-number": (json.dumps(LINE | {"negative": 3}).encode(), "line 1"),
    "kind-unknown": (json.dumps(LINE | {"kind": "morph"}).encode(), "morph"),
    "preset-unknown": (json.dumps(LINE | {"preset": "p3p"}).encode(), "p3p"),
    "scheduler-unknown": (json.dumps(LINE | {"scheduler": "heun"}).encode(), "heun"),
    "empty": (b"", "no items"),
    "only-comments-and-blanks": (b"# nothing here\n\n   \n", "no items"),
    "image-missing": (json.dumps(LINE | {"image": "none.png"}).encode(), "does not exist"),
    "image-not-a-picture": (json.dumps(LINE | {"image": "notes.txt"}).encode(), "not an image"),
    "image-a-folder": (json.dumps(LINE | {"image": "dir"}).encode(), "line 1"),
    "image-a-number": (json.dumps(LINE | {"image": 3}).encode(), "'image' must be text"),
    "invert-without-image": (json.dumps(LINE | {"invert": "direct"}).encode(), "give 'image'"),
    "invert-unknown": (
        json.dumps(LINE | {"image": "p.png", "invert": "ddpm"}).encode(),
        "invert is one of",
    ),
    "fit-unknown": (json.dumps(LINE | {"image": "p.png", "fit": "stretch"}).encode(), "fit"),
    "not-utf8": (
        json.dumps(LINE).replace("red", "r\\u00e9d").encode().replace(b"\\u00e9", b"\xe9"),
        "UTF-8",
    ),
    "utf16": (json.dumps(LINE).encode("utf-16"), "UTF-8"),
    "binary": (bytes(range(256)) * 8, "UTF-8"),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1"),  # RecursionError
    # fields of the wrong type that a session file refuses, taken here as something else
    "blend-words-text": (json.dumps(LINE | {"blend_words": "red"}).encode(), "blend_words"),
    "inject-uncond-text": (json.dumps(LINE | {"inject_uncond": "no"}).encode(), "inject_uncond"),
    "k-true": (json.dumps(LINE | {"k": True}).encode(), "k"),
    "self-res-fraction": (json.dumps(LINE | {"self_res": 12.7}).encode(), "self_res"),
    "inner-steps-fraction": (
        json.dumps(LINE | {"image": "p.png", "inner_steps": 2.5}).encode(),
        "inner_steps",
    ),
}
BATCH = {
    "manifest-missing": ["batch", "{tmp}/none.jsonl", "--out", "{tmp}/out"],
    "manifest-a-folder": ["batch", "{dir}", "--out", "{tmp}/out"],
    "out-a-file": ["batch", "{m}", "--out", "{file}"],
    "out-under-a-file": ["batch", "{m}", "--out", "{file}/out"],
    "no-out": ["batch", "{m}"],
    "workers-without-ray": ["batch", "{m}", "--out", "{tmp}/out", "--workers", "3"],
    "steps-zero": ["batch", "{m}", "--out", "{tmp}/out", "--steps", "0"],
}


@pytest.fixture
def places(tmp_path):
    """A session (n2 and n3 edit n1), a session of an imported picture, a text file, an empty
    folder, a picture and a one-line manifest."""
    session = Session.new(PROMPT, RenderSettings(steps=2), "shapes")
    session, _ = session.add_edit("n1", TARGET, preset("cl-p2p"))
    session, _ = session.add_edit("n1", "a green circle on a white background", preset("p2p"))
    session_io.save(session, tmp_path / "s.json")
    picture = np.full((64, 64, 3), 255, dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    inversion = Inversion("direct", PROMPT, np.zeros((3, 4, 8, 8), dtype=np.float32))
    imported = ImportedImage(inversion, image_hash(picture), "crop", "p.png")
    root = Session.from_image(imported, RenderSettings(steps=2), "shapes")
    session_io.save(root, tmp_path / "imported.json", {image_hash(picture): picture})
    (tmp_path / "notes.txt").write_text("not a session, a manifest or a picture\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "m.jsonl").write_text(json.dumps(LINE) + "\n")
    names = {"s": "s.json", "imported": "imported.json", "file": "notes.txt", "dir": "dir"}
    return {"tmp": tmp_path, "m": tmp_path / "m.jsonl"} | {
        k: tmp_path / v for k, v in names.items()
    }


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: these refusals come before it. (The OpenMP wait
    policy a sweep sets is taken back after the test.)"""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")

    def load(cls, *args, **kwargs):
        pytest.fail("the model was loaded before the input was checked")

    monkeypatch.setattr(Engine, "load", classmethod(load))


def _snapshot(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _refused(places, capsys, argv: list[str]) -> str:
    """``argv`` (its placeholders filled) exits 2 with one line and changes no file."""
    argv = [a.format(**places) for a in argv]
    before = _snapshot(places["tmp"])
    dirs = sorted(p for p in places["tmp"].rglob("*") if p.is_dir())
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's refusal of a flag
        code = int(exit.code)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.startswith("clp2p: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and captured.out == ""
    assert _snapshot(places["tmp"]) == before  # no file written, changed or left behind
    assert sorted(p for p in places["tmp"].rglob("*") if p.is_dir()) == dirs  # no --out
    session_io.load(places["s"])
    return err


@pytest.mark.parametrize("argv", SWEEP.values(), ids=SWEEP.keys())
def test_a_hostile_sweep_is_one_line_before_loading(places, capsys, no_model, argv):
    _refused(places, capsys, argv)


@pytest.mark.parametrize("text, message", MANIFEST.values(), ids=MANIFEST.keys())
def test_a_hostile_manifest_is_one_line_naming_it(places, capsys, no_model, text, message):
    places["m"].write_bytes(text)
    err = _refused(places, capsys, ["batch", "{m}", "--out", "{tmp}/out"])
    assert message in err


@pytest.mark.parametrize("argv", BATCH.values(), ids=BATCH.keys())
def test_a_hostile_batch_is_one_line_before_loading(places, capsys, no_model, argv):
    _refused(places, capsys, argv)


def test_a_manifest_over_the_item_limit_is_refused(places, capsys, no_model, monkeypatch):
    from clp2p.workflows import manifest

    monkeypatch.setattr(manifest, "MAX_ITEMS", 2)
    places["m"].write_text("".join(json.dumps(LINE | {"seed": i}) + "\n" for i in range(3)))
    err = _refused(places, capsys, ["batch", "{m}", "--out", "{tmp}/out"])
    assert "more than 2 items" in err
