"""Attention data returned with a render: per-token cross-attention maps and self-attention
components, as float32 numpy arrays (immutable values that may cross threads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clp2p.model.align import PromptTokens


@dataclass(frozen=True)
class AttentionMaps:
    """Cross-attention maps of every branch, averaged over heads and over the layers of each
    attention grid, kept per denoising step for grids of at most ``max_pixels`` pixels, and
    the top self-attention components (SVD) of one grid, averaged over all steps.

    ``cross[(h, w)]``: (steps, branches, h, w, tokens) float32, tokens = positions 0..T_used-1
    (start token, prompt tokens, end token). ``self_components``: (branches, k, h, w),
    ``self_singular``: (branches, k).
    """

    prompts: tuple[PromptTokens, ...]
    cross: dict[tuple[int, int], np.ndarray]
    default_grid: tuple[int, int]
    self_grid: tuple[int, int]
    self_components: np.ndarray
    self_singular: np.ndarray

    @property
    def grids(self) -> list[tuple[int, int]]:
        return sorted(self.cross, key=lambda g: g[0] * g[1])

    def token_maps(
        self,
        branch: int,
        grid: tuple[int, int] | None = None,
        steps: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Mean cross-attention map of every token of ``branch`` over the step range
        ``[a, b)`` (all steps by default): (tokens, h, w)."""
        data = self.cross[grid or self.default_grid]
        a, b = steps if steps is not None else (0, data.shape[0])
        if not 0 <= a < b <= data.shape[0]:
            raise ValueError(f"step range {a}:{b} is outside 0:{data.shape[0]}")
        length = self.prompts[branch].length
        return data[a:b, branch, :, :, :length].mean(axis=0).transpose(2, 0, 1)

    def word_map(
        self,
        branch: int,
        word: str,
        grid: tuple[int, int] | None = None,
        steps: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Mean map of ``word``'s tokens (h, w); a word of several tokens averages them."""
        positions = self.prompts[branch].find(word)
        if not positions:
            raise KeyError(f"'{word}' is not a word of '{self.prompts[branch].prompt}'")
        return self.token_maps(branch, grid, steps)[positions].mean(axis=0)


def upsample(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of a (h, w) map to ``size`` = (H, W), clipped at 0."""
    t = torch.from_numpy(np.ascontiguousarray(map2d, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=size, mode="bicubic", align_corners=False)[0, 0]
    return out.clamp_min(0).numpy()


def normalise(map2d: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] by its maximum (prompt-to-prompt's display normalisation)."""
    peak = float(map2d.max())
    return map2d / peak if peak > 0 else np.zeros_like(map2d)


_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def colourise(map01: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (h, w) to an inferno-like RGB uint8 image (h, w, 3)."""
    x = np.clip(map01, 0.0, 1.0) * (len(_COLOURS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_COLOURS) - 2)
    frac = (x - lo)[..., None]
    rgb = _COLOURS[lo] * (1 - frac) + _COLOURS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def overlay(image: np.ndarray, map2d: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """Blend a normalised heatmap over an RGB uint8 image (H, W, 3) of any size."""
    heat = colourise(normalise(upsample(map2d, image.shape[:2])))
    out = image.astype(np.float32) * (1 - opacity) + heat.astype(np.float32) * opacity
    return out.round().clip(0, 255).astype(np.uint8)


def merge_branches(parts: list[tuple[AttentionMaps, int]]) -> AttentionMaps:
    """One :class:`AttentionMaps` holding branch ``i`` of each part, in order (e.g. a node's
    source from an earlier render and the node from a later one). Grids present in every part
    are kept; token axes are padded with zeros to the longest."""
    grids = set(parts[0][0].cross)
    for maps, _ in parts[1:]:
        grids &= set(maps.cross)
    steps = min(maps.cross[g].shape[0] for maps, _ in parts for g in grids) if grids else 0
    tokens = max(maps.cross[g].shape[-1] for maps, _ in parts for g in grids) if grids else 0
    cross = {}
    for g in grids:
        rows = []
        for maps, i in parts:
            data = maps.cross[g][:steps, i]
            pad = tokens - data.shape[-1]
            rows.append(np.pad(data, [(0, 0)] * (data.ndim - 1) + [(0, pad)]) if pad else data)
        cross[g] = np.stack(rows, axis=1)
    first = parts[0][0]
    same_self = all(m.self_grid == first.self_grid for m, _ in parts)
    comps = (
        np.stack([m.self_components[i] for m, i in parts])
        if same_self
        else first.self_components[:0]
    )
    sing = (
        np.stack([m.self_singular[i] for m, i in parts]) if same_self else first.self_singular[:0]
    )
    default = (
        first.default_grid if first.default_grid in grids else (min(grids) if grids else (0, 0))
    )
    return AttentionMaps(
        tuple(m.prompts[i] for m, i in parts), cross, default, first.self_grid, comps, sing
    )
