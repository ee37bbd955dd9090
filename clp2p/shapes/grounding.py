"""Token grounding: a training loss that puts each object word's cross-attention on its object.

Trained on the denoising loss alone, the two-object model drew the right colours and classes
on the wrong objects, and its word maps were flat (``docs/shapes-training.md``). Where a real
captioned data set has no masks, the shapes world knows every object's exact mask, so training
can ask for what prompt-to-prompt relies on: the cross-attention of an object's colour word and
shape word falls on that object. The loss follows TokenCompose (Wang et al., CVPR 2024):

- a token term, ``1 - (attention inside the mask) / (all of the word's attention)``, per word;
- a pixel term, the binary cross-entropy between the attention an object's words receive
  together at each pixel and the object's mask at that grid;
- a word term (ours), the same cross-entropy for each word alone, its map scaled to its peak:
  the shape of the map that the heatmap panel shows and localisation scores. The pixel term
  is met when the shape word alone covers the object; the causal text encoder lets the shape
  word carry the colour, so the colour word's map stayed a faint speckle until this term.

All average over every cross-attention layer and head of the UNet. The model sees no mask
when it samples: the loss shapes what it learns, not what it is given.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clp2p.shapes import world

MAX_OBJECTS = 2
"""Objects per scene the targets hold; absent ones have positions -1."""

WORDS_PER_OBJECT = 2
"""The grounded words of an object: its colour word and its shape word."""


def word_ids(tokenizer) -> dict[str, int]:
    """The token id of every shape colour and class word; each must be one CLIP token."""
    ids = {}
    for word in (*world.SHAPE_COLOURS, *world.SHAPES):
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise ValueError(f"{word!r} is {len(tokens)} tokens; grounding needs one")
        ids[word] = tokens[0]
    return ids


def positions(ids: np.ndarray, words: dict[str, int]) -> np.ndarray:
    """Token positions of each object's colour word and shape word in captions of the world
    (ids int (N, T), objects in caption order, :func:`~clp2p.shapes.world.caption`): int
    (N, MAX_OBJECTS, WORDS_PER_OBJECT), -1 where a caption names fewer objects."""
    colours = np.isin(ids, [words[c] for c in world.SHAPE_COLOURS])  # (N, T)
    shapes = np.isin(ids, [words[s] for s in world.SHAPES])
    out = np.full((len(ids), MAX_OBJECTS, WORDS_PER_OBJECT), -1, dtype=np.int64)
    for row, (colour_row, shape_row) in enumerate(zip(colours, shapes, strict=True)):
        at_colour, at_shape = np.flatnonzero(colour_row), np.flatnonzero(shape_row)
        if len(at_colour) != len(at_shape) or len(at_colour) > MAX_OBJECTS:
            n_col, n_shape = len(at_colour), len(at_shape)
            raise ValueError(f"caption {row} names {n_col} colours and {n_shape} shapes")
        out[row, : len(at_colour), 0] = at_colour
        out[row, : len(at_shape), 1] = at_shape
    return out


def latent_masks(masks: np.ndarray, latent_size: int) -> np.ndarray:
    """Each object's share of every latent cell: bool (K, S, S) masks -> uint8
    (MAX_OBJECTS, L, L), 255 for a cell the object fills; absent objects are empty."""
    k, size, _ = masks.shape
    f = size // latent_size
    share = masks.reshape(k, latent_size, f, latent_size, f).mean(axis=(2, 4))  # (K, L, L)
    out = np.zeros((MAX_OBJECTS, latent_size, latent_size), dtype=np.uint8)
    out[:k] = np.round(share * 255).astype(np.uint8)
    return out


class AttentionCapture:
    """An attention hook (:class:`~clp2p.attention.processor.AttentionHook`) that computes
    attention as ``AttnProcessor2_0`` does and keeps every cross-attention probability map,
    with its gradient, for :func:`grounding_loss`."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []  # each (B, heads, pixels, tokens)

    def self_attention(self, layer, attn, q, k, v, mask) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def cross_attention(self, layer, attn, q, k, v, mask) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2) * attn.scale  # (B, heads, pixels, tokens)
        if mask is not None:
            scores = scores + mask
        probs = scores.float().softmax(dim=-1)
        self.maps.append(probs)
        return probs.to(v.dtype) @ v

    def take(self) -> list[torch.Tensor]:
        """The maps of the last forward pass; the capture starts empty again."""
        maps, self.maps = self.maps, []
        return maps


TERMS: tuple[str, ...] = ("token", "pixel", "word")
"""The terms of :func:`grounding_loss`, as the training log names them."""


def grounding_loss(
    maps: list[torch.Tensor], masks: torch.Tensor, where: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The token, pixel and word terms (scalars, keyed by :data:`TERMS`) over ``maps`` (each
    (B, heads, Q, T) with Q a square grid), for objects with latent masks float (B, K, L, L)
    in [0, 1] whose words sit at token positions ``where`` long (B, K, W) (-1: no such object,
    or its caption was dropped). Zero when no row has an object."""
    valid = where >= 0  # (B, K, W)
    if not bool(valid.any()):
        zero = maps[0].sum() * 0
        return dict.fromkeys(TERMS, zero)
    b, k, w = where.shape
    index = where.clamp(min=0).reshape(b, 1, k * w)  # (B, 1, K*W)
    token_terms, pixel_terms, word_terms = [], [], []
    for probs in maps:
        q = probs.shape[2]
        side = int(round(q**0.5))
        grid_masks = F.adaptive_avg_pool2d(masks, side).reshape(b, k, 1, q)  # (B, K, 1, Q)
        mean = probs.mean(dim=1)  # (B, Q, T)
        words = mean.gather(2, index.expand(b, q, k * w))  # (B, Q, K*W)
        words = words.transpose(1, 2).reshape(b, k, w, q)  # (B, K, W, Q)
        inside = (words * grid_masks).sum(-1) / words.sum(-1).clamp_min(1e-8)  # (B, K, W)
        token_terms.append((1 - inside)[valid])
        together = (words * valid[..., None]).sum(dim=2).clamp(1e-6, 1 - 1e-6)  # (B, K, Q)
        bce = F.binary_cross_entropy(together, grid_masks[:, :, 0], reduction="none")
        pixel_terms.append(bce.mean(-1)[valid.any(-1)])  # (objects,)
        shape = (words / words.amax(-1, keepdim=True).clamp_min(1e-8)).clamp(1e-6, 1 - 1e-6)
        each = F.binary_cross_entropy(shape, grid_masks.expand_as(shape), reduction="none")
        word_terms.append(each.mean(-1)[valid])  # (words,)
    terms = (token_terms, pixel_terms, word_terms)
    return {name: torch.cat(t).mean() for name, t in zip(TERMS, terms, strict=True)}
