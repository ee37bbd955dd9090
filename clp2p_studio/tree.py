"""The session tree panel: a thin Qt item model over the plain session data, and its view
with the tree operations (branch, delete, rename, favourite, reverse, sweep)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QMenu, QTreeView

from clp2p.model.session import Session, rendered_by_other

from .imaging import to_pixmap

NODE_ID = Qt.ItemDataRole.UserRole + 1
THUMB = 40
KIND_COLOURS = {
    "root": "#6b7280",
    "swap": "#2563eb",
    "refine": "#059669",
    "reweight": "#d97706",
    "cycle": "#9333ea",
}
KIND_LETTERS = {"root": "R", "swap": "S", "refine": "F", "reweight": "W", "cycle": "C"}


def kind_icon(kind: str, image: np.ndarray | None) -> QIcon:
    """A thumbnail of the node's image (or an empty tile) with a badge of its kind."""
    pix = QPixmap(THUMB, THUMB)
    pix.fill(QColor("#2b2d31"))
    painter = QPainter(pix)
    if image is not None:
        thumb = to_pixmap(image).scaled(
            THUMB,
            THUMB,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation,
        )
        painter.drawPixmap((THUMB - thumb.width()) // 2, (THUMB - thumb.height()) // 2, thumb)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(KIND_COLOURS.get(kind, "#444")))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(THUMB - 16, THUMB - 16, 15, 15)
    painter.setPen(QColor("white"))
    font = QFont()
    font.setPixelSize(10)
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(
        THUMB - 16, THUMB - 16, 15, 15, Qt.AlignmentFlag.AlignCenter, KIND_LETTERS[kind]
    )
    painter.end()
    return QIcon(pix)


OTHER_WEIGHTS = "\u26a0 other weights"  # a warning sign: its picture is another model's


def node_label(session: Session, node_id: str, weights: str = "") -> str:
    """The node's line in the tree; ``weights``: the loaded model's tag (see
    :func:`~clp2p.model.session.weights_tag`), to mark pictures that other weights made."""
    n = session.node(node_id)
    star = "\u2605 " if n.favourite else ""
    title = n.name or n.prompt
    if n.kind == "cycle":
        title = f"\u21ba {title}"
    status = "" if n.status == "rendered" else "  (not rendered)"
    other = rendered_by_other(n, weights)
    metric = f"  MAE {n.metrics['mae']:.1f}" if "mae" in n.metrics else ""
    if n.parent is None and session.imported is not None:
        title = f"\u25a3 {title}"  # a framed square: the root is an imported picture
    flag = f" {OTHER_WEIGHTS}" if other else ""  # first: long titles are cut on the right
    return f"{star}{n.id}{flag}  {title}{status}{metric}"


class SessionTreeModel(QStandardItemModel):
    """Rebuilt from the session on every change (sessions are small); items carry node ids."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setHorizontalHeaderLabels(["Session"])

    def rebuild(self, session: Session, images: dict[str, np.ndarray], weights: str = "") -> None:
        self.clear()
        self.setHorizontalHeaderLabels(["Session"])
        items: dict[str, QStandardItem] = {}
        for node in session.nodes:
            item = QStandardItem(node_label(session, node.id, weights))
            item.setEditable(False)
            item.setData(node.id, NODE_ID)
            image = images.get(node.image) if node.image else None
            item.setIcon(kind_icon(node.kind, image))
            tip = [f"{node.kind} {node.id}: {node.prompt}"]
            if node.params is not None:
                p = node.params
                tip.append(f"preset {p.preset}, k {p.k:g}, cross {p.cross.spec()}")
                tip.append(f"self {p.self_window.spec()} (grids <= {p.self_res or 'all'})")
                if p.v_blend:
                    tip.append(f"V {p.v_window.spec()} beta {p.v_blend:g} ({p.v_layers})")
            if node.parent is None and session.imported is not None:
                imp = session.imported
                quality = "exact" if imp.psnr is None else f"{imp.psnr:.2f} dB"
                tip.append(
                    f"imported picture {imp.file} ({imp.fit}), {imp.inversion.method} "
                    f"inversion, reconstruction PSNR {quality}"
                )
            if node.weights:
                loaded = f"; the loaded model's are {weights}" if weights else ""
                tip.append(f"rendered with weights {node.weights}{loaded}")
            if node.note:
                tip.append(node.note)
            item.setToolTip("\n".join(tip))
            parent = items.get(node.parent) if node.parent else None
            (parent or self.invisibleRootItem()).appendRow(item)
            items[node.id] = item

    def index_of(self, node_id: str) -> QModelIndex:
        matches = self.match(
            self.index(0, 0),
            NODE_ID,
            node_id,
            1,
            Qt.MatchFlag.MatchRecursive | Qt.MatchFlag.MatchExactly,
        )
        return matches[0] if matches else QModelIndex()


class SessionTree(QTreeView):
    """The tree view. Emits the selected node id and the operations asked from its menu."""

    nodeSelected = Signal(str)
    branchRequested = Signal(str)
    deleteRequested = Signal(str)
    renameRequested = Signal(str)
    favouriteRequested = Signal(str)
    reverseRequested = Signal(str)
    renderRequested = Signal(str)
    sweepRequested = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tree_model = SessionTreeModel(self)
        self.setModel(self.tree_model)
        self.setHeaderHidden(True)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.selectionModel().currentChanged.connect(self._current_changed)
        self.setAccessibleName("Session tree")
        self.weights = ""  # the loaded model's weights tag: marks pictures others made

    def show_session(self, session: Session, images: dict, current: str | None) -> None:
        self.selectionModel().blockSignals(True)
        self.tree_model.rebuild(session, images, self.weights)
        self.expandAll()
        index = self.tree_model.index_of(current) if current else QModelIndex()
        if index.isValid():
            self.setCurrentIndex(index)
        self.selectionModel().blockSignals(False)

    def current_node(self) -> str | None:
        index = self.currentIndex()
        return index.data(NODE_ID) if index.isValid() else None

    def select(self, node_id: str) -> None:
        index = self.tree_model.index_of(node_id)
        if index.isValid():
            self.setCurrentIndex(index)

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.nodeSelected.emit(current.data(NODE_ID))

    def _menu(self, pos) -> None:
        index = self.indexAt(pos)
        if not index.isValid():
            return
        node_id = index.data(NODE_ID)
        menu = QMenu(self)
        menu.addAction("Render", lambda: self.renderRequested.emit(node_id))
        menu.addAction("New edit from here", lambda: self.branchRequested.emit(node_id))
        menu.addAction("Reverse this edit", lambda: self.reverseRequested.emit(node_id))
        menu.addAction("Sweep...", lambda: self.sweepRequested.emit(node_id))
        menu.addSeparator()
        menu.addAction("Rename / note...", lambda: self.renameRequested.emit(node_id))
        menu.addAction("Toggle favourite", lambda: self.favouriteRequested.emit(node_id))
        menu.addAction("Delete subtree", lambda: self.deleteRequested.emit(node_id))
        menu.exec(self.viewport().mapToGlobal(pos))
