"""Session files: versioned JSON validated against ``resources/schemas/session-v3.schema.json``,
migrations for older versions, atomic writes, and images (and an imported picture's inversion
arrays) beside the file or embedded."""

from __future__ import annotations

import base64
import json
import re
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from clp2p.atomic import write_bytes, write_json, write_png
from clp2p.errors import Clp2pError
from clp2p.model.imported import ImportedImage, Inversion
from clp2p.model.params import EditParams, RenderSettings
from clp2p.model.session import SCHEMA_VERSION, Node, Session, now
from clp2p.resources import resources_dir
from clp2p.workflows import session_assets

FORMAT = "clp2p-session"
NPZ_URL = "data:application/x-npz;base64,"


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


# MIGRATIONS[v] turns a version-v document into a version v+1 one.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}


@cache
def _validator():
    from jsonschema import Draft202012Validator

    path = resources_dir() / "schemas" / f"session-v{SCHEMA_VERSION}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _json_path(parts) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def to_json(
    session: Session, images: dict[str, str] | None = None, inversion_ref: str = ""
) -> dict:
    data = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created": session.created,
        "saved": now(),
        "model": session.model,
        "device": session.device,
        "dtype": session.dtype,
        "settings": session.settings.to_json(),
        "nodes": [_node_json(n) for n in session.nodes],
        "issued": session.issued,
    }
    if images:
        data["images"] = dict(images)
    imp = session.imported
    if imp is not None:
        data["inversion"] = {
            "method": imp.inversion.method,
            "input": imp.input,
            "fit": imp.fit,
            "file": imp.file,
            "data": inversion_ref,
            "data_hash": imp.inversion.data_hash,
            "psnr": imp.psnr,
            "seconds": imp.seconds,
            "unet_forward": imp.unet_forward,
            "unet_backward": imp.unet_backward,
            "inner_steps": imp.inner_steps,
        }
    return data


def _node_json(n: Node) -> dict:
    return {
        "id": n.id,
        "parent": n.parent,
        "kind": n.kind,
        "prompt": n.prompt,
        "params": n.params.to_json() if n.params is not None else None,
        "reverses": n.reverses,
        "name": n.name,
        "note": n.note,
        "favourite": n.favourite,
        "status": n.status,
        "image": n.image,
        "seconds": n.seconds,
        "metrics": dict(n.metrics),
        "created": n.created,
    }


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


def from_json(data: object, base: Path | None = None) -> Session:
    """Validate a parsed document and build the session. Every problem is a
    :class:`Clp2pError` naming the JSON path of the first bad field. ``base``: the folder
    that relative paths (an imported picture's inversion arrays) start from."""
    if not isinstance(data, dict):
        raise Clp2pError("$: a session file holds a JSON object")
    data = migrate(data)
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(data))
    if error is not None:
        raise Clp2pError(f"{_json_path(error.absolute_path)}: {_short(error.message)}")
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data["nodes"]):
        nodes.append(_node(raw, i, nodes, seen))
        seen[raw["id"]] = i
    s = data["settings"]
    try:
        settings = RenderSettings(s["seed"], s["steps"], s["guidance"], s["width"], s["height"])
    except Clp2pError as exc:
        raise Clp2pError(f"$.settings: {exc}") from None
    imported = None
    if "inversion" in data:
        imported = _imported(data["inversion"], nodes[0].prompt, settings, base)
    return Session(
        settings=settings,
        model=data["model"],
        nodes=tuple(nodes),
        created=data.get("created", ""),
        device=data.get("device", ""),
        dtype=data.get("dtype", ""),
        imported=imported,
        issued=data["issued"],
    )


def _node(raw: dict, i: int, nodes: list[Node], seen: dict[str, int]) -> Node:
    """Node ``i`` of ``$.nodes``, checked against the nodes before it (ids in ``seen``)."""
    where = f"$.nodes[{i}]"
    node_id = raw["id"]
    if node_id in seen:
        raise Clp2pError(f"{where}.id: '{node_id}' is used twice")
    parent = raw["parent"]
    if i == 0:
        if parent is not None or raw["kind"] != "root":
            raise Clp2pError(f"{where}: the first node must be the root (kind root, no parent)")
    elif raw["kind"] == "root" or parent is None:
        raise Clp2pError(f"{where}: only the first node may be a root")
    elif parent not in seen:
        raise Clp2pError(
            f"{where}.parent: '{parent}' is not an earlier node (parents come first; "
            "a parent link may not point nowhere or form a cycle)"
        )
    if (raw.get("params") is None) != (raw["kind"] == "root"):
        raise Clp2pError(f"{where}.params: an edit has params, the root has none")
    try:
        params = EditParams.from_json(raw["params"]) if raw.get("params") else None
    except (Clp2pError, ValueError, TypeError) as exc:
        raise Clp2pError(f"{where}.params: {exc}") from None
    reverses = raw.get("reverses")
    if (reverses is not None) != (raw["kind"] == "cycle"):
        raise Clp2pError(f"{where}.reverses: a cycle node names the ancestor it reverses")
    if reverses is not None and not _is_ancestor(nodes, seen, parent, reverses):
        raise Clp2pError(f"{where}.reverses: '{reverses}' is not an ancestor of this node")
    return Node(
        id=node_id,
        parent=parent,
        kind=raw["kind"],
        prompt=raw["prompt"],
        params=params,
        reverses=reverses,
        name=raw.get("name", ""),
        note=raw.get("note", ""),
        favourite=raw.get("favourite", False),
        status=raw.get("status", "new"),
        image=raw.get("image"),
        seconds=raw.get("seconds"),
        metrics=dict(raw.get("metrics", {})),
        created=raw.get("created", ""),
    )


def _imported(raw: dict, prompt: str, settings: RenderSettings, base: Path | None):
    """The imported picture of ``$.inversion``, its arrays read and checked against their
    hash."""
    ref = raw["data"]
    try:
        if ref.startswith(NPZ_URL):
            blob = session_assets.check_npz(
                base64.b64decode(ref[len(NPZ_URL) :], validate=True), settings
            )
        elif not re.fullmatch(r"[^/\\]+\.images/[0-9a-f]{64}\.npz", ref):
            raise ValueError("it must be NAME.images/<hash>.npz beside the session file")
        elif base is None:
            raise OSError("no folder to read it from")
        else:
            blob = session_assets.check_npz(session_assets.read_npz(base, ref), settings)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise Clp2pError(
            f"$.inversion.data: cannot read the inversion arrays '{_short(ref, 80)}' ({exc}); "
            "keep the session's .images folder beside it, or save with embedded images"
        ) from None
    try:
        inversion = Inversion.from_bytes(raw["method"], prompt, blob)
    except (Clp2pError, OSError, ValueError, KeyError) as exc:
        raise Clp2pError(f"$.inversion.data: the inversion arrays are damaged ({exc})") from None
    if inversion.data_hash != raw["data_hash"]:
        raise Clp2pError(
            "$.inversion.data_hash: the inversion arrays do not match their hash (the file "
            "was changed or belongs to another session)"
        )
    try:
        inversion.check(settings)
    except Clp2pError as exc:
        raise Clp2pError(f"$.settings: {exc}") from None
    return ImportedImage(
        inversion=inversion,
        input=raw["input"],
        fit=raw.get("fit", "crop"),
        file=raw.get("file", ""),
        psnr=raw.get("psnr"),
        seconds=raw.get("seconds", 0.0),
        unet_forward=raw.get("unet_forward", 0),
        unet_backward=raw.get("unet_backward", 0),
        inner_steps=raw.get("inner_steps", 0),
    )


def _is_ancestor(nodes: list[Node], seen: dict[str, int], start: str, target: str) -> bool:
    current: str | None = start
    while current is not None:
        if current == target:
            return True
        current = nodes[seen[current]].parent
    return False


def _short(message: str, n: int = 160) -> str:
    return message if len(message) <= n else message[: n - 3] + "..."


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse(text: str, base: Path | None = None) -> Session:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Clp2pError(
            f"$: not valid JSON ({_short(str(exc), 100)}): the file is damaged"
        ) from None
    return from_json(data, base)


def load(path: str | Path) -> tuple[Session, dict[str, np.ndarray]]:
    """A session and the images it carries (hash -> RGB uint8), read-only: never writes."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Clp2pError(f"session file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Clp2pError(f"cannot read session file '{path}': {exc}") from None
    session = parse(text, path.parent)
    data = json.loads(text)
    images: dict[str, np.ndarray] = {}
    for key, ref in (data.get("images") or {}).items():
        image = session_assets.read_image(path.parent, ref, key, session.settings)
        if image is not None:
            images[key] = image
    return session, images


def save(
    session: Session,
    path: str | Path,
    images: dict[str, np.ndarray] | None = None,
    embed: bool = False,
) -> None:
    """Write atomically. Images go to ``<name>.images/<hash>.png`` beside the file, or into
    the JSON as data URLs with ``embed``. The whole document is checked against the schema
    first: a session that would not load again is refused and nothing is written."""
    path = Path(path)
    folder = path.parent / f"{path.stem}.images"
    used = {n.image for n in session.nodes if n.image}
    if session.imported is not None:
        used.add(session.imported.input)
    pending: list[tuple[Path, Callable[[Path], None]]] = []  # files to write beside
    refs: dict[str, str] = {}
    for key, image in (images or {}).items():
        if key not in used:
            continue
        if embed:
            refs[key] = (
                "data:image/png;base64,"
                + base64.b64encode(session_assets.png_bytes(image)).decode()
            )
        else:
            refs[key] = f"{folder.name}/{key}.png"
            pending.append((folder / f"{key}.png", lambda p, image=image: write_png(p, image)))
    inversion_ref = ""
    if session.imported is not None:
        inversion = session.imported.inversion
        blob = inversion.to_bytes()
        if embed:
            inversion_ref = NPZ_URL + base64.b64encode(blob).decode()
        else:
            target = folder / f"{inversion.data_hash}.npz"
            inversion_ref = f"{folder.name}/{target.name}"
            pending.append((target, lambda p, blob=blob: write_bytes(p, blob)))
    document = to_json(session, refs, inversion_ref)
    _check_document(document, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in pending:
        folder.mkdir(exist_ok=True)
        if not session_assets.holds(target):
            write(target)
            session_assets.remember(target)
    write_json(path, document)


def _check_document(document: dict, path: Path) -> None:
    """Refuse to write a document that :func:`load` would refuse."""
    from jsonschema.exceptions import best_match

    try:
        json.dumps(document, allow_nan=False)
    except ValueError:
        raise Clp2pError(f"'{path.name}' was not saved: a value is not a finite number") from None
    error = best_match(_validator().iter_errors(document))
    if error is not None:
        raise Clp2pError(
            f"'{path.name}' was not saved: {_json_path(error.absolute_path)}: "
            f"{_short(error.message)}"
        )
