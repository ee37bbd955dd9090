"""The attention processor that routes every UNet attention layer through the controller,
and the context manager that installs it and always restores the originals."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from clp2p.attention.control import AttentionController


class ControlledAttnProcessor:
    """A diffusers attention processor (same maths as ``AttnProcessor2_0``) whose attention
    step is delegated to an :class:`AttentionController`."""

    def __init__(self, controller: AttentionController) -> None:
        self.controller = controller

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

        if is_cross:
            out = self.controller.cross_attention(attn, query, key, value, attention_mask)
        else:
            out = self.controller.self_attention(attn, query, key, value, attention_mask)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def controlled_attention(unet, controller: AttentionController) -> Iterator[None]:
    """Route every attention layer of ``unet`` through ``controller``; the original processors
    come back when the block ends, also when it raises or is cancelled."""
    originals = unet.attn_processors
    processor = ControlledAttnProcessor(controller)
    unet.set_attn_processor({name: processor for name in originals})
    try:
        yield
    finally:
        unet.set_attn_processor(originals)
