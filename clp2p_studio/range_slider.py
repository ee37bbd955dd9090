"""A horizontal slider with two handles selecting a span of [0, 1], such as the fraction of the
denoising schedule during which an attention edit applies."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

LOW, HIGH = 0, 1


class RangeSlider(QWidget):
    """Two handles ``a <= b`` over [0, 1].

    The mouse moves the handle nearer the press and drags it; the arrow keys move the handle
    used last by 0.01 (0.1 with Shift), Home/End send it to 0/1.
    """

    valuesChanged = Signal(float, float)

    RADIUS = 7
    SMALL_STEP = 0.01
    LARGE_STEP = 0.1

    def __init__(
        self,
        low: float = 0.0,
        high: float = 1.0,
        *,
        show_label: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._values = [0.0, 1.0]
        self._active = HIGH
        self._dragging = False
        self._show_label = show_label
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setValues(low, high)
        self._refresh_text()

    # -- values -------------------------------------------------------------------------------

    def values(self) -> tuple[float, float]:
        return self._values[LOW], self._values[HIGH]

    def setValues(self, low: float, high: float) -> None:
        """Set both handles, clamped to [0, 1]; a pair given in reverse order is swapped."""
        low, high = sorted((_clamp(low), _clamp(high)))
        self._store(low, high)

    def activeHandle(self) -> int:
        """0 for the low handle, 1 for the high one: the handle the keyboard moves."""
        return self._active

    def text(self) -> str:
        """The span as shown to the user, e.g. ``"0.00 - 0.80"``."""
        return f"{self._values[LOW]:.2f} - {self._values[HIGH]:.2f}"

    def _store(self, low: float, high: float) -> None:
        low, high = round(low, 4), round(high, 4)  # keyboard steps must not drift
        if [low, high] == self._values:
            return
        self._values = [low, high]
        self._refresh_text()
        self.update()
        self.valuesChanged.emit(low, high)

    def _move_active(self, value: float) -> None:
        """Move the active handle to ``value``, stopped by the other handle."""
        low, high = self.values()
        if self._active == LOW:
            self._store(min(_clamp(value), high), high)
        else:
            self._store(low, max(_clamp(value), low))

    def _refresh_text(self) -> None:
        self.setToolTip(f"span of the schedule: {self.text()}")
        self.setAccessibleDescription(self.text())

    # -- geometry -----------------------------------------------------------------------------

    def _label_width(self) -> int:
        return self.fontMetrics().horizontalAdvance("0.00 - 0.00") + 8 if self._show_label else 0

    def _track(self) -> tuple[float, float]:
        """Left and right x of the track, in pixels."""
        left = self.RADIUS + 1.0
        right = self.width() - self._label_width() - self.RADIUS - 1.0
        return left, max(left + 1.0, right)

    def _x_of(self, value: float) -> float:
        left, right = self._track()
        return left + value * (right - left)

    def _value_at(self, x: float) -> float:
        left, right = self._track()
        return _clamp((x - left) / (right - left))

    def sizeHint(self) -> QSize:
        return QSize(
            180 + self._label_width(), max(2 * self.RADIUS + 6, self.fontMetrics().height())
        )

    def minimumSizeHint(self) -> QSize:
        return QSize(60 + self._label_width(), 2 * self.RADIUS + 6)

    # -- events -------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        value = self._value_at(event.position().x())
        low, high = self.values()
        dist_low, dist_high = abs(value - low), abs(value - high)
        if dist_low == dist_high:  # handles on top of each other: pick by the side pressed
            self._active = LOW if value < low else HIGH
        else:
            self._active = LOW if dist_low < dist_high else HIGH
        self._dragging = True
        self._move_active(value)
        self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._dragging:
            self._move_active(self._value_at(event.position().x()))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._dragging = False

    def keyPressEvent(self, event: QKeyEvent) -> None:
        step = self.LARGE_STEP if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else None
        step = step or self.SMALL_STEP
        value = self._values[self._active]
        key = event.key()
        if key in (Qt.Key.Key_Left, Qt.Key.Key_Down):
            self._move_active(value - step)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Up):
            self._move_active(value + step)
        elif key == Qt.Key.Key_Home:
            self._move_active(0.0)
        elif key == Qt.Key.Key_End:
            self._move_active(1.0)
        elif key == Qt.Key.Key_Space:  # switch handles without the mouse
            self._active = 1 - self._active
            self.update()
        else:
            super().keyPressEvent(event)

    # -- painting -----------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        enabled = self.isEnabled()
        accent = palette.highlight().color() if enabled else palette.mid().color()
        y = self.height() / 2
        left, right = self._track()
        x_low, x_high = (self._x_of(v) for v in self._values)

        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(palette.mid().color())
        painter.drawRoundedRect(QRectF(left, y - 2, right - left, 4), 2, 2)
        painter.setBrush(accent)
        painter.drawRoundedRect(QRectF(x_low, y - 3, max(x_high - x_low, 1.0), 6), 3, 3)

        for index, x in enumerate((x_low, x_high)):
            focused = self.hasFocus() and index == self._active
            painter.setPen(QPen(accent.darker(130) if not focused else accent.lighter(140), 2))
            painter.setBrush(palette.button().color() if enabled else palette.window().color())
            painter.drawEllipse(QPointF(x, y), self.RADIUS - 1, self.RADIUS - 1)

        if self._show_label:
            painter.setPen(palette.windowText().color() if enabled else QColor("gray"))
            label = QRectF(
                self.width() - self._label_width(), 0, self._label_width(), self.height()
            )
            painter.drawText(
                label, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.text()
            )


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, float(value)))
