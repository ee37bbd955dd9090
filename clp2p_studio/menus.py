"""The studio's menus: File, Edit, Render and View, with their shortcuts."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence


def _action(window, menu, text: str, slot, shortcut=None) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.triggered.connect(lambda _checked=False: slot())
    menu.addAction(action)
    window.addAction(action)
    return action


def _on_selected(window, method):
    """A slot that applies ``method`` to the selected node."""
    return lambda: method(window.current())


def build_menus(window) -> None:
    """The menu bar of the main window; every action is also a window shortcut."""
    bar = window.menuBar()
    f = bar.addMenu("&File")
    _action(window, f, "&New session", window.new_session, QKeySequence.StandardKey.New)
    _action(window, f, "&Open...", window.open_dialog, QKeySequence.StandardKey.Open)
    window.recent_menu = f.addMenu("Open &recent")
    _action(window, f, "&Import image...", window.import_dialog, "Ctrl+I")
    _action(window, f, "&Save", window.save, QKeySequence.StandardKey.Save)
    _action(window, f, "Save &as...", window.save_as, QKeySequence.StandardKey.SaveAs)
    _action(window, f, "Export history JSON (images embedded)...", window.export_history)
    _action(window, f, "Export image as PNG...", window.export_image, "Ctrl+E")
    f.addSeparator()
    _action(window, f, "&Model and device...", window.model_dialog)
    _action(window, f, "&Quit", window.close, QKeySequence.StandardKey.Quit)
    e = bar.addMenu("&Edit")
    window.undo_action = _action(window, e, "&Undo", window.undo, QKeySequence.StandardKey.Undo)
    window.redo_action = _action(window, e, "&Redo", window.redo, QKeySequence.StandardKey.Redo)
    e.addSeparator()
    _action(window, e, "Rename / note...", _on_selected(window, window.rename_node), "F2")
    _action(window, e, "Toggle favourite", _on_selected(window, window.toggle_favourite), "Ctrl+D")
    _action(window, e, "Delete subtree", _on_selected(window, window.delete_node), "Del")
    r = bar.addMenu("&Render")
    _action(window, r, "&Render selected", _on_selected(window, window.render_node), "Ctrl+Return")
    _action(window, r, "&Cancel", window.jobs.cancel_all, "Esc")
    _action(window, r, "Re&verse this edit", _on_selected(window, window.reverse_node), "Ctrl+R")
    v = bar.addMenu("&View")
    _action(window, v, "&Compare mode (side / slider / blink)", window.canvas.toggle_compare, "C")
    _action(window, v, "Zoom &in", window.canvas.zoom_in, QKeySequence.StandardKey.ZoomIn)
    _action(window, v, "Zoom &out", window.canvas.zoom_out, QKeySequence.StandardKey.ZoomOut)
    _action(window, v, "&Fit", window.canvas.fit, "Ctrl+0")
