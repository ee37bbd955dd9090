"""Fuzzing the session loader: damaged files always give a clear error, never a traceback,
and the file on disk is never changed."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clp2p.errors import Clp2pError
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io


def _valid() -> dict:
    s = Session.new("a red circle on a white background", RenderSettings(steps=4), "shapes")
    s, n2 = s.add_edit("n1", "a blue circle on a white background", preset("p2p"))
    s, _ = s.add_cycle(n2)
    s, _ = s.add_edit(n2, "a blue big circle on a white background", preset("cl-p2p"))
    return session_io.to_json(s)


VALID = _valid()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["n1", "n2", "n3", "n4", "n99", "root", "cycle", "morph", "0.5:0.2", "all"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@st.composite
def damaged(draw):
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete"]))
            if action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    text = json.dumps(doc)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _check(tmp_path, text: str) -> None:
    path = tmp_path / "s.json"
    raw = text.encode("utf-8", "surrogatepass")
    path.write_bytes(raw)
    try:
        session_io.load(path)
    except Clp2pError as exc:
        assert str(exc) and "\n" not in str(exc)
    assert path.read_bytes() == raw


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(damaged())
def test_damaged_sessions_give_clear_errors(tmp_path, text):
    _check(tmp_path, text)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_clear_errors(tmp_path, text):
    _check(tmp_path, text)


def test_parent_cycles_and_dangling_links_are_named(tmp_path):
    doc = json.loads(json.dumps(VALID))
    doc["nodes"][1]["parent"] = "n4"  # n2 <- n4 <- n2: a cycle
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    try:
        session_io.load(path)
    except Clp2pError as exc:
        assert str(exc).startswith("$.nodes[1].parent")
    else:
        raise AssertionError("a parent cycle was accepted")
    deep = "[" * 100000 + "]" * 100000
    path.write_text(deep)
    try:
        session_io.load(path)
    except Clp2pError as exc:
        assert "not valid JSON" in str(exc) or str(exc).startswith("$")
