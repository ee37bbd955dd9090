"""The main window against a scriptable fake engine: editing, rendering, cancel, errors,
undo, validation, files, autosave and recovery (offscreen)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from PIL import Image

from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.imported import DEFAULT_METHOD, FITS, METHODS
from clp2p.model.params import EDIT_KINDS, V_LAYER_KINDS, EditParams, StepWindow
from clp2p.model.session import NODE_KINDS, Session
from clp2p.model.settings import RenderSettings
from clp2p_studio.document import Document
from clp2p_studio.files import Recovery
from clp2p_studio.import_dialog import METHOD_HELP, ImportDialog
from clp2p_studio.menus import ACTIONS
from clp2p_studio.tree import KIND_COLOURS, KIND_LETTERS
from fake_backend import until

A = "a red circle on a white background"
B = "a blue circle on a white background"
DEAD_PID = 2**30  # above any pid_max: no such process


def _add_blue(window, run=True):
    window.tree.select("n1")
    window.params.target.setText(B)
    assert window.params.problem.text() == ""
    (window.params.run_button if run else window.params.add_button).click()


def test_add_and_render_an_edit(window, loop):
    _add_blue(window)
    assert window.current() == "n2" and window.jobs.busy
    loop.run_until_complete(window.jobs.join())
    s = window.doc.session
    assert s.node("n2").status == "rendered" and s.node("n1").status == "rendered"
    assert window.doc.image("n2") is not None
    assert window.tree.tree_model.rowCount() == 1
    assert window.doc.attention("n2") is not None and window.heatmaps.words(1)
    assert window.backend.calls[-1] == "render n2"


def test_a_render_from_further_up_says_why(window, loop):
    window.backend.note = "rendered from the root: the cached record of n1 lacks V values"
    _add_blue(window)
    loop.run_until_complete(window.jobs.join())
    message = window.statusBar().currentMessage()
    assert message.startswith("rendered n2") and window.backend.note in message


def test_cancel_mid_render_changes_nothing(window, loop):
    window.backend.gate = threading.Event()
    before = window.doc.session
    future = window.engine_jobs.render_node("n1")
    loop.run_until_complete(until(lambda: window.engine_jobs.progress.value() >= 1))
    window.jobs.cancel_all()
    window.backend.gate.set()
    with pytest.raises(RenderCancelled):
        loop.run_until_complete(future)
    assert window.doc.session == before and window.doc.image("n1") is None
    assert "cancelled" in window.statusBar().currentMessage()


def test_import_shows_progress_and_cancel_keeps_the_open_session(window, loop):
    import numpy as np

    picture = np.full((40, 60, 3), 200, np.uint8)
    window.backend.gate = threading.Event()
    before = window.doc
    future = window.engine_jobs.import_image(picture, A, "null-text", "fit", "a.png")
    loop.run_until_complete(until(lambda: window.engine_jobs.progress.value() >= 1))
    assert not window.engine_jobs.progress.isHidden()
    window.jobs.cancel_all()
    window.backend.gate.set()
    with pytest.raises(RenderCancelled):
        loop.run_until_complete(future)
    assert window.doc is before and "import cancelled" in window.statusBar().currentMessage()
    window.backend.gate = None
    session, _ = loop.run_until_complete(
        window.engine_jobs.import_image(picture, A, "direct", "fit", "a.png")
    )
    assert window.doc is not before and window.doc.dirty
    assert window.doc.session.imported.inversion.method == "direct"
    assert window.canvas.label("left") == "picture a.png"
    window.tree.select("n1")
    assert not window.params.root_box.steps.isEnabled()
    assert window.params.root_box.guidance.isEnabled()


def test_engine_error_is_a_message_not_a_crash(window, loop):
    window.backend.crash_with = MemoryError("out of memory")
    future = window.engine_jobs.render_node("n1")
    with pytest.raises(Exception, match="out of memory"):
        loop.run_until_complete(future)
    assert window.messages and "out of memory" in window.messages[-1]
    assert window.doc.session.node("n1").status == "new"
    window.backend.crash_with = None
    loop.run_until_complete(window.engine_jobs.render_node("n1"))
    assert window.doc.session.node("n1").status == "rendered"


def test_inline_validation_blocks_bad_edits(window):
    window.tree.select("n1")
    window.params.kind.setCurrentText("swap")
    window.params.target.setText("a blue big circle on a white background")
    assert "refine to add or remove words" in window.params.problem.text()
    assert not window.params.run_button.isEnabled()
    window.params.kind.setCurrentText("refine")
    assert window.params.problem.text() == "" and window.params.run_button.isEnabled()
    window.params.pick_word("big")  # blend mode: toggles a blend word
    assert window.params.blend.text() == "big"
    window.params.chip_mode.button(1).setChecked(True)
    window.params.pick_word("purple")
    assert "'purple' is not in the prompt" in window.params.problem.text()


def test_undo_redo_of_tree_operations(window, loop):
    _add_blue(window, run=False)
    window.edits.reverse_node("n2")
    loop.run_until_complete(until(lambda: not window.jobs.busy))
    assert [n.kind for n in window.doc.session.nodes] == ["root", "swap", "cycle"]
    window.edits.rename_node("n2", "blue | first try")
    assert window.doc.session.node("n2").note == "first try"
    window.edits.delete_node("n2")
    assert [n.id for n in window.doc.session.nodes] == ["n1"]
    for _ in range(2):
        window.action("undo").trigger()
    assert window.doc.session.node("n2").name == ""
    assert window.doc.session.node("n3").status == "rendered"  # results survive undo
    window.action("redo").trigger()
    assert window.doc.session.node("n2").name == "blue"


def test_menu_actions_apply_to_the_selected_node(window):
    _add_blue(window, run=False)
    window.tree.select("n2")
    favourite = window.action("favourite")
    assert favourite.text() == "Toggle favourite" and favourite.shortcut().toString() == "Ctrl+D"
    assert favourite in window.actions()  # a shortcut of the window, not only a menu entry
    favourite.trigger()
    assert window.doc.session.node("n2").favourite
    assert not window.doc.session.node("n1").favourite
    window.action("delete").trigger()
    assert [n.id for n in window.doc.session.nodes] == ["n1"]


def test_save_open_export_and_recent(window, loop, tmp_path):
    _add_blue(window)
    loop.run_until_complete(until(lambda: not window.jobs.busy))
    path = str(tmp_path / "s.json")
    assert window.files.save_as(path) and not window.doc.dirty
    window.files.export_history(str(tmp_path / "h.json"))
    assert '"data:image/png;base64,' in (tmp_path / "h.json").read_text()
    window.tree.select("n2")
    window.files.export_image(str(tmp_path / "n2.png"))
    chunk = json.loads(Image.open(tmp_path / "n2.png").text["clp2p"])
    assert [c["prompt"] for c in chunk["chain"]] == [A, B]
    assert window.settings.recent_files[0] == path
    window.set_document(Document(Session.new(A, RenderSettings(), "shapes")))
    assert window.files.open_path(path)
    assert window.doc.session.node("n2").status == "rendered"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert not window.files.open_path(str(bad)) and "not valid JSON" in window.messages[-1]


def test_autosave_and_crash_recovery(window, tmp_path):
    data = tmp_path / "data"
    window.files.recovery = Recovery(data, pid=DEAD_PID)  # as if this instance had crashed
    window.files.recovery.mark_running()
    _add_blue(window, run=False)
    window.files.autosave()
    assert Recovery(data).crashed_with_autosave()  # as the next start would see it
    window.files.recovery.clean_exit()
    assert not Recovery(data).crashed_with_autosave()
    window.files.recovery.mark_running()  # running again, and then a crash
    window.files.autosave()
    next_start = Recovery(data)
    (session, _), problem = next_start.restore()
    assert [n.id for n in session.nodes] == ["n1", "n2"] and problem == ""
    assert not next_start.crashed_with_autosave()  # restored: gone from the autosaves


def test_compare_and_shortcuts(window):
    modes = [window.canvas.toggle_compare() for _ in range(3)]
    assert modes == ["slider", "blink", "side"]
    shortcuts = {a.text(): a.shortcut().toString() for a in window.actions()}
    assert shortcuts["&Render selected"] == "Ctrl+Return" and shortcuts["&Cancel"] == "Esc"


def test_slow_jobs_run_in_order_and_the_window_stays_responsive(window, loop):
    window.backend.delay = 0.05
    first = window.engine_jobs.render_node("n1")
    _add_blue(window, run=False)
    second = window.engine_jobs.render_node("n2")
    ticks = []

    async def watch():
        while not second.done():
            ticks.append(window.engine_jobs.progress.value())
            await asyncio.sleep(0.01)

    loop.run_until_complete(watch())
    assert first.done() and first.result().node_id == "n1" and second.result().node_id == "n2"
    assert window.backend.calls[-2:] == ["render n1", "render n2"]
    assert len(ticks) > 10  # the event loop kept running while the jobs worked


@pytest.mark.parametrize("remove", ["delete", "undo"])
def test_a_new_node_gets_a_fresh_id_and_no_stale_heatmaps(window, loop, remove):
    _add_blue(window)  # n2, rendered: its heatmaps are shown
    loop.run_until_complete(until(lambda: not window.jobs.busy))
    window.tree.select("n2")
    assert window.heatmaps.words(1) == ["a", "blue", "circle", "on", "white", "background"]
    if remove == "delete":
        window.edits.delete_node("n2")
    else:
        window.edits.undo()  # the edit's creation
    window.tree.select("n1")
    window.params.target.setText("a green circle on a white background")
    window.params.add_button.click()  # a new, unrendered edit: never n2 again
    assert window.current() == "n3" and window.doc.session.node("n3").status == "new"
    assert window.heatmaps.words(1) == []  # nothing rendered for it, so no maps to show
    assert window.heatmaps.words(0) == ["a", "red", "circle", "on", "white", "background"]


def test_option_lists_and_checks_are_the_engines(window):
    def items(combo):
        return tuple(combo.itemText(i) for i in range(combo.count()))

    assert items(window.params.kind) == EDIT_KINDS
    assert items(window.params.v_layers) == V_LAYER_KINDS
    assert set(KIND_COLOURS) == set(KIND_LETTERS) == set(NODE_KINDS)
    dialog = ImportDialog((64, 64), window)
    assert items(dialog.method) == METHODS and items(dialog.fit) == FITS
    assert dialog.method.currentText() == DEFAULT_METHOD and set(METHOD_HELP) == set(METHODS)
    window.tree.select("n1")
    window.params.target.setText(B)
    window.params.v_blend.setValue(0.5)  # the V window is empty
    with pytest.raises(Clp2pError) as refused:
        EditParams(v_blend=0.5, v_window=StepWindow())
    assert window.params.problem.text() == str(refused.value)
    assert not window.params.add_button.isEnabled()


def test_menu_actions_are_the_window_s_own(window):
    assert list(window.menu_actions) == [spec.name for spec in ACTIONS]
    for spec in ACTIONS:
        action = window.action(spec.name)
        assert action.text() == spec.text and action in window.actions()
    assert window.files.recent_menu.menuAction() in window.menus["file"].actions()
