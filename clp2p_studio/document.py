"""The open session as the window sees it: undoable tree edits (QUndoStack of immutable
snapshots), render results kept apart from the undo history, images, file path, dirty state."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from clp2p.model.session import Session, chain_key, image_hash
from clp2p.workflows import session_io
from clp2p.workflows.session_render import NodeRender


class _Snapshot(QUndoCommand):
    def __init__(self, doc: Document, before: Session, after: Session, text: str) -> None:
        super().__init__(text)
        self.doc, self.before, self.after = doc, before, after

    def redo(self) -> None:
        self.doc._set_base(self.after)

    def undo(self) -> None:
        self.doc._set_base(self.before)


class Document(QObject):
    """A session, its images (hash -> RGB uint8) and its file. Render results are keyed by
    what a node's image depends on (:func:`chain_key`), so undoing a tree edit never loses
    them and a node that comes back shows its image again."""

    changed = Signal()
    pathChanged = Signal(str)

    def __init__(
        self,
        session: Session,
        images: dict[str, np.ndarray] | None = None,
        path: str | None = None,
        unsaved: bool = False,
    ) -> None:
        super().__init__()
        self.undo_stack = QUndoStack(self)
        self.images: dict[str, np.ndarray] = dict(images or {})
        self.path = path
        self._results: dict[str, dict] = {}
        self._results_saved = not unsaved  # e.g. an imported picture: nothing on disk yet
        self._base = session
        for node in session.nodes:
            if node.status == "rendered" and node.image:
                self._results[chain_key(session, session.path(node.id))] = {
                    "status": "rendered",
                    "image": node.image,
                    "seconds": node.seconds,
                    "metrics": dict(node.metrics),
                }
        self._view = self._overlay()
        self.undo_stack.cleanChanged.connect(self._clean_changed)

    def _clean_changed(self, _clean: bool) -> None:
        self.changed.emit()

    # ---- state --------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        return self._view

    @property
    def dirty(self) -> bool:
        return not self.undo_stack.isClean() or not self._results_saved

    def image(self, node_id: str) -> np.ndarray | None:
        key = self.session.node(node_id).image
        return self.images.get(key) if key else None

    def _overlay(self) -> Session:
        s = self._base
        for node in s.nodes:
            result = self._results.get(chain_key(s, s.path(node.id)))
            if result is not None:
                s = s.update(node.id, **result)
            elif node.status == "rendered":
                s = s.update(node.id, status="new", image=None, seconds=None, metrics={})
        return s

    def _set_base(self, session: Session) -> None:
        self._base = session
        self._view = self._overlay()
        self.changed.emit()

    # ---- changes --------------------------------------------------------------------------
    def edit(self, session: Session, text: str) -> None:
        """An undoable change of the tree (add, delete, rename, annotate, favourite, ...)."""
        self.undo_stack.push(_Snapshot(self, self._base, session, text))

    def store_result(self, render: NodeRender) -> None:
        """A finished render: its image and metrics, for its node and every node it
        computed on the way. Not an undo step."""
        s = self._view
        for node_id, image in render.images.items():
            if node_id not in [n.id for n in s.nodes]:
                continue
            key = image_hash(image)
            self.images[key] = image
            ck = chain_key(s, s.path(node_id))
            previous = self._results.get(ck, {})
            result = {"status": "rendered", "image": key}
            if node_id == render.node_id:
                result |= {"seconds": round(render.seconds, 3), "metrics": dict(render.metrics)}
            else:
                result |= {
                    "seconds": previous.get("seconds"),
                    "metrics": previous.get("metrics", {}),
                }
            self._results[ck] = result
        self._results_saved = False
        self._view = self._overlay()
        self.changed.emit()

    # ---- files ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> Document:
        session, images = session_io.load(path)
        return cls(session, images, path)

    def save(self, path: str | None = None) -> str:
        """Save (atomically) to ``path`` or the current file; the document becomes clean."""
        target = path or self.path
        if not target:
            raise ValueError("no file name: use Save As")
        session_io.save(self.session, target, self.images)
        self.undo_stack.setClean()
        self._results_saved = True
        if target != self.path:
            self.path = target
            self.pathChanged.emit(target)
        self.changed.emit()
        return target

    def write_copy(self, path: str, embed: bool) -> None:
        """Export the whole history elsewhere without changing this document's file."""
        session_io.save(self.session, path, self.images, embed=embed)
