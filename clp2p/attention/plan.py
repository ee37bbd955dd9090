"""From resolved edits (see :mod:`clp2p.model.edits`) to the tensors the controller applies:
the token mappers, re-weight scales, blend tokens and per-step cross-attention windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clp2p.model.align import (
    PromptTokens,
    refine_mapper,
    swap_mapper,
)
from clp2p.model.params import RECORDED, Branch, EditParams, step_index


@dataclass
class EditPlan:
    """Tensors of one edited branch, built once per render (see :mod:`clp2p.model.align`).
    ``T`` is the model's token length."""

    branch: int
    source: int  # an earlier branch, or RECORDED
    params: EditParams
    mapper: torch.Tensor  # (T, T) float32
    take: torch.Tensor  # (T,) 1 = take the source's map
    scale: torch.Tensor  # (T,) re-weight scales
    cross_alpha: torch.Tensor  # (steps, T) 1 inside the token's cross-attention window
    blend_source: list[int]  # token positions of the blend words in the source prompt
    blend_target: list[int]  # ... and in the target prompt


def cross_alpha(params: EditParams, tgt: PromptTokens, steps: int, length: int) -> np.ndarray:
    """(steps, length) 1 where a target token takes the edited cross-attention map."""
    alpha = np.zeros((steps, length), dtype=np.float32)
    windows = [(list(range(length)), params.cross.default)]
    windows += [(tgt.find(w), win) for w, win in params.cross.words]
    for tokens, win in windows:
        a, b = step_index(win.start, steps), step_index(win.end, steps)
        alpha[:, tokens] = 0.0
        alpha[a:b, tokens] = 1.0
    return alpha


def build_plan(
    branch: int,
    source: int,
    src: PromptTokens,
    tgt: PromptTokens,
    params: EditParams,
    steps: int,
    length: int,
    device: torch.device,
) -> EditPlan:
    """Tensors for one resolved edit (``params.kind`` is not ``auto``)."""
    if params.kind == "refine":
        mapper, take = refine_mapper(src, tgt, length, params.refine_pad)
    else:
        mapper, take = swap_mapper(src, tgt, length), np.ones(length, dtype=np.float32)
    scale = np.ones(length, dtype=np.float32)
    for word, value in params.reweight:
        scale[tgt.find(word)] = value
    blend_src = sorted({i for w in params.blend_words for i in src.find(w)})
    blend_tgt = sorted({i for w in params.blend_words for i in tgt.find(w)})

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    return EditPlan(
        branch=branch,
        source=source,
        params=params,
        mapper=dev(mapper),
        take=dev(take),
        scale=dev(scale),
        cross_alpha=dev(cross_alpha(params, tgt, steps, length)),
        blend_source=blend_src,
        blend_target=blend_tgt,
    )


def build_plans(
    branches: tuple[Branch, ...],
    prompts: tuple[PromptTokens, ...],
    recorded: PromptTokens | None,
    steps: int,
    length: int,
    device: torch.device,
) -> list[EditPlan]:
    """The plan of every edited branch (resolved ``branches`` and their prompts' tokens);
    ``recorded``: the tokens of the recorded source that edits with source ``RECORDED``
    take."""
    return [
        build_plan(
            i,
            b.source,
            recorded if b.source == RECORDED else prompts[b.source],
            prompts[i],
            b.edit,
            steps,
            length,
            device,
        )
        for i, b in enumerate(branches)
        if b.source is not None
    ]
