"""The rules of an edit between two prompts (pure, no torch): which kind ``auto`` stands for,
which words an edit changes, and whether an edit can run on a pair of tokenised prompts.

Every caller (the engine, the session tree, the studio's checks) asks here, so a rule has one
home."""

from __future__ import annotations

from collections.abc import Sequence

from clp2p.errors import Clp2pError
from clp2p.model.align import PromptTokens, normalise_word, swap_mapper, word_positions
from clp2p.model.params import RECORDED, Branch, EditParams


def edit_kind(source: Sequence[str], target: Sequence[str], params: EditParams) -> str:
    """The edit kind of ``params`` for prompts of these words; ``auto`` resolves to re-weight
    alone for equal prompts with scales, swap for equal word counts, refinement otherwise."""
    if params.kind != "auto":
        return params.kind
    a = [normalise_word(w) for w in source]
    b = [normalise_word(w) for w in target]
    if a == b and params.reweight:
        return "reweight"
    return "swap" if len(a) == len(b) else "refine"


def infer_kind(source: str, target: str, params: EditParams) -> str:
    """:func:`edit_kind` for two prompts as text (words are separated by spaces)."""
    return edit_kind(source.split(), target.split(), params)


def changed_words(src: PromptTokens, tgt: PromptTokens) -> tuple[list[str], list[str]]:
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
    kind = edit_kind(src.words, tgt.words, params)
    same_words = [normalise_word(w) for w in src.words] == [normalise_word(w) for w in tgt.words]
    if kind == "reweight":
        if not same_words:
            raise Clp2pError.about(
                "{kind} reweight keeps the prompt: give the source prompt as target, or use "
                "{kind} swap / refine with {reweight} to chain a re-weight on another edit"
            )
        if not params.reweight:
            raise Clp2pError.about("{kind} reweight needs at least one {reweight} WORD=SCALE")
    if kind == "swap":
        swap_mapper(src, tgt, max(src.length, tgt.length))  # raises on unequal word counts
    for word, _ in params.reweight:
        word_positions([tgt], word, "reweight")
    for word, _ in params.cross.words:
        word_positions([tgt], word, "cross")
    blend = params.blend_words
    for word in blend:
        word_positions([src, tgt], word, "blend_words")
    if params.k > 0 and not blend:
        if kind == "reweight":
            blend = tuple(w for w, _ in params.reweight)
        else:
            removed, added = changed_words(src, tgt)
            blend = tuple(dict.fromkeys(removed + added))
    return params.with_(kind=kind, blend_words=blend)


def check_branches(branches: list[Branch], recorded_source: bool = False) -> None:
    """Branch 0 is the root, or with ``recorded_source`` an edit of the recorded branch
    (source -1); every other branch is an edit of an earlier one."""
    if not branches:
        raise Clp2pError("nothing to render: give at least one prompt")
    first = branches[0]
    if recorded_source:
        if first.source != RECORDED or first.edit is None:
            raise Clp2pError("branch 0 must be an edit of the recorded source (source -1)")
    elif first.source is not None:
        raise Clp2pError("branch 0 is the root and has no source")
    for i, b in enumerate(branches[1:], start=1):
        if b.source is None or not 0 <= b.source < i or b.edit is None:
            raise Clp2pError(f"branch {i} must be an edit of an earlier branch")


def check_layers(params: EditParams, layers: int) -> EditParams:
    """``params``, if its self-attention layer range selects some of the model's ``layers``
    self-attention layers."""
    if params.self_layers is not None and params.self_layers[0] > layers:
        a, b = params.self_layers
        raise Clp2pError.about(
            "{self_layers} {a}:{b} selects no layer: the model has {n} self-attention layers",
            a=a,
            b=b,
            n=layers,
        )
    return params
