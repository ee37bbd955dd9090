"""Edit -> Sweep: one edit of the selected node over a grid of parameter values and seeds. The
axes, their help and how a value is written are the model's (:mod:`clp2p.model.sweep`); the
dialog counts the items as they are typed and shows the first problem in one line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QWidget,
)

from clp2p.errors import Clp2pError
from clp2p.model import sweep
from clp2p.model.params import EditParams, layers_spec
from clp2p.model.session import Session
from clp2p.workflows.service import is_xl

Validator = Callable[[str, str, EditParams], str | None]
WHERE = ("This machine", "Ray")  # the loaded engine, or a Ray cluster (its address below)
CHECK_DELAY_MS = 150  # a pause in typing before the items are counted again


@dataclass(frozen=True)
class SweepSetup:
    """What the dialog asks for: the edit of ``node_id`` toward ``target`` from ``params``,
    its ``grid`` and ``seeds`` (none: the session's), the ``items`` they make, and ``ray``
    ("": this machine, else Ray's address)."""

    node_id: str
    target: str
    params: EditParams
    grid: sweep.Grid
    seeds: tuple[int, ...]
    items: tuple[sweep.Item, ...]
    ray: str


def describe_params(p: EditParams) -> str:
    """The base edit in one line, as the tree's tooltips write it."""
    text = f"edit {p.kind}, preset {p.preset}, k {p.k:g}, cross {p.cross.spec()}, "
    text += f"self {p.self_window.spec()} (grids <= {p.self_res or 'all'}, "
    text += f"layers {layers_spec(p.self_layers)})"
    if p.v_blend:
        text += f", V {p.v_window.spec()} beta {p.v_blend:g} ({p.v_layers})"
    if p.reweight:
        text += ", re-weight " + " ".join(f"{w}={s:g}" for w, s in p.reweight)
    return text


class SweepDialog(QDialog):
    """Collects a sweep of the edit of ``node_id`` of ``session`` from ``params`` toward
    ``target`` (both from the parameter panel); ``ray_address`` is the last one used.
    :meth:`setup` is the sweep once the dialog is accepted."""

    def __init__(
        self,
        session: Session,
        node_id: str,
        target: str,
        params: EditParams,
        ray_address: str,
        validator: Validator | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session, self.node_id, self.params = session, node_id, params
        self.validator = validator
        self._setup: SweepSetup | None = None
        self.setWindowTitle(f"Sweep the next edit of {node_id}")
        self.setMinimumWidth(560)
        form = QFormLayout(self)
        node = session.node(node_id)
        header = QLabel(f"New edits of <b>{node.id}</b> ({node.kind}): {node.prompt}")
        header.setWordWrap(True)
        form.addRow(header)
        self.target = QLineEdit(target or node.prompt)
        self.target.setAccessibleName("Sweep target prompt")
        form.addRow("Target", self.target)
        base = QLabel(describe_params(params))
        base.setWordWrap(True)
        base.setToolTip("the parameter panel's edit: each axis below changes one of its values")
        form.addRow("Base edit", base)
        form.addRow(self._axes_box())
        self.seeds = QLineEdit()
        self.seeds.setPlaceholderText(f"the session's seed ({session.settings.seed}); e.g. 0-3,7")
        self.seeds.setToolTip("seeds and ranges of seeds, separated by commas")
        form.addRow("Seeds", self.seeds)
        form.addRow("Run on", self._where_row(ray_address))
        self.count = QLabel()
        self.count.setAccessibleName("Sweep items")
        form.addRow(self.count)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.run_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.run_button.setText("Run sweep")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self._timer = QTimer(self, singleShot=True, interval=CHECK_DELAY_MS)
        self._timer.timeout.connect(self.check)
        for edit in (self.target, self.seeds, self.ray_address):
            edit.textChanged.connect(self._later)
        self.where.currentIndexChanged.connect(self._later)
        self.check()

    # ---- construction -------------------------------------------------------------------
    def _axes_box(self) -> QGroupBox:
        """One row per axis of the model: a check box and its comma-separated values; then a
        free row for one word's re-weight scale."""
        box = QGroupBox("Axes: values separated by commas")
        grid = QGridLayout(box)
        self.axes: dict[str, tuple[QCheckBox, QLineEdit]] = {}
        for row, axis in enumerate(sweep.AXES.values()):
            check, values = self._axis_row(axis.name, axis.help)
            grid.addWidget(check, row, 0)
            grid.addWidget(values, row, 1, 1, 2)
            self.axes[axis.name] = (check, values)
        self.reweight_word = QLineEdit()
        self.reweight_word.setPlaceholderText("WORD")
        self.reweight_word.setToolTip("a word of the target prompt")
        self.reweight_word.textChanged.connect(self._later)
        check, values = self._axis_row(sweep.REWEIGHT_AXIS, "that word's re-weight scales")
        row = len(self.axes)
        grid.addWidget(check, row, 0)
        grid.addWidget(self.reweight_word, row, 1)
        grid.addWidget(values, row, 2)
        grid.setColumnStretch(2, 1)
        self.reweight = (check, values)
        return box

    def _axis_row(self, name: str, help_text: str) -> tuple[QCheckBox, QLineEdit]:
        check = QCheckBox(name)
        values = QLineEdit()
        values.setPlaceholderText(help_text)
        values.setAccessibleName(f"Sweep values of {name}")
        for widget in (check, values):
            widget.setToolTip(help_text)
        check.toggled.connect(self._later)
        values.textChanged.connect(self._later)
        # typing values checks the axis; clearing them does not uncheck it (say why instead)
        values.textEdited.connect(lambda text: text.strip() and check.setChecked(True))
        return check, values

    def _where_row(self, ray_address: str) -> QHBoxLayout:
        self.where = QComboBox()
        self.where.addItems(WHERE)
        self.ray_address = QLineEdit(ray_address)
        self.ray_address.setToolTip(
            "Ray: 'auto' starts a local instance, an address (host:port) joins that cluster"
        )
        self.ray_address.setAccessibleName("Ray address")
        self.address_label = QLabel("address")
        self.where.currentIndexChanged.connect(self._where_changed)
        self._where_changed()
        row = QHBoxLayout()
        row.addWidget(self.where, 0, Qt.AlignmentFlag.AlignLeft)
        row.addWidget(self.address_label)
        row.addWidget(self.ray_address, 1)
        return row

    def _where_changed(self, *_args) -> None:
        on_ray = self.where.currentText() == WHERE[1]
        self.where.setToolTip(
            "Ray: workers that each load the model"
            if on_ray
            else "the loaded model, between the studio's renders"
        )
        for widget in (self.address_label, self.ray_address):
            widget.setVisible(on_ray)

    # ---- checking -------------------------------------------------------------------------
    def grid_specs(self) -> list[str]:
        """The checked axes as ``NAME=V1,V2,...``, as ``clp2p sweep --grid`` takes them."""
        specs = [
            f"{name}={values.text()}"
            for name, (check, values) in self.axes.items()
            if check.isChecked()
        ]
        check, values = self.reweight
        if check.isChecked():
            specs.append(f"{sweep.REWEIGHT_AXIS}{self.reweight_word.text()}={values.text()}")
        return specs

    def _later(self, *_args) -> None:
        self.run_button.setEnabled(False)
        self._timer.start()

    def build(self) -> SweepSetup:
        """The sweep asked for; a :class:`Clp2pError` says the first problem."""
        grid = sweep.Grid.parse(self.grid_specs())
        text = self.seeds.text().strip()
        seeds = sweep.parse_seeds(text) if text else ()
        target = self.target.text().strip()
        xl = is_xl(self.session.model)
        items = sweep.sweep_items(self.session, self.node_id, target, self.params, grid, seeds, xl)
        if self.validator is not None:  # the tokenizer's rules, on the first item's edit
            edit = items[0].session.node(items[0].node_id)
            problem = self.validator(
                self.session.node(self.node_id).prompt, edit.prompt, edit.params
            )
            if problem:
                raise Clp2pError(problem)
        ray = self.ray_address.text().strip() if self.where.currentText() == WHERE[1] else ""
        if self.where.currentText() == WHERE[1] and not ray:
            raise Clp2pError("give Ray's address: 'auto' or host:port")
        return SweepSetup(self.node_id, target, self.params, grid, seeds, tuple(items), ray)

    def check(self) -> SweepSetup | None:
        """Count the items now (typing counts them after a pause): the count, or the first
        problem in one line; Run is enabled only for a sweep that can start."""
        self._timer.stop()
        try:
            self._setup = self.build()
        except Clp2pError as exc:
            self._setup = None
            self.count.setText(str(exc).splitlines()[0])
            self.count.setStyleSheet("color: #ef4444;")
        else:
            self.count.setText(self._count_text(self._setup))
            self.count.setStyleSheet("")
        self.run_button.setEnabled(self._setup is not None)
        return self._setup

    @staticmethod
    def _count_text(setup: SweepSetup) -> str:
        sizes = [str(len(values)) for _, values in setup.grid.axes]
        if setup.seeds:
            sizes.append(f"{len(setup.seeds)} seeds")
        n = len(setup.items)
        return f"{n} item{'s' if n != 1 else ''}" + (f" ({' x '.join(sizes)})" if sizes else "")

    def _accept(self) -> None:
        if self.check() is not None:
            self.accept()

    def setup(self) -> SweepSetup | None:
        return self._setup

    def values_of(self, name: str) -> QLineEdit:
        """The values field of axis ``name`` (tests and scripts fill it)."""
        return self.axes[name][1]
