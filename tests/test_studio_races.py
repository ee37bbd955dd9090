"""Races between the studio and its engine thread, other instances and other programs: a
render outliving the session it was made from, ids given out again, a cancel after the last
step, a cycle's nested ancestor render, autosaves of several instances, file errors of exports
and a session file changed on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest

from clp2p.errors import RenderCancelled
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.session_render import SessionRenderer
from clp2p_studio.document import Document
from clp2p_studio.files import Recovery
from fake_backend import until

A = "a red circle on a white background"
B = "a blue circle on a white background"
G = "a green circle on a white background"
DEAD_PID = 2**30  # above any pid_max: no such process


def _held_at_step_1(window, loop, start):
    """Start a job with ``start()`` and wait until it reports step 1 and waits at the gate."""
    window.backend.gate = threading.Event()
    future = start()
    loop.run_until_complete(until(lambda: window.engine_jobs.progress.value() >= 1))
    return future


def _previews(window) -> list[bool]:
    """From now on, each preview the canvas is given (False: the preview withdrawn)."""
    shown: list[bool] = []
    set_preview = window.canvas.set_preview

    def record(rgb):
        shown.append(rgb is not None)
        set_preview(rgb)

    window.canvas.set_preview = record
    return shown


def _add(window, prompt: str, run: bool) -> None:
    window.tree.select("n1")
    window.params.target.setText(prompt)
    (window.params.run_button if run else window.params.add_button).click()


# -- 1. a render belongs to the session it was made from ------------------------------------


def test_a_render_shows_only_for_the_settings_it_was_made_with(window, loop):
    future = _held_at_step_1(window, loop, lambda: window.engine_jobs.render_node("n1"))
    settings = window.doc.session.settings
    window.edits.set_root_settings(replace(settings, seed=settings.seed + 1))
    previews = _previews(window)
    window.backend.gate.set()
    loop.run_until_complete(future)
    assert True not in previews  # the old seed's steps are not the node's preview now
    assert window.doc.session.node("n1").status == "new" and window.doc.image("n1") is None
    window.edits.undo()  # the seed it was rendered with: the render shows
    assert window.doc.session.node("n1").status == "rendered"
    assert window.doc.image("n1") is not None and window.doc.attention("n1") is not None


# -- 2. node ids are never given out twice --------------------------------------------------


def _release_and_check_n3_shows_nothing(window, loop) -> None:
    """Let the held render of n2 finish: n3 never shows its preview, image or maps."""
    previews = _previews(window)
    window.backend.gate.set()
    loop.run_until_complete(window.jobs.join())
    assert True not in previews
    assert window.doc.session.node("n3").status == "new" and window.doc.image("n3") is None
    assert window.heatmaps.words(1) == []


def test_undo_an_add_then_add_gives_a_fresh_id_and_nothing_of_the_old_render(window, loop):
    _held_at_step_1(window, loop, lambda: _add(window, B, run=True))  # n2, rendering
    window.edits.undo()  # the add of n2
    _add(window, G, run=False)
    assert window.current() == "n3" and [n.id for n in window.doc.session.nodes] == ["n1", "n3"]
    _release_and_check_n3_shows_nothing(window, loop)


def test_delete_during_a_render_then_add_gives_a_fresh_id(window, loop):
    _held_at_step_1(window, loop, lambda: _add(window, B, run=True))  # n2, rendering
    window.edits.delete_node("n2")
    _add(window, G, run=False)
    assert window.current() == "n3"
    _release_and_check_n3_shows_nothing(window, loop)
    window.edits.undo()
    window.edits.undo()  # n2 is back, with the render it was deleted during
    assert window.doc.session.node("n2").status == "rendered"


def test_a_preview_shows_only_on_the_node_it_renders(window, loop):
    _held_at_step_1(window, loop, lambda: _add(window, B, run=True))  # n2 (blue)
    other, _ = Session.new(A, RenderSettings(steps=4), "shapes").add_edit("n1", G, preset("p2p"))
    window.set_document(Document(other))  # another session, whose n2 is green
    window.tree.select("n2")
    previews = _previews(window)
    window.backend.gate.set()
    loop.run_until_complete(window.jobs.join())
    assert True not in previews
    assert window.doc.session.node("n2").status == "new"


# -- 3. cancel holds until a result is applied ----------------------------------------------


@pytest.mark.parametrize("kind", ["render", "import"])
def test_cancel_after_the_last_step_changes_nothing(window, loop, kind):
    before = window.doc
    picture = np.full((40, 60, 3), 200, np.uint8)
    # Esc pressed after the engine finished, before the studio applied the result
    window.jobs.finished.connect(lambda job, result: window.action("cancel").trigger())
    if kind == "render":
        future = window.engine_jobs.render_node("n1")
    else:
        future = window.engine_jobs.import_image(picture, A, "direct", "fit", "a.png")
    loop.run_until_complete(future)
    loop.run_until_complete(window.jobs.join())
    assert window.doc is before and window.doc.image("n1") is None
    assert window.doc.session.node("n1").status == "new" and not window.doc.dirty
    assert window.statusBar().currentMessage() == f"{kind} cancelled: nothing changed"


# -- 4. a cycle's nested ancestor render -----------------------------------------------------


def test_a_cycle_s_ancestor_render_reports_steps_and_honours_cancel(tiny_engine):
    settings = RenderSettings(seed=2, steps=4, guidance=7.5, width=32, height=32)
    s, n2 = Session.new(A, settings, "tiny").add_edit("n1", B, preset("p2p"))
    s, rev = s.add_cycle(n2)  # reverses n1, whose image is not stored
    renderer = SessionRenderer(tiny_engine)
    renderer.render(s, n2)  # n2's record is cached: the cycle computes only itself
    steps = []
    with pytest.raises(RenderCancelled):  # after the cycle's steps and its ancestor's first
        renderer.render(s, rev, on_step=steps.append, cancel=lambda: len(steps) > 4)
    assert [i.step for i in steps] == [1, 2, 3, 4, 1]


# -- 5. each instance has its own autosave ---------------------------------------------------


def test_each_instance_has_its_own_autosave(qapp, tmp_path):
    doc = Document(Session.new(A, RenderSettings(steps=4), "shapes"))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    one, two = Recovery(tmp_path, os.getpid()), Recovery(tmp_path, other.pid)
    try:  # two live instances: this process and another
        for recovery in (one, two):
            recovery.mark_running()
            recovery.save(doc)
        assert not one.crashed_with_autosave() and not two.crashed_with_autosave()
        one.clean_exit()
        assert not one.dir.exists() and two.file.is_file() and two.marker.is_file()
        crashed = Recovery(tmp_path, DEAD_PID)
        crashed.mark_running()
        crashed.save(doc)
        assert one.crash() == two.crash() == crashed.dir  # the live one is left alone
        (session, _), problem = one.restore()
        assert session.root.prompt == A and problem == ""
        assert not crashed.dir.exists() and two.file.is_file()  # restored: removed, only it
        crashed.mark_running()
        crashed.save(doc)
        one.discard()  # declined: removed too
        assert not crashed.dir.exists() and not one.crashed_with_autosave()
        assert two.file.is_file()
    finally:
        other.kill()
        other.wait()
    assert one.crash() == two.dir  # its process ended without a clean exit


# -- 6. file errors of exports are messages ---------------------------------------------------


def test_export_errors_are_messages(window, loop, tmp_path):
    loop.run_until_complete(window.engine_jobs.render_node("n1"))
    taken = tmp_path / "taken"
    taken.mkdir()
    for export in (window.files.export_history, window.files.export_image):
        count = len(window.messages)
        assert export(str(taken)) is False
        assert len(window.messages) == count + 1
        assert window.messages[-1].startswith("could not export: ")
    assert list(taken.iterdir()) == []


# -- 7. a session file changed on disk is not overwritten ------------------------------------


def test_a_session_file_changed_by_another_program_is_not_overwritten(window, tmp_path):
    path = tmp_path / "s.json"
    session_io.save(Session.new(A, RenderSettings(steps=4), "shapes"), path)
    doc = Document.open(str(path))
    for name in ("first", "second"):  # the stamp follows the document's own saves
        doc.edit(doc.session.update("n1", name=name), "Rename n1")
        doc.save()
    theirs, _ = session_io.load(path)
    session_io.save(theirs.update("n1", name="theirs"), path)  # another program
    doc.edit(doc.session.update("n1", name="mine"), "Rename n1")
    with pytest.raises(session_io.SessionChanged, match="another program"):
        doc.save()
    window.set_document(doc)
    assert window.files.save() is False
    assert (
        window.messages[-1].startswith("could not save: ")
        and "another name" in (window.messages[-1])
    )
    assert session_io.load(path)[0].root.name == "theirs" and doc.dirty
    assert window.files.save_as(str(tmp_path / "mine.json")) and not doc.dirty
    assert session_io.load(tmp_path / "mine.json")[0].root.name == "mine"
