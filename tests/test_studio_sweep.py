"""Edit -> Sweep in the studio, against the fake engine (which writes a real results folder):
the dialog counts items and refuses bad values, the sweep runs as a job with progress and
cancel, its results show as a grid, and a chosen item joins the session rendered (undoably)
or opens as a session of its own."""

from __future__ import annotations

import threading
from datetime import datetime

import numpy as np
import pytest
from PySide6.QtCore import Qt

from clp2p.errors import RenderCancelled
from clp2p.model import sweep
from clp2p.model.imported import read_image
from clp2p.model.session import image_hash
from clp2p_studio.sweep_dialog import SweepDialog
from clp2p_studio.sweep_jobs import results_folder
from fake_backend import until

B = "a blue circle on a white background"


def _dialog(window, **axes: str):
    window.tree.select("n1")
    window.params.target.setText(B)
    dialog = window.sweeps.dialog("n1")
    for name, values in axes.items():
        check, field = dialog.axes[name]
        check.setChecked(True)
        field.setText(values)
    dialog.check()
    return dialog


def _run(window, loop, dialog):
    future = window.sweeps.start(dialog.check())
    loop.run_until_complete(future)
    return future.result(), window.sweeps.results[-1]


def _tile(results, caption: str):
    return next(t for t in results.tiles if t.caption == caption)


def test_the_dialog_has_the_models_axes_and_counts_items(window):
    dialog = _dialog(window, k="0,0.3", cross="0.2,0.8")
    assert list(dialog.axes) == list(sweep.AXES)
    assert dialog.axes["k"][1].toolTip() == sweep.AXES["k"].help
    assert dialog.target.text() == B
    assert dialog.count.text() == "4 items (2 x 2)" and dialog.run_button.isEnabled()
    dialog.seeds.setText("0-2")
    dialog.reweight[0].setChecked(True)
    dialog.reweight_word.setText("blue")
    dialog.reweight[1].setText("1,2")
    assert dialog.check() is not None
    assert dialog.count.text() == "24 items (2 x 2 x 2 x 3 seeds)"
    assert dialog.grid_specs() == ["k=0,0.3", "cross=0.2,0.8", "reweight:blue=1,2"]


@pytest.mark.parametrize(
    ("axis", "values", "message"),
    [
        ("k", "0,abc", "grid k: 'abc' is not a number"),
        ("k", "", "grid 'k=': write NAME=V1,V2,..."),
        ("v-layers", "self,most", "grid v-layers: 'most' is not one of"),
        ("preset", "p3p", "'p3p' is not one of"),
    ],
)
def test_the_dialog_refuses_bad_values_in_one_line(window, axis, values, message):
    dialog = _dialog(window, **{axis: values})
    assert message in dialog.count.text() and "\n" not in dialog.count.text()
    assert not dialog.run_button.isEnabled() and dialog.check() is None


def test_the_dialog_refuses_bad_seeds_and_an_empty_ray_address(window):
    dialog = _dialog(window, k="0.2")
    dialog.seeds.setText("3-1")
    assert dialog.check() is None and "seeds '3-1'" in dialog.count.text()
    dialog.seeds.setText("")
    dialog.where.setCurrentText("Ray")
    assert dialog.ray_address.text() == "auto" == window.settings.ray_address
    assert dialog.check().ray == "auto"
    dialog.ray_address.setText(" ")
    assert dialog.check() is None and "Ray's address" in dialog.count.text()


def test_the_ray_address_is_remembered(window):
    window.settings.ray_address = "10.0.0.2:6379"
    assert _dialog(window).ray_address.text() == "10.0.0.2:6379"
    window.settings.ray_address = ""
    assert window.settings.ray_address == "auto"


def test_the_edit_menu_runs_a_sweep_on_ray_and_remembers_the_address(window, loop, monkeypatch):
    def run_on_ray(dialog) -> bool:  # instead of the modal loop: the user's choices
        dialog.axes["k"][1].textEdited.emit("0.2")  # typing values checks the axis
        dialog.axes["k"][1].setText("0.2")
        dialog.where.setCurrentText("Ray")
        dialog.ray_address.setText("10.1.2.3:6379")
        return dialog.check() is not None

    monkeypatch.setattr(SweepDialog, "exec", run_on_ray)
    window.backend.fail_with = "Ray is not installed: pip install 'ray[default]'"
    window.tree.select("n1")
    window.params.target.setText(B)
    window.action("sweep").trigger()
    loop.run_until_complete(window.jobs.join())
    assert window.backend.calls[-1] == "sweep 1 on Ray 10.1.2.3:6379"
    assert window.settings.ray_address == "10.1.2.3:6379"
    assert "Ray is not installed" in window.messages[-1]
    assert "Ray is not installed" in window.sweeps.results[-1].status.text()


def test_a_sweep_runs_as_a_job_and_shows_its_items(window, loop):
    window.backend.item_error = lambda item: (
        "the blend mask is empty" if dict(item.values)["k"] == "0.6" else None
    )
    dialog = _dialog(window, k="0,0.3,0.6")
    report, results = _run(window, loop, dialog)
    assert window.backend.calls[-1] == "sweep 3" and report.rendered == 2 and report.failed == 1
    assert report.folder.parent == window.data_dir / "sweeps"  # an unsaved session
    assert (report.folder / "sweep.json").is_file()
    assert [t.caption for t in results.tiles] == ["k 0", "k 0.3", "k 0.6"]
    assert "seed 0" in results.windowTitle()  # what every item shares: said once
    assert "\u2713success" in _tile(results, "k 0").label.text()
    assert "iou 0.85" in _tile(results, "k 0.3").label.text()
    assert "the blend mask is empty" in _tile(results, "k 0.6").label.text()
    assert results.progress.value() == 3 and results.cancel_button.isHidden()
    assert "2 rendered, 1 failed" in results.status.text()
    assert window.engine_jobs.progress.isHidden()
    assert "2 rendered, 1 failed" in window.statusBar().currentMessage()
    qtbot_click(_tile(results, "k 0.6"))
    assert not results.add_button.isEnabled() and not results.open_button.isEnabled()


def qtbot_click(widget) -> None:
    from pytestqt.qtbot import QtBot

    QtBot.mouseClick(widget, Qt.MouseButton.LeftButton)


def test_add_to_session_adds_the_rendered_child_and_undo_removes_it(window, loop):
    report, results = _run(window, loop, _dialog(window, k="0,0.3", cross="0.2,0.8"))
    before = window.doc.session
    qtbot_click(_tile(results, "k 0.3  cross 0.2"))
    assert results.add_button.isEnabled()
    results.add_button.click()
    assert "added to the session as n2" in results.detail.text()
    s = window.doc.session
    node = s.nodes[-1]
    assert window.current() == node.id and node.parent == "n1" and node.prompt == B
    assert node.params.k == 0.3 and node.params.cross.spec() == "0.2"
    assert node.status == "rendered" and s.node("n1").status == "rendered"
    row = results.rows[results.selected]
    picture = read_image(results.folder.item_dir(row["key"]) / "result.png")
    assert node.image == image_hash(picture)
    assert np.array_equal(window.doc.image(node.id), picture)
    assert not any(call.startswith("render") for call in window.backend.calls)  # no re-render
    window.action("undo").trigger()
    assert [n.id for n in window.doc.session.nodes] == [n.id for n in before.nodes]
    assert window.doc.session.node("n1").status == "rendered"  # a result, as a render's
    window.action("redo").trigger()
    assert window.doc.session.node(node.id).status == "rendered"


def test_an_item_of_another_seed_opens_as_a_session(window, loop):
    dialog = _dialog(window, k="0.3")
    dialog.seeds.setText("0,5")
    _report, results = _run(window, loop, dialog)
    qtbot_click(_tile(results, "seed 5"))
    assert not results.add_button.isEnabled()
    assert "seed 5 is not the session's (0)" in results.add_button.toolTip()
    assert results.open_button.isEnabled()
    swept = window.doc
    results.open_button.click()
    assert window.doc is not swept and window.doc.path.endswith("session.json")
    assert window.doc.session.settings.seed == 5
    assert window.doc.session.nodes[-1].status == "rendered"
    qtbot_click(_tile(results, "seed 0"))  # its session is no longer open
    assert "no longer open" in results.add_button.toolTip()


def test_an_item_of_an_older_session_state_is_not_added(window, loop):
    from dataclasses import replace

    _report, results = _run(window, loop, _dialog(window, k="0.3"))
    settings = replace(window.doc.session.settings, guidance=3.0)
    window.edits.set_root_settings(settings)
    qtbot_click(results.tiles[0])
    assert "the session changed since the sweep" in results.add_button.toolTip()


def test_cancel_stops_a_sweep_between_items_and_changes_nothing(window, loop):
    window.backend.gate = threading.Event()
    before = window.doc.session
    future = window.sweeps.start(_dialog(window, k="0,0.1,0.2").check())
    results = window.sweeps.results[-1]
    loop.run_until_complete(until(lambda: results.progress.value() >= 1))
    assert window.engine_jobs.progress.format() == "%v / %m items"
    results.cancel_button.click()
    window.backend.gate.set()
    with pytest.raises(RenderCancelled):
        loop.run_until_complete(future)
    assert window.doc.session == before
    assert results.status.text() == "Cancelled; 1 item finished before."
    assert len(results.rows) == 1 and "waiting" in results.tiles[2].label.text()
    assert "sweep cancelled" in window.statusBar().currentMessage()


def test_results_go_beside_a_saved_session(tmp_path):
    now = datetime(2024, 5, 6, 7, 8, 9)
    folder = results_folder(str(tmp_path / "cat.json"), tmp_path / "data", now)
    assert folder == tmp_path / "cat.sweeps" / "20240506-070809"
    folder.mkdir(parents=True)
    again = results_folder(str(tmp_path / "cat.json"), tmp_path / "data", now)
    assert again.name == "20240506-070809-2"
    assert results_folder(None, tmp_path / "data", now).parent == tmp_path / "data" / "sweeps"
