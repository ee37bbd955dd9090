"""The main window: session tree (left), canvas and heatmaps (centre), parameters (right) and
the menus. It shows the open document; the work behind the menus is its collaborators':
:class:`~clp2p_studio.files.SessionFiles` (files, recent, autosave),
:class:`~clp2p_studio.engine_jobs.EngineJobs` (model, renders, imports, progress),
:class:`~clp2p_studio.sweep_jobs.SweepJobs` (sweeps and their results) and
:class:`~clp2p_studio.tree_edits.TreeEdits` (undoable tree operations)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import QMainWindow, QMessageBox, QScrollArea, QSplitter, QWidget

from clp2p.attention.maps import merge_branches
from clp2p.model.session import other_weights_message, rendered_by_other

from .backend import Backend
from .canvas import Canvas
from .document import Document
from .engine_jobs import EngineJobs
from .files import SessionFiles, untitled
from .heatmaps import HeatmapPanel
from .menus import build_menus
from .params_panel import ParamsPanel
from .settings import StudioSettings
from .sweep_jobs import SweepJobs
from .tree import SessionTree
from .tree_edits import TreeEdits
from .wheel_guard import guard_wheel
from .worker import JobQueue

log = logging.getLogger("clp2p_studio")


class MainWindow(QMainWindow):
    """The studio's window over ``backend`` (see :class:`~clp2p_studio.backend.Backend`)."""

    def __init__(self, backend: Backend, settings: StudioSettings, data_dir: Path) -> None:
        super().__init__()
        self.settings = settings
        self.backend = backend
        self.data_dir = Path(data_dir)  # autosave, and the results of unsaved sessions' sweeps
        self.messages: list[str] = []
        self.doc: Document | None = None
        self.setWindowTitle("clp2p Studio")
        self.resize(1400, 860)
        self.tree = SessionTree()
        self.canvas = Canvas()
        self.heatmaps = HeatmapPanel()
        self.params = ParamsPanel(validator=backend.check_edit)
        self.setCentralWidget(self._layout())
        self.jobs = JobQueue(backend, self)
        self.files = SessionFiles(self, settings, data_dir)
        self.engine_jobs = EngineJobs(self, self.jobs, settings)
        self.edits = TreeEdits(self, self.engine_jobs.render_node)
        self.sweeps = SweepJobs(self, self.jobs, settings)
        self.menus, self.menu_actions = build_menus(self)
        self.menus["file"].insertMenu(self.menu_actions["import"], self.files.recent_menu)
        self._connect()
        self.set_document(untitled())

    # ---- layout -------------------------------------------------------------------------
    def _layout(self) -> QWidget:
        centre = QSplitter(Qt.Orientation.Vertical)
        centre.addWidget(self.canvas)
        centre.addWidget(self.heatmaps)
        centre.setSizes([560, 300])
        scroll = QScrollArea()
        scroll.setWidget(self.params)
        guard_wheel(self.params)  # scrolling the panel never changes a value under the pointer
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(420)
        split = QSplitter()
        split.addWidget(self.tree)
        split.addWidget(centre)
        split.addWidget(scroll)
        split.setSizes([280, 680, 440])
        return split

    def _connect(self) -> None:
        tree, edits = self.tree, self.edits
        tree.nodeSelected.connect(self._on_select)
        tree.renderRequested.connect(self.engine_jobs.render_node)
        tree.branchRequested.connect(tree.select)
        tree.deleteRequested.connect(edits.delete_node)
        tree.renameRequested.connect(edits.rename_node)
        tree.favouriteRequested.connect(edits.toggle_favourite)
        tree.reverseRequested.connect(edits.reverse_node)
        tree.sweepRequested.connect(self.sweeps.open_dialog)
        self.params.addRequested.connect(edits.add_edit)
        self.params.rootSettingsRequested.connect(edits.set_root_settings)
        self.heatmaps.overlayChanged.connect(self._on_overlay)

    def action(self, name: str) -> QAction:
        """The menu action ``name`` (see :data:`clp2p_studio.menus.ACTIONS`)."""
        return self.menu_actions[name]

    # ---- the document shown ---------------------------------------------------------------
    def set_document(self, doc: Document) -> None:
        if self.doc is not None:
            self.doc.changed.disconnect(self.refresh)
        self.doc = doc
        doc.changed.connect(self.refresh)
        self.refresh()
        last = doc.session.nodes[-1].id
        self.tree.select(last)
        self._on_select(last)
        self.check_weights()

    def set_weights(self, tag: str) -> None:
        """The loaded model's weights: pictures that other weights made are marked."""
        self.tree.weights = tag
        if self.doc is not None:
            self.refresh()
            self.check_weights()

    def check_weights(self) -> None:
        """Say so when the document's pictures were made with other weights than the loaded
        model's: they would re-render with new pixels."""
        message = other_weights_message(self.doc.session, self.tree.weights)
        if message:
            self.notify(message)

    def current(self) -> str | None:
        """The selected node's id."""
        return self.tree.current_node()

    def refresh(self) -> None:
        doc = self.doc
        ids = [n.id for n in doc.session.nodes]
        current = self.current()
        current = current if current in ids else ids[-1]
        self.tree.show_session(doc.session, doc.images, current)
        name = Path(doc.path).name if doc.path else "untitled"
        self.setWindowTitle(f"{name}{' *' if doc.dirty else ''} - clp2p Studio")
        self.action("undo").setEnabled(doc.undo_stack.canUndo())
        self.action("redo").setEnabled(doc.undo_stack.canRedo())
        self._show_node(current)

    def _on_select(self, node_id: str) -> None:
        self.params.target.clear()
        self.params.set_context(self.doc.session, node_id)
        self._show_node(node_id)

    def _show_node(self, node_id: str | None) -> None:
        if node_id is None:
            return
        doc, session = self.doc, self.doc.session
        node = session.node(node_id)
        parent_image = doc.image(node.parent) if node.parent else None
        left = f"source: {node.parent}" if node.parent else ""
        if node.parent is None and session.imported is not None:
            # an imported root: the picture beside its reconstruction
            parent_image = doc.images.get(session.imported.input)
            left = f"picture {session.imported.file}".strip()
        right = f"{node.id} ({node.kind})"
        if rendered_by_other(node, self.tree.weights):
            right += ", other weights"  # which ones: the tree's tooltip
        self.canvas.set_images(parent_image, doc.image(node_id), left, right)
        self._show_attention(node.parent, node_id)

    def _show_attention(self, parent: str | None, node_id: str) -> None:
        """The maps of the node's render and of its source's, each from its own render."""
        ids = [n for n in (parent, node_id) if n is not None]
        shown = [(n, found) for n in ids if (found := self.doc.attention(n)) is not None]
        if not shown:
            self.heatmaps.clear()
            return
        maps = merge_branches([attention for _, attention in shown])
        images: dict[int, np.ndarray] = {}
        for branch, (n, _) in enumerate(shown):
            if (image := self.doc.image(n)) is not None:
                images[branch] = image
        labels = {b: ("source" if n == parent else "result") for b, (n, _) in enumerate(shown)}
        self.heatmaps.set_data(maps, images, labels)

    def _on_overlay(self, label: str, rgb: np.ndarray | None) -> None:
        self.canvas.set_overlay("left" if label == "source" else "right", rgb)

    # ---- messages and closing -------------------------------------------------------------
    def notify(self, message: str) -> None:
        """Errors and warnings: logged, shown in a non-blocking box, never a crash."""
        log.warning(message)
        self.messages.append(message)
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, "clp2p Studio", message, parent=self)
        box.setModal(False)
        box.show()
        self._last_box = box

    def confirm(self, question: str) -> bool:
        """Ask the user a yes/no question (tests replace this)."""
        answer = QMessageBox.question(self, "clp2p Studio", question)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.files.discard_ok():
            event.ignore()
            return
        self.jobs.shutdown()
        self.files.close()
        self.settings.sync()
        event.accept()
