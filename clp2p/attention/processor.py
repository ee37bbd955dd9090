"""The attention processors that route every UNet attention layer through the controller,
one per layer carrying the layer's name, and the context manager that installs them and
always restores the originals."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch


class AttentionHook(Protocol):
    """What a controlled layer hands its attention step to (see
    :class:`~clp2p.attention.control.AttentionController`). ``layer`` is the layer's name in
    ``unet.attn_processors``; q: (rows, heads, pixels, d); k, v: (rows, heads, keys, d);
    both return (rows, heads, pixels, d)."""

    def self_attention(self, layer: str, attn, q, k, v, mask) -> torch.Tensor: ...

    def cross_attention(self, layer: str, attn, q, k, v, mask) -> torch.Tensor: ...


class ControlledAttnProcessor:
    """A diffusers attention processor (same maths as ``AttnProcessor2_0``) for the layer
    named ``layer``, whose attention step is delegated to ``controller``."""

    def __init__(self, controller: AttentionHook, layer: str) -> None:
        self.controller = controller
        self.layer = layer

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            # (B, C, H, W) -> (B, N, C)
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        batch, seq_len, _ = (encoder_hidden_states if is_cross else hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if not is_cross:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        # (B, heads, N, d)
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hook = self.controller.cross_attention if is_cross else self.controller.self_attention
        out = hook(self.layer, attn, query, key, value, attention_mask)

        # (B, heads, N, d) -> (B, N, heads * d)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:  # (B, N, C) -> (B, C, H, W)
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def controlled_attention(unet, controller: AttentionHook) -> Iterator[None]:
    """Route every attention layer of ``unet`` through ``controller``, each with its name in
    ``unet.attn_processors``; the original processors come back when the block ends, also
    when it raises or is cancelled."""
    originals = unet.attn_processors
    unet.set_attn_processor({name: ControlledAttnProcessor(controller, name) for name in originals})
    try:
        yield
    finally:
        unet.set_attn_processor(originals)
