"""Token alignment between a source and a target prompt (pure functions over a tokenizer).

Token positions count the start token: position 0 is ``<|startoftext|>``, a prompt's words follow,
then the end token and padding up to the model's token length ``T``.

The cross-attention edit of a target is ``new = a * eq * (r * (src @ M) + (1 - r) * tgt)
+ (1 - a) * tgt`` with ``src``/``tgt`` the (pixels, T) attention maps, ``M`` (T, T) the token
mapper built here, ``r`` (T,) 1 where a target token takes the source's map, ``eq`` (T,) the
re-weight scales and ``a`` (T,) the per-step cross-attention window.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clp2p.errors import Clp2pError

_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")


def normalise_word(word: str) -> str:
    return _PUNCT.sub("", word.lower())


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's words and where their tokens sit in the encoded sequence."""

    prompt: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, ...], ...]  # token positions of each word
    ids: tuple[int, ...]  # start token, word tokens, end token (no padding)
    tokens: tuple[str, ...]  # readable token strings, same length as ids

    @property
    def length(self) -> int:
        return len(self.ids)

    def find(self, word: str) -> list[int]:
        """Token positions of every occurrence of ``word`` (or of a phrase of several words)."""
        target = [normalise_word(w) for w in word.split()]
        if not target or not all(target):
            return []
        norm = [normalise_word(w) for w in self.words]
        found: list[int] = []
        for i in range(len(norm) - len(target) + 1):
            if norm[i : i + len(target)] == target:
                for span in self.spans[i : i + len(target)]:
                    found.extend(span)
        return found


def word_tokens(prompt: str) -> PromptTokens:
    """``prompt`` as one token a word between a start and an end token: enough to check the
    word-level rules of an edit (:func:`clp2p.model.edits.resolve_edit`) before a model with
    its tokenizer is loaded."""
    words = tuple(prompt.split())
    spans = tuple((i + 1,) for i in range(len(words)))
    ids = tuple(range(len(words) + 2))
    return PromptTokens(prompt, words, spans, ids, ("<|startoftext|>", *words, "<|endoftext|>"))


def tokenize(
    prompt: str, tokenizer, max_length: int | None = None, expand: Callable | None = None
) -> PromptTokens:
    """Split ``prompt`` into words and map each word to its token positions. ``expand``
    rewrites a text before it is tokenized (a multi-vector textual-inversion token becomes
    its vectors' tokens, as diffusers' pipelines do it), so such a word spans all of them.

    Raises a :class:`Clp2pError` when the prompt needs more than ``max_length`` tokens
    (default: the tokenizer's ``model_max_length``), start and end tokens included.
    """
    limit = max_length or tokenizer.model_max_length
    words = tuple(prompt.split())
    expand = expand or (lambda text: text)
    ids = list(tokenizer(expand(prompt), add_special_tokens=True, truncation=False).input_ids)
    if len(ids) > limit:
        raise Clp2pError(
            f"prompt '{_short(prompt)}' is {len(ids)} tokens; the model takes at most {limit} "
            f"(start and end included): shorten it by {len(ids) - limit} tokens"
        )
    spans: list[tuple[int, ...]] = []
    pos = 1
    for word in words:
        n = len(tokenizer(expand(word), add_special_tokens=False).input_ids)
        spans.append(tuple(range(pos, pos + n)))
        pos += n
    if pos != len(ids) - 1:
        raise Clp2pError(
            f"prompt '{_short(prompt)}' does not split into whole-word tokens; "
            "separate words and punctuation with spaces"
        )
    tokens = tuple(tokenizer.convert_ids_to_tokens(ids))
    return PromptTokens(prompt, words, tuple(spans), tuple(ids), tokens)


def _short(prompt: str, n: int = 60) -> str:
    return prompt if len(prompt) <= n else prompt[: n - 3] + "..."


def _word_diff(a: tuple[str, ...], b: tuple[str, ...]) -> str:
    na = [normalise_word(w) for w in a]
    nb = [normalise_word(w) for w in b]
    removed: list[str] = []
    added: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=na, b=nb).get_opcodes():
        if op in ("delete", "replace"):
            removed.extend(a[i1:i2])
        if op in ("insert", "replace"):
            added.extend(b[j1:j2])
    parts = []
    if removed:
        parts.append("source only: " + " ".join(removed))
    if added:
        parts.append("target only: " + " ".join(added))
    return "; ".join(parts)


def swap_mapper(src: PromptTokens, tgt: PromptTokens, length: int) -> np.ndarray:
    """Token mapper (length, length) for a word swap (AttentionReplace).

    Words are paired by position. A swapped word that splits into a different number of tokens
    spreads its source columns over the target tokens: each target token gets the sum of the
    source word's columns divided by the number of target tokens.
    """
    if len(src.words) != len(tgt.words):
        raise Clp2pError.about(
            "a word swap needs prompts with the same number of words; source has "
            "{n_src}, target {n_tgt} ({diff}): use {kind} refine to add or remove words",
            n_src=len(src.words),
            n_tgt=len(tgt.words),
            diff=_word_diff(src.words, tgt.words),
        )
    mapper = np.zeros((length, length), dtype=np.float32)
    mapper[0, 0] = 1.0
    for s_span, t_span in zip(src.spans, tgt.spans, strict=True):
        if len(s_span) == len(t_span):
            mapper[list(s_span), list(t_span)] = 1.0
        else:
            for t in t_span:
                mapper[list(s_span), t] = 1.0 / len(t_span)
    _map_tail(mapper, src.length - 1, tgt.length - 1, length)
    return mapper


def _map_tail(mapper: np.ndarray, src_end: int, tgt_end: int, length: int) -> None:
    """End token and padding map one to one after the prompts' last words."""
    for j in range(tgt_end, length):
        mapper[min(src_end + (j - tgt_end), length - 1), j] = 1.0


def align_tokens(a: list[int], b: list[int]) -> list[int]:
    """Needleman-Wunsch global alignment of token id sequences (gap 0, match 1, mismatch -1).

    Returns, for each position of ``b``, the aligned position in ``a`` or -1 for a token that
    only ``b`` has.
    """
    n, m = len(a), len(b)
    score = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1, j - 1] + (1 if a[i - 1] == b[j - 1] else -1)
            score[i, j] = max(diag, score[i - 1, j], score[i, j - 1])
    out = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1] and score[i, j] == score[i - 1, j - 1] + 1:
            out[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif score[i, j] == score[i, j - 1]:
            j -= 1
        elif score[i, j] == score[i - 1, j]:
            i -= 1
        else:  # a mismatch on the diagonal: the token is new in b
            i, j = i - 1, j - 1
    return out


def refine_mapper(
    src: PromptTokens, tgt: PromptTokens, length: int, pad: str = "reference"
) -> tuple[np.ndarray, np.ndarray]:
    """Token mapper (length, length) and take-source weights r (length,) for a refinement.

    Tokens the alignment pairs take the source's maps (r = 1); tokens new in the target keep
    their own (r = 0); the end token takes the source's end token. The padding after it:
    ``reference`` (as prompt-to-prompt's reference implementation) maps target position p to
    source position p; ``shifted`` maps it to the source position as far after the source's
    end token (the padding moves with the length difference, as :func:`swap_mapper` does).
    """
    aligned = align_tokens(list(src.ids), list(tgt.ids))
    mapper = np.zeros((length, length), dtype=np.float32)
    take = np.ones(length, dtype=np.float32)
    for j, i in enumerate(aligned[:-1]):  # the end token is mapped with the tail
        if i < 0:
            take[j] = 0.0
        else:
            mapper[i, j] = 1.0
    if pad == "shifted":
        _map_tail(mapper, src.length - 1, tgt.length - 1, length)
    else:
        mapper[src.length - 1, tgt.length - 1] = 1.0
        for j in range(tgt.length, length):
            mapper[j, j] = 1.0
    return mapper, take


def word_positions(prompts: list[PromptTokens], word: str, field: str) -> list[list[int]]:
    """Token positions of ``word`` in each prompt; an error naming ``field`` (e.g.
    ``reweight``) if no prompt has it."""
    found = [p.find(word) for p in prompts]
    if not any(found):
        names = " / ".join(f"'{_short(p.prompt, 40)}'" for p in prompts)
        raise Clp2pError.about(
            "{" + field + "} word '{word}' is not in the prompt {names}: use a word of the prompt",
            word=word,
            names=names,
        )
    return found
