"""Studio widgets a user handles directly: the range slider, the comparison canvas and the
heatmap panel, driven with pytest-qt on synthetic attention maps (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QApplication, QToolButton

from clp2p.attention.heatmap import overlay
from clp2p.attention.maps import AttentionMaps
from clp2p.model.align import PromptTokens
from clp2p_studio.canvas import Canvas
from clp2p_studio.heatmaps import HeatmapPanel
from clp2p_studio.imaging import to_qimage
from clp2p_studio.range_slider import RangeSlider

SHOTS = Path("/tmp/clp2p_widgets")
RED, BLUE, GREEN, YELLOW = (220, 40, 40), (40, 60, 220), (30, 200, 60), (240, 220, 30)


def _solid(rgb: tuple[int, int, int], size: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (size, size, 3)).copy()


def _picture(size: int = 64) -> np.ndarray:
    """A gradient with a square, so screenshots show orientation and pixel crispness."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 120)], axis=-1)
    image[size // 4 : size // 2, size // 4 : size // 2] = (250, 250, 250)
    return image.astype(np.uint8)


def _tokens(prompt: str) -> PromptTokens:
    words = tuple(prompt.split())
    spans = tuple((i + 1,) for i in range(len(words)))  # one token per word
    return PromptTokens(prompt, words, spans, tuple(range(len(words) + 2)), ("<s>", *words, "</s>"))


def _attention(self_components: bool = True, cross: bool = True) -> AttentionMaps:
    """Two branches; token k attends to a blob that sits top-left in steps 0-1 and
    bottom-right in steps 2-3, so step ranges and grids give different maps."""
    prompts = (_tokens("a cat , on a mat"), _tokens("a dog on a mat"))
    grids = {}
    for h in (4, 8):
        data = np.full((4, 2, h, h, 8), 0.01, dtype=np.float32)  # (steps, branches, h, w, T)
        for k in range(8):
            row, col = k % h, (k * 3) % h
            data[:2, :, row, col, k] = 1.0
            data[2:, :, h - 1 - row, h - 1 - col, k] = 1.0
        grids[(h, h)] = data
    y, x = np.mgrid[0:8, 0:8].astype(np.float32)
    comps = np.stack([np.stack([x, y, x * y, -x]), np.stack([y, x, x + y, -y])])  # (2, 4, 8, 8)
    return AttentionMaps(
        prompts,
        grids if cross else {},
        (8, 8),
        (8, 8),
        comps if self_components else comps[:0],
        np.ones((2, 4)) if self_components else np.ones((0, 4)),
    )


def _shot(widget, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    QApplication.processEvents()  # widgets added to layouts are shown by a queued call
    assert widget.grab().save(str(SHOTS / f"{name}.png"))


def _colour_at(widget, point: QPointF) -> tuple[int, int, int]:
    colour = widget.grab().toImage().pixelColor(point.toPoint())
    return colour.red(), colour.green(), colour.blue()


# -- imaging ---------------------------------------------------------------------------------


def test_to_qimage_copies_strided_arrays():
    image = _picture(16)[:, ::-1]  # a negative stride
    qimage = to_qimage(image)
    image[:] = 0  # the QImage owns its pixels
    assert (qimage.width(), qimage.height()) == (16, 16)
    assert qimage.pixelColor(0, 0) == QColor(*_picture(16)[0, 15])


# -- range slider ----------------------------------------------------------------------------


@pytest.fixture
def slider(qtbot):
    widget = RangeSlider(0.2, 0.8, show_label=False)
    qtbot.addWidget(widget)
    widget.resize(216, 24)  # track from x=8 to x=208: 200 px for [0, 1]
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def _x(value: float) -> int:
    return round(8 + 200 * value)


def test_range_slider_clamps_orders_and_emits(slider, qtbot):
    with qtbot.waitSignal(slider.valuesChanged) as blocker:
        slider.setValues(-0.5, 0.8)
    assert blocker.args == [0.0, 0.8]
    slider.setValues(0.9, 0.2)
    assert slider.values() == (0.2, 0.9)
    with qtbot.assertNotEmitted(slider.valuesChanged):
        slider.setValues(0.2, 0.9)
    assert slider.text() == "0.20 - 0.90"
    assert "0.20 - 0.90" in slider.toolTip()
    slider.setAccessibleName("cross-attention window")
    assert slider.accessibleName() == "cross-attention window"


def test_range_slider_drag_moves_the_nearer_handle(slider, qtbot):
    qtbot.mousePress(slider, Qt.MouseButton.LeftButton, pos=QPoint(_x(0.7), 12))
    assert slider.values() == pytest.approx((0.2, 0.7), abs=0.01)
    qtbot.mouseMove(slider, QPoint(_x(0.5), 12))
    qtbot.mouseRelease(slider, Qt.MouseButton.LeftButton, pos=QPoint(_x(0.5), 12))
    assert slider.values() == pytest.approx((0.2, 0.5), abs=0.01)

    qtbot.mousePress(slider, Qt.MouseButton.LeftButton, pos=QPoint(_x(0.25), 12))
    qtbot.mouseMove(slider, QPoint(_x(0.9), 12))  # the low handle stops at the high one
    qtbot.mouseRelease(slider, Qt.MouseButton.LeftButton, pos=QPoint(_x(0.9), 12))
    assert slider.values() == pytest.approx((0.5, 0.5), abs=0.01)
    assert slider.activeHandle() == 0


def test_range_slider_keys_move_the_last_handle(slider, qtbot):
    qtbot.mouseClick(slider, Qt.MouseButton.LeftButton, pos=QPoint(_x(0.2), 12))
    qtbot.keyClick(slider, Qt.Key.Key_Right)
    assert slider.values() == pytest.approx((0.21, 0.8))
    qtbot.keyClick(slider, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert slider.values() == pytest.approx((0.31, 0.8))
    qtbot.keyClick(slider, Qt.Key.Key_Home)
    assert slider.values() == (0.0, 0.8)
    qtbot.keyClick(slider, Qt.Key.Key_Space)  # now the high handle
    qtbot.keyClick(slider, Qt.Key.Key_Left)
    assert slider.values() == pytest.approx((0.0, 0.79))


def test_range_slider_screenshot(qtbot):
    widget = RangeSlider(0.1, 0.65)
    qtbot.addWidget(widget)
    widget.resize(widget.sizeHint().width() + 60, 28)
    _shot(widget, "range_slider")


# -- canvas ----------------------------------------------------------------------------------


@pytest.fixture
def canvas(qtbot):
    widget = Canvas()
    qtbot.addWidget(widget)
    widget.resize(720, 400)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def test_canvas_fits_first_images_crisply_and_zooms(canvas, qtbot):
    canvas.set_images(_picture(), _picture()[::-1])
    assert canvas.zoom() == 5  # the largest whole factor that fits a 359x376 pane
    rect = canvas.image_rect("left")
    assert rect.width() == rect.height() == 64 * 5
    with qtbot.waitSignal(canvas.zoomChanged):
        canvas.zoom_in()
    assert canvas.zoom() == 6
    canvas.set_images(_picture(), _solid(RED))  # same size: the zoom stays
    assert canvas.zoom() == 6
    canvas.fit()
    assert canvas.zoom() == 5
    canvas.zoom_out()
    assert canvas.zoom() == 4
    canvas.set_images(_picture(128), None)  # a new size is fitted
    assert canvas.zoom() == 2
    _shot(canvas, "canvas_side")


def test_canvas_enlarges_with_crisp_pixels(canvas):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    canvas.set_images(noise, noise)
    zoom, rect = int(canvas.zoom()), canvas.image_rect("right")
    shot = canvas.grab().toImage()
    for row, col in ((0, 0), (10, 37), (63, 63)):
        x, y = int(rect.left()) + col * zoom, int(rect.top()) + row * zoom
        block = {shot.pixelColor(x + i, y + j).rgb() for i in range(zoom) for j in range(zoom)}
        assert block == {QColor(*noise[row, col]).rgb()}  # one flat block per image pixel


def test_canvas_wheel_zooms_around_the_cursor(canvas, qtbot):
    canvas.set_images(_picture(), _picture())
    cursor = QPointF(120, 150)
    before = canvas.image_rect("left")
    under = (cursor - before.topLeft()) / canvas.zoom()  # image point under the cursor
    wheel = QWheelEvent(
        cursor,
        canvas.mapToGlobal(cursor),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(canvas, wheel)
    after = canvas.image_rect("left")
    assert canvas.zoom() == 6
    stays = after.topLeft() + under * canvas.zoom() - cursor  # to a pixel: corners snap
    assert abs(stays.x()) <= 1 and abs(stays.y()) <= 1
    _shot(canvas, "canvas_zoomed")


def test_canvas_panes_pan_in_step_and_double_click_fits(canvas, qtbot):
    canvas.set_images(_picture(), _picture())
    left, right = canvas.image_rect("left"), canvas.image_rect("right")
    assert right.left() > left.right()  # side by side
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(540, 200))  # right pane
    qtbot.mouseMove(canvas, QPoint(570, 180))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(570, 180))
    moved = QPointF(30, -20)
    assert canvas.image_rect("right").topLeft() == right.topLeft() + moved
    assert canvas.image_rect("left").topLeft() == left.topLeft() + moved
    qtbot.mouseDClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(200, 200))
    assert canvas.image_rect("left") == left


def test_canvas_compare_modes_cycle(canvas, qtbot):
    seen = []
    canvas.compareModeChanged.connect(seen.append)
    assert canvas.compare_mode() == "side"
    assert [canvas.toggle_compare() for _ in range(3)] == ["slider", "blink", "side"]
    assert seen == ["slider", "blink", "side"]
    with pytest.raises(ValueError):
        canvas.set_compare_mode("onion")


def test_canvas_blink_alternates_and_stops(canvas, qtbot):
    canvas.set_images(_solid(RED), _solid(BLUE))
    canvas.set_compare_mode("blink")
    centre = canvas.image_rect("left").center()
    assert canvas.is_blinking() and canvas.blink_side() == "left"
    assert _colour_at(canvas, centre) == RED
    qtbot.waitUntil(lambda: canvas.blink_side() == "right", timeout=2000)
    assert _colour_at(canvas, centre) == BLUE
    _shot(canvas, "canvas_blink")
    canvas.set_compare_mode("side")
    assert not canvas.is_blinking()


def test_canvas_slider_splits_one_pane(canvas, qtbot):
    canvas.set_images(_solid(RED), _solid(BLUE))
    canvas.set_compare_mode("slider")
    rect = canvas.image_rect("left")
    assert canvas.image_rect("right") == rect  # one pane shows both
    split_x = 360
    y = round(rect.center().y())
    assert _colour_at(canvas, QPointF(split_x - 20, y)) == RED
    assert _colour_at(canvas, QPointF(split_x + 20, y)) == BLUE
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(split_x, y))
    qtbot.mouseMove(canvas, QPoint(280, y))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(280, y))
    assert canvas.split() == pytest.approx(280 / 720)
    assert canvas.image_rect("left") == rect  # dragging the line does not pan
    assert _colour_at(canvas, QPointF(300, y)) == BLUE
    canvas.set_images(_picture(), _picture()[:, ::-1])
    _shot(canvas, "canvas_slider")


def test_canvas_overlay_and_preview_replace_and_restore(canvas, qtbot):
    canvas.set_images(_solid(RED), _solid(BLUE))
    left, right = canvas.image_rect("left").center(), canvas.image_rect("right").center()
    canvas.set_overlay("left", _solid(GREEN))
    assert _colour_at(canvas, left) == GREEN
    canvas.set_preview(_solid(YELLOW, 32))  # a smaller preview fills the same rect
    assert _colour_at(canvas, right) == YELLOW
    canvas.set_overlay("left", None)
    canvas.set_preview(None)
    assert _colour_at(canvas, left) == RED
    assert _colour_at(canvas, right) == BLUE
    with pytest.raises(ValueError):
        canvas.set_overlay("middle", None)


def test_canvas_empty_is_paintable(canvas):
    canvas.set_images(None, None)
    canvas.zoom_in()
    canvas.fit()
    _shot(canvas, "canvas_empty")


# -- heatmap panel ---------------------------------------------------------------------------


@pytest.fixture
def panel(qtbot):
    widget = HeatmapPanel()
    qtbot.addWidget(widget)
    widget.resize(340, 640)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_data(_attention(), {0: _picture(), 1: _picture()[::-1]}, {0: "source", 1: "result"})
    return widget


def _thumbs(panel: HeatmapPanel) -> list[QToolButton]:
    return panel.thumbnails()


def _click_overlay(panel, qtbot, word: str, branch: int):
    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        qtbot.mouseClick(panel.chip(branch, word), Qt.MouseButton.LeftButton)
    return blocker.args


def test_heatmap_words_are_chips_once_each(panel):
    assert panel.words(0) == ["a", "cat", "on", "mat"]  # "a" twice, "," has no map
    assert panel.words(1) == ["a", "dog", "on", "mat"]
    assert panel.grid() == (8, 8) and panel.steps() == (0, 4)


def test_heatmap_word_click_emits_overlay_and_clicking_again_clears(panel, qtbot):
    label, rgb = _click_overlay(panel, qtbot, "cat", 0)
    assert label == "source" and rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert panel.selected_word(0) == "cat"
    label, rgb = _click_overlay(panel, qtbot, "dog", 1)
    assert label == "result" and rgb.shape == (64, 64, 3)
    thumbs = _thumbs(panel)
    assert [t.text() for t in thumbs] == ["a", "dog", "on", "mat", "#1", "#2", "#3", "#4"]
    assert [t.isChecked() for t in thumbs[:4]] == [False, True, False, False]
    _shot(panel, "heatmaps")
    assert _click_overlay(panel, qtbot, "dog", 1) == ["result", None]
    assert panel.selected_word(1) is None and panel.selected_word(0) == "cat"


def test_heatmap_opacity_steps_and_grid_change_the_overlay(panel, qtbot):
    _, first = _click_overlay(panel, qtbot, "cat", 0)
    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.set_opacity(0)
    assert np.array_equal(blocker.args[1], _picture())  # no heat at opacity 0
    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.set_opacity(60)
    assert np.array_equal(blocker.args[1], first)  # the same heat, blended again
    cat = _attention().word_map(0, "cat", (8, 8), (0, 4))
    assert np.array_equal(first, overlay(_picture(), cat, 0.6))

    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.set_steps(2, 4)
    late = blocker.args[1]
    assert not np.array_equal(late, first)
    panel.set_steps(0, 2)
    panel.set_end_step(1)
    panel.set_first_step(3)  # a start past the end pushes the end along
    assert panel.steps() == (3, 4)
    panel.set_end_step(2)  # an end before the start pushes the start back
    assert panel.steps() == (1, 2)

    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.set_grid((4, 4))
    assert not np.array_equal(blocker.args[1], late)


def test_heatmap_first_word_is_the_edited_one(panel, qtbot):
    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.select_first_word()
    assert blocker.args[0] == "result" and panel.selected_word(1) == "dog"


def test_heatmap_keeps_selection_for_a_new_node(panel, qtbot):
    _click_overlay(panel, qtbot, "mat", 1)
    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.set_data(_attention(), {0: _picture(), 1: _picture()}, {0: "source", 1: "result"})
    assert blocker.args[0] == "result" and blocker.args[1] is not None
    assert panel.selected_word(1) == "mat"


def test_heatmap_copes_with_missing_data(panel, qtbot):
    panel.set_data(_attention(self_components=False), {}, {})
    assert panel.words(1) == ["a", "dog", "on", "mat"]  # every branch, no images
    assert _click_overlay(panel, qtbot, "dog", 1) == ["branch 1", None]
    assert [t.text() for t in _thumbs(panel)] == ["a", "dog", "on", "mat"]

    panel.set_data(_attention(cross=False), {0: _picture()}, {0: "source"})
    assert panel.grid() is None and not panel.chip(0, "cat").isEnabled()
    assert _thumbs(panel) == []


def test_heatmap_clear_withdraws_overlays(panel, qtbot):
    _click_overlay(panel, qtbot, "cat", 0)
    with qtbot.waitSignal(panel.overlayChanged) as blocker:
        panel.clear()
    assert blocker.args == ["source", None]
    assert panel.words(0) == [] and panel.grid() is None and _thumbs(panel) == []
    _shot(panel, "heatmaps_empty")
