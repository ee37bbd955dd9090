"""File -> Import image: a picture, the prompt that describes it, the inversion method and how
the picture meets the model's frame (crop or fit), with a preview of the fitted picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from clp2p.errors import Clp2pError
from clp2p.model.imported import (
    DEFAULT_INNER_STEPS,
    DEFAULT_METHOD,
    FITS,
    METHODS,
    fit_image,
    optimises_embeddings,
    read_image,
)

from .imaging import to_pixmap

METHOD_HELP = {
    "null-text": "optimises the empty prompt per step: the reference, about 20x slower",
    "negative-prompt": "the prompt itself as negative prompt: no optimisation, fast",
    "direct": "the source follows the inversion exactly: fast, exact source, best edits",
}


class ImportDialog(QDialog):
    """Collects an import; :attr:`image` holds the picture once a readable file is chosen."""

    def __init__(self, size: tuple[int, int], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import image")
        self.size_wh = size
        self.image: np.ndarray | None = None
        form = QFormLayout(self)
        self.path = QLineEdit()
        self.path.setPlaceholderText("a PNG, JPEG or WebP file")
        self.path.editingFinished.connect(lambda: self.load(self.path.text()))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("what the picture shows, e.g. a red circle on a white ...")
        self.prompt.textChanged.connect(self._validate)
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.method.setCurrentText(DEFAULT_METHOD)
        self.method_help = QLabel()
        self.method_help.setWordWrap(True)
        self.method.currentTextChanged.connect(self._method_changed)
        self.fit = QComboBox()
        self.fit.addItems(FITS)
        self.fit.currentTextChanged.connect(self._update_preview)
        self.inner = QSpinBox()
        self.inner.setRange(1, 100)
        self.inner.setValue(DEFAULT_INNER_STEPS)
        self.preview = QLabel("no picture")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(160, 160)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        form.addRow("Picture", row)
        form.addRow("Prompt", self.prompt)
        form.addRow("Inversion", self.method)
        form.addRow("", self.method_help)
        form.addRow("Null-text steps", self.inner)
        form.addRow("Frame", self.fit)
        form.addRow("Fitted", self.preview)
        form.addRow(self.error)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Invert")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self._method_changed(self.method.currentText())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import image", "", "Images (*.png *.jpg *.jpeg *.webp)"
        )
        if path:
            self.load(path)

    def load(self, path: str) -> bool:
        """Read the picture; a bad file shows why in the dialog and keeps Invert disabled."""
        self.image = None
        if self.path.text() != path:
            self.path.setText(path)
        try:
            if path.strip():
                self.image = read_image(path)
                self.error.setText("")
        except Clp2pError as exc:
            self.error.setText(str(exc))
        self._update_preview()
        self._validate()
        return self.image is not None

    def _method_changed(self, method: str) -> None:
        self.method_help.setText(METHOD_HELP[method])
        self.inner.setEnabled(optimises_embeddings(method))

    def _update_preview(self) -> None:
        if self.image is None:
            self.preview.setPixmap(to_pixmap(np.zeros((8, 8, 3), np.uint8)).scaled(0, 0))
            self.preview.setText("no picture")
            return
        fitted = fit_image(self.image, *self.size_wh, self.fit.currentText())
        self.preview.setPixmap(
            to_pixmap(fitted).scaled(
                160,
                160,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.FastTransformation,
            )
        )

    def _validate(self) -> None:
        ok = self.image is not None and bool(self.prompt.text().strip())
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)

    def values(self) -> dict:
        return {
            "image": self.image,
            "prompt": self.prompt.text().strip(),
            "method": self.method.currentText(),
            "fit": self.fit.currentText(),
            "file": Path(self.path.text()).name,
            "inner_steps": self.inner.value(),
        }
