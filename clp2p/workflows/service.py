"""The engine as the studio's worker thread uses it: one loaded model, one session renderer,
and checks of an edit against the model's tokenizer. Messages in and out are frozen values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clp2p.engine.engine import Engine, RenderOptions, StepInfo
from clp2p.engine.families import is_xl  # noqa: F401  the studio asks it of a session's model
from clp2p.errors import Clp2pError
from clp2p.model.align import word_tokens
from clp2p.model.devices import AUTO
from clp2p.model.edits import resolve_edit
from clp2p.model.imported import DEFAULT_INNER_STEPS, DEFAULT_METHOD, FITS
from clp2p.model.params import EditParams
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.resources import SHAPES
from clp2p.workflows.adapters import adapters_from
from clp2p.workflows.record_cache import DEFAULT_BUDGET
from clp2p.workflows.record_spill import DEFAULT_SPILL, records_folder
from clp2p.workflows.session_render import NodeRender, SessionRenderer

# What the studio's engine thread may use (the studio never imports the engine itself).
__all__ = [
    "EngineService",
    "ImportJob",
    "ModelInfo",
    "ModelSpec",
    "NodeRender",
    "RenderJob",
    "StepInfo",
    "SweepJob",
]


FAST_MODE = (
    "fast mode: all branches of a render in one batch; images may differ by float rounding "
    "from a render one branch at a time (cached and cold renders then differ)"
)


@dataclass(frozen=True)
class ModelSpec:
    """What to load: ``model`` as ``clp2p --model`` takes it, device and dtype names, and the
    memory budget of the session render cache in MiB; ``batch``: fast mode (renders take
    all branches in one batch); ``spill_mib``: the disk space for the records the cache
    evicts, beside a saved session's file (0: off). Neither of the last two needs a reload."""

    model: str = SHAPES
    device: str = AUTO
    dtype: str = AUTO
    cache_mib: int = DEFAULT_BUDGET // 2**20
    batch: bool = False  # fast mode: see FAST_MODE
    spill_mib: int = DEFAULT_SPILL // 2**20
    loras: tuple[str, ...] = ()  # FILE[:SCALE], as --lora takes them
    embeddings: tuple[str, ...] = ()  # FILE[:TOKEN], as --embedding takes them

    def same_model(self, other: ModelSpec) -> bool:
        mine = (self.model, self.device, self.dtype, self.loras, self.embeddings)
        return mine == (other.model, other.device, other.dtype, other.loras, other.embeddings)


@dataclass(frozen=True)
class ModelInfo:
    spec: ModelSpec
    device: str
    dtype: str
    native_size: int
    size_multiple: int
    max_tokens: int
    adapters: tuple = ()  # the LoRAs and embeddings loaded (Adapter), for new sessions
    weights: str = ""  # the tag of the loaded weights (clp2p.model.session.weights_tag)


@dataclass(frozen=True)
class RenderJob:
    """Render one node of a session snapshot; ``images`` (hash -> RGB) are the stored images a
    reversal may compare against; ``session_file``: where the session is saved (None: not
    saved), beside which the cache's records spill."""

    session: Session
    node_id: str
    images: dict[str, np.ndarray]
    preview_every: int = 5
    batch: bool = False  # fast mode
    session_file: str | None = None


@dataclass(frozen=True)
class ImportJob:
    """Invert a picture (RGB uint8, any size) into a new session's root."""

    image: np.ndarray
    prompt: str
    settings: RenderSettings
    method: str = DEFAULT_METHOD
    fit: str = FITS[0]
    file: str = ""
    inner_steps: int = DEFAULT_INNER_STEPS


@dataclass(frozen=True)
class SweepJob:
    """Render the items of a sweep (:func:`clp2p.model.sweep.sweep_items`) into ``folder``
    (see :mod:`clp2p.workflows.sweep`): on the loaded engine when ``ray`` is "", else on Ray
    (``auto``: a local instance; an address: that cluster) with ``workers`` workers.
    ``asked`` is what the folder's ``sweep.json`` records; ``columns``: the axis the contact
    sheet's columns show."""

    items: tuple
    folder: str
    asked: dict
    columns: str | None = None
    ray: str = ""
    workers: int | None = None


class EngineService:
    """Owns the engine; every method runs on the worker thread except :meth:`check_edit`,
    which only reads the tokenizer."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.renderer: SessionRenderer | None = None
        self.info: ModelInfo | None = None

    def load(self, spec: ModelSpec) -> ModelInfo:
        """Load the model of ``spec``; when only the cache budget, the spill or fast mode
        changed, the loaded model stays and its cache shrinks or grows to the new budget."""
        if spec.cache_mib < 0:
            raise Clp2pError(f"render cache {spec.cache_mib} MiB: give 0 MiB or more")
        if spec.spill_mib < 0:
            raise Clp2pError(f"records on disk {spec.spill_mib} MiB: give 0 MiB (off) or more")
        budget = spec.cache_mib * 2**20
        if self.info is not None and self.renderer is not None and self.info.spec.same_model(spec):
            self.renderer.cache.resize(budget)
            self.info = replace(self.info, spec=spec)
            return self.info
        adapters = adapters_from(list(spec.loras), list(spec.embeddings))
        engine = Engine.load(spec.model, spec.device, spec.dtype, adapters=adapters)
        self.engine, self.renderer = engine, SessionRenderer(engine, budget)
        self.info = ModelInfo(
            spec,
            str(engine.device),
            str(engine.dtype).replace("torch.", ""),
            engine.native_size,
            engine.size_multiple,
            engine.max_tokens,
            engine.adapters,
            self.renderer.weights,  # reads every weight once
        )
        return self.info

    def render(
        self,
        job: RenderJob,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> NodeRender:
        if self.renderer is None:
            raise Clp2pError("no model is loaded: pick one in Model settings")
        if self.engine is not None:
            check_adapters(job.session, self.engine)
        folder = records_folder(job.session_file) if job.session_file else None
        limit = self.info.spec.spill_mib * 2**20 if self.info is not None else 0
        self.renderer.spill_to(folder, limit)  # an unsaved session spills nowhere
        return self.renderer.render(
            job.session,
            job.node_id,
            job.images,
            on_step=on_step,
            cancel=cancel,
            options=RenderOptions(preview_every=job.preview_every, batch_branches=job.batch),
        )

    def import_image(
        self,
        job: ImportJob,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> tuple[Session, dict[str, np.ndarray]]:
        """A new session whose root is the inverted picture, and its images."""
        import time
        from dataclasses import replace

        from clp2p.workflows.picture_import import import_image

        if self.engine is None:
            raise Clp2pError("no model is loaded: pick one in Model settings")
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if on_step is not None:
                elapsed = time.perf_counter() - start
                on_step(StepInfo(done, total, elapsed, elapsed / max(done, 1) * (total - done)))

        session, images = import_image(
            self.engine,
            job.image,
            job.prompt,
            job.settings,
            job.method,
            fit=job.fit,
            file=job.file,
            inner_steps=job.inner_steps,
            on_step=progress,
            cancel=cancel,
        )
        info = self.info
        return replace(session, device=info.device, dtype=info.dtype), images

    def sweep(
        self,
        job: SweepJob,
        on_item: Callable[[dict, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ):
        """Render a sweep; ``on_item(row, done, total)`` after each item. Returns the
        :class:`~clp2p.workflows.sweep.Report` (its rows: the results table)."""
        from clp2p.workflows.contact_sheet import contact_sheet
        from clp2p.workflows.runner import LocalPool, RayPool, Worker
        from clp2p.workflows.sweep import run_items

        if self.engine is None or self.info is None:
            raise Clp2pError("no model is loaded: pick one in Model settings")
        spec = self.info.spec
        if job.ray:
            pool = RayPool(spec, job.ray, job.workers, gpus=self.info.device != "cpu")
        else:
            pool = LocalPool(Worker(spec, engine=self.engine, renderer=self.renderer))
        with pool:
            return run_items(
                list(job.items),
                job.folder,
                pool,
                job.asked,
                on_item=on_item,
                cancel=cancel,
                sheet=lambda rows, path: contact_sheet(Path(job.folder), rows, path, job.columns),
            )

    def check_edit(self, source: str, target: str, params: EditParams) -> str | None:
        """None when the edit can run, else the message saying what to change. Before a model
        is loaded, the word-level rules are checked (tokens come with the model)."""
        try:
            if self.engine is None:
                resolve_edit(word_tokens(source), word_tokens(target), params)
                return None
            resolve_edit(self.engine.tokens(source), self.engine.tokens(target), params)
        except Clp2pError as exc:
            return str(exc)
        return None


def check_adapters(session: Session, engine: Engine) -> None:
    """Refuse to render a session with other LoRAs or embeddings than the ones it was made
    with: its images would not be its own."""
    have = {(a.kind, a.sha256, a.scale, a.token) for a in engine.adapters}
    want = {(a.kind, a.sha256, a.scale, a.token) for a in session.adapters}
    if have != want:
        names = ", ".join(a.spec() for a in session.adapters) or "none"
        raise Clp2pError(
            f"this session was made with the LoRAs and embeddings: {names}; load the model "
            "with the same ones (Model and device)"
        )
