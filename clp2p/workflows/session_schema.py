"""The session file's schema (``resources/schemas/session-v<N>.schema.json``) and the
migrations that bring older documents up to it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache

from clp2p.errors import Clp2pError
from clp2p.model.session import SCHEMA_VERSION
from clp2p.resources import resources_dir


def _v1_to_v2(doc: dict) -> dict:
    """Version 2 added the optional ``inversion`` (imported pictures); nothing else changed."""
    return {**doc, "schema_version": 2}


def _v2_to_v3(doc: dict) -> dict:
    """Version 3 stores the highest node number given out (``issued``), so that a deleted
    node's id is never reused; before, it was the highest number among the nodes."""
    nodes = doc.get("nodes")
    ids = [n.get("id") for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else []
    numbers = [int(i[1:]) for i in ids if isinstance(i, str) and i[:1] == "n" and i[1:].isdigit()]
    return {**doc, "schema_version": 3, "issued": max(numbers, default=1)}


def _v3_to_v4(doc: dict) -> dict:
    """Version 4 added the optional ``self_layers`` and ``refine_pad`` of an edit, the
    optional ``negative``, ``scheduler`` and ``karras`` of the settings and the optional
    ``adapters`` (LoRA and embedding files). A version-3 file has none of them, which means
    every layer, no negative prompt, DDIM and no adapters, as before; and its refinements
    were rendered with the padding shifted, so its edits keep ``refine_pad: shifted`` and
    re-render to the same pixels (new edits follow the reference implementation)."""
    nodes = doc.get("nodes")
    if isinstance(nodes, list):
        nodes = [_shifted(n) for n in nodes]
    return {**doc, "schema_version": 4, **({"nodes": nodes} if nodes is not None else {})}


def _shifted(node):
    params = node.get("params") if isinstance(node, dict) else None
    if not isinstance(params, dict):
        return node
    return {**node, "params": {**params, "refine_pad": "shifted"}}


def _v4_to_v5(doc: dict) -> dict:
    """Version 5 added the optional ``blend_start`` of an edit. A version-4 file has none,
    which means local blend after every step, as before."""
    return {**doc, "schema_version": 5}


def _v5_to_v6(doc: dict) -> dict:
    """Version 6 added the optional ``blend_pixels`` of an edit. A version-5 file has none,
    which means local blend on latents only, as before."""
    return {**doc, "schema_version": 6}


def _v6_to_v7(doc: dict) -> dict:
    """Version 7 added the optional ``weights`` of a node: which weights rendered its
    picture. A version-6 file has none, which means unknown: its nodes are never reported as
    made with other weights."""
    return {**doc, "schema_version": 7}


def _v7_to_v8(doc: dict) -> dict:
    """Version 8 added the optional ``blend_norm`` of an edit. A version-7 file has none,
    which means each edit decoded with its own decoder statistics, as before."""
    return {**doc, "schema_version": 8}


# MIGRATIONS[v] turns a version-v document into a version v+1 one.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
    7: _v7_to_v8,
}


@cache
def validator():
    from jsonschema import Draft202012Validator

    path = resources_dir() / "schemas" / f"session-v{SCHEMA_VERSION}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def json_path(parts) -> str:
    """``$.nodes[2].metrics["odd key"]``: a key that is not a plain name is quoted as JSON,
    so that a message naming it stays one line whatever the file holds."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if str(p).isidentifier() else f"[{json.dumps(str(p))}]"
    return out


def migrate(data: dict) -> dict:
    """Bring an older document up to :data:`SCHEMA_VERSION`; refuse newer ones."""
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Clp2pError("$.schema_version: missing or not an integer; is this a clp2p session?")
    if version > SCHEMA_VERSION:
        raise Clp2pError(
            f"this session was written by a newer clp2p (schema version {version}; this one "
            f"reads up to {SCHEMA_VERSION}): update clp2p to open it"
        )
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise Clp2pError(f"$.schema_version: version {version} is not supported")
        data = MIGRATIONS[version](data)
        version = data["schema_version"]
    return data


def short(message: str, n: int = 160) -> str:
    """``message`` on one line (line breaks a file put in it escaped), at most ``n`` long."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    return message if len(message) <= n else message[: n - 3] + "..."


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):  # e.g. 1e400: a session holding it could not be saved again
        raise ValueError(f"{short(text, 20)} is too large a number")
    return number


MAX_DEPTH = 16  # a session document nests 5 levels; deeper is damage, never read further


def _too_deep(data: object) -> bool:
    """Whether ``data`` nests containers deeper than :data:`MAX_DEPTH` (without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return False


def document(text: str) -> object:
    """A session file's text as parsed JSON: one line naming the damage when it is not JSON,
    holds a number JSON does not allow (NaN, infinity, too large to keep) or nests deeper
    than :data:`MAX_DEPTH`."""
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise Clp2pError(
            f"$: not valid JSON ({short(str(exc), 100)}): the file is damaged"
        ) from None
    if _too_deep(data):
        raise Clp2pError(
            f"$: values are nested more than {MAX_DEPTH} levels deep: the file is damaged"
        )
    return data
