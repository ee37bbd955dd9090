"""Model and device picker: the embedded shapes model, a local diffusers folder, a cached Hub
id or a single-file checkpoint; device and dtype."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from clp2p.model.devices import DEVICES, DTYPES
from clp2p.resources import SHAPES
from clp2p.workflows.service import FAST_MODE, ModelSpec

SPILL_TIP = (
    "disk space for what edits reuse when the render cache is full: records go to the folder "
    "NAME.records beside a saved session's file NAME and are read back from there, also after "
    "a restart; the least recently used go first; an unsaved session keeps none"
)

ADAPTERS_TIP = (
    "LoRA weights (lora: FILE:SCALE) and textual-inversion embeddings (embedding: FILE:TOKEN; "
    "the token defaults to <file name>) loaded with the model; double-click a line to edit "
    "it. Sessions made with them name each file by path and content hash."
)

SOURCES = [
    "Embedded shapes model",
    "Diffusers folder",
    "Hugging Face id (cached)",
    "Checkpoint file",
]


class ModelDialog(QDialog):
    def __init__(self, spec: ModelSpec, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model and device")
        form = QFormLayout(self)
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.location = QLineEdit("" if spec.model == SHAPES else spec.model)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.location, 1)
        row.addWidget(browse)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(spec.device)
        self.dtype = QComboBox()
        self.dtype.addItems(list(DTYPES))
        self.dtype.setCurrentText(spec.dtype)
        self.cache = QSpinBox()
        self.cache.setRange(64, 1024 * 1024)
        self.cache.setSingleStep(256)
        self.cache.setSuffix(" MiB")
        self.cache.setValue(spec.cache_mib)
        self.cache.setToolTip(
            "memory for what edits of rendered nodes reuse; the least recently used goes first"
        )
        form.addRow("Model", self.source)
        form.addRow("Location", row)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("Render cache", self.cache)
        self.spill = QSpinBox()
        self.spill.setRange(0, 1024 * 1024)
        self.spill.setSingleStep(1024)
        self.spill.setSuffix(" MiB")
        self.spill.setSpecialValueText("off")
        self.spill.setValue(spec.spill_mib)
        self.spill.setToolTip(SPILL_TIP)
        form.addRow("Records on disk", self.spill)
        self._add_adapter_rows(form, spec)
        self.fast = QCheckBox("Fast mode: batch branches")
        self.fast.setChecked(spec.batch)
        self.fast.setToolTip(FAST_MODE)
        form.addRow("", self.fast)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        if spec.model != SHAPES:
            guess = 2 if "/" in spec.model and not spec.model.startswith(("/", ".")) else 1
            self.source.setCurrentIndex(
                3 if spec.model.endswith((".safetensors", ".ckpt")) else guess
            )
        self.source.currentIndexChanged.connect(self._source_changed)
        self._source_changed(self.source.currentIndex())

    def _add_adapter_rows(self, form: QFormLayout, spec: ModelSpec) -> None:
        """The LoRA and embedding files, one a line as the CLI takes them."""
        self.adapters = QListWidget()
        self.adapters.setToolTip(ADAPTERS_TIP)
        self.adapters.setMaximumHeight(90)
        for kind, specs in (("lora", spec.loras), ("embedding", spec.embeddings)):
            for text in specs:
                self._add_adapter(kind, text)
        row = QHBoxLayout()
        for label, kind in (("Add LoRA...", "lora"), ("Add embedding...", "embedding")):
            button = QPushButton(label)
            button.clicked.connect(lambda _=False, k=kind: self._browse_adapter(k))
            row.addWidget(button)
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: self.adapters.takeItem(self.adapters.currentRow()))
        row.addWidget(remove)
        form.addRow("LoRAs, embeddings", self.adapters)
        form.addRow("", row)

    def _add_adapter(self, kind: str, text: str) -> None:
        item = QListWidgetItem(f"{kind}: {text}")
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.adapters.addItem(item)

    def _browse_adapter(self, kind: str) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "LoRA" if kind == "lora" else "Embedding",
            "",
            "Weights (*.safetensors *.pt *.bin)",
        )
        if path:
            self._add_adapter(kind, f"{path}:1" if kind == "lora" else path)

    def adapter_specs(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(LoRA specs, embedding specs) as listed: ``kind: FILE[:SUFFIX]`` lines."""
        out: dict[str, list[str]] = {"lora": [], "embedding": []}
        for i in range(self.adapters.count()):
            kind, _, text = self.adapters.item(i).text().partition(":")
            if kind.strip() in out and text.strip():
                out[kind.strip()].append(text.strip())
        return tuple(out["lora"]), tuple(out["embedding"])

    def _source_changed(self, index: int) -> None:
        self.location.setEnabled(index != 0)
        self.location.setPlaceholderText(
            ["", "/path/to/model", "owner/name", "/path/model.safetensors"][index]
        )

    def _browse(self) -> None:
        index = self.source.currentIndex()
        if index == 1:
            path = QFileDialog.getExistingDirectory(self, "Diffusers model folder")
        elif index == 3:
            path, _ = QFileDialog.getOpenFileName(
                self, "Checkpoint", "", "Checkpoints (*.safetensors *.ckpt)"
            )
        else:
            return
        if path:
            self.location.setText(path)

    def spec(self) -> ModelSpec:
        model = SHAPES if self.source.currentIndex() == 0 else self.location.text().strip()
        return ModelSpec(
            model or SHAPES,
            self.device.currentText(),
            self.dtype.currentText(),
            self.cache.value(),
            self.fast.isChecked(),
            self.spill.value(),
            *self.adapter_specs(),
        )
