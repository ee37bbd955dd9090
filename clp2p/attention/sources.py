"""Where an edit finds its source's attention tensors at a layer: in the rows of the same UNet
pass, in the step buffer (a source computed in an earlier pass of the step), or in the
recorded source of an earlier render."""

from __future__ import annotations

import torch

from clp2p.attention.layout import PassLayout
from clp2p.attention.plan import EditPlan
from clp2p.attention.records import BranchRecord, LayerKey, to_device
from clp2p.model.params import RECORDED

KINDS = ("self_qkv", "cross")  # self-attention (q, k, v); cross-attention (probabilities, v)


class SourceStore:
    """The sources' tensors of the current step, for the edits of a render.

    A source computed in an earlier pass of the step than one of its edits has its tensors
    (all halves) buffered until the step ends; an edit whose ``source`` is :data:`RECORDED`
    reads ``record`` (conditional half only)."""

    def __init__(self, plans: list[EditPlan], record: BranchRecord | None = None) -> None:
        self.plans = plans
        self.record = record
        # kind -> source branch -> layer -> its tensors (rows of every half) in this step
        self._buffers: dict[str, dict[int, dict[str, tuple[torch.Tensor, ...]]]] = {
            kind: {} for kind in KINDS
        }
        self._buffered: set[int] = set()

    def begin_step(self) -> None:
        for buffer in self._buffers.values():
            buffer.clear()

    def begin_pass(self, layout: PassLayout) -> None:
        """Sources in this pass whose edits come in a later pass get buffered."""
        self._buffered = {
            p.source
            for p in self.plans
            if layout.computes(p.source) and not layout.computes(p.branch)
        }

    def get(
        self, plan: EditPlan, layout: PassLayout, half: int, key: LayerKey, kind: str, tensors
    ) -> tuple[torch.Tensor, ...]:
        """The source's ``kind`` tensors for half ``half`` at the layer of ``key``, each
        (heads, ...): from ``tensors`` (this pass's, (rows, heads, ...)) when the source is in
        this pass, else from the step buffer or the record."""
        if plan.source == RECORDED:
            if half != layout.cond_half:
                raise ValueError(
                    f"branch {plan.branch} edits the unconditional half, "
                    "which a record does not keep"
                )
            kept = getattr(self.record, kind).get(key)
            if kept is None:  # the caller checked RecordSpec.lacks: this is a fault
                raise ValueError(f"the record has no {kind} tensors at step {key[0]}, {key[1]}")
            return tuple(to_device(None if t is None else t[0], tensors[0]) for t in kept)
        if layout.computes(plan.source):
            row = layout.row(plan.source, half)
            return tuple(t[row] for t in tensors)
        return tuple(t[half] for t in self._buffers[kind][plan.source][key[1]])

    def keep(self, kind: str, layer: str, layout: PassLayout, tensors) -> None:
        """Buffer this pass's ``kind`` tensors of the sources edited in later passes."""
        for b in self._buffered:
            rows = layout.rows(b)
            self._buffers[kind].setdefault(b, {})[layer] = tuple(t[rows] for t in tensors)
