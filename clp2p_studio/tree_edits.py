"""Undoable operations on the session tree: add an edit, reverse one, delete, rename,
favourite, the root's settings, undo and redo. Each is one step of the document's undo
stack; an operation the session refuses is a message, not a change."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QInputDialog

from clp2p.errors import Clp2pError
from clp2p.model.params import EditParams
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings

if TYPE_CHECKING:
    from .window import MainWindow

Change = Callable[[Session], Session | tuple[Session, str]]


class TreeEdits(QObject):
    """Tree operations on ``window.doc``; a new node is selected (``window.tree``) and, when
    asked, rendered (``render``)."""

    def __init__(self, window: MainWindow, render: Callable[[str], object]) -> None:
        super().__init__(window)
        self.window, self.render = window, render

    def _apply(self, change: Change, text: str) -> str | None:
        """Push ``change`` of the session as an undo step named ``text``; the new node's id
        when it made one."""
        doc = self.window.doc
        try:
            result = change(doc.session)
        except Clp2pError as exc:
            self.window.notify(str(exc))
            return None
        session, new_id = result if isinstance(result, tuple) else (result, None)
        doc.edit(session, text)
        return new_id

    def add_edit(self, kind: str, prompt: str, params: EditParams, run: bool) -> str | None:
        """A child of the selected node editing it toward ``prompt``; rendered with ``run``."""
        parent = self.window.current()
        new_id = self._apply(lambda s: s.add_edit(parent, prompt, params, kind), f"Add {kind}")
        if new_id:
            self.window.tree.select(new_id)
            if run:
                self.render(new_id)
        return new_id

    def add_rendered(
        self,
        change: Change,
        image: np.ndarray,
        seconds: float | None = None,
        source: np.ndarray | None = None,
        text: str = "Add from a sweep",
        weights: tuple[str, str] = ("", ""),
    ) -> str | None:
        """A node rendered elsewhere (a sweep's item, by the same code path, bit for bit):
        ``change`` adds it as :meth:`add_edit` would; ``image`` is stored as its render and
        ``source`` as its parent's when the parent has none; ``weights``: the tags of the
        weights that rendered the source and the image. Undo takes the node away."""
        new_id = self._apply(change, text)
        if new_id:
            doc = self.window.doc
            parent = doc.session.node(new_id).parent
            if source is not None and parent and doc.session.node(parent).status != "rendered":
                doc.store_image(doc.session, parent, source, weights=weights[0])
            doc.store_image(doc.session, new_id, image, seconds, weights[1])
            self.window.tree.select(new_id)
        return new_id

    def reverse_node(self, node_id: str | None) -> str | None:
        """A cycle reversal of ``node_id`` (an edit back to its parent's prompt), rendered."""
        if node_id is None:
            return None
        new_id = self._apply(lambda s: s.add_cycle(node_id), f"Reverse {node_id}")
        if new_id:
            self.window.tree.select(new_id)
            self.render(new_id)
        return new_id

    def delete_node(self, node_id: str | None) -> None:
        if node_id:
            self._apply(lambda s: s.delete(node_id), f"Delete {node_id}")

    def toggle_favourite(self, node_id: str | None) -> None:
        if node_id:
            favourite = not self.window.doc.session.node(node_id).favourite
            self._apply(lambda s: s.update(node_id, favourite=favourite), f"Favourite {node_id}")

    def rename_node(self, node_id: str | None, name: str | None = None) -> None:
        """Name a node; text after a '|' is its note. Without ``name``, ask for one."""
        if not node_id:
            return
        if name is None:
            name, ok = QInputDialog.getText(
                self.window, "Rename", "Name (a note may follow a '|'):"
            )
            if not ok:
                return
        title, _, note = name.partition("|")
        changes = {"name": title.strip()} | ({"note": note.strip()} if note else {})
        self._apply(lambda s: s.update(node_id, **changes), f"Rename {node_id}")

    def set_root_settings(self, settings: RenderSettings) -> None:
        self._apply(lambda s: s.with_settings(settings), "Root settings")

    def undo(self) -> None:
        self.window.doc.undo_stack.undo()

    def redo(self) -> None:
        self.window.doc.undo_stack.redo()
