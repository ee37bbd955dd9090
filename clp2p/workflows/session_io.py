"""Session files: versioned JSON validated against ``resources/schemas/session-v8.schema.json``,
migrations for older versions, atomic writes, and images (and an imported picture's inversion
arrays) beside the file or embedded."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clp2p.atomic import write_bytes, write_json, write_png
from clp2p.errors import Clp2pError
from clp2p.model.adapters import Adapter
from clp2p.model.imported import ImportedImage, Inversion
from clp2p.model.params import EditParams
from clp2p.model.session import SCHEMA_VERSION, Node, Session, now
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_assets
from clp2p.workflows.session_lock import SessionChanged as SessionChanged  # re-exported
from clp2p.workflows.session_lock import Stamp, check_unchanged, locked, stamp
from clp2p.workflows.session_schema import MIGRATIONS as MIGRATIONS  # re-exported
from clp2p.workflows.session_schema import document, json_path, migrate, short, validator

FORMAT = "clp2p-session"
NPZ_URL = "data:application/x-npz;base64,"


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
    if session.adapters:
        data["adapters"] = [a.to_json() for a in session.adapters]
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
        **({"weights": n.weights} if n.weights else {}),
    }


def from_json(data: object, base: Path | None = None) -> Session:
    """Validate a parsed document and build the session. Every problem is a
    :class:`Clp2pError` naming the JSON path of the first bad field. ``base``: the folder
    that relative paths (an imported picture's inversion arrays) start from."""
    if not isinstance(data, dict):
        raise Clp2pError("$: a session file holds a JSON object")
    data = migrate(data)
    from jsonschema.exceptions import best_match

    error = best_match(validator().iter_errors(data))
    if error is not None:
        raise Clp2pError(f"{json_path(error.absolute_path)}: {short(error.message)}")
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data["nodes"]):
        nodes.append(_node(raw, i, nodes, seen))
        seen[raw["id"]] = i
    s = data["settings"]
    try:
        settings = RenderSettings.from_json(s)
    except Clp2pError as exc:
        raise Clp2pError(f"$.settings: {exc}") from None
    try:
        adapters = tuple(Adapter.from_json(a) for a in data.get("adapters", ()))
    except Clp2pError as exc:
        raise Clp2pError(f"$.adapters: {exc}") from None
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
        adapters=adapters,
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
        weights=raw.get("weights", ""),
    )


def _imported(raw: dict, prompt: str, settings: RenderSettings, base: Path | None):
    """The imported picture of ``$.inversion``, its arrays read and checked by their hash."""
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
            f"$.inversion.data: cannot read the inversion arrays '{short(ref, 80)}' ({exc}); "
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


def parse(text: str, base: Path | None = None) -> Session:
    return from_json(document(text), base)


def _read_text(path: Path) -> tuple[str, Stamp]:
    """The file's text and version. Only a regular file is read: opening does not wait on a
    FIFO, and a device is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise Clp2pError(f"session file '{path}' does not exist") from None
    except OSError as exc:
        raise Clp2pError(f"cannot read session file '{path}': {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise Clp2pError(f"cannot read session file '{path}': it is {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read().decode("utf-8"), Stamp.of(st)
        except (OSError, UnicodeDecodeError) as exc:
            raise Clp2pError(f"cannot read session file '{path}': {exc}") from None


def read(path: str | Path) -> tuple[Session, Stamp]:
    """The session alone (its images not read) and the version of the file it came from."""
    path = Path(path)
    text, version = _read_text(path)
    return parse(text, path.parent), version


def load_stamped(path: str | Path) -> tuple[Session, dict[str, np.ndarray], Stamp]:
    """A session, the images it carries (hash -> RGB uint8) and the version of the file they
    came from (for :func:`save`'s ``expect``). Read-only: never writes."""
    path = Path(path)
    text, version = _read_text(path)
    session = parse(text, path.parent)
    data = json.loads(text)
    images: dict[str, np.ndarray] = {}
    for key, ref in (data.get("images") or {}).items():
        image = session_assets.read_image(path.parent, ref, key, session.settings)
        if image is not None:
            images[key] = image
    return session, images, version


def load(path: str | Path) -> tuple[Session, dict[str, np.ndarray]]:
    """A session and the images it carries (hash -> RGB uint8), read-only: never writes."""
    session, images, _ = load_stamped(path)
    return session, images


ANY_VERSION = object()  # save's default: replace whatever the file is now


def save(
    session: Session,
    path: str | Path,
    images: dict[str, np.ndarray] | None = None,
    embed: bool = False,
    *,
    expect: Stamp | None | object = ANY_VERSION,
) -> Stamp | None:
    """Write atomically, holding the folder's lock; the new file's version is returned.
    Images go to ``<name>.images/<hash>.png`` beside the file, or into the JSON as data URLs
    with ``embed``; an image of the session that ``images`` lacks keeps its file beside when
    that file holds it. The whole document is checked against the schema first: a session
    that would not load again is refused and nothing is written. ``expect``: the version the
    caller loaded (None: there was no file); a file changed since is not replaced
    (:class:`SessionChanged`)."""
    path = Path(path)
    folder = path.parent / f"{path.stem}.images"
    used = {n.image for n in session.nodes if n.image}
    if session.imported is not None:
        used.add(session.imported.input)
    pending: list[tuple[Path, Callable[[Path], None]]] = []  # files to write beside
    refs: dict[str, str] = {}
    for key in sorted(used - set(images or {})) if not embed else ():
        if session_assets.holds(folder / f"{key}.png"):  # written earlier, still whole
            refs[key] = f"{folder.name}/{key}.png"
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
    with locked(path):
        if expect is not ANY_VERSION:
            check_unchanged(path, expect)
        for target, write in pending:
            folder.mkdir(exist_ok=True)
            if not session_assets.holds(target):
                write(target)
                session_assets.remember(target)
        write_json(path, document)
        return stamp(path)


def _check_document(document: dict, path: Path) -> None:
    """Refuse to write a document that :func:`load` would refuse."""
    from jsonschema.exceptions import best_match

    try:
        json.dumps(document, allow_nan=False)
    except ValueError:
        raise Clp2pError(f"'{path.name}' was not saved: a value is not a finite number") from None
    error = best_match(validator().iter_errors(document))
    if error is not None:
        raise Clp2pError(
            f"'{path.name}' was not saved: {json_path(error.absolute_path)}: {short(error.message)}"
        )
