"""Local blend (prompt-to-prompt's LocalBlend with threshold k): after each step from the
edit's ``blend_start``, outside the mask of the blend words (in the source's or the target's
maps) an edit keeps its source's latent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clp2p.attention.plan import EditPlan
from clp2p.attention.records import BranchRecord, to_device
from clp2p.model.params import RECORDED, step_index


class LocalBlend:
    """Blends the latents of the edits with ``k > 0`` and blend words, on maps of the blend
    grid ``grid`` (h, w) upsampled to the latent ``latent_hw`` (h, w), each from step
    ``step_index(blend_start, steps)`` on (as LocalBlend's ``start_blend``)."""

    def __init__(
        self,
        plans: list[EditPlan],
        latent_hw: tuple[int, int],
        grid: tuple[int, int],
        steps: int,
        record: BranchRecord | None = None,
    ) -> None:
        self.plans = [p for p in plans if p.params.k > 0 and (p.blend_source or p.blend_target)]
        self.first = {p.branch: step_index(p.params.blend_start, steps) for p in self.plans}
        self.latent_hw = latent_hw
        self.grid = grid
        self.record = record

    def __call__(self, step: int, latents: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """latents: (branches, C, h, w) after ``step``; maps: (branches, pixels, tokens) the
        cumulative cross-attention maps at the blend grid. Returns the blended latents."""
        due = [plan for plan in self.plans if step >= self.first[plan.branch]]
        if not due:
            return latents
        latents = latents.clone()
        for plan in due:
            if plan.source == RECORDED:
                src = to_device(self.record.latents[step], latents)
                src_maps = to_device(self.record.blend_sum[step], maps)
            else:
                src, src_maps = latents[plan.source], maps[plan.source]
            k = plan.params.k
            mask = self._mask(src_maps, plan.blend_source, k)
            mask |= self._mask(maps[plan.branch], plan.blend_target, k)
            latents[plan.branch] = src + mask.to(latents.dtype) * (latents[plan.branch] - src)
        return latents

    def _mask(self, maps: torch.Tensor, tokens: list[int], k: float) -> torch.Tensor:
        """(1, h, w) bool at the latent size: where the maps (pixels, tokens) of ``tokens``,
        max-pooled and normalised by their maximum, exceed ``k``."""
        if not tokens:
            return torch.zeros(1, *self.latent_hw, dtype=torch.bool, device=maps.device)
        gh, gw = self.grid
        m = maps[:, tokens].sum(dim=-1).reshape(1, 1, gh, gw)  # (1, 1, gh, gw)
        m = F.max_pool2d(m, kernel_size=3, stride=1, padding=1)
        m = F.interpolate(m, size=self.latent_hw)  # nearest, as prompt-to-prompt
        m = m / m.max().clamp_min(1e-12)
        return m[0] > k  # (1, h, w)
