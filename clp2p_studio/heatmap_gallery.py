"""Thumbnails of one branch's attention: every word's cross-attention map and the top
self-attention components, one block of colour per attention cell."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QLayout, QToolButton, QVBoxLayout, QWidget

from clp2p.attention.heatmap import colourise, normalise
from clp2p.attention.maps import AttentionMaps

from .flow_layout import FlowLayout
from .imaging import to_qimage


class HeatmapGallery(QWidget):
    """Word maps, then self-attention components, of the branch labelled ``label``. Emits
    ``wordClicked(word)`` when a word's thumbnail is clicked."""

    wordClicked = Signal(str)

    THUMB = 64
    MAX_COMPONENTS = 6

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._thumbs: list[QToolButton] = []
        self._maps_title, self._maps = section_title(), QWidget()
        self._components_title, self._components = section_title(), QWidget()
        FlowLayout(self._maps)
        FlowLayout(self._components)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        for widget in (self._maps_title, self._maps, self._components_title, self._components):
            column.addWidget(widget)

    def thumbnails(self) -> list[QToolButton]:
        """The thumbnails shown: word maps, then self-attention components."""
        return list(self._thumbs)

    def clear(self) -> None:
        for flow in (self._maps.layout(), self._components.layout()):
            clear_layout(flow)
        self._thumbs = []

    def show_branch(
        self,
        label: str,
        word_maps: list[tuple[str, np.ndarray]],
        selected: str | None,
        attention: AttentionMaps,
        branch: int,
    ) -> None:
        """``word_maps``: (word, (h, w) map) in prompt order, ``selected`` marked; then up to
        MAX_COMPONENTS self-attention components of ``branch`` of ``attention``."""
        self.clear()
        self._maps_title.setText(f"Word maps \u00b7 {label}")
        for word, map2d in word_maps:
            thumb = self._thumbnail(
                colourise(normalise(map2d)), word, f"cross-attention of '{word}'"
            )
            thumb.setCheckable(True)
            thumb.setChecked(selected == word)
            thumb.clicked.connect(lambda _=False, w=word: self.wordClicked.emit(w))
            self._maps.layout().addWidget(thumb)
        components = _components(attention, branch)[: self.MAX_COMPONENTS]  # (k, h, w)
        singular = attention.self_singular
        singular = singular[branch] if singular.ndim == 2 and branch < len(singular) else ()
        self._components_title.setText(
            f"Self-attention components \u00b7 {label}"
            if len(components)
            else f"Self-attention \u00b7 {label}: not recorded"
        )
        for k, component in enumerate(components):
            low, high = float(component.min()), float(component.max())
            scaled = (component - low) / (high - low) if high > low else np.zeros_like(component)
            tip = f"self-attention component {k + 1}"
            if k < len(singular):
                tip += f" (singular value {float(singular[k]):.3g})"
            self._components.layout().addWidget(
                self._thumbnail(colourise(scaled), f"#{k + 1}", tip)
            )
        self._components.setVisible(len(components) > 0)

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


def _components(attention: AttentionMaps, branch: int) -> np.ndarray:
    data = np.asarray(attention.self_components)  # (branches, k, h, w)
    if data.ndim != 4 or branch >= data.shape[0]:
        return np.zeros((0, 1, 1), dtype=np.float32)
    return data[branch]


def section_title(text: str = "") -> QLabel:
    title = QLabel(text)
    title.setProperty("heading", True)
    return title


def clear_layout(layout: QLayout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        if item.widget() is not None:
            item.widget().hide()  # at once: deletion waits for the event loop
            item.widget().deleteLater()
        elif item.layout() is not None:
            clear_layout(item.layout())
