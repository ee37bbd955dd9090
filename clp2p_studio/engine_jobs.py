"""Engine jobs as the user sees them: loading a model, rendering a node, importing a picture,
with their progress, ETA and outcome in the status bar (a sweep's too: see
:mod:`clp2p_studio.sweep_jobs`). The jobs themselves run in order on
the engine thread (:mod:`clp2p_studio.worker`); this module starts them and applies what they
return."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLabel, QProgressBar

from clp2p.errors import RenderCancelled
from clp2p.model.session import describe_metrics
from clp2p.workflows.service import ImportJob, ModelInfo, ModelSpec, RenderJob, StepInfo

from .document import Document
from .import_dialog import ImportDialog
from .model_dialog import ModelDialog
from .settings import StudioSettings
from .worker import ItemDone, Job, JobQueue

if TYPE_CHECKING:
    from .window import MainWindow

STEPS_FORMAT = "%v / %m steps"
ITEMS_FORMAT = "%v / %m items"  # a sweep's progress
FALLBACK_FRAME = 64  # the import frame's side before a model says its native size


def settle_long_lived() -> None:
    """Put what lives as long as the loaded model (the libraries, the pipeline, the window)
    out of the cycle collector's reach. A full collection walks every tracked object while
    holding the interpreter lock; with torch, diffusers and Qt loaded that is some 400,000
    objects and 160 ms here, a stall of the event loop whenever it happens mid-render. Frozen,
    a full collection walks only what was made since. Called once per model load: the
    previous freeze is undone and collected first, so a replaced model's cycles are freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class EngineJobs(QObject):
    """Starts jobs on ``jobs`` for ``window``: renders go to the document they were started
    for, an import becomes the window's new document (``set_document``), failures become
    messages (``notify``), a job cancelled before its result is applied changes nothing, and
    a render's preview shows on ``window.canvas`` while its node is selected (``current``)
    and the document would show its result (``Document.would_show``)."""

    def __init__(self, window: MainWindow, jobs: JobQueue, settings: StudioSettings) -> None:
        super().__init__(window)
        self.window, self.jobs, self.settings = window, jobs, settings
        self.model_info: ModelInfo | None = None
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setFormat(STEPS_FORMAT)
        self.progress.hide()
        self.eta = QLabel("")
        self.engine_label = QLabel("engine: loading ...")
        bar = window.statusBar()
        for widget in (self.eta, self.progress, self.engine_label):
            bar.addPermanentWidget(widget)
        jobs.started.connect(self._on_started)
        jobs.progress.connect(self._on_progress)

    def _say(self, message: str, ms: int) -> None:
        self.window.statusBar().showMessage(message, ms)

    # ---- model ----------------------------------------------------------------------------
    def load_model(self, spec: ModelSpec | None = None) -> asyncio.Future:
        spec = spec or self.settings.model_spec
        self.engine_label.setText(f"engine: loading {spec.model} ...")
        future = self.jobs.submit(Job("load", spec, f"load {spec.model}"))
        future.add_done_callback(self._loaded)
        return future

    def _loaded(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            error = future.exception() if not future.cancelled() else "cancelled"
            self.engine_label.setText("engine: no model")
            self.window.notify(f"could not load the model: {error}")
            return
        self.model_info = info = future.result()
        self.engine_label.setText(f"engine: {info.spec.model} on {info.device} ({info.dtype})")
        self.engine_label.setToolTip(f"weights {info.weights}")
        self.window.set_weights(info.weights)
        settle_long_lived()

    def model_dialog(self) -> None:
        dialog = ModelDialog(self.settings.model_spec, self.window)
        if dialog.exec():
            self.settings.model_spec = dialog.spec()
            self.load_model(dialog.spec())

    # ---- render ---------------------------------------------------------------------------
    def render_node(self, node_id: str | None) -> asyncio.Future | None:
        """Render ``node_id`` of the window's document; its result goes to that document,
        for the session as it was when the render started."""
        if node_id is None:
            return None
        doc = self.window.doc
        batch = self.settings.model_spec.batch
        render = RenderJob(
            doc.session,
            node_id,
            dict(doc.images),
            self.settings.preview_every,
            batch,
            session_file=doc.path,  # its records spill beside it
        )
        job = Job("render", render, f"render {node_id}")
        future = self.jobs.submit(job)
        future.add_done_callback(lambda f: self._rendered(doc, job, f))
        return future

    def _rendered(self, doc: Document, job: Job, future: asyncio.Future) -> None:
        self.window.canvas.set_preview(None)
        if not self.succeeded(future, job):
            return
        if doc is not self.window.doc:
            return  # the session was closed while rendering
        result = future.result()
        doc.store_result(result, job.payload.session)
        metrics = describe_metrics(result.metrics)
        note = f" ({result.note})" if result.note else ""  # e.g. from the root, and why
        self._say(f"rendered {result.node_id} in {result.seconds:.1f} s {metrics}{note}", 8000)

    def succeeded(self, future: asyncio.Future, job: Job) -> bool:
        """Whether a finished job has a result to apply; says why not in the status bar. A
        job cancelled after its last step has none: cancel holds until a result is applied."""
        self.progress.hide()
        self.eta.setText("")
        if future.cancelled():
            return False
        error = future.exception()
        if isinstance(error, RenderCancelled) or (error is None and job.cancel.is_set()):
            self._say(f"{job.kind} cancelled: nothing changed", 5000)
            return False
        if error is not None:
            self.window.notify(f"{job.kind} failed: {error}")
        return error is None

    # ---- import ---------------------------------------------------------------------------
    def import_dialog(self) -> None:
        if not self.window.files.discard_ok():
            return
        settings = self.window.doc.session.settings
        native = self.model_info.native_size if self.model_info is not None else FALLBACK_FRAME
        frame = (settings.width or native, settings.height or native)
        dialog = ImportDialog(frame, self.window)
        if dialog.exec():
            self.import_image(**dialog.values())

    def import_image(
        self,
        image: np.ndarray,
        prompt: str,
        method: str = ImportJob.method,
        fit: str = ImportJob.fit,
        file: str = ImportJob.file,
        inner_steps: int = ImportJob.inner_steps,
    ) -> asyncio.Future:
        """Invert a picture on the engine thread; it becomes a new (unsaved) session."""
        settings = self.window.doc.session.settings
        payload = ImportJob(image, prompt, settings, method, fit, file, inner_steps)
        job = Job("import", payload, f"import {file or 'image'} ({method})")
        future = self.jobs.submit(job)
        future.add_done_callback(lambda f: self._imported(job, f))
        return future

    def _imported(self, job: Job, future: asyncio.Future) -> None:
        if not self.succeeded(future, job):
            return
        session, images = future.result()
        self.window.set_document(Document(session, images, unsaved=True))
        imp = session.imported
        quality = "exact" if imp.psnr is None else f"{imp.psnr:.2f} dB"
        self._say(
            f"imported {imp.file or 'the picture'}: {imp.inversion.method} inversion in "
            f"{imp.seconds:.1f} s, reconstruction PSNR {quality}",
            10000,
        )

    # ---- progress -------------------------------------------------------------------------
    def _on_started(self, job: Job) -> None:
        if job.kind == "load":
            return
        if job.kind == "import":  # steps of unknown count until the first report
            self.progress.setRange(0, 0)
            self.progress.setFormat("%p%")
        elif job.kind == "sweep":
            self.progress.setFormat(ITEMS_FORMAT)
            self.progress.setRange(0, len(job.payload.items))
            self.progress.setValue(0)
        else:
            self.progress.setFormat(STEPS_FORMAT)
            self.progress.setRange(0, job.payload.session.settings.steps)
            self.progress.setValue(0)
        self.progress.show()
        self._say(f"{job.label} ...", 0)

    def _on_progress(self, job: Job, info: StepInfo | ItemDone) -> None:
        self.progress.setMaximum(info.total)
        self.progress.setValue(info.step)
        self.eta.setText(f"ETA {info.eta:.1f} s")
        preview = info.preview if job.kind == "render" else None
        if preview is None or job.payload.node_id != self.window.current():
            return
        if self.window.doc.would_show(job.payload.session, job.payload.node_id):
            self.window.canvas.set_preview(preview[-1])
