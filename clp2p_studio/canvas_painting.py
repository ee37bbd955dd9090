"""How the canvas draws: an image in its pane, a pane's caption bar, the slider's line and
the zoom badge. Plain functions of a painter and rectangles (widget coordinates)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen

BACKGROUND = QColor("#1c1c1e")
HEADER = QColor("#2a2a2d")
DIVIDER = QColor("#111113")
TEXT = QColor("#dcdcdc")
MUTED = QColor("#8a8a8e")
OUTLINE = QColor("#3c3c40")


def paint_view(
    painter: QPainter,
    view: QRectF,
    target: QRectF,
    image: QImage | None,
    clip: QRectF | None = None,
) -> None:
    """``image`` drawn onto ``target`` inside ``view`` (only within ``clip`` when given)."""
    painter.save()
    painter.setClipRect(clip if clip is not None else view)
    painter.fillRect(view, BACKGROUND)
    if image is None:
        painter.setPen(MUTED)
        painter.drawText(view, Qt.AlignmentFlag.AlignCenter, "no image")
    else:
        painter.drawImage(target, image, QRectF(image.rect()))
        painter.setPen(QPen(OUTLINE, 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(target.adjusted(-1, -1, 0, 0))
    painter.restore()


def paint_header(
    painter: QPainter,
    pane: QRectF,
    height: float,
    caption: str,
    image: QImage | None,
    right_caption: str | None = None,
) -> None:
    """The caption bar at the top of ``pane``: ``caption`` on the left; on the right
    ``right_caption``, else the image's size."""
    header = QRectF(pane.left(), pane.top(), pane.width(), height)
    painter.fillRect(header, HEADER)
    text = header.adjusted(10, 0, -10, 0)
    align = Qt.AlignmentFlag.AlignVCenter
    painter.setPen(TEXT)
    painter.drawText(text, align | Qt.AlignmentFlag.AlignLeft, caption)
    if right_caption is not None:
        painter.drawText(text, align | Qt.AlignmentFlag.AlignRight, right_caption)
    elif image is not None:
        painter.setPen(MUTED)
        size = f"{image.width()} \u00d7 {image.height()}"
        painter.drawText(text, align | Qt.AlignmentFlag.AlignRight, size)


def paint_split(painter: QPainter, view: QRectF, x: float) -> None:
    """The slider's line at ``x`` across ``view``, with its handle."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(235, 235, 235, 220), 2))
    painter.drawLine(QPointF(x, view.top()), QPointF(x, view.bottom()))
    painter.setBrush(QColor("#ebebeb"))
    painter.setPen(QPen(DIVIDER, 1))
    painter.drawEllipse(QPointF(x, view.center().y()), 7, 7)
    painter.restore()


def paint_zoom(painter: QPainter, area: QRectF, zoom: float) -> None:
    """The zoom factor in percent, in the bottom right corner of ``area``."""
    text = f"{zoom * 100:.0f}%"
    metrics = painter.fontMetrics()
    width = metrics.horizontalAdvance(text) + 12
    height = metrics.height() + 4
    box = QRectF(area.right() - width - 8, area.bottom() - height - 8, width, height)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(0, 0, 0, 150))
    painter.drawRoundedRect(box, 4, 4)
    painter.setPen(TEXT)
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
    painter.restore()
