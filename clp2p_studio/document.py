"""The open session as the window sees it: undoable tree edits (QUndoStack of immutable
snapshots), render results kept apart from the undo history, images, file path, dirty state."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from clp2p.attention.maps import AttentionMaps
from clp2p.model.session import Session, chain_key, image_hash
from clp2p.workflows import session_io
from clp2p.workflows.session_render import NodeRender

from .results import NodeResult, RenderResults


class _Snapshot(QUndoCommand):
    def __init__(self, doc: Document, before: Session, after: Session, text: str) -> None:
        super().__init__(text)
        self.doc, self.before, self.after = doc, before, after

    def redo(self) -> None:
        self.doc._set_base(self.after)

    def undo(self) -> None:
        self.doc._set_base(self.before)


class Document(QObject):
    """A session, its images (hash -> RGB uint8), its render results and its file. Results
    are keyed by what a node's image depends on (:func:`chain_key`), so undoing a tree edit
    never loses them, a node that comes back shows its image and maps again, and a new node
    that reuses a deleted node's id shows nothing of it. The render fields of
    :attr:`session`'s nodes (status, image, seconds, metrics) are a view of :attr:`results`."""

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
        self.results = RenderResults()
        self._results_saved = not unsaved  # e.g. an imported picture: nothing on disk yet
        self._base = session
        for node in session.nodes:
            if node.status == "rendered" and node.image:
                result = NodeResult(node.image, node.seconds, dict(node.metrics))
                self.results.store(self._key(session, node.id), result)
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

    def attention(self, node_id: str) -> tuple[AttentionMaps, int] | None:
        """The attention maps of the node's current render and its branch in them; None when
        the node has no render, or its maps were not kept (a loaded file, an old render)."""
        return self.results.attention(self._key(self.session, node_id))

    @staticmethod
    def _key(session: Session, node_id: str) -> str:
        return chain_key(session, session.path(node_id))

    def _overlay(self) -> Session:
        s = self._base
        for node in s.nodes:
            result = self.results.result(self._key(s, node.id))
            if result is not None:
                s = s.update(node.id, **result.node_fields())
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
        """A finished render: image, metrics and attention maps, for its node and every node
        it computed on the way. Not an undo step."""
        s = self._view
        ids = {n.id for n in s.nodes}
        # render.images is in batch order: the i-th computed node is branch i of the maps
        for branch, (node_id, image) in enumerate(render.images.items()):
            if node_id not in ids:
                continue
            digest = image_hash(image)
            self.images[digest] = image
            key = self._key(s, node_id)
            if node_id == render.node_id:
                result = NodeResult(digest, round(render.seconds, 3), dict(render.metrics))
            else:  # computed on the way: the time and metrics of its own render stay
                previous = self.results.result(key) or NodeResult(digest)
                result = NodeResult(digest, previous.seconds, previous.metrics)
            self.results.store(key, result, (render.attention, branch))
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
