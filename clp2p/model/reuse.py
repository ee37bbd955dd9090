"""What a branch's record keeps for the edits made of it later, and whether an edit finds
what it needs in it.

A child edit reads from its source's branch, per denoising step: the self-attention queries
and keys (inside its self window, at grids up to ``self_res``), the self-attention values (V
injection into self-attention), the cross-attention probabilities (inside any word's cross
window) and values (V injection into cross-attention). A record that keeps all of it for
every step and layer is large (about 200 MiB per step at 512 px on SD 1.5, float32); a
:class:`RecordSpec` keeps only what the edits a session uses need, so the common children
are served from a fraction of it, and :meth:`RecordSpec.lacks` says what an edit needs
beyond it (that edit is then rendered from further up its chain)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from clp2p.model.params import EditParams, StepWindow, step_index


def _hull(windows: Iterable[StepWindow | None]) -> StepWindow | None:
    """The smallest window holding every non-empty one; None when there is none."""
    kept = [w for w in windows if w is not None and not w.empty]
    if not kept:
        return None
    return StepWindow(min(w.start for w in kept), max(w.end for w in kept))


def _covers(outer: StepWindow | None, inner: StepWindow | None, steps: int) -> bool:
    """Whether every step of ``inner`` is a step of ``outer`` (with ``steps`` steps)."""
    if inner is None or inner.empty:
        return True
    first, end = step_index(inner.start, steps), step_index(inner.end, steps)
    if first >= end:
        return True
    return outer is not None and (
        step_index(outer.start, steps) <= first and end <= step_index(outer.end, steps)
    )


@dataclass(frozen=True)
class Needs:
    """What one edit reads from its source's branch."""

    self_qk: StepWindow | None  # steps of self q, k injection
    self_res: int | None  # at grids up to self_res x self_res; None: every grid
    self_v: StepWindow | None  # steps of V injection into self-attention
    cross_probs: StepWindow | None  # steps where some word takes the source's map
    cross_v: StepWindow | None  # steps of V injection into cross-attention

    @classmethod
    def of(cls, params: EditParams) -> Needs:
        v = params.v_window if params.v_blend > 0 else None
        cross = _hull([params.cross.default, *(w for _, w in params.cross.words)])
        return cls(
            self_qk=None if params.self_window.empty else params.self_window,
            self_res=params.self_res,
            self_v=v if params.v_layers in ("self", "both") else None,
            cross_probs=cross,
            cross_v=v if params.v_layers in ("cross", "both") else None,
        )


@dataclass(frozen=True)
class RecordSpec:
    """What a record keeps: self q, k in ``self_qk`` steps at grids of at most
    ``self_pixels`` pixels (None: every grid), self V in ``self_v`` steps, cross-attention
    probabilities in ``cross_probs`` steps and cross V in ``cross_v`` steps (None: never).
    Latents and local-blend maps are always kept (they are small)."""

    self_qk: StepWindow | None = StepWindow(0.0, 1.0)
    self_pixels: int | None = None
    self_v: StepWindow | None = StepWindow(0.0, 1.0)
    cross_probs: StepWindow | None = StepWindow(0.0, 1.0)
    cross_v: StepWindow | None = StepWindow(0.0, 1.0)

    @classmethod
    def serving(cls, edits: Iterable[EditParams], max_self_res: int | None = None) -> RecordSpec:
        """The least that serves every edit of ``edits`` (e.g. the presets and the edits a
        session holds); ``max_self_res`` caps the self-attention grids kept (None: the
        largest the edits ask for)."""
        needs = [Needs.of(p) for p in edits]
        res = [n.self_res for n in needs if n.self_qk is not None]
        side = None if any(r is None for r in res) else max(res, default=0)
        if max_self_res is not None:
            side = max_self_res if side is None else min(side, max_self_res)
        return cls(
            self_qk=_hull(n.self_qk for n in needs),
            self_pixels=None if side is None else side * side,
            self_v=_hull(n.self_v for n in needs),
            cross_probs=_hull(n.cross_probs for n in needs),
            cross_v=_hull(n.cross_v for n in needs),
        )

    def keeps_self(self, step: int, steps: int, pixels: int) -> tuple[bool, bool]:
        """Whether the self-attention (q and k, v) of a layer of ``pixels`` is kept."""
        qk = self.self_qk is not None and self.self_qk.contains(step, steps)
        qk = qk and (self.self_pixels is None or pixels <= self.self_pixels)
        return qk, self.self_v is not None and self.self_v.contains(step, steps)

    def keeps_cross(self, step: int, steps: int) -> tuple[bool, bool]:
        """Whether the cross-attention (probabilities, values) of a step is kept."""
        probs = self.cross_probs is not None and self.cross_probs.contains(step, steps)
        return probs, self.cross_v is not None and self.cross_v.contains(step, steps)

    def lacks(self, params: EditParams, steps: int) -> str:
        """What an edit with ``params`` needs that this record does not keep ("" if
        nothing), in words for people."""
        need = Needs.of(params)
        missing = []
        if need.self_qk is not None and not (
            _covers(self.self_qk, need.self_qk, steps)
            and (
                self.self_pixels is None
                or (need.self_res is not None and need.self_res**2 <= self.self_pixels)
            )
        ):
            grid = "every grid" if need.self_res is None else f"{need.self_res}x{need.self_res}"
            missing.append(f"self-attention at {grid} in steps {need.self_qk.spec()}")
        if not _covers(self.cross_probs, need.cross_probs, steps):
            missing.append(f"cross-attention maps in steps {need.cross_probs.spec()}")
        if not _covers(self.self_v, need.self_v, steps):
            missing.append("self-attention values (V injection)")
        if not _covers(self.cross_v, need.cross_v, steps):
            missing.append("cross-attention values (V injection)")
        return "; ".join(missing)


FULL = RecordSpec()  # every tensor of every step and layer
