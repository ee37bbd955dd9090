"""The studio's seam to the engine: every call the studio makes, as a typed protocol.

:class:`clp2p.workflows.service.EngineService` is the real backend; tests drive the studio
with a scriptable fake. Both are checked against :class:`Backend`, signatures included, so
neither can drift from what the studio calls. Messages across the seam are frozen values
(``ModelSpec``, ``RenderJob``, ``ImportJob`` in; ``ModelInfo``, ``NodeRender`` out)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from clp2p.model.params import EditParams
from clp2p.model.session import Session
from clp2p.workflows.service import ImportJob, ModelInfo, ModelSpec, RenderJob, StepInfo
from clp2p.workflows.session_render import NodeRender

OnStep = Callable[[StepInfo], None]
Cancel = Callable[[], bool]


@runtime_checkable
class Backend(Protocol):
    """What the studio asks of the engine. ``load``, ``render`` and ``import_image`` run on the
    engine thread, one at a time; ``check_edit`` runs on the GUI thread and must be quick."""

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

    def check_edit(self, source: str, target: str, params: EditParams) -> str | None:
        """None when the edit of ``source`` into ``target`` can run, else what to change."""
        ...
