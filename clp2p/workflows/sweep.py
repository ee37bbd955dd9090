"""Sweeps and batches on disk: each item rendered by a worker (:mod:`clp2p.workflows.runner`),
written to its own folder as it finishes, and a table and a contact sheet of them all.

A results folder::

    OUT/sweep.json            what was asked (the kind, the grid or the manifest, the model)
    OUT/items/<key>/          one item: source.png, result.png, item.json (its parameters,
                              scores, time, or its error) and session.json, the item as a
                              session that opens in the studio and re-renders to the same bits
    OUT/results.csv, .json    one row per item, in the order asked
    OUT/contact-sheet.png     the grid of results

An item is done when its folder holds its files under its key (the hash of everything its
image depends on): running the same command again renders only what is missing or failed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clp2p import atomic
from clp2p.errors import Clp2pError
from clp2p.model.imported import read_image
from clp2p.model.session import Session, chain_key, image_hash
from clp2p.model.sweep import Item
from clp2p.workflows import session_io
from clp2p.workflows.metrics import edit_scores
from clp2p.workflows.runner import Task, Worker

RESULTS_FORMAT = "clp2p-sweep"
RESULTS_VERSION = 1
ITEM_FILES = ("item.json", "source.png", "result.png", "session.json")


# ---- on a worker ------------------------------------------------------------------------


def render_item(worker: Worker, payload: tuple) -> dict:
    """Render one item: import its picture first when it has one; the source image (the
    edited node's parent) comes from an earlier task, or is rendered first, leaving its
    record for the edits of it that follow. Returns the item's session with both nodes
    rendered, the two images and the model's edit scores."""
    item, pixels, serves = payload
    worker.renderer.serves = serves
    try:
        return _render_item(worker, item, pixels)
    finally:
        worker.renderer.serves = ()


def _render_item(worker: Worker, item: Item, pixels: np.ndarray | None) -> dict:
    # imported here: a process that only hands items to Ray workers never loads torch
    from clp2p.workflows.service import check_adapters
    from clp2p.workflows.session_render import apply

    engine = worker.engine
    session, node_id, images = item.session, item.node_id, {}
    if item.picture is not None:
        from clp2p.workflows.picture_import import import_image

        p, edit = item.picture, item.session.node(item.node_id)
        session, images = import_image(
            engine,
            pixels,
            item.session.root.prompt,
            item.session.settings,
            p.method,
            fit=p.fit,
            file=Path(p.path).name,
            inner_steps=p.inner_steps,
        )
        session, node_id = session.add_edit("n1", edit.prompt, edit.params, edit.kind)
    check_adapters(session, engine)
    session = replace(
        session, device=str(engine.device), dtype=str(engine.dtype).replace("torch.", "")
    )
    parent = session.node(node_id).parent or ""
    stored = session.node(parent).image in images  # else rendered here, with these weights
    source = _source(worker, session, parent, images)
    render = worker.renderer.render(session, node_id, cancel=worker.cancel)
    _keep(worker, session, render)
    weights = session.node(parent).weights if stored else render.weights
    session = apply(session, render).update(
        parent, status="rendered", image=image_hash(source), weights=weights
    )
    images |= {image_hash(source): source, render.hash: render.image}
    # the nodes above the parent keep their images only when this item has them
    nodes = tuple(
        n if n.image in images else replace(n, status="new", image=None, weights="")
        for n in session.nodes
    )
    session = replace(session, nodes=nodes)
    kept = {n.image for n in nodes} | ({session.imported.input} if session.imported else set())
    edited = session.node(node_id)
    scores = edit_scores(
        engine.card.scores, session.node(parent).prompt, edited.prompt, source, render.image
    )
    return {
        "session": session,
        "node_id": node_id,
        "source": source,
        "result": render.image,
        "images": {k: v for k, v in images.items() if k in kept},
        "computed": render.computed,
        "note": render.note,
        "scores": scores,
    }


def _keep(worker: Worker, session: Session, render) -> None:
    """Keep every image ``render`` computed on ``worker``, by chain key, for later items."""
    for nid, image in render.images.items():
        worker.keep_image(chain_key(session, session.path(nid)), image)


def _source(worker: Worker, session: Session, parent: str, images: dict) -> np.ndarray:
    node = session.node(parent)
    if node.image in images:
        return images[node.image]
    key = chain_key(session, session.path(parent))
    if key not in worker.images:
        _keep(worker, session, worker.renderer.render(session, parent, cancel=worker.cancel))
    return worker.images[key]


# ---- in the results folder ----------------------------------------------------------------


@dataclass
class Report:
    """What a run did: items rendered now, found done, failed; the table's rows."""

    rendered: int
    skipped: int
    failed: int
    rows: list[dict]
    folder: Path


class ResultsFolder:
    """The folder a sweep or batch writes (see the module's docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise Clp2pError(f"--out '{folder}' is a file: give a folder for the results")

    def item_dir(self, key: str) -> Path:
        return self.folder / "items" / key[:16]

    def row(self, key: str) -> dict | None:
        """The item's row as written, None when it has none (or a damaged one)."""
        path = self.item_dir(key) / "item.json"
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return row if isinstance(row, dict) and row.get("key") == key else None

    def weights(self, key: str) -> tuple[str, str]:
        """The weights (tags) that rendered the item's source and result, as its
        ``session.json`` says; ("", "") (unknown) when it cannot be read."""
        try:
            session, _ = session_io.read(self.item_dir(key) / "session.json")
        except (Clp2pError, OSError):
            return "", ""
        edited = session.nodes[-1]
        source = session.node(edited.parent).weights if edited.parent else ""
        return source, edited.weights

    def done(self, key: str) -> bool:
        row = self.row(key)
        folder = self.item_dir(key)
        return bool(
            row and not row.get("error") and all((folder / f).is_file() for f in ITEM_FILES)
        )

    def begin(self, asked: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic.write_json(
            self.folder / "sweep.json",
            {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, **asked},
        )

    def write(self, key: str, item: Item, outcome: dict) -> dict:
        """Write one item's outcome (atomically: a folder is whole or absent) and its row."""
        edit = item.session.node(item.node_id)
        session = outcome.get("session") or item.session
        row = {
            "key": key,
            **dict(item.values),
            "source": session.node(edit.parent or "n1").prompt,
            "target": edit.prompt,
            "kind": edit.kind,
            "params": edit.params.to_json() if edit.params else None,
            "settings": session.settings.to_json(),
            "image": item.picture.path if item.picture else None,
            "status": "failed" if outcome.get("error") else "done",
            "error": outcome.get("error"),
            "seconds": outcome.get("seconds"),
            "computed": outcome.get("computed"),
            "worker": outcome.get("worker"),
            "note": outcome.get("note") or None,
            "scores": outcome.get("scores") or {},
        }

        def write(tmp: Path) -> None:
            if not row["error"]:
                atomic.write_png(tmp / "source.png", outcome["source"])
                atomic.write_png(tmp / "result.png", outcome["result"])
                session_io.save(session, tmp / "session.json", outcome["images"])
            atomic.write_json(tmp / "item.json", row)

        folder = self.item_dir(key)
        if folder.exists() and row["error"]:  # a failure replaces no earlier files
            atomic.write_json(folder / "item.json", row)
        else:
            atomic.write_folder(folder, write)
        return row

    def finish(
        self, rows: list[dict], sheet: Callable[[list[dict], Path], None] | None = None
    ) -> None:
        """The table of ``rows`` (CSV and JSON) and the contact sheet."""
        atomic.write_json(self.folder / "results.json", {"items": rows}, indent=1)
        atomic.write_text(self.folder / "results.csv", table_csv(rows))
        if sheet is not None:
            sheet(rows, self.folder / "contact-sheet.png")


def table_csv(rows: list[dict]) -> str:
    """One line per row: its values, prompts, status and time, then each score."""
    columns: list[str] = []
    for row in rows:
        for name in row:
            if name not in ("params", "settings", "scores") and name not in columns:
                columns.append(name)
    scores = list(dict.fromkeys(s for row in rows for s in row.get("scores") or {}))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(columns + scores)
    for row in rows:
        w.writerow(
            [_cell(row.get(c)) for c in columns]
            + [_cell((row.get("scores") or {}).get(s)) for s in scores]
        )
    return out.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def picture_of(item: Item) -> np.ndarray | None:
    return None if item.picture is None else read_image(item.picture.path)


def run_items(
    items: list[Item],
    folder: str | Path,
    pool,
    asked: dict,
    *,
    on_item: Callable[[dict, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    sheet: Callable[[list[dict], Path], None] | None = None,
) -> Report:
    """Render every item not done yet in ``folder`` on ``pool``; ``on_item(row, done,
    total)`` after each. Items are keyed by their inputs: one asked twice renders once."""
    results = ResultsFolder(folder)
    pictures = {id(item): picture_of(item) for item in items}
    keys = []
    for item in items:
        pixels = pictures[id(item)]
        keys.append(item.key(image_hash(pixels) if pixels is not None else ""))
    results.begin(asked)
    serves = tuple(dict.fromkeys(i.session.node(i.node_id).params for i in items))
    todo, seen = [], set()
    for key, item in zip(keys, items, strict=True):
        if key not in seen and not results.done(key):
            todo.append(Task(key, (item, pictures[id(item)], serves)))
        seen.add(key)
    skipped = len(seen) - len(todo)
    counts = {"done": skipped, "failed": 0}

    def on_done(task: Task, outcome: dict) -> None:
        row = results.write(task.key, task.payload[0], outcome)
        counts["done"] += 1
        counts["failed"] += bool(row["error"])
        if on_item is not None:
            on_item(row, counts["done"], len(seen))

    try:
        pool.run(todo, render_item, on_done, cancel)
    finally:
        rows = [results.row(k) or {"key": k, "status": "not rendered"} for k in keys]
        results.finish(rows, sheet)
    return Report(len(todo) - counts["failed"], skipped, counts["failed"], rows, results.folder)
