"""The main window: session tree (left), canvas and heatmaps (centre), parameters (right),
menus, shortcuts, the engine job queue, autosave and crash recovery."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
)

from clp2p.attention.maps import AttentionMaps, merge_branches
from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.imported import DEFAULT_METHOD
from clp2p.model.params import EditParams
from clp2p.model.session import Session, describe_metrics
from clp2p.workflows.service import ImportJob, ModelSpec, RenderJob

from .canvas import Canvas
from .document import Document
from .files import Recovery, export_png
from .heatmaps import HeatmapPanel
from .import_dialog import ImportDialog
from .menus import build_menus
from .model_dialog import ModelDialog
from .params_panel import ParamsPanel
from .settings import StudioSettings
from .tree import SessionTree
from .worker import Job, JobQueue

log = logging.getLogger("clp2p_studio")
DEFAULT_PROMPT = "a red circle on a white background"


class MainWindow(QMainWindow):
    def __init__(self, backend, settings: StudioSettings, data_dir: Path) -> None:
        super().__init__()
        self.settings = settings
        self.backend = backend
        self.recovery = Recovery(data_dir)
        self.jobs = JobQueue(backend, self)
        self.attention: dict[str, tuple[AttentionMaps, int]] = {}
        self.messages: list[str] = []
        self.model_info = None
        self.doc: Document | None = None
        self._autosave_task: asyncio.Task | None = None
        self.setWindowTitle("clp2p Studio")
        self.resize(1400, 860)
        self._build()
        build_menus(self)
        self._refresh_recent()
        self.jobs.progress.connect(self._on_progress)
        self.jobs.started.connect(self._on_started)
        self.set_document(Document(Session.new(DEFAULT_PROMPT, _default_settings(), "shapes")))

    # ---- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self.tree = SessionTree()
        self.canvas = Canvas()
        self.heatmaps = HeatmapPanel()
        self.params = ParamsPanel()
        self.params.validator = self._check_edit
        centre = QSplitter(Qt.Orientation.Vertical)
        centre.addWidget(self.canvas)
        centre.addWidget(self.heatmaps)
        centre.setSizes([560, 300])
        scroll = QScrollArea()
        scroll.setWidget(self.params)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(420)
        split = QSplitter()
        split.addWidget(self.tree)
        split.addWidget(centre)
        split.addWidget(scroll)
        split.setSizes([280, 680, 440])
        self.setCentralWidget(split)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setFormat("%v / %m steps")
        self.progress.hide()
        self.eta = QLabel("")
        self.engine_label = QLabel("engine: loading ...")
        bar = self.statusBar()
        bar.addPermanentWidget(self.eta)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.engine_label)
        self.tree.nodeSelected.connect(self._on_select)
        self.tree.renderRequested.connect(self.render_node)
        self.tree.branchRequested.connect(self.tree.select)
        self.tree.deleteRequested.connect(self.delete_node)
        self.tree.renameRequested.connect(self.rename_node)
        self.tree.favouriteRequested.connect(self.toggle_favourite)
        self.tree.reverseRequested.connect(self.reverse_node)
        self.params.addRequested.connect(self.add_edit)
        self.params.rootSettingsRequested.connect(self.set_root_settings)
        self.heatmaps.overlayChanged.connect(self._on_overlay)

    # ---- document -------------------------------------------------------------------------
    def set_document(self, doc: Document) -> None:
        if self.doc is not None:
            self.doc.changed.disconnect(self.refresh)
        self.doc = doc
        self.attention.clear()
        doc.changed.connect(self.refresh)
        self.refresh()
        last = doc.session.nodes[-1].id
        self.tree.select(last)
        self._on_select(last)

    def current(self) -> str | None:
        return self.tree.current_node()

    def refresh(self) -> None:
        doc = self.doc
        current = self.current()
        ids = [n.id for n in doc.session.nodes]
        current = current if current in ids else ids[-1]
        self.tree.show_session(doc.session, doc.images, current)
        name = Path(doc.path).name if doc.path else "untitled"
        self.setWindowTitle(f"{name}{' *' if doc.dirty else ''} - clp2p Studio")
        self.undo_action.setEnabled(doc.undo_stack.canUndo())
        self.redo_action.setEnabled(doc.undo_stack.canRedo())
        self._show_node(current)

    def _on_select(self, node_id: str) -> None:
        self.params.target.clear()
        self.params.set_context(self.doc.session, node_id)
        self._show_node(node_id)

    def _show_node(self, node_id: str | None) -> None:
        if node_id is None:
            return
        s = self.doc.session
        node = s.node(node_id)
        parent_image = self.doc.image(node.parent) if node.parent else None
        left = f"source: {node.parent}" if node.parent else ""
        if node.parent is None and s.imported is not None:
            # an imported root: the picture beside its reconstruction
            parent_image = self.doc.images.get(s.imported.input)
            left = f"picture {s.imported.file}".strip()
        self.canvas.set_images(
            parent_image, self.doc.image(node_id), left, f"{node.id} ({node.kind})"
        )
        ids = [n for n in (node.parent, node_id) if n is not None and n in self.attention]
        if not ids:
            self.heatmaps.clear()
            return
        maps = merge_branches([self.attention[n] for n in ids])
        images = {i: img for i, n in enumerate(ids) if (img := self.doc.image(n)) is not None}
        labels = {i: ("source" if n == node.parent else "result") for i, n in enumerate(ids)}
        self.heatmaps.set_data(maps, images, labels)

    def _on_overlay(self, label: str, rgb) -> None:
        self.canvas.set_overlay("left" if label == "source" else "right", rgb)

    # ---- tree operations (undoable) -----------------------------------------------------
    def _edit(self, change, text: str) -> str | None:
        try:
            result = change(self.doc.session)
        except Clp2pError as exc:
            self.notify(str(exc))
            return None
        session, new_id = result if isinstance(result, tuple) else (result, None)
        self.doc.edit(session, text)
        return new_id

    def add_edit(self, kind: str, prompt: str, params: EditParams, run: bool) -> str | None:
        parent = self.current()
        new_id = self._edit(lambda s: s.add_edit(parent, prompt, params, kind), f"Add {kind}")
        if new_id:
            self.tree.select(new_id)
            if run:
                self.render_node(new_id)
        return new_id

    def reverse_node(self, node_id: str | None) -> str | None:
        if node_id is None:
            return None
        new_id = self._edit(lambda s: s.add_cycle(node_id), f"Reverse {node_id}")
        if new_id:
            self.tree.select(new_id)
            self.render_node(new_id)
        return new_id

    def delete_node(self, node_id: str | None) -> None:
        if node_id:
            self._edit(lambda s: s.delete(node_id), f"Delete {node_id}")

    def toggle_favourite(self, node_id: str | None) -> None:
        if node_id:
            fav = not self.doc.session.node(node_id).favourite
            self._edit(lambda s: s.update(node_id, favourite=fav), f"Favourite {node_id}")

    def rename_node(self, node_id: str | None, name: str | None = None) -> None:
        if not node_id:
            return
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename", "Name (a note may follow a '|'):")
            if not ok:
                return
        title, _, note = name.partition("|")
        changes = {"name": title.strip()} | ({"note": note.strip()} if note else {})
        self._edit(lambda s: s.update(node_id, **changes), f"Rename {node_id}")

    def set_root_settings(self, settings) -> None:
        self._edit(lambda s: s.with_settings(settings), "Root settings")

    def undo(self) -> None:
        self.doc.undo_stack.undo()

    def redo(self) -> None:
        self.doc.undo_stack.redo()

    # ---- engine jobs ----------------------------------------------------------------------
    def load_model(self, spec: ModelSpec | None = None) -> asyncio.Future:
        spec = spec or self.settings.model_spec
        self.engine_label.setText(f"engine: loading {spec.model} ...")
        future = self.jobs.submit(Job("load", spec, f"load {spec.model}"))
        future.add_done_callback(self._loaded)
        return future

    def _loaded(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            error = future.exception() if not future.cancelled() else "cancelled"
            self.engine_label.setText("engine: no model")
            self.notify(f"could not load the model: {error}")
            return
        self.model_info = info = future.result()
        self.engine_label.setText(f"engine: {info.spec.model} on {info.device} ({info.dtype})")

    def render_node(self, node_id: str | None) -> asyncio.Future | None:
        if node_id is None:
            return None
        job = RenderJob(
            self.doc.session, node_id, dict(self.doc.images), self.settings.preview_every
        )
        future = self.jobs.submit(Job("render", job, f"render {node_id}"))
        doc = self.doc
        future.add_done_callback(lambda f: self._rendered(doc, f))
        return future

    def import_dialog(self) -> None:
        if not self._discard_ok():
            return
        info, settings = self.model_info, self.doc.session.settings
        native = info.native_size if info is not None else 64
        dialog = ImportDialog((settings.width or native, settings.height or native), self)
        if dialog.exec():
            self.import_image(**dialog.values())

    def import_image(
        self,
        image,
        prompt: str,
        method: str = DEFAULT_METHOD,
        fit: str = "crop",
        file: str = "",
        inner_steps: int = 10,
    ) -> asyncio.Future:
        """Invert a picture on the engine thread; it becomes a new (unsaved) session."""
        settings = self.doc.session.settings
        job = ImportJob(image, prompt, settings, method, fit, file, inner_steps)
        future = self.jobs.submit(Job("import", job, f"import {file or 'image'} ({method})"))
        future.add_done_callback(self._imported)
        return future

    def _imported(self, future: asyncio.Future) -> None:
        self.progress.hide()
        self.eta.setText("")
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, RenderCancelled):
            self.statusBar().showMessage("import cancelled: nothing changed", 5000)
            return
        if error is not None:
            self.notify(f"import failed: {error}")
            return
        session, images = future.result()
        self.set_document(Document(session, images, unsaved=True))
        imp = session.imported
        quality = "exact" if imp.psnr is None else f"{imp.psnr:.2f} dB"
        self.statusBar().showMessage(
            f"imported {imp.file or 'the picture'}: {imp.inversion.method} inversion in "
            f"{imp.seconds:.1f} s, reconstruction PSNR {quality}",
            10000,
        )

    def _on_started(self, job: Job) -> None:
        if job.kind == "import":
            self.progress.setRange(0, 0)
            self.progress.setFormat("%p%")
            self.progress.show()
            self.statusBar().showMessage(f"{job.label} ...")
        if job.kind == "render":
            self.progress.setFormat("%v / %m steps")
            self.progress.setRange(0, job.payload.session.settings.steps)
            self.progress.setValue(0)
            self.progress.show()
            self.statusBar().showMessage(f"{job.label} ...")

    def _on_progress(self, job: Job, info) -> None:
        self.progress.setMaximum(info.total)
        self.progress.setValue(info.step)
        self.eta.setText(f"ETA {info.eta:.1f} s")
        if job.kind != "render":
            return
        if info.preview is not None and job.payload.node_id == self.current():
            self.canvas.set_preview(info.preview[-1])

    def _rendered(self, doc: Document, future: asyncio.Future) -> None:
        self.progress.hide()
        self.eta.setText("")
        self.canvas.set_preview(None)
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, RenderCancelled):
            self.statusBar().showMessage("render cancelled: nothing changed", 5000)
            return
        if error is not None:
            self.notify(f"render failed: {error}")
            return
        if doc is not self.doc:
            return  # the session was closed while rendering
        result = future.result()
        for branch, node_id in enumerate(result.images):  # the computed chain, in batch order
            self.attention[node_id] = (result.attention, branch)
        doc.store_result(result)
        m = describe_metrics(result.metrics)
        self.statusBar().showMessage(
            f"rendered {result.node_id} in {result.seconds:.1f} s {m}", 8000
        )

    def _check_edit(self, source: str, target: str, params: EditParams) -> str | None:
        check = getattr(self.backend, "check_edit", None)
        return check(source, target, params) if check else None

    def notify(self, message: str) -> None:
        """Errors and warnings: logged, shown in a non-blocking box, never a crash."""
        log.warning(message)
        self.messages.append(message)
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, "clp2p Studio", message, parent=self)
        box.setModal(False)
        box.show()
        self._last_box = box

    # ---- files ----------------------------------------------------------------------------
    def new_session(self) -> None:
        if self._discard_ok():
            prompt, ok = QInputDialog.getText(
                self, "New session", "Root prompt:", text=DEFAULT_PROMPT
            )
            if ok and prompt.strip():
                self.set_document(
                    Document(
                        Session.new(prompt, _default_settings(), self.settings.model_spec.model)
                    )
                )

    def open_path(self, path: str) -> bool:
        try:
            doc = Document.open(path)
        except Clp2pError as exc:
            self.notify(str(exc))
            return False
        self.set_document(doc)
        self.settings.add_recent(path)
        self._refresh_recent()
        return True

    def open_dialog(self) -> None:
        if self._discard_ok():
            path, _ = QFileDialog.getOpenFileName(self, "Open session", "", "Sessions (*.json)")
            if path:
                self.open_path(path)

    def save(self) -> bool:
        if not self.doc.path:
            return self.save_as()
        return self._save_to(self.doc.path)

    def save_as(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save session", "session.json", "Sessions (*.json)"
        )
        return self._save_to(path) if path else False

    def _save_to(self, path: str) -> bool:
        try:
            self.doc.save(path)
        except (OSError, ValueError) as exc:
            self.notify(f"could not save: {exc}")
            return False
        self.settings.add_recent(path)
        self._refresh_recent()
        self.recovery.clear()
        return True

    def export_history(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export history", "history.json", "JSON (*.json)"
            )
        if path:
            self.doc.write_copy(path, embed=True)

    def export_image(self, path: str | None = None) -> None:
        node_id = self.current()
        image = self.doc.image(node_id) if node_id else None
        if image is None:
            self.notify("render the node before exporting its image")
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export image", f"{node_id}.png", "PNG (*.png)"
            )
        if path:
            export_png(path, image, self.doc.session, node_id)

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))

    def model_dialog(self) -> None:
        dialog = ModelDialog(self.settings.model_spec, self)
        if dialog.exec():
            self.settings.model_spec = dialog.spec()
            self.load_model(dialog.spec())

    def confirm(self, question: str) -> bool:
        """Ask the user a yes/no question (tests replace this)."""
        answer = QMessageBox.question(self, "clp2p Studio", question)
        return answer == QMessageBox.StandardButton.Yes

    def _discard_ok(self) -> bool:
        return not self.doc.dirty or self.confirm("Discard the unsaved changes of this session?")

    # ---- autosave and recovery ------------------------------------------------------------
    def start_autosave(self) -> None:
        self.recovery.mark_running()
        self._autosave_task = asyncio.get_event_loop().create_task(self._autosave_loop())

    async def _autosave_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.autosave_seconds)
            self.autosave()

    def autosave(self) -> None:
        if self.doc.dirty:
            try:
                self.recovery.save(self.doc)
            except OSError as exc:
                log.warning("autosave failed: %s", exc)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._discard_ok():
            event.ignore()
            return
        if self._autosave_task is not None:
            self._autosave_task.cancel()
        self.jobs.shutdown()
        self.recovery.clean_exit()
        self.settings.sync()
        event.accept()


def _default_settings():
    from clp2p.model.params import RenderSettings

    return RenderSettings(seed=0, steps=50, guidance=7.5)
