"""The studio's document (undo, results) and job queue (order, cancel, errors) with a fake
engine, on a qasync event loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import get_type_hints

import pytest

from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows.service import EngineService, ModelSpec, RenderJob
from clp2p_studio.backend import Backend
from clp2p_studio.document import Document
from clp2p_studio.results import NodeResult, RenderResults
from clp2p_studio.worker import Job, JobQueue
from fake_backend import FakeBackend, fake_attention

A = "a red circle on a white background"
B = "a blue circle on a white background"
DEAD_PID = 2**30  # above any pid_max: no such process


def _session():
    s = Session.new(A, RenderSettings(steps=5), "shapes")
    s, _ = s.add_edit("n1", B, preset("cl-p2p"))
    return s


def test_document_undo_keeps_render_results(qapp):
    doc = Document(_session())
    backend = FakeBackend()
    result = backend.render(RenderJob(doc.session, "n2", {}))
    doc.store_result(result, doc.session)
    assert doc.session.node("n2").status == "rendered" and doc.image("n2") is not None
    assert doc.session.node("n1").status == "rendered"  # computed on the way
    s2 = doc.session.update("n2", name="blue")
    doc.edit(s2, "Rename n2")
    doc.edit(doc.session.delete("n2"), "Delete n2")
    assert [n.id for n in doc.session.nodes] == ["n1"]
    doc.undo_stack.undo()
    assert doc.session.node("n2").status == "rendered" and doc.session.node("n2").name == "blue"
    doc.undo_stack.undo()
    assert doc.session.node("n2").name == "" and doc.session.node("n2").status == "rendered"
    assert doc.dirty


def test_document_save_and_open_round_trip(qapp, tmp_path):
    doc = Document(_session())
    doc.store_result(FakeBackend().render(RenderJob(doc.session, "n2", {})), doc.session)
    path = str(tmp_path / "s.json")
    doc.save(path)
    assert not doc.dirty and doc.path == path
    again = Document.open(path)
    assert again.session.nodes == doc.session.nodes
    assert (again.image("n2") == doc.image("n2")).all()


def test_jobs_run_in_order_with_progress(qapp, loop):
    backend = FakeBackend(steps=3)
    jobs = JobQueue(backend)
    seen = []
    jobs.progress.connect(lambda job, info: seen.append((job.label, info.step)))
    s = _session()

    async def main():
        info = await jobs.submit(Job("load", ModelSpec(), "load"))
        first = jobs.submit(Job("render", RenderJob(s, "n1", {}), "n1"))
        second = jobs.submit(Job("render", RenderJob(s, "n2", {}), "n2"))
        return info, await first, await second

    try:
        info, r1, r2 = loop.run_until_complete(main())
    finally:
        jobs.shutdown()
    assert info.device == "cpu" and r1.node_id == "n1" and r2.node_id == "n2"
    assert backend.calls == ["load shapes", "render n1", "render n2"]
    assert [x for x in seen if x[0] == "n1"] == [("n1", 1), ("n1", 2), ("n1", 3)]


def test_cancel_mid_step_and_queued(qapp, loop):
    backend = FakeBackend(steps=5)
    backend.gate = threading.Event()
    jobs = JobQueue(backend)
    s = _session()
    cancelled = []
    jobs.cancelled.connect(lambda job: cancelled.append(job.label))

    async def main():
        running = Job("render", RenderJob(s, "n2", {}), "running")
        queued = Job("render", RenderJob(s, "n1", {}), "queued")
        f1, f2 = jobs.submit(running), jobs.submit(queued)
        while jobs.current is not running:
            await asyncio.sleep(0.01)
        jobs.cancel(queued)
        jobs.cancel(running)
        backend.gate.set()
        out = []
        for f in (f1, f2):
            try:
                await f
            except RenderCancelled:
                out.append("cancelled")
        return out

    try:
        assert loop.run_until_complete(main()) == ["cancelled", "cancelled"]
    finally:
        jobs.shutdown()
    assert sorted(cancelled) == ["queued", "running"]
    assert backend.calls == ["render n2"]


def test_engine_errors_become_messages_and_the_queue_goes_on(qapp, loop):
    backend = FakeBackend(steps=2)
    jobs = JobQueue(backend)
    s = _session()
    messages = []
    jobs.failed.connect(lambda job, msg: messages.append(msg))

    async def main():
        backend.crash_with = RuntimeError("CUDA out of memory")
        with pytest.raises(Clp2pError, match="out of memory"):
            await jobs.submit(Job("render", RenderJob(s, "n2", {}), "n2"))
        backend.crash_with = None
        with pytest.raises(Clp2pError, match="not found"):
            await jobs.submit(Job("load", ModelSpec("missing"), "load"))
        return await jobs.submit(Job("render", RenderJob(s, "n2", {}), "n2"))

    try:
        assert loop.run_until_complete(main()).node_id == "n2"
    finally:
        jobs.shutdown()
    assert messages == [
        "RuntimeError: CUDA out of memory",
        "model 'missing' not found: give a folder",
    ]


# -- the backend seam ------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", [EngineService, FakeBackend])
def test_backends_answer_every_call_the_studio_makes(implementation):
    assert isinstance(implementation(), Backend)
    calls = [n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")]
    assert sorted(calls) == ["check_edit", "import_image", "load", "render", "sweep"]
    for name in calls:
        wanted, given = getattr(Backend, name), getattr(implementation, name)
        assert _parameters(given) == _parameters(wanted), f"{implementation.__name__}.{name}"
        assert get_type_hints(given) == get_type_hints(wanted), f"{implementation.__name__}.{name}"


def _parameters(function) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_a_backend_missing_a_call_or_drifting_is_caught():
    class Drifted(FakeBackend):
        def render(self, job, cancel=None, on_step=None):  # arguments swapped
            return super().render(job, on_step, cancel)

    assert _parameters(Drifted.render) != _parameters(Backend.render)
    assert not isinstance(object(), Backend)


# -- render results ------------------------------------------------------------------------


def test_results_keep_attention_of_the_most_recent_renders_only(qapp):
    results = RenderResults(attention_kept=2)
    maps = fake_attention([A])
    for key in ("a", "b", "c"):
        results.store(key, NodeResult(f"image-{key}"), (maps, 0))
    assert len(results) == 3 and results.attention_count == 2
    assert results.attention("a") is None and results.result("a").image == "image-a"
    results.attention("b")  # used: now the most recent
    results.store("d", NodeResult("image-d"), (maps, 0))
    assert results.attention("b") is not None and results.attention("c") is None
    results.store("b", NodeResult("image-b2"))  # a new image without maps forgets the old ones
    assert results.attention("b") is None


def test_document_keys_attention_by_what_the_image_depends_on(qapp):
    doc = Document(_session())
    doc.store_result(FakeBackend().render(RenderJob(doc.session, "n2", {})), doc.session)
    maps, branch = doc.attention("n2")
    assert branch == 1 and maps.prompts[branch].prompt == B
    assert doc.attention("n1")[1] == 0  # computed on the way: branch 0 of the same render
    doc.edit(doc.session.delete("n2"), "Delete n2")
    session, new_id = doc.session.add_edit(
        "n1", "a green circle on a white background", preset("p2p")
    )
    doc.edit(session, "Add")
    assert new_id == "n3" and doc.attention("n3") is None  # a fresh id, and nothing of n2's
    doc.undo_stack.undo()
    doc.undo_stack.undo()
    assert doc.attention("n2")[0] is maps  # n2 came back, and its maps with it


def test_a_damaged_autosave_is_set_aside_not_fatal(tmp_path):
    from clp2p_studio.files import Recovery

    crashed = Recovery(tmp_path, pid=DEAD_PID)
    crashed.mark_running()
    crashed.file.write_text('{"format": "clp2p-session", "schema_version": 2, "nodes": [')
    recovery = Recovery(tmp_path)  # the next start
    assert recovery.crashed_with_autosave()
    restored, problem = recovery.restore()
    assert restored is None
    assert "cannot be restored" in problem and "kept as" in problem
    assert not crashed.dir.exists()  # the next start is clean
    assert not recovery.crashed_with_autosave()
    kept = [p for p in recovery.root.iterdir() if p.name.startswith("damaged-")]
    assert len(kept) == 1 and (kept[0] / "session.json").read_text().endswith('"nodes": [')
