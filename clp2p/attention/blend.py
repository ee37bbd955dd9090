"""Local blend (prompt-to-prompt's LocalBlend with threshold k): after each step from the
edit's ``blend_start``, outside the mask of the blend words (in the source's or the target's
maps) an edit keeps its source's latent; with ``blend_pixels``, its decoded picture also
keeps the source's pixels outside the last mask; with ``blend_norm`` it is decoded with its
source's decoder statistics."""

from __future__ import annotations

import numpy as np
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
        self.masks: dict[int, torch.Tensor] = {}  # branch -> its last mask, (1, h, w) bool

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
            self.masks[plan.branch] = mask
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

    def norm_sources(self) -> dict[int, int]:
        """Branch -> its source (a branch index, or ``RECORDED``) for each ``blend_norm``
        edit that blended: the edits to decode with their source's decoder statistics."""
        return {
            p.branch: p.source for p in self.plans if p.params.blend_norm and p.branch in self.masks
        }

    def paste(self, images: list[np.ndarray], scale: int) -> list[np.ndarray]:
        """``images`` (uint8 (H, W, 3), by branch, ``scale`` pixels per latent cell) with each
        ``blend_pixels`` edit laid over its source's picture (a recorded source's picture,
        or the source branch's as already pasted) through its last mask."""
        out = list(images)
        for plan in self.plans:
            if not (plan.params.blend_pixels and plan.branch in self.masks):
                continue
            recorded = plan.source == RECORDED
            source = self.record.image.numpy() if recorded else out[plan.source]
            out[plan.branch] = lay_over(source, out[plan.branch], self.masks[plan.branch], scale)
        return out


def lay_over(source: np.ndarray, edit: np.ndarray, mask: torch.Tensor, scale: int) -> np.ndarray:
    """``edit`` where the latent ``mask`` (1, h, w) is set, ``source`` elsewhere (both uint8
    (h * scale, w * scale, 3)): the mask at pixel size, its edge softened over half a latent
    cell each side so that no seam shows, and outside that the source's pixels exactly."""
    m = F.interpolate(mask.float().cpu()[None], scale_factor=scale)  # (1, 1, H, W), nearest
    r = scale // 2
    if r:
        m = F.avg_pool2d(m, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    w = m[0, 0, :, :, None].numpy()
    base = source.astype(np.float32)
    return np.rint(base + w * (edit.astype(np.float32) - base)).clip(0, 255).astype(np.uint8)
