"""The engine thread and the job queue.

One :class:`EngineThread` (a QThread) runs engine calls one at a time. The
:class:`JobQueue` lives on the GUI thread's qasync event loop: it keeps jobs in order, hands
the next one to the thread when the previous one ends, and turns the thread's signals into
job signals and awaitable results. Cancel is cooperative, checked before every denoising step;
a cancelled job changes nothing."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QThread, Signal

from clp2p.errors import Clp2pError, RenderCancelled

from .backend import Backend

log = logging.getLogger("clp2p_studio")


@dataclass(eq=False)
class Job:
    """One engine call: ``kind`` is ``load`` (payload: ModelSpec), ``render`` (payload:
    RenderJob), ``import`` (payload: ImportJob) or ``sweep`` (payload: SweepJob). ``cancel``
    is set by the GUI thread and read by the engine thread."""

    kind: str
    payload: object
    label: str = ""
    id: int = field(default_factory=itertools.count(1).__next__)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class ItemDone:
    """A sweep's progress, as a render's StepInfo reads (``step`` of ``total``, ``eta``
    seconds left): ``row`` is the results table's row of the item just finished (a copy)."""

    row: dict
    step: int
    total: int
    eta: float


class EngineThread(QThread):
    """Runs backend calls in order. Signals are emitted from this thread and delivered to the
    GUI thread queued."""

    progress = Signal(object, object)  # job, StepInfo (a sweep: ItemDone)
    done = Signal(object, object)  # job, result
    failed = Signal(object, str)  # job, message
    cancelled = Signal(object)  # job

    def __init__(self, backend: Backend, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self._inbox: queue.Queue[Job | None] = queue.Queue()

    def submit(self, job: Job) -> None:
        self._inbox.put(job)

    def stop(self, timeout_ms: int = 30000) -> None:
        self._inbox.put(None)
        self.wait(timeout_ms)

    def run(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            try:
                if job.cancel.is_set():
                    raise RenderCancelled("cancelled before it started")
                result = self._call(job)
            except RenderCancelled:
                self.cancelled.emit(job)
            except Clp2pError as exc:
                self.failed.emit(job, str(exc))
            except Exception as exc:  # an engine bug must not take the studio down
                log.error("job %s failed:\n%s", job.label, traceback.format_exc())
                self.failed.emit(job, f"{type(exc).__name__}: {exc}")
            else:
                self.done.emit(job, result)

    def _call(self, job: Job):
        if job.kind == "load":
            return self.backend.load(job.payload)
        if job.kind == "sweep":
            on_item = self._item_reporter(job)
            return self.backend.sweep(job.payload, on_item=on_item, cancel=job.cancel.is_set)
        call = self.backend.import_image if job.kind == "import" else self.backend.render
        return call(
            job.payload,
            on_step=lambda info: self.progress.emit(job, info),
            cancel=job.cancel.is_set,
        )

    def _item_reporter(self, job: Job):
        """``on_item`` of a sweep: its progress, the ETA from the items rendered so far (items
        a folder already held are counted done but never reported)."""
        start, reported = time.perf_counter(), 0

        def on_item(row: dict, done: int, total: int) -> None:
            nonlocal reported
            reported += 1
            each = (time.perf_counter() - start) / reported
            self.progress.emit(
                job, ItemDone(copy.deepcopy(row), done, total, each * (total - done))
            )

        return on_item


class JobQueue(QObject):
    """Ordered engine jobs on the asyncio (qasync) loop of the GUI thread."""

    started = Signal(object)
    progress = Signal(object, object)
    finished = Signal(object, object)
    failed = Signal(object, str)
    cancelled = Signal(object)
    pendingChanged = Signal(int)

    def __init__(self, backend: Backend, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = EngineThread(backend, self)
        self.thread.progress.connect(self.progress)
        self.thread.done.connect(self._on_done)
        self.thread.failed.connect(self._on_failed)
        self.thread.cancelled.connect(self._on_cancelled)
        self.thread.start()
        self._pending: list[Job] = []
        self._futures: dict[int, asyncio.Future] = {}
        self.current: Job | None = None
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task | None = None

    # ---- submitting -----------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future:
        """Queue ``job``; the future resolves with its result, or raises Clp2pError or
        RenderCancelled."""
        loop = asyncio.get_event_loop()
        future = loop.create_future()
        self._futures[job.id] = future
        self._pending.append(job)
        self.pendingChanged.emit(len(self._pending))
        if self._pump_task is None or self._pump_task.done():
            self._wake = asyncio.Event()
            self._pump_task = loop.create_task(self._pump())
        self._wake.set()
        return future

    def cancel(self, job: Job | None = None) -> None:
        """Cancel ``job`` (default: the running one). A queued job is dropped at once."""
        job = job or self.current
        if job is None:
            return
        job.cancel.set()
        if job in self._pending:
            self._pending.remove(job)
            self.pendingChanged.emit(len(self._pending))
            self._resolve(job, exc=RenderCancelled("cancelled while queued"))
            self.cancelled.emit(job)

    def cancel_all(self) -> None:
        for job in list(self._pending):
            self.cancel(job)
        self.cancel()

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self._pending)

    async def join(self) -> None:
        """Wait until every job submitted so far (and any their outcomes submit) has ended;
        callbacks added to their futures have run by then."""
        while self._futures:
            await asyncio.gather(*self._futures.values(), return_exceptions=True)

    def shutdown(self) -> None:
        self.cancel_all()
        if self._pump_task is not None:
            self._pump_task.cancel()
        self.thread.stop()

    # ---- the pump -------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self._pending.pop(0)
            self.pendingChanged.emit(len(self._pending))
            self.current = job
            self.started.emit(job)
            self._running = asyncio.get_event_loop().create_future()
            self.thread.submit(job)
            await self._running
            self.current = None

    def _finish(self) -> None:
        running = getattr(self, "_running", None)
        if running is not None and not running.done():
            running.set_result(None)

    def _resolve(self, job: Job, result=None, exc: BaseException | None = None) -> None:
        future = self._futures.pop(job.id, None)
        if future is None or future.done():
            return
        if exc is not None:
            future.set_exception(exc)
            future.exception()  # retrieved: callers that ignore it do not warn
        else:
            future.set_result(result)

    def _on_done(self, job: Job, result) -> None:
        self._finish()
        self.finished.emit(job, result)
        self._resolve(job, result)

    def _on_failed(self, job: Job, message: str) -> None:
        self._finish()
        self.failed.emit(job, message)
        self._resolve(job, exc=Clp2pError(message))

    def _on_cancelled(self, job: Job) -> None:
        self._finish()
        self.cancelled.emit(job)
        self._resolve(job, exc=RenderCancelled(f"{job.label} cancelled"))
