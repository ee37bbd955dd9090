"""A session file clp2p writes always loads again: every writer checks the same bounds (the
model's limits, which the schema states too), and a value that would make the file unloadable
is refused with one line before anything is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.session import SCHEMA_VERSION, Session
from clp2p.model.settings import SCHEDULERS, RenderSettings
from clp2p.resources import resources_dir
from clp2p.workflows import session_io

PROMPT = "a red circle on a white background"
TARGET = "a blue circle on a white background"


def _schema() -> dict:
    name = f"session-v{SCHEMA_VERSION}.schema.json"
    return json.loads((resources_dir() / "schemas" / name).read_text())


def test_the_schema_states_the_models_limits():
    schema = _schema()
    settings = schema["properties"]["settings"]["properties"]
    assert settings["steps"]["maximum"] == limits.MAX_STEPS
    assert settings["guidance"]["maximum"] == limits.MAX_GUIDANCE
    assert settings["seed"]["maximum"] == limits.MAX_SEED
    assert settings["negative"]["maxLength"] == limits.MAX_PROMPT_CHARS
    assert tuple(settings["scheduler"]["enum"]) == SCHEDULERS
    for side in ("width", "height"):
        assert (settings[side]["minimum"], settings[side]["maximum"]) == (
            limits.MIN_SIZE,
            limits.MAX_SIZE,
        )
    node = schema["$defs"]["node"]["properties"]
    assert node["prompt"]["maxLength"] == limits.MAX_PROMPT_CHARS
    assert node["name"]["maxLength"] == limits.MAX_NAME_CHARS
    assert node["note"]["maxLength"] == limits.MAX_NOTE_CHARS
    assert node["id"]["pattern"] == limits.NODE_ID_PATTERN
    assert node["weights"]["pattern"] == limits.WEIGHTS_PATTERN
    params = schema["$defs"]["params"]["properties"]
    assert params["self_res"]["maximum"] == limits.MAX_SELF_RES
    number = f"[1-9][0-9]{{0,{len(str(limits.MAX_LAYER)) - 1}}}"  # up to MAX_LAYER's digits
    assert params["self_layers"]["pattern"] == f"^(all|{number}:{number})$"
    assert params["reweight"]["additionalProperties"]["maximum"] == limits.MAX_REWEIGHT
    assert params["blend_words"]["items"]["maxLength"] == limits.MAX_WORD_CHARS


def _new(path: Path, *extra: str) -> int:
    return main(["session", "new", str(path), "--prompt", PROMPT, "--steps", "4", *extra])


@pytest.mark.parametrize(
    "extra",
    [
        ["--steps", "5000"],
        ["--guidance", "1000"],
        ["--guidance", "nan"],
        ["--guidance", "inf"],
        ["--width", "9000"],
        ["--height", "4"],
        ["--seed", str(2**63)],
    ],
)
def test_session_new_refuses_what_would_not_load(tmp_path, capsys, extra):
    path = tmp_path / "s.json"
    assert _new(path, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("clp2p: error: --") and err.count("\n") == 1
    assert not path.exists()


def test_a_long_prompt_is_refused(tmp_path, capsys):
    path = tmp_path / "s.json"
    assert main(["session", "new", str(path), "--prompt", "red " * 1300]) == 2
    assert "prompt is 5200 characters long" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--reweight", "blue=nan"],
        ["--reweight", "blue=inf"],
        ["--reweight", "blue=5000"],
        ["--self-res", "100000"],
        ["--name", "x" * 2000],
        ["--k", "nan"],
        ["--v-blend", "nan"],
        ["--blend-words", "w" * 300],
    ],
)
def test_session_add_refuses_what_would_not_load(tmp_path, capsys, extra):
    path = tmp_path / "s.json"
    assert _new(path) == 0
    before = path.read_bytes()
    code = main(["session", "add", str(path), "--parent", "n1", "--target", TARGET, *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("clp2p: error: ")
    assert path.read_bytes() == before  # the session is as it was
    session_io.load(path)


def test_node_ids_stop_before_the_pattern_ends(tmp_path):
    session = Session.new(PROMPT, RenderSettings(steps=4), "shapes")
    doc = session_io.to_json(session)
    doc["nodes"][0]["id"] = "n999999999"
    session = session_io.from_json(doc)
    with pytest.raises(Clp2pError, match="used node ids up to n999999999"):
        session.add_edit("n999999999", TARGET, session_io.EditParams())


def test_whole_numbers_written_as_floats_load_as_integers(tmp_path):
    session = Session.new(PROMPT, RenderSettings(steps=4), "shapes")
    doc = session_io.to_json(session)
    doc["settings"]["steps"] = 4.0
    doc["settings"]["seed"] = 3.0
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    loaded, _ = session_io.load(path)
    assert loaded.settings.steps == 4 and isinstance(loaded.settings.steps, int)
    assert isinstance(loaded.settings.seed, int)


def test_save_refuses_a_document_the_loader_would_refuse(tmp_path):
    session = Session.new(PROMPT, RenderSettings(steps=4), "shapes")
    broken = session.update("n1", metrics={"mae": math.nan})
    path = tmp_path / "s.json"
    with pytest.raises(Clp2pError, match="was not saved"):
        session_io.save(broken, path)
    assert not path.exists()


extreme_numbers = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e308", "5000", "1000", "0.5", "1"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
words = st.sampled_from(["red", "blue", "circle", "square", "x" * 300, "", "white"])
operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(["--k", "--v-blend", "--self-res"]), extreme_numbers),
    st.tuples(st.just("add"), st.just("--reweight"), st.tuples(words, extreme_numbers)),
    st.tuples(st.just("add"), st.just("--name"), st.text(max_size=1100)),
    st.tuples(st.just("add"), st.just("--target"), st.text(max_size=5000)),
    st.tuples(st.just("cycle"), st.just("--ancestor"), st.sampled_from(["n1", "n2", "n9"])),
)


def _run(argv: list[str]) -> int:
    """``main(argv)``; argparse's refusal of a malformed flag value counts as status 2."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=extreme_numbers,
    guidance=extreme_numbers,
    operations=st.lists(operation, min_size=1, max_size=5),
)
def test_every_file_the_cli_writes_loads_again(tmp_path_factory, steps, guidance, operations):
    path = tmp_path_factory.mktemp("s") / "s.json"
    new = ["session", "new", str(path), f"--prompt={PROMPT}", f"--steps={steps}"]
    assert _run([*new, f"--guidance={guidance}"]) in (0, 2)
    if not path.exists():
        return
    for kind, flag, value in operations:
        session, _ = session_io.load(path)
        parent = session.nodes[-1].id
        if kind == "cycle":
            args = ["--kind=cycle", f"{flag}={value}"]
        elif flag == "--reweight":
            args = [f"--target={TARGET}", f"{flag}={value[0]}={value[1]}"]
        elif flag == "--target":
            args = [f"{flag}={value}"]
        else:
            args = [f"--target={TARGET}", f"{flag}={value}"]
        assert _run(["session", "add", str(path), "--parent", parent, *args]) in (0, 2)
        session_io.load(path)  # whatever happened, the file loads
