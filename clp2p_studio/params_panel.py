"""The parameter panel: the next edit of the selected node (kind, target prompt, word chips
for blend / re-weight / per-word windows, k, cross / self / V windows, presets), or the root's
sampling settings. Invalid input is flagged inline before anything runs."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from clp2p.errors import Clp2pError
from clp2p.model.align import normalise_word
from clp2p.model.edits import infer_kind
from clp2p.model.params import (
    BLEND_NORM_HELP,
    BLEND_PIXELS_HELP,
    BLEND_START_HELP,
    EDIT_KINDS,
    REFINE_PADS,
    V_LAYER_KINDS,
    CrossWindow,
    EditParams,
    StepWindow,
    layers_spec,
    parse_layers,
)
from clp2p.model.presets import PRESETS, preset
from clp2p.model.session import Session
from clp2p.workflows.service import is_xl

from .range_slider import RangeSlider
from .root_settings import RootSettingsBox

Validator = Callable[[str, str, EditParams], str | None]
SELF_RES = ["8", "16", "32", "64", "all"]
CHIPS_PER_ROW = 4


def _words(prompt: str) -> list[str]:
    """The prompt's words, normalised, each once, in order."""
    return list(dict.fromkeys(n for n in map(normalise_word, prompt.split()) if n))


class ParamsPanel(QWidget):
    """Emits ``addRequested(kind, prompt, params, run)`` for a new child of the current node and
    ``rootSettingsRequested(RenderSettings)`` for the root's settings. ``validator`` is the
    engine's check of an edit against its prompts (the backend's ``check_edit``)."""

    addRequested = Signal(str, str, object, bool)
    rootSettingsRequested = Signal(object)

    def __init__(self, parent: QWidget | None = None, validator: Validator | None = None) -> None:
        super().__init__(parent)
        self.session: Session | None = None
        self.node_id: str | None = None
        self.validator = validator
        layout = QVBoxLayout(self)
        self.header = QLabel("No node selected")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        layout.addWidget(self._edit_group())
        self.root_box = RootSettingsBox()
        self.root_box.settingsRequested.connect(self.rootSettingsRequested)
        layout.addWidget(self.root_box)
        layout.addStretch(1)
        self._apply_params(EditParams())  # the engine's default edit

    # ---- construction -------------------------------------------------------------------
    def _edit_group(self) -> QGroupBox:
        box = QGroupBox("Next edit of the selected image")
        form = QFormLayout(box)
        self._add_prompt_rows(form)
        self._add_window_rows(form)
        self._add_value_rows(form)
        self._add_buttons(form)
        self._connect_changes()
        self.edit_box = box
        return box

    def _add_prompt_rows(self, form: QFormLayout) -> None:
        """Kind, target prompt, word chips and their pick mode, presets."""
        self.kind = QComboBox()
        self.kind.addItems(EDIT_KINDS)
        form.addRow("Edit", self.kind)
        self.target = QLineEdit()
        self.target.setPlaceholderText("target prompt")
        self.target.setAccessibleName("Target prompt")
        form.addRow("Target", self.target)
        modes = QHBoxLayout()
        self.chip_mode = QButtonGroup(self)
        for i, name in enumerate(("blend", "re-weight", "per-word")):
            b = QPushButton(name)
            b.setCheckable(True)
            b.setChecked(i == 0)
            self.chip_mode.addButton(b, i)
            modes.addWidget(b)
        form.addRow("Word picks", modes)
        self.chips = QGridLayout()
        self.chips.setContentsMargins(0, 0, 0, 0)
        self.chips_box = QWidget()
        self.chips_box.setLayout(self.chips)
        form.addRow("", self.chips_box)
        presets = QHBoxLayout()
        for name in PRESETS:
            b = QPushButton(name)
            b.setToolTip(f"load the {name} preset")
            b.clicked.connect(lambda _=False, n=name: self._apply_params(self._preset_of(n)))
            presets.addWidget(b)
        form.addRow("Preset", presets)

    def _add_window_rows(self, form: QFormLayout) -> None:
        """k and blend words, the cross / self / V windows."""
        self.k = QSlider(Qt.Orientation.Horizontal)
        self.k.setRange(0, 100)
        self.k_label = QLabel("0.00")
        self.k.valueChanged.connect(lambda v: self.k_label.setText(f"{v / 100:.2f}"))
        self.blend_start = QDoubleSpinBox()
        self.blend_start.setRange(0, 0.99)  # [0, 1) at the box's two decimals
        self.blend_start.setSingleStep(0.05)
        self.blend_start.setPrefix("from ")
        self.blend_start.setToolTip(BLEND_START_HELP)
        row = QHBoxLayout()
        row.addWidget(self.k, 1)
        row.addWidget(self.k_label)
        row.addWidget(self.blend_start)
        form.addRow("k (blend)", row)
        switches = QHBoxLayout()  # what else the blend keeps of its source
        self.blend_pixels = QCheckBox("source pixels")
        self.blend_pixels.setToolTip(BLEND_PIXELS_HELP)
        self.blend_norm = QCheckBox("source norm")
        self.blend_norm.setToolTip(BLEND_NORM_HELP)
        switches.addWidget(self.blend_pixels)
        switches.addWidget(self.blend_norm)
        form.addRow("Blend keeps", switches)
        self.blend = QLineEdit()
        self.blend.setPlaceholderText("blend words (default: the changed words)")
        form.addRow("Blend words", self.blend)
        self.cross = RangeSlider()
        self.cross.setAccessibleName("Cross-attention window")
        form.addRow("Cross", self.cross)
        self.cross_words = self._table(["word", "start", "end"])
        form.addRow("Cross per word", self.cross_words)
        self.self_window = RangeSlider()
        self.self_window.setAccessibleName("Self-attention window")
        form.addRow("Self", self.self_window)
        self.self_res = QComboBox()
        self.self_res.addItems(SELF_RES)
        form.addRow("Self grids <=", self.self_res)
        self.self_layers = QLineEdit("all")
        self.self_layers.setToolTip(
            "self-attention injection only in layers A:B, counted from 1 in the order the UNet "
            "runs them (FreePromptEditing: 4:14 of SD 1.x's 16), or 'all'"
        )
        form.addRow("Self layers", self.self_layers)
        self.v_window = RangeSlider()
        self.v_window.setAccessibleName("V injection window")
        form.addRow("V window", self.v_window)

    def _add_value_rows(self, form: QFormLayout) -> None:
        """V blend and its layers, the unconditional half, re-weight scales."""
        self.v_blend = QDoubleSpinBox()
        self.v_blend.setRange(0, 1)
        self.v_blend.setSingleStep(0.05)
        self.v_layers = QComboBox()
        self.v_layers.addItems(V_LAYER_KINDS)
        row = QHBoxLayout()
        row.addWidget(QLabel("beta"))
        row.addWidget(self.v_blend)
        row.addWidget(self.v_layers)
        form.addRow("V blend", row)
        self.uncond = QCheckBox("also edit the unconditional half")
        form.addRow("", self.uncond)
        self.refine_pad = QComboBox()
        self.refine_pad.addItems(REFINE_PADS)
        self.refine_pad.setToolTip(
            "a refinement's padding after the end token: reference (position p takes the "
            "source's position p, as prompt-to-prompt) or shifted by the length difference"
        )
        form.addRow("Refine padding", self.refine_pad)
        self.reweight = self._table(["word", "scale"])
        form.addRow("Re-weight", self.reweight)

    def _add_buttons(self, form: QFormLayout) -> None:
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #ef4444;")
        self.problem.setAccessibleName("Edit problem")
        form.addRow(self.problem)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add edit")
        self.run_button = QPushButton("Add && render")
        self.run_button.setDefault(True)
        self.add_button.clicked.connect(lambda: self._add(False))
        self.run_button.clicked.connect(lambda: self._add(True))
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.run_button)
        form.addRow(buttons)

    def _connect_changes(self) -> None:
        """Every input re-checks the edit."""
        for w in (self.target, self.blend, self.self_layers):
            w.textChanged.connect(self._changed)
        for w in (self.kind, self.self_res, self.v_layers, self.refine_pad):
            w.currentIndexChanged.connect(self._changed)
        for w in (self.cross, self.self_window, self.v_window):
            w.valuesChanged.connect(self._changed)
        self.k.valueChanged.connect(self._changed)
        self.v_blend.valueChanged.connect(self._changed)
        self.blend_start.valueChanged.connect(self._changed)
        self.cross_words.itemChanged.connect(self._changed)
        self.reweight.itemChanged.connect(self._changed)
        self.target.textChanged.connect(self._rebuild_chips)

    def _table(self, headers: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().setVisible(False)
        table.setMaximumHeight(90)
        return table

    # ---- context ----------------------------------------------------------------------------
    def set_context(self, session: Session, node_id: str | None) -> None:
        """Show ``session``'s settings and prepare the next edit of ``node_id``."""
        self.session, self.node_id = session, node_id
        self.root_box.show_settings(session)
        if node_id is None:
            self.header.setText("No node selected")
            self._changed()
            return
        node = session.node(node_id)
        self.header.setText(f"<b>{node.id}</b> ({node.kind}): {node.prompt}")
        self.root_box.setVisible(node.parent is None)
        if not self.target.text():
            self.target.setText(node.prompt)
        if node.params is not None:
            self._apply_params(node.params)
        self._changed()

    def _preset_of(self, name: str) -> EditParams:
        """The preset ``name`` in its form for the session's model (SDXL's differs)."""
        model = self.session.model if self.session is not None else None
        return preset(name, is_xl(model))

    def _apply_params(self, p: EditParams) -> None:
        self.k.setValue(round(p.k * 100))
        self.blend_start.setValue(p.blend_start)
        self.blend_pixels.setChecked(p.blend_pixels)
        self.blend_norm.setChecked(p.blend_norm)
        self.cross.setValues(p.cross.default.start, p.cross.default.end)
        self.self_window.setValues(p.self_window.start, p.self_window.end)
        self.self_res.setCurrentText("all" if p.self_res is None else str(p.self_res))
        self.self_layers.setText(layers_spec(p.self_layers))
        self.v_window.setValues(p.v_window.start, p.v_window.end)
        self.v_blend.setValue(p.v_blend)
        self.v_layers.setCurrentText(p.v_layers)
        self.uncond.setChecked(p.inject_uncond)
        self.refine_pad.setCurrentText(p.refine_pad)
        self.blend.setText(" ".join(p.blend_words))
        self._fill(self.cross_words, [(w, f"{x.start:g}", f"{x.end:g}") for w, x in p.cross.words])
        self._fill(self.reweight, [(w, f"{s:g}") for w, s in p.reweight])
        self._preset = p.preset

    def _fill(self, table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
        table.blockSignals(True)
        table.setRowCount(0)
        for row in rows:
            r = table.rowCount()
            table.insertRow(r)
            for c, value in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(value))
        table.blockSignals(False)

    def _rebuild_chips(self) -> None:
        while self.chips.count():
            w = self.chips.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        for i, word in enumerate(_words(self.target.text())[:16]):
            chip = QPushButton(word)
            chip.setStyleSheet("padding: 2px 6px;")
            chip.clicked.connect(lambda _=False, w=word: self.pick_word(w))
            self.chips.addWidget(chip, i // CHIPS_PER_ROW, i % CHIPS_PER_ROW)

    def pick_word(self, word: str) -> None:
        """A click on a word chip: toggles it as a blend word, or adds a re-weight or
        per-word cross-window row, by the selected pick mode."""
        mode = self.chip_mode.checkedId()
        if mode == 0:
            words = self.blend.text().split()
            words = [w for w in words if w != word] if word in words else words + [word]
            self.blend.setText(" ".join(words))
        else:
            table = self.reweight if mode == 1 else self.cross_words
            row = (word, "2") if mode == 1 else (word, "0", f"{self.cross.values()[1]:g}")
            current = [
                tuple(table.item(r, c).text() for c in range(table.columnCount()))
                for r in range(table.rowCount())
            ]
            self._fill(table, [r for r in current if r[0] != word] + [row])
        self._changed()

    # ---- reading and checking ---------------------------------------------------------------
    def params(self) -> EditParams:
        """The edit parameters shown; a :class:`Clp2pError` names a bad field."""
        res = self.self_res.currentText()

        def rows(table: QTableWidget) -> list[list[str]]:
            return [
                [
                    (table.item(r, c).text() if table.item(r, c) else "")
                    for c in range(table.columnCount())
                ]
                for r in range(table.rowCount())
            ]

        try:
            per_word = tuple(
                (w, StepWindow(float(a), float(b))) for w, a, b in rows(self.cross_words)
            )
            reweight = tuple((w, float(s)) for w, s in rows(self.reweight))
        except Clp2pError:
            raise
        except ValueError:
            raise Clp2pError(
                "a table cell is not a number: fix the per-word or re-weight table"
            ) from None
        return EditParams(
            kind=self.kind.currentText(),
            cross=CrossWindow(StepWindow(*self.cross.values()), per_word),
            self_window=StepWindow(*self.self_window.values()),
            self_res=None if res == "all" else int(res),
            self_layers=parse_layers(self.self_layers.text() or "all"),
            v_window=StepWindow(*self.v_window.values()),
            v_blend=self.v_blend.value(),
            v_layers=self.v_layers.currentText(),
            k=self.k.value() / 100,
            blend_start=self.blend_start.value(),
            blend_pixels=self.blend_pixels.isChecked(),
            blend_norm=self.blend_norm.isChecked(),
            blend_words=tuple(self.blend.text().split()),
            reweight=reweight,
            inject_uncond=self.uncond.isChecked(),
            refine_pad=self.refine_pad.currentText(),
            preset=getattr(self, "_preset", "custom"),
        )

    def problem_text(self) -> str | None:
        """What keeps the edit shown from being added, or None. Every rule is the engine's:
        the parameters' own checks, the session's (an edit needs a target prompt unless it
        re-weights), and the edit against its two prompts (``validator``)."""
        if self.session is None or self.node_id is None:
            return "select a node to edit"
        source = self.session.node(self.node_id).prompt
        target = self.target.text().strip()
        try:
            params = self.params()
            kind = infer_kind(source, target or source, params)
            self.session.add_edit(self.node_id, target, params, kind)  # a copy: checks only
        except Clp2pError as exc:
            return str(exc)
        if self.validator is not None:
            return self.validator(source, target or source, params)
        return None

    def _changed(self, *_args) -> None:
        problem = self.problem_text()
        self.problem.setText(problem or "")
        ok = problem is None
        self.add_button.setEnabled(ok)
        self.run_button.setEnabled(ok)

    def _add(self, run: bool) -> None:
        if self.problem_text() is not None:
            return
        source = self.session.node(self.node_id).prompt
        params = self.params()
        target = self.target.text().strip() or source
        self.addRequested.emit(infer_kind(source, target, params), target, params, run)
