"""The attention controller: what every attention layer does to the batch during one render.

Batch layout: ``B`` branches (branch 0 is the root; every other branch is edited from a
branch with a lower index, its source). A step runs the UNet once per group of branches (see
:class:`PassLayout`); with classifier-free guidance a pass's rows are ``[uncond, cond]`` of
its branches. Edits touch the conditional half (and the unconditional half when
``inject_uncond``). Branches are processed in index order, so a branch edited from an edited
branch takes what its source actually used: chains of edits render exactly.

Self-attention injection never materialises the attention matrix: replacing the target's
probabilities ``softmax(Q_t K_t^T)`` by the source's equals attending with the source's queries
and keys to the target's values, so ``scaled_dot_product_attention`` stays on the fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clp2p.attention.blend import LocalBlend
from clp2p.attention.layout import PassLayout
from clp2p.attention.plan import EditPlan
from clp2p.attention.recorder import AttentionRecorder
from clp2p.attention.records import BranchRecord, BranchRecorder, to_host
from clp2p.attention.sources import SourceStore


class AttentionController:
    """Applies the edit plans at each attention layer, identified by its name, and local
    blend after each step.

    With one branch per pass a branch's arithmetic never depends on which other branches
    share the render, so a node renders to the same bits cold from the root or from its
    parent's record. Sources come from :class:`SourceStore` (``source`` is the recorded
    branch that edits with source ``RECORDED`` read); ``records`` fills the records of the
    branches (none without it); ``heatmaps`` gathers the attention statistics."""

    def __init__(
        self,
        plans: list[EditPlan],
        branches: int,
        steps: int,
        guided: bool,
        heatmaps: AttentionRecorder,
        latent_hw: tuple[int, int],
        *,
        source: BranchRecord | None = None,
        records: BranchRecorder | None = None,
        layer_numbers: dict[str, int] | None = None,
    ) -> None:
        self.plans = sorted(plans, key=lambda p: p.branch)
        self.branches, self.steps, self.guided = branches, steps, guided
        self.heatmaps = heatmaps
        self.sources = SourceStore(self.plans, source)
        self.blend = LocalBlend(self.plans, latent_hw, heatmaps.blend, steps, source)
        self.recorder = records if records is not None else BranchRecorder((), 0, steps)
        self.layer_numbers = layer_numbers or {}  # self-attention layer -> its number from 1
        self.step = 0
        self.begin_pass(list(range(branches)))

    @property
    def records(self) -> dict[int, BranchRecord]:
        """The records kept so far, by branch."""
        return self.recorder.records

    def finish(self, images: list, norms: dict | None = None) -> list:
        """The decoded pictures (uint8 (H, W, 3) by branch) as shown: with local blend's
        pixels pasted (:meth:`LocalBlend.paste`), each kept in its branch's record with the
        decoder statistics it was decoded with (``norms``, by branch)."""
        images = self.blend.paste(images, images[0].shape[0] // self.blend.latent_hw[0])
        for b, record in self.records.items():
            record.image = torch.from_numpy(images[b].copy())  # the record owns its picture
            stats = (norms or {}).get(b)  # kept on the host, as the rest of the record
            record.norms = None if stats is None else [tuple(map(to_host, p)) for p in stats]
        return images

    def begin_step(self, step: int) -> None:
        self.step = step
        self.sources.begin_step()
        self.begin_pass(list(range(self.branches)))

    def begin_pass(self, active: list[int]) -> None:
        """The next UNet pass computes ``active`` (ascending branch indices)."""
        self.layout = PassLayout(active, self.guided)
        self._plans = [p for p in self.plans if self.layout.computes(p.branch)]
        self.sources.begin_pass(self.layout)

    def _keep(self, kind: str, layer: str, tensors: tuple[torch.Tensor, ...]) -> None:
        self.sources.keep(kind, layer, self.layout, tensors)
        self.recorder.keep(kind, (self.step, layer), self.layout, tensors)

    # ---- self-attention -------------------------------------------------------------------
    def self_attention(self, layer: str, attn, q, k, v, mask):
        """q, k, v: (rows, heads, pixels, d) at ``layer``. Returns (rows, heads, pixels, d)."""
        pixels = q.shape[2]
        layout, key = self.layout, (self.step, layer)
        for plan in self._plans:
            p = plan.params
            inject_qk = (
                p.self_window.contains(self.step, self.steps)
                and (p.self_res is None or pixels <= p.self_res * p.self_res)
                and (
                    p.self_layers is None
                    or p.self_layers[0] <= self.layer_numbers.get(layer, 0) <= p.self_layers[1]
                )
            )
            inject_v = (
                p.v_blend > 0
                and p.v_layers in ("self", "both")
                and p.v_window.contains(self.step, self.steps)
            )
            if not (inject_qk or inject_v):
                continue
            for h in layout.edited_halves(p.inject_uncond):
                dst = layout.row(plan.branch, h)
                sq, sk, sv = self.sources.get(plan, layout, h, key, "self_qkv", (q, k, v))
                if inject_qk:
                    q[dst] = sq
                    k[dst] = sk
                if inject_v:
                    v[dst] = torch.lerp(v[dst], sv, p.v_blend)
        self._keep("self_qkv", layer, (q, k, v))
        if pixels == self.heatmaps.blend_pixels:
            rows = layout.cond_rows
            self.heatmaps.add_self(q[rows], k[rows], attn.scale, layout.active)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)

    # ---- cross-attention ------------------------------------------------------------------
    def cross_attention(self, layer: str, attn, q, k, v, mask):
        """q: (rows, heads, pixels, d); k, v: (rows, heads, tokens, d) at ``layer``. Returns
        (rows, heads, pixels, d)."""
        pixels = q.shape[2]
        self._inject_values(layer, v)
        scores = q.float() @ k.float().transpose(-1, -2) * attn.scale  # (rows, heads, N, T)
        if mask is not None:
            scores = scores + mask.float()
        probs = scores.softmax(dim=-1)
        self._edit_maps(layer, probs, v)
        self._keep("cross", layer, (probs, v))
        if self.heatmaps.wants_cross(pixels):
            rows = self.layout.cond_rows
            self.heatmaps.add_cross(pixels, probs[rows], self.layout.active)
        return probs.to(v.dtype) @ v

    def _inject_values(self, layer: str, v: torch.Tensor) -> None:
        """V injection into the cross-attention values v (rows, heads, tokens, d), in place."""
        layout, key = self.layout, (self.step, layer)
        for plan in self._plans:
            p = plan.params
            if not (
                p.v_blend > 0
                and p.v_layers in ("cross", "both")
                and p.v_window.contains(self.step, self.steps)
            ):
                continue
            for h in layout.edited_halves(p.inject_uncond):
                dst = layout.row(plan.branch, h)
                # the source's values as its own pass used them (after its V injection)
                sv = self.sources.get(plan, layout, h, key, "cross", (v, v))[1]
                v[dst] = torch.lerp(v[dst], sv, p.v_blend)

    def _edit_maps(self, layer: str, probs: torch.Tensor, v: torch.Tensor) -> None:
        """The edits' cross-attention maps in probs (rows, heads, N, T), in place: inside a
        token's window the target takes the source's map (mapped to its tokens) times the
        re-weight scale."""
        layout, key = self.layout, (self.step, layer)
        for plan in self._plans:
            alpha = plan.cross_alpha[self.step]  # (T,)
            if not bool(alpha.any()):
                continue
            for h in layout.edited_halves(plan.params.inject_uncond):
                dst = layout.row(plan.branch, h)
                src_probs = self.sources.get(plan, layout, h, key, "cross", (probs, v))[0]
                own = probs[dst]
                mapped = src_probs @ plan.mapper  # (heads, N, T)
                base = plan.take * mapped + (1 - plan.take) * own
                probs[dst] = alpha * (base * plan.scale) + (1 - alpha) * own

    # ---- after each scheduler step --------------------------------------------------------
    def end_step(self, latents: torch.Tensor) -> torch.Tensor:
        """Local blend, then the records' latents. latents: (branches, C, h, w)."""
        self.heatmaps.end_step()
        latents = self.blend(self.step, latents, self.heatmaps.blend_sum)
        self.recorder.end_step(self.step, latents, self.heatmaps.blend_sum)
        return latents
