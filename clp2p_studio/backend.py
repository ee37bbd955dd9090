"""The studio's seam to the engine: every call the studio makes, as a typed protocol.

:class:`clp2p.workflows.service.EngineService` is the real backend; tests drive the studio
with a scriptable fake. Both are checked against :class:`Backend`, signatures included, so
neither can drift from what the studio calls. Messages across the seam are frozen values
(``ModelSpec``, ``RenderJob``, ``ImportJob``, ``SweepJob`` in; ``ModelInfo``, ``NodeRender``
out; a sweep's ``Report`` is made on the engine thread and not touched there again)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from clp2p.model.params import EditParams
from clp2p.model.session import Session
from clp2p.workflows.service import (
    ImportJob,
    ModelInfo,
    ModelSpec,
    RenderJob,
    StepInfo,
    SweepJob,
)
from clp2p.workflows.session_render import NodeRender

OnStep = Callable[[StepInfo], None]
OnItem = Callable[[dict, int, int], None]  # a sweep's results row, items done, items in all
Cancel = Callable[[], bool]


@runtime_checkable
class Backend(Protocol):
    """What the studio asks of the engine. ``load``, ``render``, ``import_image`` and ``sweep``
    run on the engine thread, one at a time; ``check_edit`` runs on the GUI thread and must be
    quick."""

    def load(self, spec: ModelSpec) -> ModelInfo:
        """Load the model of ``spec`` (a new cache budget alone keeps the loaded model)."""
        ...

    def render(
        self,
        job: RenderJob,
        on_step: OnStep | None = None,
        cancel: Cancel | None = None,
    ) -> NodeRender:
        """Render one node of a session snapshot; ``cancel`` is polled before every step."""
        ...

    def import_image(
        self,
        job: ImportJob,
        on_step: OnStep | None = None,
        cancel: Cancel | None = None,
    ) -> tuple[Session, dict[str, np.ndarray]]:
        """Invert a picture into a new session, and that session's images (hash -> RGB)."""
        ...

    def sweep(
        self,
        job: SweepJob,
        on_item: OnItem | None = None,
        cancel: Cancel | None = None,
    ):
        """Render a sweep's items into ``job.folder``; ``on_item(row, done, total)`` after each
        item; ``cancel`` is polled between items. Returns the
        :class:`~clp2p.workflows.sweep.Report`, whose rows are the results table. (No return
        annotation: the service declares none, and the two must match.)"""
        ...

    def check_edit(self, source: str, target: str, params: EditParams) -> str | None:
        """None when the edit of ``source`` into ``target`` can run, else what to change."""
        ...
