"""Conversions between the engine's numpy images (uint8 (H, W, 3) RGB) and Qt images."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage, QPixmap


def to_qimage(rgb: np.ndarray) -> QImage:
    """A QImage (RGB888) that owns a copy of ``rgb``.

    Accepts (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped) or (H, W) grey, of any strides.
    """
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)  # grey -> (H, W, 3)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    array = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    height, width = array.shape[:2]
    image = QImage(array.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    # The QImage above borrows numpy's buffer; copy so it outlives ``array``.
    return image.copy()


def to_pixmap(rgb: np.ndarray) -> QPixmap:
    """A QPixmap of ``rgb`` (see :func:`to_qimage`)."""
    return QPixmap.fromImage(to_qimage(rgb))


def blank(width: int, height: int, colour: QColor | str = "#202020") -> QPixmap:
    """A pixmap of one flat colour, a placeholder where no image exists yet."""
    pixmap = QPixmap(max(1, width), max(1, height))
    pixmap.fill(QColor(colour))
    return pixmap
