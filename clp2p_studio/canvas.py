"""The image canvas: a node's source and result side by side, zoomed and panned in step, with
slider and blink comparison, heatmap overlays and a live preview of a running render."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from .canvas_painting import DIVIDER, paint_header, paint_split, paint_view, paint_zoom
from .imaging import to_qimage

SIDES = ("left", "right")
COMPARE_MODES = ("side", "slider", "blink")
# Zoom steps: whole numbers above 2 so every image pixel covers the same number of screen pixels.
ZOOM_LEVELS = (1 / 16, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1, 1.5, 2, 3, 4, 5, 6, 8)
ZOOM_LEVELS += (10, 12, 16, 20, 24, 32, 48, 64)


class Canvas(QWidget):
    """Two panes (left: source, right: result) sharing one zoom factor and one centre.

    ``zoom`` is screen pixels per image pixel; the centre is the image point shown at the middle
    of every pane, so zooming or dragging in one pane moves both. Images of other sizes than
    the first are stretched onto it so comparisons line up.
    """

    zoomChanged = Signal(float)
    compareModeChanged = Signal(str)

    HEADER_HEIGHT = 24
    GAP = 2
    PADDING = 12
    BLINK_MS = 500

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._images: dict[str, QImage | None] = dict.fromkeys(SIDES)
        self._overlays: dict[str, QImage | None] = dict.fromkeys(SIDES)
        self._labels = {"left": "source", "right": "result"}
        self._preview: QImage | None = None
        self._mode = "side"
        self._zoom = 1.0
        self._centre = QPointF(0, 0)
        self._fitted = True  # keep fitting on resize until the user zooms or pans
        self._split = 0.5
        self._blink_right = False
        self._blink_timer = QTimer(self)
        self._blink_timer.setInterval(self.BLINK_MS)
        self._blink_timer.timeout.connect(self._blink)
        self._drag: tuple[str, QPointF, QPointF] | None = None  # (what, press pos, centre)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setCursor(Qt.CursorShape.OpenHandCursor)

    # -- content ------------------------------------------------------------------------------

    def set_images(
        self,
        left: np.ndarray | None,
        right: np.ndarray | None,
        left_label: str = "source",
        right_label: str = "result",
    ) -> None:
        """Show a new pair. Overlays are dropped (they belong to the old images); the zoom is
        kept when the image size is unchanged and fitted otherwise. The preview stays."""
        before = self._reference_size()
        self._images = {"left": _qimage(left), "right": _qimage(right)}
        self._overlays = dict.fromkeys(SIDES)
        self._labels = {"left": left_label, "right": right_label}
        after = self._reference_size()
        if after is not None and (before is None or after != before):
            self.fit()
        self.update()

    def set_overlay(self, side: str, rgb: np.ndarray | None) -> None:
        """Show ``rgb`` (e.g. a heatmap over the image) in place of ``side``'s image; None
        restores the image."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        self._overlays[side] = _qimage(rgb)
        self.update()

    def label(self, side: str) -> str:
        """The caption of ``side``'s image (e.g. "source: n1")."""
        return self._labels[side]

    def set_preview(self, rgb: np.ndarray | None) -> None:
        """Show a running render's preview in the right pane; None shows the result again."""
        before = self._reference_size()
        self._preview = _qimage(rgb)
        if before is None and self._reference_size() is not None:
            self.fit()
        self.update()

    # -- compare modes ------------------------------------------------------------------------

    def compare_mode(self) -> str:
        return self._mode

    def set_compare_mode(self, mode: str) -> None:
        """``"side"`` (two panes), ``"slider"`` (one pane split by a draggable line) or
        ``"blink"`` (one pane alternating left and right every 500 ms)."""
        if mode not in COMPARE_MODES:
            raise ValueError(f"compare mode must be one of {COMPARE_MODES}, not {mode!r}")
        if mode == self._mode:
            return
        self._mode = mode
        self._blink_right = False
        if mode == "blink":
            self._blink_timer.start()
        else:
            self._blink_timer.stop()
        if self._fitted:
            self.fit()  # the pane changed size
        self.update()
        self.compareModeChanged.emit(mode)

    def toggle_compare(self) -> str:
        """Cycle side -> slider -> blink -> side; returns the new mode."""
        index = COMPARE_MODES.index(self._mode)
        self.set_compare_mode(COMPARE_MODES[(index + 1) % len(COMPARE_MODES)])
        return self._mode

    def blink_side(self) -> str:
        """The side the blink pane shows now."""
        return "right" if self._blink_right else "left"

    def is_blinking(self) -> bool:
        return self._blink_timer.isActive()

    def split(self) -> float:
        """Where the slider line sits, as a fraction of the pane's width."""
        return self._split

    def set_split(self, fraction: float) -> None:
        self._split = min(1.0, max(0.0, float(fraction)))
        self.update()

    def _blink(self) -> None:
        self._blink_right = not self._blink_right
        self.update()

    # -- zoom and pan -------------------------------------------------------------------------

    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        return self._zoom

    def zoom_in(self) -> None:
        self.set_zoom(self._next_level(+1))

    def zoom_out(self) -> None:
        self.set_zoom(self._next_level(-1))

    def _next_level(self, direction: int) -> float:
        """The zoom level after the current one, up (+1) or down (-1)."""
        if direction > 0:
            return next((z for z in ZOOM_LEVELS if z > self._zoom * 1.001), ZOOM_LEVELS[-1])
        return next((z for z in reversed(ZOOM_LEVELS) if z < self._zoom / 1.001), ZOOM_LEVELS[0])

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom so that the image point under ``anchor`` (widget coordinates; default the
        middle of the first pane) stays where it is."""
        zoom = min(ZOOM_LEVELS[-1], max(ZOOM_LEVELS[0], zoom))
        views = self._views()
        view = next((v for v in views if anchor is not None and v.contains(anchor)), views[0])
        offset = (anchor if anchor is not None else view.center()) - view.center()
        point = self._centre + offset / self._zoom  # image point under the anchor
        self._centre = point - offset / zoom
        self._fitted = False
        self._apply_zoom(zoom)

    def fit(self) -> None:
        """Fit the image in a pane, at a whole zoom factor when enlarging (crisp pixels)."""
        size = self._reference_size()
        if size is None:
            return
        view = self._views()[0]
        room_w = max(1.0, view.width() - 2 * self.PADDING)
        room_h = max(1.0, view.height() - 2 * self.PADDING)
        zoom = min(room_w / size.width(), room_h / size.height())
        zoom = float(int(zoom)) if zoom >= 1 else max(ZOOM_LEVELS[0], zoom)
        self._centre = QPointF(size.width() / 2, size.height() / 2)
        self._fitted = True
        self._apply_zoom(zoom)

    def image_rect(self, side: str) -> QRectF:
        """Where ``side``'s image is drawn, in widget coordinates (empty without images)."""
        views = self._views()
        view = views[1] if side == "right" and len(views) == 2 else views[0]
        return self._target(view)

    def _apply_zoom(self, zoom: float) -> None:
        changed = zoom != self._zoom
        self._zoom = zoom
        self.update()
        if changed:
            self.zoomChanged.emit(zoom)

    # -- geometry -----------------------------------------------------------------------------

    def _reference_size(self) -> QSize | None:
        for image in (self._images["left"], self._images["right"], self._preview):
            if image is not None:
                return image.size()
        return None

    def _panes(self) -> list[QRectF]:
        full = QRectF(self.rect())
        if self._mode != "side":
            return [full]
        half = (full.width() - self.GAP) / 2
        return [QRectF(0, 0, half, full.height()), QRectF(half + self.GAP, 0, half, full.height())]

    def _views(self) -> list[QRectF]:
        """The image area of every pane: the pane below its header."""
        return [pane.adjusted(0, self.HEADER_HEIGHT, 0, 0) for pane in self._panes()]

    def _target(self, view: QRectF) -> QRectF:
        size = self._reference_size()
        if size is None:
            return QRectF()
        corner = view.center() - self._centre * self._zoom
        # Whole-pixel corners keep nearest-neighbour blocks aligned with the screen's pixels.
        x, y = round(corner.x()), round(corner.y())
        return QRectF(x, y, size.width() * self._zoom, size.height() * self._zoom)

    def _split_x(self) -> float:
        view = self._views()[0]
        return view.left() + self._split * view.width()

    def _near_split(self, pos: QPointF) -> bool:
        return self._mode == "slider" and abs(pos.x() - self._split_x()) <= 6

    def _shown(self, side: str) -> tuple[QImage | None, str]:
        """The picture a side displays and its caption: preview, else overlay, else image."""
        if side == "right" and self._preview is not None:
            return self._preview, "preview"
        if self._overlays[side] is not None:
            return self._overlays[side], f"{self._labels[side]} \u00b7 heatmap"
        return self._images[side], self._labels[side]

    # -- events -------------------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        if self._fitted:
            self.fit()
        super().resizeEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        pos = event.position()
        what = "split" if self._near_split(pos) else "pan"
        self._drag = (what, pos, QPointF(self._centre))
        if what == "pan":
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._drag is None:
            near = self._near_split(pos)
            self.setCursor(Qt.CursorShape.SplitHCursor if near else Qt.CursorShape.OpenHandCursor)
            return
        what, start, centre = self._drag
        if what == "split":
            view = self._views()[0]
            self.set_split((pos.x() - view.left()) / max(1.0, view.width()))
        else:
            self._centre = centre - (pos - start) / self._zoom
            self._fitted = False
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None
        self.setCursor(Qt.CursorShape.OpenHandCursor)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and not self._near_split(event.position()):
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y()
        if steps:
            self.set_zoom(self._next_level(steps), event.position())
        event.accept()

    # -- painting -----------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), DIVIDER)
        # Nearest neighbour when enlarging keeps a 64x64 render's pixels crisp.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._zoom < 1)
        panes, views = self._panes(), self._views()
        if self._mode == "side":
            for side, pane, view in zip(SIDES, panes, views, strict=True):
                image, caption = self._shown(side)
                paint_view(painter, view, self._target(view), image)
                paint_header(painter, pane, self.HEADER_HEIGHT, caption, image)
        elif self._mode == "slider":
            view, split_x = views[0], self._split_x()
            left, left_caption = self._shown("left")
            right, right_caption = self._shown("right")
            left_part, right_part = QRectF(view), QRectF(view)
            left_part.setRight(split_x)
            right_part.setLeft(split_x)
            paint_view(painter, view, self._target(view), left, left_part)
            paint_view(painter, view, self._target(view), right, right_part)
            paint_split(painter, view, split_x)
            captions = f"\u25c0 {left_caption}", f"{right_caption} \u25b6"
            paint_header(painter, panes[0], self.HEADER_HEIGHT, captions[0], left, captions[1])
        else:
            image, caption = self._shown(self.blink_side())
            paint_view(painter, views[0], self._target(views[0]), image)
            paint_header(painter, panes[0], self.HEADER_HEIGHT, f"{caption}  (blink)", image)
        if self._reference_size() is not None:
            paint_zoom(painter, QRectF(self.rect()), self._zoom)


def _qimage(rgb: np.ndarray | None) -> QImage | None:
    # RGB32 is the raster engine's native format, so scaled draws need no per-frame conversion.
    return None if rgb is None else to_qimage(rgb).convertToFormat(QImage.Format.Format_RGB32)
