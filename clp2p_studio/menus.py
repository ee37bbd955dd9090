"""The studio's menus as data: every action's name, text, shortcut, menu and handler in one
table, and one function that builds them for a window (which keeps what it gets back)."""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

Key = QKeySequence.StandardKey

MENUS = (("file", "&File"), ("edit", "&Edit"), ("render", "&Render"), ("view", "&View"))


@dataclass(frozen=True)
class ActionSpec:
    """One menu action. ``handler`` names the window's method or a collaborator's
    (``"files.save"``); with ``on_selected`` it is called with the selected node's id.
    ``separator`` draws a line above the action in its menu."""

    name: str
    menu: str
    text: str
    handler: str
    shortcut: Key | str | None = None
    on_selected: bool = False
    separator: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("new", "file", "&New session", "files.new_session", Key.New),
    ActionSpec("open", "file", "&Open...", "files.open_dialog", Key.Open),
    ActionSpec("import", "file", "&Import image...", "engine_jobs.import_dialog", "Ctrl+I"),
    ActionSpec("save", "file", "&Save", "files.save", Key.Save),
    ActionSpec("save_as", "file", "Save &as...", "files.save_as", Key.SaveAs),
    ActionSpec(
        "export_history", "file", "Export history JSON (images embedded)...", "files.export_history"
    ),
    ActionSpec("export_image", "file", "Export image as PNG...", "files.export_image", "Ctrl+E"),
    ActionSpec("model", "file", "&Model and device...", "engine_jobs.model_dialog", separator=True),
    ActionSpec("quit", "file", "&Quit", "close", Key.Quit),
    ActionSpec("undo", "edit", "&Undo", "edits.undo", Key.Undo),
    ActionSpec("redo", "edit", "&Redo", "edits.redo", Key.Redo),
    ActionSpec(
        "rename",
        "edit",
        "Rename / note...",
        "edits.rename_node",
        "F2",
        on_selected=True,
        separator=True,
    ),
    ActionSpec(
        "favourite",
        "edit",
        "Toggle favourite",
        "edits.toggle_favourite",
        "Ctrl+D",
        on_selected=True,
    ),
    ActionSpec("delete", "edit", "Delete subtree", "edits.delete_node", "Del", on_selected=True),
    ActionSpec(
        "sweep", "edit", "S&weep...", "sweeps.open_dialog", on_selected=True, separator=True
    ),
    ActionSpec(
        "render",
        "render",
        "&Render selected",
        "engine_jobs.render_node",
        "Ctrl+Return",
        on_selected=True,
    ),
    ActionSpec("cancel", "render", "&Cancel", "jobs.cancel_all", "Esc"),
    ActionSpec(
        "reverse", "render", "Re&verse this edit", "edits.reverse_node", "Ctrl+R", on_selected=True
    ),
    ActionSpec(
        "compare", "view", "&Compare mode (side / slider / blink)", "canvas.toggle_compare", "C"
    ),
    ActionSpec("zoom_in", "view", "Zoom &in", "canvas.zoom_in", Key.ZoomIn),
    ActionSpec("zoom_out", "view", "Zoom &out", "canvas.zoom_out", Key.ZoomOut),
    ActionSpec("fit", "view", "&Fit", "canvas.fit", "Ctrl+0"),
)


def build_menus(
    window: QMainWindow, specs: tuple[ActionSpec, ...] = ACTIONS
) -> tuple[dict[str, QMenu], dict[str, QAction]]:
    """The window's menu bar from ``specs``: its menus and its actions, by name. Every action
    is also a window shortcut; handlers are looked up on ``window`` now, so its collaborators
    must exist. A handler ``on_selected`` gets ``window.current()``."""
    bar = window.menuBar()
    menus = {name: bar.addMenu(title) for name, title in MENUS}
    actions: dict[str, QAction] = {}
    for spec in specs:
        action = QAction(spec.text, window)
        if spec.shortcut is not None:
            action.setShortcut(QKeySequence(spec.shortcut))
        handler = attrgetter(spec.handler)(window)
        if spec.on_selected:
            action.triggered.connect(lambda _=False, h=handler: h(window.current()))
        else:
            action.triggered.connect(lambda _=False, h=handler: h())
        if spec.separator:
            menus[spec.menu].addSeparator()
        menus[spec.menu].addAction(action)
        window.addAction(action)
        actions[spec.name] = action
    return menus, actions
