"""Scrolling the parameter panel scrolls it: a wheel turn over a field changes the field only
when the user is in it."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QScrollArea, QSpinBox, QVBoxLayout, QWidget

from clp2p_studio.wheel_guard import guard_wheel


def _wheel_down(widget: QWidget) -> None:
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(
        centre,
        QPointF(widget.mapToGlobal(centre.toPoint())),
        QPoint(0, 0),
        QPoint(0, -120),  # one notch down
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


def _panel(qtbot):
    panel = QWidget()
    layout = QVBoxLayout(panel)
    spin = QSpinBox(minimum=0, maximum=100, value=50)
    layout.addWidget(spin)
    layout.addSpacing(2000)  # taller than the view: the area can scroll
    area = QScrollArea()
    area.setWidget(panel)
    area.resize(300, 200)
    qtbot.addWidget(area)
    guard_wheel(panel)
    area.show()
    qtbot.waitExposed(area)
    return area, spin


def test_a_wheel_turn_over_a_field_scrolls_the_panel(qtbot):
    area, spin = _panel(qtbot)
    _wheel_down(spin)
    assert spin.value() == 50
    assert area.verticalScrollBar().value() > 0


def test_the_field_the_user_is_in_takes_the_wheel(qtbot):
    area, spin = _panel(qtbot)
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    _wheel_down(spin)
    assert spin.value() == 49
    assert area.verticalScrollBar().value() == 0


def test_the_studio_guards_its_parameter_panel(window):
    from PySide6.QtWidgets import QAbstractSpinBox

    spins = window.params.findChildren(QAbstractSpinBox)
    assert spins and all(s.focusPolicy() == Qt.FocusPolicy.StrongFocus for s in spins)
