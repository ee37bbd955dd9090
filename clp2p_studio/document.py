"""The open session as the window sees it: undoable tree edits (QUndoStack of immutable
snapshots), render results kept apart from the undo history, images, file path, dirty state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from clp2p.attention.maps import AttentionMaps
from clp2p.model.session import Session, chain_key, image_hash
from clp2p.workflows import session_io
from clp2p.workflows.session_render import NodeRender

from .results import NodeResult, RenderResults

if TYPE_CHECKING:
    from clp2p.workflows.session_lock import Stamp


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
    never loses them and a node that comes back shows its image and maps again. The render
    fields of :attr:`session`'s nodes (status, image, seconds, metrics) are a view of
    :attr:`results`. Node ids are never given out twice: :attr:`issued` is the highest node
    number any state of the document has given out, undone ones included, and
    :attr:`session` gives out numbers after it. :attr:`stamp` is the version of :attr:`path`
    the document was loaded from or last saved as (None: there was no file)."""

    changed = Signal()
    pathChanged = Signal(str)

    def __init__(
        self,
        session: Session,
        images: dict[str, np.ndarray] | None = None,
        path: str | None = None,
        unsaved: bool = False,
        stamp: Stamp | None = None,
    ) -> None:
        super().__init__()
        self.undo_stack = QUndoStack(self)
        self.images: dict[str, np.ndarray] = dict(images or {})
        self.path, self.stamp = path, stamp
        self.issued = session.issued
        self.results = RenderResults()
        self._results_saved = not unsaved  # e.g. an imported picture: nothing on disk yet
        self._base = session
        for node in session.nodes:
            if node.status == "rendered" and node.image:
                result = NodeResult(node.image, node.seconds, dict(node.metrics), node.weights)
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

    def would_show(self, session: Session, node_id: str) -> bool:
        """Whether a render of ``node_id`` made from ``session`` is what this document shows
        for that node now: the node is here and its image depends on the same things."""
        ids = {n.id for n in self.session.nodes}
        return node_id in ids and self._key(session, node_id) == self._key(self.session, node_id)

    def _overlay(self) -> Session:
        s = self._base.issuing_from(self.issued)
        for node in s.nodes:
            result = self.results.result(self._key(s, node.id))
            if result is not None:
                s = s.update(node.id, **result.node_fields())
            elif node.status == "rendered":
                s = s.update(
                    node.id, status="new", image=None, seconds=None, metrics={}, weights=""
                )
        return s

    def _set_base(self, session: Session) -> None:
        self._base = session
        self.issued = max(self.issued, session.issued)
        self._view = self._overlay()
        self.changed.emit()

    # ---- changes --------------------------------------------------------------------------
    def edit(self, session: Session, text: str) -> None:
        """An undoable change of the tree (add, delete, rename, annotate, favourite, ...)."""
        self.undo_stack.push(_Snapshot(self, self._base, session, text))

    def store_result(self, render: NodeRender, session: Session) -> None:
        """A finished render of ``session``, the snapshot its job was made from: image,
        metrics and attention maps, for its node and every node it computed on the way, each
        under its chain key in ``session``. A node whose chain or settings changed meanwhile
        does not show it (until the change is undone). Not an undo step."""
        ids = {n.id for n in session.nodes}
        # render.images is in batch order: the i-th computed node is branch i of the maps
        for branch, (node_id, image) in enumerate(render.images.items()):
            if node_id not in ids:
                continue
            digest = image_hash(image)
            self.images[digest] = image
            key = self._key(session, node_id)
            if node_id == render.node_id:
                seconds, metrics = round(render.seconds, 3), dict(render.metrics)
            else:  # computed on the way: the time and metrics of its own render stay
                previous = self.results.result(key) or NodeResult(digest)
                seconds, metrics = previous.seconds, previous.metrics
            result = NodeResult(digest, seconds, metrics, render.weights)
            self.results.store(key, result, (render.attention, branch))
        self._results_saved = False
        self._view = self._overlay()
        self.changed.emit()

    def store_image(
        self,
        session: Session,
        node_id: str,
        image: np.ndarray,
        seconds: float | None = None,
        weights: str = "",
    ) -> None:
        """An image rendered elsewhere (a sweep's item: the same code path, bit for bit) as the
        render of ``node_id`` of ``session`` by ``weights``, under its chain key there; no
        attention maps. Not an undo step."""
        digest = image_hash(image)
        self.images[digest] = image
        self.results.store(self._key(session, node_id), NodeResult(digest, seconds, {}, weights))
        self._results_saved = False
        self._view = self._overlay()
        self.changed.emit()

    # ---- files ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> Document:
        session, images, stamp = session_io.load_stamped(path)
        return cls(session, images, path, stamp=stamp)

    def save(self, path: str | None = None) -> str:
        """Save (atomically) to ``path`` or the current file; the document becomes clean.
        Its own file is replaced only if it is still the version :attr:`stamp` names
        (:class:`~clp2p.workflows.session_io.SessionChanged` otherwise)."""
        target = path or self.path
        if not target:
            raise ValueError("no file name: use Save As")
        own = {"expect": self.stamp} if target == self.path else {}
        self.stamp = session_io.save(self.session, target, self.images, **own)
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
