"""The heatmap panel: a render's cross-attention maps per prompt word and its self-attention
components, with the chosen word's map offered as an overlay for the canvas."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from clp2p.attention.heatmap import blend, heat_image
from clp2p.attention.maps import AttentionMaps
from clp2p.model.align import normalise_word

from .flow_layout import FlowLayout
from .heatmap_gallery import HeatmapGallery, clear_layout, section_title

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

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._attention: AttentionMaps | None = None
        self._images: dict[int, np.ndarray] = {}
        self._labels: dict[int, str] = {}
        self._words: dict[int, list[str]] = {}  # branch -> words, each once
        self._chips: dict[int, dict[str, QPushButton]] = {}
        self._selected: dict[int, str] = {}  # branch -> word shown as an overlay
        self._focus: int | None = None  # branch whose thumbnails are shown
        self._heat: dict[int, tuple[tuple, np.ndarray]] = {}  # branch -> (view, heat image)

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
        self._gallery = HeatmapGallery()  # thumbnails of the branch clicked last
        self._gallery.wordClicked.connect(lambda w: self._chips[self._focus][w].toggle())
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
        self._heat = {}
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
        self._selected, self._focus, self._heat = {}, None, {}
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
        return self._gallery.thumbnails()

    def opacity(self) -> float:
        return self._opacity.value() / 100

    def set_opacity(self, percent: int) -> None:
        self._opacity.setValue(percent)

    def steps(self) -> tuple[int, int]:
        """The step range ``[first, end)`` the maps average over."""
        return self._first.value(), self._last.value()

    def set_steps(self, first: int, end: int) -> None:
        self.set_first_step(first)
        self.set_end_step(end)

    def set_first_step(self, first: int) -> None:
        """Move the first step, as its spin box does: past the end, the end moves along."""
        self._first.setValue(first)

    def set_end_step(self, end: int) -> None:
        """Move the end step, as its spin box does: before the start, the start moves along."""
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
        clear_layout(self._sections)
        self._chips, self._words = {}, {}
        for branch, label in self._labels.items():
            prompt = self._attention.prompts[branch]
            title = section_title(f"{label}: {prompt.prompt}")
            title.setWordWrap(True)  # a long prompt must not widen the panel
            self._sections.addWidget(title)
            holder = QWidget()
            flow = FlowLayout(holder)
            self._words[branch], self._chips[branch] = [], {}
            seen: set[str] = set()
            for word in prompt.words:
                shown = _shown_word(word)
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
        view = (word, self.grid(), self.steps())
        cached = self._heat.get(branch)
        if cached is None or cached[0] != view:  # an opacity change alone only blends again
            cached = (view, heat_image(self._word_map(branch, word), image.shape[:2]))
            self._heat[branch] = cached
        self.overlayChanged.emit(self._labels[branch], blend(image, cached[1], self.opacity()))

    def _fill_thumbnails(self) -> None:
        branch = self._focus
        shown = self._attention is not None and branch is not None and self.grid() is not None
        self._gallery.setVisible(shown)
        if not shown:
            self._gallery.clear()
            return
        self._gallery.show_branch(
            self._labels[branch],
            [(word, self._word_map(branch, word)) for word in self._words[branch]],
            self._selected.get(branch),
            self._attention,
            branch,
        )


def _shown_word(word: str) -> str:
    """``word`` as typed without the punctuation at its edges: the span of it that
    :func:`normalise_word` keeps (lowercased only where lowercasing changes its length)."""
    norm = normalise_word(word)
    lowered = word.lower()
    if not norm or len(lowered) != len(word):
        return norm
    start = lowered.find(norm)  # after the leading punctuation: norm starts with a word character
    return word[start : start + len(norm)]
