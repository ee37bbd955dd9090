"""The heatmap panel: a render's cross-attention maps per prompt word and its self-attention
components, with the chosen word's map offered as an overlay for the canvas."""

from __future__ import annotations

import re

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from clp2p.attention.maps import AttentionMaps, colourise, normalise, overlay
from clp2p.model.align import normalise_word

from .flow_layout import FlowLayout
from .imaging import to_qimage

_EDGE_PUNCTUATION = re.compile(r"^[^\w]+|[^\w]+$")

_STYLE = """
QPushButton[chip="true"] {
    border: 1px solid palette(mid); border-radius: 10px; padding: 2px 9px;
    background: palette(button);
}
QPushButton[chip="true"]:hover:!checked { border-color: palette(highlight); }
QPushButton[chip="true"]:checked {
    background: palette(highlight); color: palette(highlighted-text);
    border-color: palette(highlight);
}
QLabel[heading="true"] { font-weight: bold; padding: 4px 0 0 0; }
QToolButton[thumb="true"] { border: 1px solid transparent; border-radius: 4px; padding: 2px; }
QToolButton[thumb="true"]:checked { border-color: palette(highlight); }
"""


class HeatmapPanel(QWidget):
    """Word chips per branch, view controls (opacity, step range, grid), word-map thumbnails
    and self-attention components of the branch clicked last.

    ``overlayChanged(label, rgb)``: the branch labelled ``label`` should show ``rgb`` (uint8
    (H, W, 3), the size of that branch's image) over its image, or its plain image for None.
    """

    overlayChanged = Signal(str, object)

    THUMB = 64
    MAX_COMPONENTS = 6

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._attention: AttentionMaps | None = None
        self._images: dict[int, np.ndarray] = {}
        self._labels: dict[int, str] = {}
        self._words: dict[int, list[str]] = {}  # branch -> words, each once
        self._chips: dict[int, dict[str, QPushButton]] = {}
        self._selected: dict[int, str] = {}  # branch -> word shown as an overlay
        self._focus: int | None = None  # branch whose thumbnails are shown
        self._thumbs: list[QToolButton] = []

        self._opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=60)
        self._opacity.setAccessibleName("heatmap opacity")
        self._opacity_text = QLabel("60%")
        self._opacity_text.setMinimumWidth(self.fontMetrics().horizontalAdvance("100%"))
        self._first, self._last = QSpinBox(), QSpinBox()
        self._first.setAccessibleName("first step")
        self._last.setAccessibleName("end step (exclusive)")
        self._first.setToolTip("first denoising step the maps average over")
        self._last.setToolTip("the maps average over the steps before this one")
        self._grid = QComboBox()
        self._grid.setAccessibleName("attention grid")
        self._grid.setToolTip("resolution of the UNet layers whose attention is shown")

        self._sections = QVBoxLayout()  # one per branch: title and word chips
        self._maps_title, self._maps = _section_title(), QWidget()
        self._components_title, self._components = _section_title(), QWidget()
        FlowLayout(self._maps)
        FlowLayout(self._components)
        self._message = QLabel()
        self._message.setWordWrap(True)
        self._message.setEnabled(False)
        self._build_layout()

        self._opacity.valueChanged.connect(self._opacity_changed)
        self._first.valueChanged.connect(lambda _: self._steps_changed(self._first))
        self._last.valueChanged.connect(lambda _: self._steps_changed(self._last))
        self._grid.currentIndexChanged.connect(lambda _: self._refresh())
        self.setStyleSheet(_STYLE)
        self.clear()

    def _build_layout(self) -> None:
        opacity = QHBoxLayout()
        opacity.addWidget(self._opacity, 1)
        opacity.addWidget(self._opacity_text)
        steps = QHBoxLayout()
        steps.addWidget(self._first)
        steps.addWidget(QLabel("to"))
        steps.addWidget(self._last)
        steps.addStretch(1)
        form = QFormLayout()
        form.addRow("Opacity", opacity)
        form.addRow("Steps", steps)
        form.addRow("Grid", self._grid)
        self._controls = QWidget()
        self._controls.setLayout(form)

        body = QWidget()
        column = QVBoxLayout(body)
        column.addWidget(self._message)
        column.addWidget(self._controls)
        column.addLayout(self._sections)
        self._gallery = QWidget()  # thumbnails of the branch clicked last
        gallery = QVBoxLayout(self._gallery)
        gallery.setContentsMargins(0, 0, 0, 0)
        for widget in (self._maps_title, self._maps, self._components_title, self._components):
            gallery.addWidget(widget)
        column.addWidget(self._gallery)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    # -- public -------------------------------------------------------------------------------

    def set_data(
        self, attention: AttentionMaps, images: dict[int, np.ndarray], labels: dict[int, str]
    ) -> None:
        """Show the maps of ``attention``'s branches named in ``labels`` or ``images`` (all
        branches when both are empty; a branch without an image offers no overlay).

        A word selected before stays selected when the branch with the same label has it, and
        the grid and step range stay when the new maps have them.
        """
        kept = {self._labels[b]: w for b, w in self._selected.items() if b in self._labels}
        grid, steps = self.grid(), self.steps()
        count = len(attention.prompts)
        named = set(labels) | set(images) or set(range(count))  # nothing named: show them all
        branches = sorted(b for b in named if 0 <= b < count)
        self._attention, self._images = attention, dict(images)
        self._labels = {b: labels.get(b, f"branch {b}") for b in branches}
        self._selected, self._focus = {}, (branches[-1] if branches else None)
        self._set_grids(attention, grid)
        total = self._step_count()
        first, last = steps if steps[1] == total else (0, total)
        self._set_steps(first, last)
        self._build_chips()
        for branch, label in self._labels.items():
            if kept.get(label) in self._chips[branch]:
                chip = self._chips[branch][kept[label]]
                chip.blockSignals(True)  # _refresh below emits the overlay once
                chip.setChecked(True)
                chip.blockSignals(False)
                self._selected[branch] = kept.pop(label)
        for label in kept:  # selections the new data cannot show
            self.overlayChanged.emit(label, None)
        has_maps = bool(attention.cross) and bool(branches)
        self._controls.setEnabled(has_maps)
        for chip in (c for chips in self._chips.values() for c in chips.values()):
            chip.setEnabled(has_maps)
        self._message.setText("" if has_maps else "This render recorded no attention maps.")
        self._message.setVisible(not has_maps)
        self._refresh()

    def clear(self) -> None:
        """Forget the data; every overlay shown is withdrawn."""
        for branch in self._selected:
            self.overlayChanged.emit(self._labels[branch], None)
        self._attention, self._images, self._labels = None, {}, {}
        self._selected, self._focus = {}, None
        self._grid.blockSignals(True)
        self._grid.clear()
        self._grid.blockSignals(False)
        self._set_steps(0, 0)
        self._build_chips()
        self._controls.setEnabled(False)
        self._message.setText("Render a node to see which words attend where.")
        self._message.setVisible(True)
        self._fill_thumbnails()

    def selected_word(self, branch: int) -> str | None:
        return self._selected.get(branch)

    def select_word(self, branch: int, word: str | None) -> None:
        """Select ``word`` of ``branch`` (None: deselect), as clicking its chip does."""
        chips = self._chips.get(branch, {})
        if word is None:
            for chip in chips.values():
                chip.setChecked(False)
        elif word in chips:
            chips[word].setChecked(True)
        else:
            raise KeyError(f"'{word}' has no chip in branch {branch}")

    def select_first_word(self) -> None:
        """Select, in the branch shown last, the first word the other branches lack (the
        edited word), else its first word."""
        branch = self._focus
        if branch is None or not self._words.get(branch) or self.grid() is None:
            return
        others = {normalise_word(w) for b, ws in self._words.items() if b != branch for w in ws}
        words = self._words[branch]
        self.select_word(
            branch, next((w for w in words if normalise_word(w) not in others), words[0])
        )

    def words(self, branch: int) -> list[str]:
        """``branch``'s words with a chip: each word once, punctuation left out."""
        return list(self._words.get(branch, []))

    def chip(self, branch: int, word: str) -> QPushButton:
        return self._chips[branch][word]

    def thumbnails(self) -> list[QToolButton]:
        """The thumbnails shown: word maps, then self-attention components."""
        return list(self._thumbs)

    def opacity(self) -> float:
        return self._opacity.value() / 100

    def set_opacity(self, percent: int) -> None:
        self._opacity.setValue(percent)

    def steps(self) -> tuple[int, int]:
        """The step range ``[first, end)`` the maps average over."""
        return self._first.value(), self._last.value()

    def set_steps(self, first: int, end: int) -> None:
        self._first.setValue(first)
        self._last.setValue(end)

    def grid(self) -> tuple[int, int] | None:
        return self._grid.currentData()

    def set_grid(self, grid: tuple[int, int]) -> None:
        index = self._grid_index(grid)
        if index < 0:
            raise KeyError(f"no attention grid {grid}")
        self._grid.setCurrentIndex(index)

    # -- building -----------------------------------------------------------------------------

    def _set_grids(self, attention: AttentionMaps, keep: tuple[int, int] | None) -> None:
        self._grid.blockSignals(True)
        self._grid.clear()
        for h, w in attention.grids:
            self._grid.addItem(f"{h}\u00d7{w}", (h, w))
        # the user's grid when these maps have it, else the blend grid: the UNet level of
        # prompt-to-prompt's maps (finer levels attend less by word on small models)
        wanted = keep if keep in attention.cross else attention.default_grid
        self._grid.setCurrentIndex(max(0, self._grid_index(wanted)))
        self._grid.blockSignals(False)

    def _grid_index(self, grid: tuple[int, int] | None) -> int:
        # QComboBox.findData does not match tuples stored from Python, so compare here.
        items = (self._grid.itemData(i) for i in range(self._grid.count()))
        return next((i for i, data in enumerate(items) if data == grid), -1)

    def _step_count(self) -> int:
        grid = self.grid()
        return (
            0 if self._attention is None or grid is None else self._attention.cross[grid].shape[0]
        )

    def _set_steps(self, first: int, end: int) -> None:
        total = self._step_count()
        for spin in (self._first, self._last):
            spin.blockSignals(True)
        self._first.setRange(0, max(0, total - 1))
        self._last.setRange(min(1, total), total)
        self._first.setValue(first)
        self._last.setValue(end)
        for spin in (self._first, self._last):
            spin.blockSignals(False)

    def _build_chips(self) -> None:
        _clear_layout(self._sections)
        self._chips, self._words = {}, {}
        for branch, label in self._labels.items():
            prompt = self._attention.prompts[branch]
            title = _section_title(f"{label}: {prompt.prompt}")
            title.setWordWrap(True)  # a long prompt must not widen the panel
            self._sections.addWidget(title)
            holder = QWidget()
            flow = FlowLayout(holder)
            self._words[branch], self._chips[branch] = [], {}
            seen: set[str] = set()
            for word in prompt.words:
                shown = _EDGE_PUNCTUATION.sub("", word)
                if not shown or normalise_word(shown) in seen:
                    continue  # punctuation alone has no map; a repeated word needs one chip
                seen.add(normalise_word(shown))
                chip = QPushButton(shown)
                chip.setProperty("chip", True)
                chip.setCheckable(True)
                chip.setToolTip(f"show where '{shown}' attends in the {label}")
                chip.toggled.connect(lambda on, b=branch, w=shown: self._chip_toggled(b, w, on))
                flow.addWidget(chip)
                self._words[branch].append(shown)
                self._chips[branch][shown] = chip
            self._sections.addWidget(holder)

    # -- reactions ----------------------------------------------------------------------------

    def _chip_toggled(self, branch: int, word: str, on: bool) -> None:
        if on:
            for other, chip in self._chips[branch].items():
                if other != word and chip.isChecked():
                    chip.blockSignals(True)
                    chip.setChecked(False)
                    chip.blockSignals(False)
            self._selected[branch], self._focus = word, branch
            self._fill_thumbnails()
        elif self._selected.get(branch) == word:
            del self._selected[branch]
            self._fill_thumbnails()
        self._emit_overlay(branch)

    def _opacity_changed(self, value: int) -> None:
        self._opacity_text.setText(f"{value}%")
        for branch in self._selected:
            self._emit_overlay(branch)

    def _steps_changed(self, changed: QSpinBox) -> None:
        first, end = self.steps()
        if first >= end:  # keep the range non-empty by moving the other end
            other, value = (
                (self._last, first + 1) if changed is self._first else (self._first, end - 1)
            )
            other.blockSignals(True)
            other.setValue(value)
            other.blockSignals(False)
        self._refresh()

    def _refresh(self) -> None:
        self._fill_thumbnails()
        for branch in self._selected:
            self._emit_overlay(branch)

    def _word_map(self, branch: int, word: str) -> np.ndarray:
        return self._attention.word_map(branch, word, self.grid(), self.steps())  # (h, w)

    def _emit_overlay(self, branch: int) -> None:
        word, image = self._selected.get(branch), self._images.get(branch)
        if word is None or image is None or self.grid() is None:
            self.overlayChanged.emit(self._labels[branch], None)
            return
        rgb = overlay(image, self._word_map(branch, word), self.opacity())
        self.overlayChanged.emit(self._labels[branch], rgb)

    def _fill_thumbnails(self) -> None:
        for flow in (self._maps.layout(), self._components.layout()):
            _clear_layout(flow)
        self._thumbs = []
        branch = self._focus
        shown = self._attention is not None and branch is not None and self.grid() is not None
        self._gallery.setVisible(shown)
        if not shown:
            return
        label = self._labels[branch]
        self._maps_title.setText(f"Word maps \u00b7 {label}")
        for word in self._words[branch]:
            rgb = colourise(normalise(self._word_map(branch, word)))
            thumb = self._thumbnail(rgb, word, f"cross-attention of '{word}'")
            thumb.setCheckable(True)
            thumb.setChecked(self._selected.get(branch) == word)
            thumb.clicked.connect(lambda _, w=word: self._chips[branch][w].toggle())
            self._maps.layout().addWidget(thumb)
        components = self._components_of(branch)
        self._components_title.setText(
            f"Self-attention components \u00b7 {label}"
            if len(components)
            else f"Self-attention \u00b7 {label}: not recorded"
        )
        singular = self._attention.self_singular
        for k, component in enumerate(components):
            low, high = float(component.min()), float(component.max())
            scaled = (component - low) / (high - low) if high > low else np.zeros_like(component)
            tip = f"self-attention component {k + 1}"
            if singular.ndim == 2 and branch < singular.shape[0] and k < singular.shape[1]:
                tip += f" (singular value {float(singular[branch, k]):.3g})"
            self._components.layout().addWidget(
                self._thumbnail(colourise(scaled), f"#{k + 1}", tip)
            )
        self._components.setVisible(len(components) > 0)

    def _components_of(self, branch: int) -> np.ndarray:
        """Up to MAX_COMPONENTS self-attention components of ``branch``: (k, h, w)."""
        data = np.asarray(self._attention.self_components)
        if data.ndim != 4 or branch >= data.shape[0]:
            return np.zeros((0, 1, 1), dtype=np.float32)
        return data[branch, : self.MAX_COMPONENTS]

    def _thumbnail(self, rgb: np.ndarray, caption: str, tip: str) -> QToolButton:
        image = to_qimage(rgb).scaled(
            self.THUMB,
            self.THUMB,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation,  # nearest: one block per attention cell
        )
        button = QToolButton()
        button.setProperty("thumb", True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
        button.setIcon(QIcon(QPixmap.fromImage(image)))
        button.setIconSize(QSize(self.THUMB, self.THUMB))
        button.setText(caption)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        self._thumbs.append(button)
        return button


def _section_title(text: str = "") -> QLabel:
    title = QLabel(text)
    title.setProperty("heading", True)
    return title


def _clear_layout(layout: QLayout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        if item.widget() is not None:
            item.widget().hide()  # at once: deletion waits for the event loop
            item.widget().deleteLater()
        elif item.layout() is not None:
            _clear_layout(item.layout())
