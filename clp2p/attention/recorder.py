"""Heatmap statistics of a render: running per-step means of the attention of every branch,
in bounded memory, turned into :class:`AttentionMaps` at the end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clp2p.attention.maps import AttentionMaps
from clp2p.model.align import PromptTokens


@dataclass(frozen=True)
class HeatmapOptions:
    """Which attention data a render keeps: per-step cross-attention maps for grids of at
    most ``max_pixels`` pixels, and ``components`` self-attention SVD components."""

    max_pixels: int = 32 * 32
    components: int = 6


class AttentionRecorder:
    """Running per-step means of the conditional branches' attention (bounded memory).

    Cross-attention: per grid, the mean over heads and layers of each step, kept for grids of
    at most ``options.max_pixels`` pixels (prompt tokens only), plus a running sum over steps
    at the blend grid for local blend. Self-attention: the running sum of the head-mean
    probabilities at the blend grid, for ``options.components`` SVD components.
    """

    def __init__(
        self,
        branches: int,
        tokens: int,
        grids: dict[int, tuple[int, int]],
        blend: tuple[int, int],
        options: HeatmapOptions,
        device: torch.device,
    ) -> None:
        self.branches, self.tokens, self.grids = branches, tokens, grids
        self.options = options
        self.blend_pixels = blend[0] * blend[1]
        self.blend = blend
        self.keep = {n for n in grids if n <= options.max_pixels} | {self.blend_pixels}
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

    def result(self, prompts: tuple[PromptTokens, ...]) -> AttentionMaps:
        """The statistics of the whole render, for the branches' ``prompts``."""
        components = self.options.components
        cross = {}
        for pixels, steps in self.per_step.items():
            if not steps:
                continue
            h, w = self.grids[pixels]
            data = np.stack(steps)  # (steps, B, N, T)
            # (steps, B, h, w, T)
            cross[(h, w)] = data.reshape(data.shape[0], self.branches, h, w, self.tokens)
        h, w = self.blend
        comps = np.zeros((self.branches, components, h, w), dtype=np.float32)
        sing = np.zeros((self.branches, components), dtype=np.float32)
        if bool(self.self_count.any()):
            counts = self.self_count.clamp_min(1).view(-1, 1, 1)
            mean = (self.self_sum / counts).float().cpu().numpy()  # (B, N, N)
            for b in range(self.branches):
                m = mean[b] - mean[b].mean(axis=1, keepdims=True)
                _, s, vh = np.linalg.svd(m.astype(np.float64))
                n = min(components, len(s))
                comps[b, :n] = vh[:n].reshape(n, h, w)  # (n, h, w): components as maps
                sing[b, :n] = s[:n]
        return AttentionMaps(prompts, cross, self.blend, self.blend, comps, sing)
