"""Hostile command lines, one test each: every refusal is exit status 2 and one stderr line
`clp2p: error: ...`, it comes before a model loads (unless the model is what is wrong), the
session file involved is unchanged and still loads, and nothing is written anywhere."""

from __future__ import annotations

import pytest

from clp2p.cli.main import main
from clp2p.engine.engine import Engine
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

PROMPT = "a red circle on a white background"
TARGET = "a blue circle on a white background"
LONG = "red " * 25_000  # 100k characters
BAD_UTF8 = "a \udc80\udcff circle"  # how Python shows argv bytes that are not UTF-8


def new(*extra: str) -> list[str]:
    return ["session", "new", "{tmp}/n.json", "--prompt", PROMPT, *extra]


def add(*extra: str, parent: str = "n1", target: str = TARGET) -> list[str]:
    return ["session", "add", "{s}", "--parent", parent, "--target", target, *extra]


def gen(*extra: str, prompt: str = PROMPT, out: str = "{tmp}/g.png") -> list[str]:
    return ["generate", "--prompt", prompt, "--out", out, "--steps", "2", *extra]


def edit(*extra: str, source: str = PROMPT, out: str = "{tmp}/e") -> list[str]:
    return ["edit", "--source", source, "--out", out, "--steps", "2", *extra]


def inv(*extra: str, out: str = "{tmp}/i.json") -> list[str]:
    return ["invert", "{pic}", "--prompt", PROMPT, "--out", out, "--steps", "2", *extra]


T = ("--target", TARGET)
EARLY = {  # refused before any model loads
    "new-steps-nan": new("--steps", "nan"),
    "new-steps-1e3": new("--steps=1e3"),
    "new-steps-zero": new("--steps", "0"),
    "new-steps-negative": new("--steps=-5"),
    "new-guidance-inf": new("--guidance", "inf"),
    "new-guidance--inf": new("--guidance=-inf"),
    "new-guidance-1e400": new("--guidance", "1e400"),
    "new-guidance-negative": new("--guidance=-1"),
    "new-guidance-text": new("--guidance", "high"),
    "new-width-zero": new("--width", "0"),
    "new-width-huge": new("--width", str(10**30)),
    "new-height-float": new("--height", "64.5"),
    "new-height-empty": new("--height", ""),
    "new-seed-negative": new("--seed=-1"),
    "new-seed-nan": new("--seed", "nan"),
    "new-prompt-empty": ["session", "new", "{tmp}/n.json", "--prompt", ""],
    "new-prompt-100k": ["session", "new", "{tmp}/n.json", "--prompt", LONG],
    "new-file-exists": ["session", "new", "{s}", "--prompt", PROMPT],
    "new-force-onto-a-folder": ["session", "new", "{dir}", "--prompt", PROMPT, "--force"],
    "new-under-a-file": ["session", "new", "{file}/n.json", "--prompt", PROMPT],
    "new-prediction-type-unknown": new("--prediction-type", "sample"),
    "add-parent-nowhere": add(parent="n9"),
    "add-parent-empty": add(parent=""),
    "add-parent-path": add(parent="../n1"),
    "add-target-empty": add(target=""),
    "add-target-100k": add(target=LONG),
    "add-kind-unknown": add("--kind", "crop"),
    "add-cycle-ancestor-nowhere": ["session", "add", "{s}", "--parent", "n2", "--kind=cycle"]
    + ["--ancestor", "n9"],
    "add-cycle-ancestor-not-an-ancestor": ["session", "add", "{s}", "--parent", "n2"]
    + ["--kind=cycle", "--ancestor", "n3"],
    "add-k-negative": add("--k=-0.1"),
    "add-k-two": add("--k", "2"),
    "add-k-text": add("--k", "high"),
    "add-v-blend-two": add("--v-blend", "2", "--v-inject", "0.5"),
    "add-v-blend-without-window": add("--v-blend", "0.5"),
    "add-v-blend-inf": add("--v-blend", "inf", "--v-inject", "0.5"),
    "add-self-res-zero": add("--self-res", "0"),
    "add-self-res-negative": add("--self-res=-16"),
    "add-self-res-float": add("--self-res", "2.5"),
    "add-self-res-5000": add("--self-res", "5000"),
    "add-cross-nan": add("--cross", "nan"),
    "add-cross-two": add("--cross", "2"),
    "add-cross-backwards": add("--cross", "0.5:0.1"),
    "add-cross-no-word": add("--cross", "0.2,=0.3"),
    "add-cross-word-outside": add("--cross", "blue=7"),
    "add-cross-text": add("--cross", "soon"),
    "add-self-above-one": add("--self", "1.5"),
    "add-self-text": add("--self", "a:b"),
    "add-self-inf": add("--self", "inf"),
    "add-v-inject-negative": add("--v-inject=-1"),
    "add-v-inject-backwards": add("--v-inject", "0.2:0.1"),
    "add-reweight-1e400": add("--reweight", "blue=1e400"),
    "add-reweight-minus-5000": add("--reweight", "blue=-5000"),
    "add-reweight-no-word": add("--reweight", "=2"),
    "add-reweight-no-scale": add("--reweight", "blue"),
    "add-reweight-word-huge": add("--reweight", "x" * 300 + "=2"),
    "add-preset-unknown": add("--preset", "p3p"),
    "add-v-layers-unknown": add("--v-layers", "all"),
    "add-file-missing": ["session", "add", "{tmp}/none.json", "--parent", "n1", *T],
    "add-file-damaged": ["session", "add", "{file}", "--parent", "n1", *T],
    "add-file-folder": ["session", "add", "{dir}", "--parent", "n1", *T],
    "render-node-nowhere": ["session", "render", "{s}", "--node", "n9"],
    "render-node-empty": ["session", "render", "{s}", "--node", ""],
    "render-cache-text": ["session", "render", "{s}", "--cache-mib", "lots"],
    "export-out-folder": ["session", "export", "{s}", "--out", "{dir}"],
    "export-out-under-a-file": ["session", "export", "{s}", "--out", "{file}/e.json"],
    "export-missing": ["session", "export", "{tmp}/none.json", "--out", "{tmp}/e.json"],
    "generate-steps-nan": gen("--steps", "nan"),
    "generate-guidance-inf": gen("--guidance", "inf"),
    "generate-width-9000": gen("--width", "9000"),
    "generate-height-negative": gen("--height=-64"),
    "generate-seed-2**64": gen("--seed", str(2**64)),
    "generate-prompt-100k": gen(prompt=LONG),
    "generate-prompt-not-utf8": gen(prompt=BAD_UTF8),
    "generate-out-folder": gen(out="{dir}"),
    "generate-out-not-png": gen(out="{tmp}/g.jpg"),
    "generate-out-under-a-file": gen(out="{file}/g.png"),
    "generate-out-deep-under-a-file": gen(out="{file}/a/b/g.png"),
    "edit-k-nan": edit(*T, "--k", "nan"),
    "edit-v-blend-1e400": edit(*T, "--v-blend", "1e400", "--v-inject", "0.5"),
    "edit-self-res-text": edit(*T, "--self-res", "big"),
    "edit-cross-backwards": edit(*T, "--cross", "0.9:0.1"),
    "edit-reweight-nan": edit(*T, "--reweight", "blue=nan"),
    "edit-blend-word-huge": edit(*T, "--blend-words", "w" * 300),
    "edit-no-target": edit(),
    "edit-no-source": ["edit", "--target", TARGET, "--out", "{tmp}/e"],
    "edit-reweight-without-scales": edit("--edit", "reweight"),
    "edit-kind-unknown": edit(*T, "--edit", "morph"),
    "edit-source-100k": edit(*T, source=LONG),
    "edit-target-not-utf8": edit("--target", BAD_UTF8),
    "edit-out-a-file": edit(*T, out="{file}"),
    "edit-out-under-a-file": edit(*T, out="{file}/e"),
    "edit-steps-negative": edit(*T, "--steps=-2"),
    "edit-from-missing": ["edit", "--from", "{tmp}/none.json", "--out", "{tmp}/e"],
    "edit-from-folder": ["edit", "--from", "{dir}", "--out", "{tmp}/e"],
    "edit-from-binary": ["edit", "--from", "{blob}", "--out", "{tmp}/e"],
    "edit-from-utf16": ["edit", "--from", "{utf16}", "--out", "{tmp}/e"],
    "edit-from-json-null": ["edit", "--from", "{null}", "--out", "{tmp}/e"],
    "edit-from-json-list": ["edit", "--from", "{list}", "--out", "{tmp}/e"],
    "edit-from-deep-nesting": ["edit", "--from", "{deep}", "--out", "{tmp}/e"],
    "edit-from-a-session-file": ["edit", "--from", "{s}", "--out", "{tmp}/e"],
    "invert-out-png": inv(out="{tmp}/i.png"),
    "invert-out-exists": inv(out="{s}"),
    "invert-out-folder-forced": inv("--force", out="{tmp}/d.json"),
    "invert-out-under-a-file": inv(out="{file}/i.json"),
    "invert-images-folder-is-a-file": inv(out="{tmp}/clash.json"),
    "invert-inner-steps-zero": inv("--inner-steps", "0"),
    "invert-inner-steps-nan": inv("--inner-steps", "nan"),
    "invert-method-unknown": inv("--method", "ddpm"),
    "invert-fit-unknown": inv("--fit", "stretch"),
    "invert-steps-1e3": inv("--steps", "1e3"),
    "invert-width-8193": inv("--width", "8193"),
    "invert-prompt-100k": ["invert", "{pic}", "--prompt", LONG, "--out", "{tmp}/i.json"],
    "new-negative-100k": new("--negative", LONG),
    "new-negative-not-utf8": new("--negative", BAD_UTF8),
    "new-scheduler-unknown": new("--scheduler", "heun"),
    "new-karras-with-ddim": new("--karras"),
    "new-lora-missing": new("--lora", "{tmp}/none.safetensors"),
    "new-lora-not-weights": new("--lora", "{file}"),
    "new-lora-a-folder": new("--lora", "{dir}/x.safetensors"),
    "new-lora-scale-text": new("--lora", "{weights}:strong"),
    "new-lora-scale-inf": new("--lora", "{weights}:inf"),
    "new-lora-scale-huge": new("--lora", "{weights}:1e6"),
    "new-embedding-token-colon": new("--embedding", "{weights}:a:b"),
    "new-embedding-token-100": new("--embedding", "{weights}:" + "x" * 100),
    "add-self-layers-zero": add("--self-layers", "0:3"),
    "add-self-layers-one-number": add("--self-layers", "14"),
    "add-self-layers-reversed": add("--self-layers", "14:4"),
    "add-self-layers-huge": add("--self-layers", "1:99999"),
    "add-refine-pad-unknown": add("--refine-pad", "left"),
    "generate-lora-missing": gen("--lora", "{tmp}/none.safetensors"),
    "generate-embedding-not-weights": gen("--embedding", "{file}"),
}
LOADING = {  # refused while the model loads: the model, device or dtype is what is wrong
    "render-model-missing": ["session", "render", "{s}", "--model", "{tmp}/none"],
    "render-model-empty-folder": ["session", "render", "{s}", "--model", "{dir}"],
    "render-model-text-file": ["session", "render", "{s}", "--model", "{file}"],
    "render-model-damaged-safetensors": ["session", "render", "{s}", "--model", "{weights}"],
    "render-device-unknown": ["session", "render", "{s}", "--device", "gpu9"],
    "render-dtype-unknown": ["session", "render", "{s}", "--dtype", "fp8"],
    "render-dtype-fp16-on-cpu": ["session", "render", "{s}", "--device", "cpu", "--dtype", "fp16"],
    "generate-model-missing": gen("--model", "{tmp}/none"),
    "generate-model-empty-folder": gen("--model", "{dir}"),
    "generate-model-text-file": gen("--model", "{file}"),
    "edit-model-damaged-safetensors": edit(*T, "--model", "{weights}"),
    "invert-model-empty-folder": inv("--model", "{dir}"),
}
AFTER_LOADING = {  # (session.py) refused in one line, but only after the model has loaded
    "render-cache-negative": ["session", "render", "{s}", "--cache-mib=-1"],
    "render-out-under-a-file": ["session", "render", "{s}", "--out", "{file}/images"],
}
NOT_UTF8 = {  # (model limits / session.py) a prompt that is not UTF-8 crashes the save: rc 3
    "new-prompt-not-utf8": ["session", "new", "{tmp}/n.json", "--prompt", BAD_UTF8],
    "add-target-not-utf8": add(target=BAD_UTF8),
    "add-name-not-utf8": add("--name", BAD_UTF8),
}


@pytest.fixture
def places(tmp_path):
    """The files the command lines name: a session (n2 and n3 edit n1), a text file, an empty
    folder, damaged records and weights, a picture, and a file where an images folder goes."""
    from PIL import Image

    session = Session.new(PROMPT, RenderSettings(steps=2, width=64, height=64), "shapes")
    session, _ = session.add_edit("n1", TARGET, preset("cl-p2p"))
    session, _ = session.add_edit("n1", "a green circle on a white background", preset("p2p"))
    session_io.save(session, tmp_path / "s.json")
    files = {"s": tmp_path / "s.json", "tmp": tmp_path, "file": tmp_path / "notes.txt"}
    files["file"].write_text("not a session, a model or a folder\n")
    for name, content in {
        "blob": bytes(range(256)) * 8,
        "utf16": '{"format": "clp2p-edit"}'.encode("utf-16"),
        "null": b"null",
        "list": b"[]",
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "weights.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage" * 64,
    }.items():
        files[name.split(".")[0]] = tmp_path / name
        files[name.split(".")[0]].write_bytes(content)
    for name in ("dir", "d.json"):
        (tmp_path / name).mkdir()
    files["dir"] = tmp_path / "dir"
    (tmp_path / "clash.images").write_text("a file where the images folder goes")
    files["pic"] = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(files["pic"])
    return files


def _snapshot(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse's refusal of a flag
        return int(exit.code)


def _refused(places, capsys, argv: list[str]) -> None:
    """``argv`` (its placeholders filled) exits 2 with one line; nothing changed."""
    argv = [a.format(**places) for a in argv]
    session_before, files_before = places["s"].read_bytes(), _snapshot(places["tmp"])
    capsys.readouterr()
    code = _run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("clp2p: error: ") and err.count("\n") == 1, err
    assert places["s"].read_bytes() == session_before
    session_io.load(places["s"])
    assert _snapshot(places["tmp"]) == files_before  # no file written, none left behind


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: these refusals come before it."""

    def load(cls, *args, **kwargs):
        pytest.fail("the model was loaded before the input was checked")

    monkeypatch.setattr(Engine, "load", classmethod(load))


@pytest.mark.parametrize("argv", EARLY.values(), ids=EARLY.keys())
def test_a_hostile_command_line_is_one_line_before_loading(places, capsys, no_model, argv):
    _refused(places, capsys, argv)


@pytest.mark.parametrize("argv", LOADING.values(), ids=LOADING.keys())
def test_a_hostile_model_or_device_is_one_line(places, capsys, argv):
    _refused(places, capsys, argv)


@pytest.mark.parametrize("argv", AFTER_LOADING.values(), ids=AFTER_LOADING.keys())
def test_session_render_refuses_before_loading(places, capsys, no_model, argv):
    _refused(places, capsys, argv)


@pytest.mark.parametrize("argv", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_session_text_that_is_not_utf8_is_one_line(places, capsys, no_model, argv):
    _refused(places, capsys, argv)


ODD_TEXT = {  # taken exactly or refused, never half-stored (the text is the last argument)
    "new-prompt-nul": ["session", "new", "{tmp}/n.json", "--prompt", "a red\x00 circle"],
    "new-prompt-escape-sequence": [
        "session",
        "new",
        "{tmp}/n.json",
        "--prompt",
        "a \x1b[2Jred\x07",
    ],
    "add-target-nul": add(target="a blue\x00 circle on a white background"),
    "add-name-newlines": add("--name", "two\nlines\r\n"),
}


@pytest.mark.parametrize("argv", ODD_TEXT.values(), ids=ODD_TEXT.keys())
def test_control_characters_are_stored_exactly_or_refused(places, capsys, no_model, argv):
    argv = [a.format(**places) for a in argv]
    code = _run(argv)
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert err.startswith("clp2p: error: ") and err.count("\n") == 1, err
        return
    written = places["tmp"] / "n.json" if "new" in argv else places["s"]
    session, _ = session_io.load(written)
    assert argv[-1] in {n.prompt for n in session.nodes} | {n.name for n in session.nodes}


TOP_LEVEL = {  # (main.py) the root parser and `clp2p session` print their usage first
    "no-command": [],
    "unknown-command": ["paint"],
    "unknown-flag": ["generate", "--prompt", PROMPT, "--out", "g.png", "--colour", "red"],
    "session-without-a-command": ["session"],
}


@pytest.mark.parametrize("argv", TOP_LEVEL.values(), ids=TOP_LEVEL.keys())
def test_a_malformed_command_is_one_line(places, capsys, no_model, argv):
    _refused(places, capsys, argv)
