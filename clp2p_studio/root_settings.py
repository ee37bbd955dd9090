"""The root's sampling settings (seed, steps, guidance, size, negative prompt, scheduler) as
the parameter panel shows them; an imported picture's inversion fixes those it depends on."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.session import Session
from clp2p.model.settings import SCHEDULERS, RenderSettings


class RootSettingsBox(QGroupBox):
    """Emits ``settingsRequested(RenderSettings)`` when the user applies the values shown."""

    settingsRequested = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__("Root: sampling", parent)
        form = QFormLayout(self)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.steps = QSpinBox()
        self.steps.setRange(1, limits.MAX_STEPS)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0, limits.MAX_GUIDANCE)
        self.guidance.setSingleStep(0.5)
        self.width_box = QSpinBox()
        self.height_box = QSpinBox()
        for b in (self.width_box, self.height_box):
            b.setRange(0, limits.MAX_SIZE)
            b.setSingleStep(8)
            b.setSpecialValueText("model default")
        form.addRow("Seed", self.seed)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Width", self.width_box)
        form.addRow("Height", self.height_box)
        self.negative = QLineEdit()
        self.negative.setPlaceholderText("none")
        self.negative.setMaxLength(limits.MAX_PROMPT_CHARS)
        self.negative.setToolTip("negative prompt: the unconditional half of guidance")
        form.addRow("Negative", self.negative)
        self.scheduler = QComboBox()
        self.scheduler.addItems(SCHEDULERS)
        self.scheduler.setToolTip("sampler; an imported picture follows its DDIM inversion")
        self.karras = QCheckBox("Karras sigmas")
        self.scheduler.currentTextChanged.connect(
            lambda name: self.karras.setEnabled(name != "ddim" and self.scheduler.isEnabled())
        )
        form.addRow("Scheduler", self.scheduler)
        form.addRow("", self.karras)
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #ef4444;")
        form.addRow(self.problem)
        apply = QPushButton("Apply to the session")
        apply.clicked.connect(self._apply)
        form.addRow(apply)

    def show_settings(self, session: Session) -> None:
        """The session's settings; those an imported picture's inversion holds are locked."""
        s = session.settings
        for box, value in (
            (self.seed, s.seed),
            (self.steps, s.steps),
            (self.width_box, s.width or 0),
            (self.height_box, s.height or 0),
        ):
            box.setValue(value)
        self.guidance.setValue(s.guidance)
        self.negative.setText(s.negative)
        self.scheduler.setEnabled(True)
        self.scheduler.setCurrentText(s.scheduler)
        self.karras.setChecked(s.karras)
        # an imported picture's inversion holds for its steps and size (null-text: guidance)
        imported = session.imported
        for box in (self.steps, self.width_box, self.height_box):
            box.setEnabled(imported is None)
        self.guidance.setEnabled(imported is None or not imported.inversion.fixes_guidance)
        self.seed.setEnabled(imported is None)  # the start is the inversion's, not a seed's
        self.scheduler.setEnabled(imported is None)  # edits follow the DDIM inversion
        self.karras.setEnabled(imported is None and s.scheduler != "ddim")

    def _apply(self) -> None:
        try:
            settings = RenderSettings(
                self.seed.value(),
                self.steps.value(),
                self.guidance.value(),
                self.width_box.value() or None,
                self.height_box.value() or None,
                self.negative.text(),
                self.scheduler.currentText(),
                self.karras.isChecked() and self.scheduler.currentText() != "ddim",
            )
        except Clp2pError as exc:
            self.problem.setText(str(exc))
            return
        self.problem.setText("")
        self.settingsRequested.emit(settings)
