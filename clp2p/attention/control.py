"""The attention controller: what every attention layer does to the batch during one render.

Batch layout: ``B`` branches (branch 0 is the root; every other branch is edited from a
branch with a lower index, its source). With classifier-free guidance the UNet batch is
``[uncond x B, cond x B]``; edits touch the conditional half (and the unconditional half when
``inject_uncond``). Branches are processed in index order, so a branch edited from an edited
branch takes what its source actually used: chains of edits render exactly.

Self-attention injection never materialises the attention matrix: replacing the target's
probabilities ``softmax(Q_t K_t^T)`` by the source's equals attending with the source's queries
and keys to the target's values, so ``scaled_dot_product_attention`` stays on the fast path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clp2p.attention.maps import AttentionMaps
from clp2p.model.align import PromptTokens
from clp2p.model.params import EditParams


@dataclass
class EditPlan:
    """Tensors of one edited branch, built once per render (see :mod:`clp2p.align`)."""

    branch: int
    source: int
    params: EditParams
    mapper: torch.Tensor  # (T, T) float32
    take: torch.Tensor  # (T,) 1 = take the source's map
    scale: torch.Tensor  # (T,) re-weight scales
    cross_alpha: torch.Tensor  # (steps, T) 1 inside the token's cross-attention window
    blend_source: list[int]  # token positions of the blend words in the source prompt
    blend_target: list[int]  # ... and in the target prompt


def attention_grids(unet_config, latent_hw: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """Attention grid (h, w) of each UNet level that has attention, keyed by pixel count.

    Level ``l`` works on the latent downsampled ``l`` times (stride-2 convs: ceil halving).
    """
    h, w = latent_hw
    levels = {i for i, t in enumerate(unet_config.down_block_types) if "Attn" in t}
    levels |= {
        len(unet_config.up_block_types) - 1 - i
        for i, t in enumerate(unet_config.up_block_types)
        if "Attn" in t
    }
    mid = getattr(unet_config, "mid_block_type", None) or ""
    if "Attn" in mid:
        levels.add(len(unet_config.down_block_types) - 1)
    grids = {}
    for level in sorted(levels):
        gh, gw = h, w
        for _ in range(level):
            gh, gw = -(-gh // 2), -(-gw // 2)
        grids[gh * gw] = (gh, gw)
    return grids


def blend_grid(grids: dict[int, tuple[int, int]], latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The grid local blend and heatmaps use by default: the largest attention grid whose side
    is at most a quarter of the latent's (16x16 for SD 1.x at 512 px), else the smallest."""
    limit = max(latent_hw) // 4
    fitting = [g for g in grids.values() if max(g) <= limit]
    pool = fitting or list(grids.values())
    return max(pool, key=lambda g: g[0] * g[1]) if fitting else min(pool, key=lambda g: g[0] * g[1])


class AttentionRecorder:
    """Running per-step means of the conditional branches' attention (bounded memory).

    Cross-attention: per grid, the mean over heads and layers of each step, kept for grids of
    at most ``max_pixels`` pixels (prompt tokens only), plus a running sum over steps at the
    blend grid for local blend. Self-attention: the running sum of the head-mean
    probabilities at the blend grid, for the SVD components.
    """

    def __init__(
        self,
        branches: int,
        tokens: int,
        grids: dict[int, tuple[int, int]],
        blend: tuple[int, int],
        max_pixels: int,
        device: torch.device,
    ) -> None:
        self.branches, self.tokens, self.grids = branches, tokens, grids
        self.blend_pixels = blend[0] * blend[1]
        self.blend = blend
        self.keep = {n for n in grids if n <= max_pixels} | {self.blend_pixels}
        self.device = device
        self._step_sum: dict[int, torch.Tensor] = {}
        self._step_count: dict[int, torch.Tensor] = {}
        self.per_step: dict[int, list[np.ndarray]] = {n: [] for n in self.keep}
        self.blend_sum = torch.zeros(branches, self.blend_pixels, tokens, device=device)
        self.self_sum = torch.zeros(branches, self.blend_pixels, self.blend_pixels, device=device)
        self.self_count = torch.zeros(branches, device=device)

    def wants_cross(self, pixels: int) -> bool:
        return pixels in self.keep

    def add_cross(self, pixels: int, maps: torch.Tensor, branches: list[int]) -> None:
        """maps: (len(branches), heads, pixels, T) probabilities of the conditional rows of
        ``branches``."""
        mean = maps[..., : self.tokens].mean(dim=1)  # (b, N, T_used)
        if pixels not in self._step_sum:
            self._step_sum[pixels] = torch.zeros(
                self.branches, *mean.shape[1:], dtype=mean.dtype, device=mean.device
            )
            self._step_count[pixels] = torch.zeros(self.branches, device=mean.device)
        self._step_sum[pixels][branches] += mean
        self._step_count[pixels][branches] += 1

    def add_self(self, q: torch.Tensor, k: torch.Tensor, scale: float, branches: list[int]):
        """q, k: (len(branches), heads, pixels, d) of the conditional rows at the blend grid."""
        probs = (q.float() @ k.float().transpose(-1, -2) * scale).softmax(dim=-1)
        self.self_sum[branches] += probs.mean(dim=1)  # (b, N, N)
        self.self_count[branches] += 1

    def end_step(self) -> None:
        for pixels, total in self._step_sum.items():
            mean = total / self._step_count[pixels].clamp_min(1).view(-1, 1, 1).to(total.dtype)
            if pixels == self.blend_pixels:
                self.blend_sum += mean
            self.per_step[pixels].append(mean.float().cpu().numpy())
        self._step_sum.clear()
        self._step_count.clear()

    def result(self, prompts: tuple[PromptTokens, ...], components: int = 6) -> AttentionMaps:
        cross = {}
        for pixels, steps in self.per_step.items():
            if not steps:
                continue
            h, w = self.grids[pixels]
            data = np.stack(steps)  # (steps, B, N, T)
            cross[(h, w)] = data.reshape(data.shape[0], self.branches, h, w, self.tokens)
        h, w = self.blend
        comps = np.zeros((self.branches, components, h, w), dtype=np.float32)
        sing = np.zeros((self.branches, components), dtype=np.float32)
        if bool(self.self_count.any()):
            counts = self.self_count.clamp_min(1).view(-1, 1, 1)
            mean = (self.self_sum / counts).float().cpu().numpy()
            for b in range(self.branches):
                m = mean[b] - mean[b].mean(axis=1, keepdims=True)
                _, s, vh = np.linalg.svd(m.astype(np.float64))
                n = min(components, len(s))
                comps[b, :n] = vh[:n].reshape(n, h, w)
                sing[b, :n] = s[:n]
        return AttentionMaps(prompts, cross, self.blend, self.blend, comps, sing)


@dataclass
class BranchRecord:
    """What an edit of a branch needs from it, per step and attention call: the queries,
    keys and values its self-attention used, the probabilities and values its
    cross-attention used, and after each step its latent and cumulative blend maps. Tensors
    are (1, heads, ...): only the conditional half of guidance is kept (an edit that also
    edits the unconditional half is rendered from its source's own branch instead)."""

    prompt: str
    tokens: int  # token positions kept in blend_sum
    self_qkv: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    cross: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]
    latents: list[torch.Tensor]  # per step, (C, h, w)
    blend_sum: list[torch.Tensor]  # per step, (pixels, tokens)

    @property
    def nbytes(self) -> int:
        tensors = [t for qkv in self.self_qkv.values() for t in qkv]
        tensors += [t for pv in self.cross.values() for t in pv]
        tensors += self.latents + self.blend_sum
        return sum(t.numel() * t.element_size() for t in tensors)


RECORDED = -1  # the source index of an edit whose source is a BranchRecord


class AttentionController:
    """Applies the edit plans at each attention layer and local blend after each step.

    A step runs the UNet once per group of branches (:meth:`begin_call`): all branches in one
    batch, or one branch at a time. With one branch per call a branch's arithmetic never
    depends on which other branches share the render, so a node renders to the same bits
    cold from the root or from its parent's record. A source computed in an earlier call of
    the step is read from the step buffer.

    An edit whose ``source`` is :data:`RECORDED` takes its source's tensors from
    ``source_record`` instead; branches listed in ``record`` have theirs kept in
    :attr:`records` for later edits of them."""

    def __init__(
        self,
        plans: list[EditPlan],
        branches: int,
        steps: int,
        guided: bool,
        recorder: AttentionRecorder,
        latent_hw: tuple[int, int],
        source_record: BranchRecord | None = None,
        record: tuple[int, ...] = (),
        prompts: tuple[str, ...] = (),
        record_limit: int | None = None,
    ) -> None:
        self.plans = sorted(plans, key=lambda p: p.branch)
        self.branches, self.steps, self.guided = branches, steps, guided
        self.recorder = recorder
        self.latent_hw = latent_hw
        self.step = 0
        self.call = 0  # attention call index within a UNet pass: identifies the layer
        self.source_record = source_record
        self.records = {
            b: BranchRecord(prompts[b] if prompts else "", recorder.tokens, {}, {}, [], [])
            for b in record
        }
        # After the first step, records are projected over the whole render and only the
        # deepest branches that fit in this many bytes are kept, so a large model never fills
        # the device with them.
        self.record_limit = record_limit
        self._sources = {p.source for p in self.plans if p.source >= 0}
        # kind -> source branch -> call index -> its tensors (all halves) in the current step
        self._buffers: dict[str, dict[int, dict[int, tuple[torch.Tensor, ...]]]] = {
            "self_qkv": {},
            "cross": {},
        }
        self.begin_call(list(range(branches)))

    def begin_step(self, step: int) -> None:
        self.step = step
        for buffer in self._buffers.values():
            buffer.clear()
        self.begin_call(list(range(self.branches)))

    def begin_call(self, active: list[int]) -> None:
        """The next UNet pass computes ``active`` (ascending branch indices): its rows are
        ``[uncond of active, cond of active]`` with guidance, else ``[active]``."""
        self.active = active
        self.call = 0
        self._pos = {b: i for i, b in enumerate(active)}
        n = len(active)
        self.half_offsets = (0, n) if self.guided else (0,)
        self.cond = n if self.guided else 0  # row offset of the conditional half
        self._plans = [p for p in self.plans if p.branch in self._pos]
        self._buffered = {
            p.source for p in self.plans if p.source in self._pos and p.branch not in self._pos
        }

    def _halves(self, plan: EditPlan) -> tuple[int, ...]:
        """Indices into ``half_offsets`` that the plan edits."""
        if self.guided and plan.params.inject_uncond:
            return (0, 1)
        return (len(self.half_offsets) - 1,)

    def _row(self, branch: int, h: int) -> int:
        return self.half_offsets[h] + self._pos[branch]

    def _branch_rows(self, branch: int) -> list[int]:
        """Every row of ``branch`` in this call (unconditional first)."""
        return [offset + self._pos[branch] for offset in self.half_offsets]

    def _source(self, plan: EditPlan, h: int, tensors, kind: str) -> tuple[torch.Tensor, ...]:
        """The source's ``kind`` tensors (``self_qkv`` or ``cross``) for half ``h``: from this
        call's rows, the step buffer, or the recorded source (conditional half only)."""
        if plan.source == RECORDED:
            if h != len(self.half_offsets) - 1:
                raise ValueError(
                    f"branch {plan.branch} edits the unconditional half, "
                    "which a record does not keep"
                )
            recorded = getattr(self.source_record, kind)[(self.step, self.call)]
            return tuple(t[0] for t in recorded)
        if plan.source in self._pos:
            row = self._row(plan.source, h)
            return tuple(t[row] for t in tensors)
        return tuple(t[h] for t in self._buffers[kind][plan.source][self.call])

    def _keep(self, kind: str, tensors: tuple[torch.Tensor, ...]) -> None:
        """Buffer this call's ``kind`` tensors of the sources of later calls, and record the
        conditional rows of recorded branches."""
        for b in self._buffered:
            rows = self._branch_rows(b)
            self._buffers[kind].setdefault(b, {})[self.call] = tuple(t[rows] for t in tensors)
        for b in self.records.keys() & self._pos.keys():
            # indexing with a list already copies: the record owns its tensors
            rows = [self.cond + self._pos[b]]
            getattr(self.records[b], kind)[(self.step, self.call)] = tuple(t[rows] for t in tensors)

    # ---- self-attention -------------------------------------------------------------------
    def self_attention(self, attn, q, k, v, mask):
        """q, k, v: (rows, heads, pixels, d). Returns (rows, heads, pixels, d)."""
        pixels = q.shape[2]
        for plan in self._plans:
            p = plan.params
            inject_qk = p.self_window.contains(self.step, self.steps) and (
                p.self_res is None or pixels <= p.self_res * p.self_res
            )
            inject_v = (
                p.v_blend > 0
                and p.v_layers in ("self", "both")
                and p.v_window.contains(self.step, self.steps)
            )
            if not (inject_qk or inject_v):
                continue
            for h in self._halves(plan):
                dst = self._row(plan.branch, h)
                sq, sk, sv = self._source(plan, h, (q, k, v), "self_qkv")
                if inject_qk:
                    q[dst] = sq
                    k[dst] = sk
                if inject_v:
                    v[dst] = torch.lerp(v[dst], sv, p.v_blend)
        self._keep("self_qkv", (q, k, v))
        if pixels == self.recorder.blend_pixels:
            rows = slice(self.cond, self.cond + len(self.active))
            self.recorder.add_self(q[rows], k[rows], attn.scale, self.active)
        self.call += 1
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)

    # ---- cross-attention ------------------------------------------------------------------
    def cross_attention(self, attn, q, k, v, mask):
        """q: (rows, heads, pixels, d); k, v: (rows, heads, tokens, d)."""
        pixels = q.shape[2]
        for plan in self._plans:
            p = plan.params
            if (
                p.v_blend > 0
                and p.v_layers in ("cross", "both")
                and p.v_window.contains(self.step, self.steps)
            ):
                for h in self._halves(plan):
                    dst = self._row(plan.branch, h)
                    # the source's values as its own call used them (after its V injection)
                    sv = self._source(plan, h, (v, v), "cross")[1]
                    v[dst] = torch.lerp(v[dst], sv, p.v_blend)
        scores = q.float() @ k.float().transpose(-1, -2) * attn.scale  # (rows, heads, N, T)
        if mask is not None:
            scores = scores + mask.float()
        probs = scores.softmax(dim=-1)
        for plan in self._plans:
            alpha = plan.cross_alpha[self.step]
            if not bool(alpha.any()):
                continue
            for h in self._halves(plan):
                dst = self._row(plan.branch, h)
                src_probs = self._source(plan, h, (probs, v), "cross")[0]
                own = probs[dst]
                mapped = src_probs @ plan.mapper  # (heads, N, T)
                base = plan.take * mapped + (1 - plan.take) * own
                probs[dst] = alpha * (base * plan.scale) + (1 - alpha) * own
        self._keep("cross", (probs, v))
        if self.recorder.wants_cross(pixels):
            rows = slice(self.cond, self.cond + len(self.active))
            self.recorder.add_cross(pixels, probs[rows], self.active)
        self.call += 1
        return probs.to(v.dtype) @ v

    # ---- after each scheduler step --------------------------------------------------------
    def end_step(self, latents: torch.Tensor) -> torch.Tensor:
        """Local blend (prompt-to-prompt's LocalBlend with threshold k): outside the mask of
        the blend words (source or target), the target keeps its source's latent.

        latents: (branches, C, h, w)."""
        self.recorder.end_step()
        blended = [p for p in self.plans if p.params.k > 0 and (p.blend_source or p.blend_target)]
        if blended:
            latents = latents.clone()
            maps = self.recorder.blend_sum  # (B, N, T)
            gh, gw = self.recorder.blend
            for plan in blended:
                if plan.source == RECORDED:
                    src = self.source_record.latents[self.step]
                    src_maps = self.source_record.blend_sum[self.step]
                else:
                    src, src_maps = latents[plan.source], maps[plan.source]
                mask = self._mask(src_maps, plan.blend_source, plan.params.k, gh, gw)
                mask |= self._mask(maps[plan.branch], plan.blend_target, plan.params.k, gh, gw)
                latents[plan.branch] = src + mask.to(latents.dtype) * (latents[plan.branch] - src)
        for b, rec in self.records.items():
            rec.latents.append(latents[b].clone())
            rec.blend_sum.append(self.recorder.blend_sum[b].clone())
        if self.records and self.record_limit is not None and self.step == 0:
            kept, total = {}, 0
            for b in sorted(self.records, reverse=True):  # the deepest branches first
                size = self.records[b].nbytes * self.steps
                if total + size <= self.record_limit:
                    kept[b] = self.records[b]
                    total += size
            self.records = kept
        return latents

    def _mask(self, maps: torch.Tensor, tokens: list[int], k: float, gh: int, gw: int):
        if not tokens:
            return torch.zeros(1, *self.latent_hw, dtype=torch.bool, device=maps.device)
        m = maps[:, tokens].sum(dim=-1).reshape(1, 1, gh, gw)
        m = F.max_pool2d(m, kernel_size=3, stride=1, padding=1)
        m = F.interpolate(m, size=self.latent_hw)  # nearest, as prompt-to-prompt
        m = m / m.max().clamp_min(1e-12)
        return m[0] > k  # (1, h, w)
