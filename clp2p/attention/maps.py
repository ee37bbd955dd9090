"""Attention data returned with a render: per-token cross-attention maps and self-attention
components, as float32 numpy arrays (immutable values that may cross threads). Pure data:
colouring for people is :mod:`clp2p.attention.heatmap`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
