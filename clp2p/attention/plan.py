"""From user-level edits to the tensors the controller applies: resolving ``auto`` kinds and
default blend words, validating words against the prompts, and building the token mappers
and per-step windows."""

from __future__ import annotations

import numpy as np
import torch

from clp2p.attention.control import EditPlan
from clp2p.errors import Clp2pError
from clp2p.model.align import (
    PromptTokens,
    normalise_word,
    refine_mapper,
    swap_mapper,
    word_positions,
)
from clp2p.model.params import Branch, EditParams, _step_index


def _changed_words(src: PromptTokens, tgt: PromptTokens) -> tuple[list[str], list[str]]:
    """Words that differ between the prompts: (source side, target side)."""
    a = [normalise_word(w) for w in src.words]
    b = [normalise_word(w) for w in tgt.words]
    if len(a) == len(b):
        pairs = [(x, y) for x, y in zip(src.words, tgt.words, strict=True)]
        diff = [(x, y) for (x, y), na, nb in zip(pairs, a, b, strict=True) if na != nb]
        return [x for x, _ in diff], [y for _, y in diff]
    return [w for w, n in zip(src.words, a, strict=True) if n not in b], [
        w for w, n in zip(tgt.words, b, strict=True) if n not in a
    ]


def resolve_edit(src: PromptTokens, tgt: PromptTokens, params: EditParams) -> EditParams:
    """Check ``params`` against the two prompts and fill what was left to the engine: the
    edit kind for ``auto`` and, when local blend is on without blend words, the changed (or
    re-weighted) words. Raises :class:`Clp2pError` with what to change."""
    kind = params.kind
    same_words = [normalise_word(w) for w in src.words] == [normalise_word(w) for w in tgt.words]
    if kind == "auto":
        if same_words and params.reweight:
            kind = "reweight"
        else:
            kind = "swap" if len(src.words) == len(tgt.words) else "refine"
    if kind == "reweight":
        if not same_words:
            raise Clp2pError(
                "--edit reweight keeps the prompt: give the source prompt as target, or use "
                "--edit swap / refine with --reweight to chain a re-weight on another edit"
            )
        if not params.reweight:
            raise Clp2pError("--edit reweight needs at least one --reweight WORD=SCALE")
    if kind == "swap":
        swap_mapper(src, tgt, max(src.length, tgt.length))  # raises on unequal word counts
    for word, _ in params.reweight:
        word_positions([tgt], word, "--reweight word")
    for word, _ in params.cross.words:
        word_positions([tgt], word, "--cross word")
    blend = params.blend_words
    for word in blend:
        word_positions([src, tgt], word, "--blend-words word")
    if params.k > 0 and not blend:
        if kind == "reweight":
            blend = tuple(w for w, _ in params.reweight)
        else:
            removed, added = _changed_words(src, tgt)
            blend = tuple(dict.fromkeys(removed + added))
    return params.with_(kind=kind, blend_words=blend)


def cross_alpha(params: EditParams, tgt: PromptTokens, steps: int, length: int) -> np.ndarray:
    """(steps, length) 1 where a target token takes the edited cross-attention map."""
    alpha = np.zeros((steps, length), dtype=np.float32)
    windows = [(list(range(length)), params.cross.default)]
    windows += [(tgt.find(w), win) for w, win in params.cross.words]
    for tokens, win in windows:
        a, b = _step_index(win.start, steps), _step_index(win.end, steps)
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
        mapper, take = refine_mapper(src, tgt, length)
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


def check_branches(branches: list[Branch], recorded_source: bool = False) -> None:
    """Branch 0 is the root, or with ``recorded_source`` an edit of the recorded branch
    (source -1); every other branch is an edit of an earlier one."""
    if not branches:
        raise Clp2pError("nothing to render: give at least one prompt")
    first = branches[0]
    if recorded_source:
        if first.source != -1 or first.edit is None:
            raise Clp2pError("branch 0 must be an edit of the recorded source (source -1)")
    elif first.source is not None:
        raise Clp2pError("branch 0 is the root and has no source")
    for i, b in enumerate(branches[1:], start=1):
        if b.source is None or not 0 <= b.source < i or b.edit is None:
            raise Clp2pError(f"branch {i} must be an edit of an earlier branch")
