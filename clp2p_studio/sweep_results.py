"""A sweep's results: a grid of its items' pictures, each labelled with its axis values and the
model's scores (a failed item with its error), filled in as the items finish. The chosen item
joins the session it came from as a rendered child, or opens as a session of its own."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QMouseEvent
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from clp2p.errors import Clp2pError
from clp2p.model.imported import read_image
from clp2p.workflows.sweep import ResultsFolder

from .imaging import blank, to_pixmap

THUMB = 128  # a tile's picture side, in pixels
MAX_COLUMNS = 6
CanAdd = Callable[[dict], str | None]  # None: the item can join the session, else why not


def score_text(scores: dict) -> str:
    """The model's scores, compact (rich text): yes/no scores as green or red words, then
    the others as ``name value``."""
    flags, values = [], []
    for name, value in scores.items():
        if isinstance(value, bool):
            colour, mark = ("#22c55e", "\u2713") if value else ("#ef4444", "\u2717")
            flags.append(f"<span style='color:{colour}'>{mark}{html.escape(name)}</span>")
        elif isinstance(value, int | float):
            values.append(f"{html.escape(name)} {value:.3g}")
        elif value is not None:
            values.append(f"{html.escape(name)} {html.escape(str(value))}")
    return "<br>".join(line for line in (" ".join(flags), " \u00b7 ".join(values)) if line)


def constant_values(items: list[tuple[str, tuple[tuple[str, str], ...]]]) -> dict[str, str]:
    """The values every item shares (e.g. the seed of a sweep without seeds): said once, not
    on every tile. None when there is one item."""
    if len(items) < 2:
        return {}
    first = dict(items[0][1])
    return {n: v for n, v in first.items() if all(dict(vs).get(n) == v for _, vs in items)}


class ItemTile(QFrame):
    """One item: its picture (a blank until it is rendered) and its label; a click selects it."""

    clicked = Signal(str)  # the item's key

    def __init__(self, key: str, values: tuple[tuple[str, str], ...], shared: dict) -> None:
        super().__init__()
        self.key = key
        shown = [(n, v) for n, v in values if n not in shared] or list(values)
        self.caption = "  ".join(f"{name} {value}" for name, value in shown)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(THUMB + 40)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setPixmap(blank(THUMB, THUMB))
        self.label = QLabel(f"<b>{html.escape(self.caption)}</b><br>waiting")
        self.label.setWordWrap(True)
        self.label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        column = QVBoxLayout(self)
        column.setContentsMargins(4, 4, 4, 4)
        column.addWidget(self.picture)
        column.addWidget(self.label, 1)
        self.set_selected(False)

    def show_row(self, row: dict, image: np.ndarray | None) -> None:
        """The item's outcome: its picture and scores, or its error."""
        if image is not None:
            pixmap = to_pixmap(image)
            upscale = pixmap.width() < THUMB  # small pictures stay crisp, large ones smooth
            self.picture.setPixmap(
                pixmap.scaled(
                    THUMB,
                    THUMB,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.FastTransformation
                    if upscale
                    else Qt.TransformationMode.SmoothTransformation,
                )
            )
        seconds = f"{row.get('seconds') or 0:.1f} s"
        if row.get("status") == "done":
            detail = score_text(row.get("scores") or {}) or seconds
        else:
            error = html.escape(str(row.get("error") or row.get("status")))
            detail = f"<span style='color:#ef4444'>{error}</span>"
        self.label.setText(f"<b>{html.escape(self.caption)}</b><br>{detail}")
        scores = "  ".join(f"{n} {v}" for n, v in (row.get("scores") or {}).items())
        self.setToolTip(f"{row.get('target', '')} ({row.get('kind', '')}), {seconds}\n{scores}")

    def set_selected(self, selected: bool) -> None:
        colour = "#2563eb" if selected else "transparent"
        self.setStyleSheet(f"ItemTile {{ border: 2px solid {colour}; border-radius: 4px; }}")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.clicked.emit(self.key)
        super().mousePressEvent(event)


class SweepResults(QDialog):
    """The items of one sweep in ``folder`` (``items``: each item's key and values, in the
    order asked), ``columns`` to a row. Emits ``addRequested(row)`` and ``openRequested(row)``
    for the selected item and ``cancelRequested`` while the sweep runs; ``can_add(row)``
    says whether an item can join the session (None) or why not."""

    addRequested = Signal(object)
    openRequested = Signal(object)
    cancelRequested = Signal()

    def __init__(
        self,
        title: str,
        folder: Path,
        items: list[tuple[str, tuple[tuple[str, str], ...]]],
        columns: int,
        can_add: CanAdd,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        shared = constant_values(items)
        if shared:
            title += " \u00b7 " + "  ".join(f"{n} {v}" for n, v in shared.items())
        self.setWindowTitle(title)
        self.folder, self.can_add = ResultsFolder(folder), can_add
        self.rows: dict[str, dict] = {}
        self.selected: str | None = None
        self.tiles: list[ItemTile] = []
        layout = QVBoxLayout(self)
        layout.addLayout(self._header(title, len(items)))
        layout.addWidget(self._grid(items, max(1, min(columns, MAX_COLUMNS)), shared), 1)
        self.detail = QLabel("Click an item to choose it.")
        self.detail.setWordWrap(True)
        layout.addWidget(self.detail)
        layout.addLayout(self._buttons())
        self.resize(min(1200, 80 + (THUMB + 52) * max(3, min(columns, MAX_COLUMNS))), 720)

    def _header(self, title: str, total: int) -> QHBoxLayout:
        self.status = QLabel(f"{title}: starting ...")
        self.status.setToolTip(str(self.folder.folder))
        self.progress = QProgressBar()
        self.progress.setRange(0, total)
        self.progress.setFormat("%v / %m items")
        self.cancel_button = QPushButton("Cancel sweep")
        self.cancel_button.clicked.connect(self.cancelRequested)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.progress)
        row.addWidget(self.cancel_button)
        return row

    def _grid(self, items: list, columns: int, shared: dict) -> QScrollArea:
        inner = QWidget()
        grid = QGridLayout(inner)
        grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        for i, (key, values) in enumerate(items):
            tile = ItemTile(key, values, shared)
            tile.clicked.connect(self.select)
            grid.addWidget(tile, i // columns, i % columns)
            self.tiles.append(tile)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        return scroll

    def _buttons(self) -> QHBoxLayout:
        self.add_button = QPushButton("Add to session")
        self.open_button = QPushButton("Open as session")
        folder_button = QPushButton("Open folder")
        folder_button.setToolTip(str(self.folder.folder))
        close = QPushButton("Close")
        self.add_button.clicked.connect(lambda: self.addRequested.emit(self.rows[self.selected]))
        self.open_button.clicked.connect(lambda: self.openRequested.emit(self.rows[self.selected]))
        folder_button.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder.folder)))
        )
        close.clicked.connect(self.close)
        row = QHBoxLayout()
        for button in (self.add_button, self.open_button):
            button.setEnabled(False)
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(folder_button)
        row.addWidget(close)
        return row

    # ---- progress -------------------------------------------------------------------------
    def item_done(self, row: dict) -> None:
        """Show a finished item (every tile of its key: a cell asked twice renders once)."""
        key = row.get("key", "")
        self.rows[key] = row
        image = None
        if row.get("status") == "done":
            try:
                image = read_image(self.folder.item_dir(key) / "result.png")
            except Clp2pError as exc:  # a folder changed behind the studio's back
                row = {**row, "status": "failed", "error": str(exc)}
                self.rows[key] = row
        for tile in self.tiles:
            if tile.key == key:
                tile.show_row(row, image)
        if key == self.selected:
            self.select(key)

    def set_progress(self, done: int, total: int, eta: float) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(f"{done} of {total} items, ETA {eta:.0f} s")

    def finish(self, rows: list[dict] | None, message: str) -> None:
        """The sweep ended: every row of its table (None: it ended without one) and why."""
        for row in rows or ():
            if row.get("key") not in self.rows or row != self.rows[row["key"]]:
                self.item_done(row)
        self.status.setText(message)
        self.cancel_button.hide()

    def say(self, text: str) -> None:
        """A word about the selected item (e.g. the node it became)."""
        self.detail.setText(text)

    # ---- choosing -------------------------------------------------------------------------
    def select(self, key: str) -> None:
        self.selected = key
        for tile in self.tiles:
            tile.set_selected(tile.key == key)
        row = self.rows.get(key)
        done = row is not None and row.get("status") == "done"
        why = self.can_add(row) if done else "the item has no picture yet"
        self.add_button.setEnabled(why is None)
        self.add_button.setToolTip(why or "add it as a rendered child of the swept node")
        self.open_button.setEnabled(done)
        caption = next(t.caption for t in self.tiles if t.key == key)
        if row is None:
            self.detail.setText(f"{caption}: not rendered yet")
        elif done:
            self.detail.setText(f"{caption}: {why or 'can be added to the session'}")
        else:
            self.detail.setText(f"{caption}: {row.get('error') or row.get('status')}")
