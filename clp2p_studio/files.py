"""The File menu's work: new, open, save and export of the window's session, recent files,
PNG export with the node's parameters, autosave and crash recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from clp2p import atomic
from clp2p.errors import Clp2pError
from clp2p.model.params import RenderSettings
from clp2p.model.session import Session
from clp2p.workflows import session_io
from clp2p.workflows.service import ModelSpec

from .document import Document
from .settings import StudioSettings

if TYPE_CHECKING:
    from .window import MainWindow

log = logging.getLogger("clp2p_studio")
DEFAULT_PROMPT = "a red circle on a white background"
SESSIONS = "Sessions (*.json)"


def untitled(prompt: str = DEFAULT_PROMPT, model: str = ModelSpec.model) -> Document:
    """A new session of one root with the engine's default sampling settings."""
    return Document(Session.new(prompt, RenderSettings(), model))


def node_parameters(session: Session, node_id: str) -> dict:
    """What made a node's image: model, settings, and every prompt and parameter from the
    root to the node."""
    return {
        "model": session.model,
        "settings": session.settings.to_json(),
        "chain": [
            {
                "id": n.id,
                "kind": n.kind,
                "prompt": n.prompt,
                "params": n.params.to_json() if n.params else None,
            }
            for n in session.path(node_id)
        ],
    }


def export_png(path: str | Path, image: np.ndarray, session: Session, node_id: str) -> None:
    """Write the image with its parameters as a PNG text chunk ``clp2p``."""
    info = PngInfo()
    info.add_text("clp2p", json.dumps(node_parameters(session, node_id)))
    info.add_text("Software", "clp2p Studio")
    atomic.write_png(path, image, pnginfo=info)


class Recovery:
    """Autosave to ``data_dir/autosave/session.json``; a marker file says the studio is
    running, so a marker left behind at start means the last run did not end cleanly."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir) / "autosave"
        self.file = self.dir / "session.json"
        self.marker = self.dir / "running"

    def crashed_with_autosave(self) -> bool:
        return self.marker.exists() and self.file.exists()

    def mark_running(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(os.getpid()))

    def save(self, doc) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        session_io.save(doc.session, self.file, doc.images)

    def load(self):
        return session_io.load(self.file)

    def restore(self) -> tuple[tuple[Session, dict] | None, str]:
        """The autosaved session and its images, or None and what happened: a damaged
        autosave is set aside (renamed, never deleted) so that the next start is clean."""
        try:
            return self.load(), ""
        except Clp2pError as exc:
            kept = self.dir / f"session.damaged-{os.getpid()}-{len(list(self.dir.iterdir()))}.json"
            try:
                self.file.replace(kept)
            except OSError as move:
                return None, f"The autosave cannot be restored ({exc}) or set aside ({move})."
            return None, f"The autosave cannot be restored ({exc}); it is kept as {kept}."

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)
        folder = self.dir / "session.images"
        if folder.is_dir():
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()

    def clean_exit(self) -> None:
        self.clear()
        self.marker.unlink(missing_ok=True)


class SessionFiles(QObject):
    """Files of the window's document: ``window`` provides the document (``doc``,
    ``set_document``), the selected node (``current``), messages (``notify``, ``confirm``) and
    is the parent of every file dialog."""

    def __init__(self, window: MainWindow, settings: StudioSettings, data_dir: Path) -> None:
        super().__init__(window)
        self.window, self.settings = window, settings
        self.recovery = Recovery(data_dir)
        self.recent_menu = QMenu("Open &recent", window)
        self._autosave_task: asyncio.Task | None = None
        self.refresh_recent()

    # ---- sessions -------------------------------------------------------------------------
    def new_session(self) -> None:
        if not self.discard_ok():
            return
        prompt, ok = QInputDialog.getText(
            self.window, "New session", "Root prompt:", text=DEFAULT_PROMPT
        )
        if ok and prompt.strip():
            self.window.set_document(untitled(prompt, self.settings.model_spec.model))

    def open_path(self, path: str) -> bool:
        try:
            doc = Document.open(path)
        except Clp2pError as exc:
            self.window.notify(str(exc))
            return False
        self.window.set_document(doc)
        self._remember(path)
        return True

    def open_dialog(self) -> None:
        if self.discard_ok():
            path, _ = QFileDialog.getOpenFileName(self.window, "Open session", "", SESSIONS)
            if path:
                self.open_path(path)

    def save(self) -> bool:
        doc = self.window.doc
        return self.save_as(doc.path) if doc.path else self.save_as()

    def save_as(self, path: str | None = None) -> bool:
        """Save to ``path`` (None: ask for one); the document becomes clean."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self.window, "Save session", "session.json", SESSIONS
            )
            if not path:
                return False
        try:
            self.window.doc.save(path)
        except (OSError, ValueError) as exc:
            self.window.notify(f"could not save: {exc}")
            return False
        self._remember(path)
        self.recovery.clear()
        return True

    def discard_ok(self) -> bool:
        """True when the document has no unsaved changes or the user lets them go."""
        return not self.window.doc.dirty or self.window.confirm(
            "Discard the unsaved changes of this session?"
        )

    # ---- exports --------------------------------------------------------------------------
    def export_history(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self.window, "Export history", "history.json", "JSON (*.json)"
            )
        if path:
            self.window.doc.write_copy(path, embed=True)

    def export_image(self, path: str | None = None) -> None:
        doc, node_id = self.window.doc, self.window.current()
        image = doc.image(node_id) if node_id else None
        if image is None:
            self.window.notify("render the node before exporting its image")
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self.window, "Export image", f"{node_id}.png", "PNG (*.png)"
            )
        if path:
            export_png(path, image, doc.session, node_id)

    # ---- recent files ---------------------------------------------------------------------
    def _remember(self, path: str) -> None:
        self.settings.add_recent(path)
        self.refresh_recent()

    def refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))

    # ---- autosave and recovery ------------------------------------------------------------
    def start_autosave(self) -> None:
        self.recovery.mark_running()
        self._autosave_task = asyncio.get_event_loop().create_task(self._autosave_loop())

    async def _autosave_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.autosave_seconds)
            self.autosave()

    def autosave(self) -> None:
        doc = self.window.doc
        if doc.dirty:
            try:
                self.recovery.save(doc)
            except OSError as exc:
                log.warning("autosave failed: %s", exc)

    def close(self) -> None:
        """The studio ends cleanly: no more autosaves, and nothing left to recover."""
        if self._autosave_task is not None:
            self._autosave_task.cancel()
        self.recovery.clean_exit()
