"""Scrolling a panel scrolls the panel: a wheel turn over a spin box, a combo box or a slider
changes its value only when the field has the keyboard focus (clicked or tabbed into);
otherwise the turn goes to the scroll area around it. Without this, scrolling down the
parameter panel changed whichever value passed under the pointer."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QWidget,
)

GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)


class WheelGuard(QObject):
    """The event filter of every guarded field under one panel."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget):
            return False
        if watched.hasFocus():
            return False  # the field the user is in: the wheel changes its value
        area = watched.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QCoreApplication.sendEvent(area.verticalScrollBar(), event)
        return True


def guard_wheel(panel: QWidget) -> WheelGuard:
    """Guard every spin box, combo box and slider under ``panel`` (see the module); the guard
    lives as long as the panel."""
    guard = WheelGuard(panel)
    for field in panel.findChildren(QWidget):
        if isinstance(field, GUARDED) and not isinstance(field, QAbstractScrollArea):
            field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # a wheel turn gives no focus
            field.installEventFilter(guard)
    return guard
