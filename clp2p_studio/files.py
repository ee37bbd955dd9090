"""The File menu's work: new, open, save and export of the window's session, recent files,
PNG export with the node's parameters, autosave and crash recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from clp2p import atomic
from clp2p.errors import Clp2pError
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


def untitled(
    prompt: str = DEFAULT_PROMPT, model: str = ModelSpec.model, adapters: tuple = ()
) -> Document:
    """A new session of one root with the model's recommended sampling settings (its card;
    Stable Diffusion's usual ones otherwise), made with the loaded model's LoRAs and
    embeddings (``adapters``)."""
    from clp2p.model.card import card_of

    return Document(Session.new(prompt, card_of(model).settings(), model, adapters))


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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is running; False where that cannot be told (Windows, where
    ``os.kill`` would end it)."""
    if os.name == "nt" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # someone else's process
        return True
    except (OSError, OverflowError):  # ProcessLookupError: no such process
        return False
    return True


class Recovery:
    """Autosave of one studio instance to its own folder ``data_dir/autosave/<pid>/``: the
    session (``session.json`` and its images folder) and a ``running`` marker holding the
    pid. The folder of an instance no longer running that holds an autosave is a crash, to
    offer at start; restored or declined it is removed, damaged it is set aside. Folders of
    running instances are left alone, and a clean exit removes only the instance's own."""

    def __init__(self, data_dir: str | Path, pid: int | None = None) -> None:
        self.root = Path(data_dir) / "autosave"
        self.pid = os.getpid() if pid is None else pid
        self.dir = self.root / str(self.pid)
        self.file = self.dir / "session.json"
        self.marker = self.dir / "running"
        self._running = False

    def crash(self) -> Path | None:
        """The folder of the latest autosave of an instance no longer running, if any. A
        folder named for this pid counts until :meth:`mark_running`: an earlier process
        that had the same pid left it."""
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            try:
                pid = int((folder / "running").read_text())
                saved = (folder / "session.json").stat().st_mtime_ns
            except (OSError, ValueError):
                continue  # not an instance's folder, or nothing autosaved in it
            if (folder == self.dir and not self._running) or (
                folder != self.dir and not _alive(pid)
            ):
                found.append((saved, folder))
        return max(found)[1] if found else None

    def crashed_with_autosave(self) -> bool:
        return self.crash() is not None

    def mark_running(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(self.pid))
        self._running = True

    def save(self, doc) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        session_io.save(doc.session, self.file, doc.images)

    def restore(self) -> tuple[tuple[Session, dict] | None, str]:
        """The crash's session and its images, or None and what happened; the crash folder
        is removed. A damaged autosave is set aside (its folder renamed, never deleted) so
        that the next start is clean."""
        folder = self.crash()
        if folder is None:
            return None, "There is no autosave to restore."
        try:
            restored = session_io.load(folder / "session.json")
        except Clp2pError as exc:
            n = 1
            while (kept := self.root / f"damaged-{folder.name}-{n}").exists():
                n += 1
            try:
                folder.replace(kept)
                (kept / "running").unlink(missing_ok=True)
            except OSError as move:
                return None, f"The autosave cannot be restored ({exc}) or set aside ({move})."
            return None, f"The autosave cannot be restored ({exc}); it is kept as {kept}."
        shutil.rmtree(folder, ignore_errors=True)
        return restored, ""

    def discard(self) -> None:
        """The user declined the crash's autosave: its folder is removed."""
        folder = self.crash()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def clear(self) -> None:
        """The document is saved: this instance's autosave goes (its marker stays)."""
        self.file.unlink(missing_ok=True)
        shutil.rmtree(self.dir / "session.images", ignore_errors=True)

    def clean_exit(self) -> None:
        """This instance ends cleanly: its own folder goes, no other instance's."""
        shutil.rmtree(self.dir, ignore_errors=True)


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
            info = self.window.engine_jobs.model_info
            adapters = info.adapters if info is not None else ()
            self.window.set_document(untitled(prompt, self.settings.model_spec.model, adapters))

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
    def export_history(self, path: str | None = None) -> bool:
        """Write the whole history with embedded images to ``path`` (None: ask for one)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self.window, "Export history", "history.json", "JSON (*.json)"
            )
        return bool(path) and self._export(lambda: self.window.doc.write_copy(path, embed=True))

    def export_image(self, path: str | None = None) -> bool:
        """Write the selected node's image as a PNG with its parameters (None: ask where)."""
        doc, node_id = self.window.doc, self.window.current()
        image = doc.image(node_id) if node_id else None
        if image is None:
            self.window.notify("render the node before exporting its image")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self.window, "Export image", f"{node_id}.png", "PNG (*.png)"
            )
        return bool(path) and self._export(lambda: export_png(path, image, doc.session, node_id))

    def _export(self, write: Callable[[], None]) -> bool:
        """Run ``write``; a failure (a folder as the name, no permission, a name too long, a
        session that would not load again) is a message."""
        try:
            write()
        except (OSError, ValueError) as exc:  # Clp2pError is a ValueError
            self.window.notify(f"could not export: {exc}")
            return False
        return True

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
