"""Sweeps as the user sees them: Edit -> Sweep opens the dialog, the sweep runs as one job on
the engine thread (its items' progress and ETA in the status bar and its results window,
cancel between items), and a chosen item joins the session or opens as its own."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.imported import read_image
from clp2p.model.params import EditParams
from clp2p.model.session import Session, chain_key
from clp2p.workflows.service import SweepJob
from clp2p.workflows.sweep import ResultsFolder

from .document import Document
from .settings import StudioSettings
from .sweep_dialog import SweepDialog, SweepSetup
from .sweep_results import SweepResults
from .worker import ItemDone, Job, JobQueue

if TYPE_CHECKING:
    from .window import MainWindow

STAMP = "%Y%m%d-%H%M%S"  # a results folder's name: when the sweep started


def results_folder(session_file: str | None, data_dir: Path, now: datetime) -> Path:
    """Where a sweep started ``now`` writes: ``<stem>.sweeps/<stamp>/`` beside the saved
    session file, else ``sweeps/<stamp>/`` in the studio's data folder; never an existing
    folder (two sweeps in one second get ``-2``, ``-3``, ...)."""
    if session_file:
        file = Path(session_file)
        base = file.with_name(f"{file.stem}.sweeps")
    else:
        base = Path(data_dir) / "sweeps"
    folder, n = base / now.strftime(STAMP), 1
    while folder.exists():
        n += 1
        folder = base / f"{now.strftime(STAMP)}-{n}"
    return folder


def join_item(session: Session, node_id: str, row: dict) -> tuple[Session, str]:
    """``session`` with a sweep item's edit (a results row) as a new child of ``node_id``,
    made as the parameter panel's edits are (:meth:`Session.add_edit`). The child's chain
    key must be the item's, so the item's picture is its render; else a
    :class:`Clp2pError` says why not."""
    settings = row.get("settings") or {}
    if settings.get("seed", session.settings.seed) != session.settings.seed:
        raise Clp2pError(
            f"the item's seed {settings['seed']} is not the session's "
            f"({session.settings.seed}): open it as a session"
        )
    params = EditParams.from_json(row["params"])
    joined, new_id = session.add_edit(node_id, row["target"], params, row["kind"])
    if chain_key(joined, joined.path(new_id)) != row["key"]:
        raise Clp2pError(
            f"the session changed since the sweep (settings or the chain to {node_id}): "
            "open the item as a session"
        )
    return joined, new_id


def sweep_asked(session: Session, session_file: str | None, setup: SweepSetup) -> dict:
    """What the results folder's ``sweep.json`` records (:func:`clp2p.model.sweep.asked`)."""
    from clp2p.model.sweep import asked

    return asked(
        session, setup.node_id, setup.target, setup.params, setup.grid, setup.seeds, session_file
    )


class SweepJobs(QObject):
    """Sweeps of ``window``'s document on ``jobs``; ``settings`` remembers Ray's address.
    :attr:`results` holds the results window of every sweep started (the latest last)."""

    def __init__(self, window: MainWindow, jobs: JobQueue, settings: StudioSettings) -> None:
        super().__init__(window)
        self.window, self.jobs, self.settings = window, jobs, settings
        self.results: list[SweepResults] = []
        self._running: dict[int, SweepResults] = {}
        jobs.progress.connect(self._on_progress)

    def dialog(self, node_id: str | None) -> SweepDialog | None:
        """The sweep dialog for ``node_id``, from the parameter panel's target and edit."""
        if node_id is None:
            return None
        panel = self.window.params
        try:
            params = panel.params()
        except Clp2pError as exc:
            self.window.notify(f"fix the parameter panel first: {exc}")
            return None
        return SweepDialog(
            self.window.doc.session,
            node_id,
            panel.target.text().strip(),
            params,
            self.settings.ray_address,
            self.window.backend.check_edit,
            self.window,
        )

    def open_dialog(self, node_id: str | None) -> None:
        dialog = self.dialog(node_id)
        if dialog is not None and dialog.exec() and dialog.setup() is not None:
            self.settings.ray_address = dialog.ray_address.text()
            self.start(dialog.setup())

    def start(self, setup: SweepSetup) -> asyncio.Future:
        """Run ``setup`` on the engine thread; its results window shows the items."""
        doc = self.window.doc
        folder = results_folder(doc.path, self.window.data_dir, datetime.now())
        axes = [name for name, _ in setup.grid.axes]
        payload = SweepJob(
            setup.items,
            str(folder),
            sweep_asked(doc.session, doc.path, setup),
            columns=axes[-1] if axes else None,
            ray=setup.ray,
        )
        n = len(setup.items)
        job = Job("sweep", payload, f"sweep of {setup.node_id} ({n} item{'s' * (n != 1)})")
        results = self._results_window(doc, setup, folder)
        results.cancelRequested.connect(lambda: self.jobs.cancel(job))
        self._running[job.id] = results
        future = self.jobs.submit(job)
        future.add_done_callback(lambda f: self._finished(job, results, f))
        return future

    def _results_window(self, doc: Document, setup: SweepSetup, folder: Path) -> SweepResults:
        running = set(map(id, self._running.values()))
        for old in [r for r in self.results if not r.isVisible() and id(r) not in running]:
            self.results.remove(old)  # closed, and its sweep ended
            old.deleteLater()
        grid = setup.grid
        columns = len(grid.axes[-1][1]) if grid.axes else len(setup.seeds)
        items = [(item.key(), item.values) for item in setup.items]
        results = SweepResults(
            f"Sweep of {setup.node_id}",
            folder,
            items,
            columns,
            lambda row: self._why_not(doc, setup.node_id, row),
            self.window,
        )
        results.addRequested.connect(lambda row: self._add(results, doc, setup.node_id, row))
        results.openRequested.connect(lambda row: self.open_item(results.folder, row))
        results.setModal(False)
        results.show()
        self.results.append(results)
        return results

    # ---- the job --------------------------------------------------------------------------
    def _on_progress(self, job: Job, info: object) -> None:
        results = self._running.get(job.id)
        if results is not None and isinstance(info, ItemDone):
            results.item_done(info.row)
            results.set_progress(info.step, info.total, info.eta)

    def _finished(self, job: Job, results: SweepResults, future: asyncio.Future) -> None:
        self._running.pop(job.id, None)
        self.window.engine_jobs.succeeded(future, job)  # the status bar's progress, messages
        if future.cancelled() or future.exception() is not None:
            error = None if future.cancelled() else future.exception()
            how = "Cancelled" if error is None or isinstance(error, RenderCancelled) else "Failed"
            n = len(results.rows)
            what = f"{how}: {error}" if how == "Failed" else how
            results.finish(None, f"{what}; {n} item{'s' * (n != 1)} finished before.")
            return
        report = future.result()
        summary = (
            f"{len(report.rows)} items: {report.rendered} rendered, {report.failed} failed, "
            f"{report.skipped} done before"
        )
        results.finish(report.rows, summary)
        self.window.statusBar().showMessage(f"{job.label}: {summary}", 10000)

    # ---- choosing an item -------------------------------------------------------------------
    def _why_not(self, doc: Document, node_id: str, row: dict) -> str | None:
        """None when the item ``row`` can join ``doc`` as a child of ``node_id``, else why."""
        if doc is not self.window.doc:
            return "the sweep's session is no longer open: open the item as a session"
        if node_id not in {n.id for n in doc.session.nodes}:
            return f"{node_id} is no longer in the session: open the item as a session"
        try:
            join_item(doc.session, node_id, row)
        except Clp2pError as exc:
            return str(exc)
        return None

    def _add(self, results: SweepResults, doc: Document, node_id: str, row: dict) -> None:
        new_id = self.add_to_session(doc, node_id, results.folder, row)
        if new_id:
            results.say(f"added to the session as {new_id} (rendered)")

    def add_to_session(
        self, doc: Document, node_id: str, folder: ResultsFolder, row: dict
    ) -> str | None:
        """The item ``row`` of ``folder`` as a rendered child of ``node_id`` of ``doc`` (one
        undo step); its picture is its render, so it needs none."""
        why = self._why_not(doc, node_id, row)
        try:
            if why is not None:
                raise Clp2pError(why)
            image = read_image(folder.item_dir(row["key"]) / "result.png")
            source = read_image(folder.item_dir(row["key"]) / "source.png")
        except Clp2pError as exc:
            self.window.notify(str(exc))
            return None
        return self.window.edits.add_rendered(
            lambda s: join_item(s, node_id, row),
            image,
            row.get("seconds"),
            source,
            f"Add {row['kind']} from a sweep",
            folder.weights(row["key"]),
        )

    def open_item(self, folder: ResultsFolder, row: dict) -> bool:
        """The item's own session file (its chain and the edit, both rendered) as the
        window's document, as File -> Open opens one."""
        if not self.window.files.discard_ok():
            return False
        return self.window.files.open_path(str(folder.item_dir(row["key"]) / "session.json"))
