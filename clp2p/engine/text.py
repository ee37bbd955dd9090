"""Text conditioning as each model family's pipeline computes it, so every render and
inversion conditions the UNet the way diffusers' own pipeline for that model does.

- SD 1.x / 2.x: one CLIP text encoder; its last hidden state is the cross-attention context.
- SDXL: two encoders (CLIP ViT-L and OpenCLIP ViT-bigG) read the same prompt; their
  penultimate hidden states, concatenated along the features, are the context, and the second
  encoder's pooled projection plus the size micro-conditioning (original size, crop corner,
  target size) enter the UNet's added embedding. The unconditional half is zeros when the
  model says so (``force_zeros_for_empty_prompt``, as SDXL base does) and no negative prompt
  is given, like the pipeline.

Both SDXL tokenizers use CLIP's vocabulary and merges and differ only in their padding token,
so a word sits at the same token positions for both encoders; :meth:`TextEncoders.check_words`
verifies it for every prompt instead of assuming it (a fine-tune could ship other merges, or
a textual-inversion token could be known to one tokenizer only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clp2p.errors import Clp2pError
from clp2p.model.align import PromptTokens


@dataclass(frozen=True)
class Embeds:
    """What a batch of prompts conditions the UNet with: ``tokens`` (n, T, D), the
    cross-attention context, and ``pooled`` (n, P), SDXL's pooled text embedding (None for
    SD 1.x / 2.x)."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def rows(self, rows) -> Embeds:
        """The embeddings of ``rows`` (an index list or a slice)."""
        pooled = None if self.pooled is None else self.pooled[rows]
        return Embeds(self.tokens[rows], pooled)

    def expand(self, n: int) -> Embeds:
        """A batch of one repeated ``n`` times (a view)."""
        pooled = None if self.pooled is None else self.pooled.expand(n, -1)
        return Embeds(self.tokens.expand(n, -1, -1), pooled)

    def with_tokens(self, tokens: torch.Tensor) -> Embeds:
        """The same pooled embedding with other token embeddings (null-text's optimised
        unconditional embedding replaces the tokens only)."""
        return Embeds(tokens, self.pooled)

    def to(self, dtype: torch.dtype) -> Embeds:
        pooled = None if self.pooled is None else self.pooled.to(dtype)
        return Embeds(self.tokens.to(dtype), pooled)

    def clone(self) -> Embeds:
        return Embeds(self.tokens.clone(), None if self.pooled is None else self.pooled.clone())

    @staticmethod
    def cat(parts: list[Embeds]) -> Embeds:
        pooled = [p.pooled for p in parts]
        joined = None if any(p is None for p in pooled) else torch.cat(pooled)
        return Embeds(torch.cat([p.tokens for p in parts]), joined)


class TextEncoders:
    """The text encoder(s) of a loaded pipeline, on ``device`` in ``dtype``."""

    def __init__(self, pipe, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.pairs = [(pipe.tokenizer, pipe.text_encoder)]
        second = getattr(pipe, "text_encoder_2", None)
        if second is not None:
            self.pairs.append((pipe.tokenizer_2, second))
        self.xl = second is not None
        # a multi-vector textual-inversion token stands for several tokens (diffusers'
        # TextualInversionLoaderMixin); without such tokens it changes nothing
        self._expand = getattr(pipe, "maybe_convert_prompt", None)
        config = getattr(pipe, "config", {})
        self.zeros_for_empty = self.xl and bool(config.get("force_zeros_for_empty_prompt", False))
        # the UNet's added embedding: SDXL's pooled text and size micro-conditioning
        self.time_ids = getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"
        if self.xl != self.time_ids:
            raise Clp2pError(
                "the model's text encoders and UNet do not belong together (two encoders need "
                "a UNet with SDXL's added text-time embedding): check the model folder"
            )

    def expand(self, text: str, tokenizer=None) -> str:
        """``text`` with each multi-vector textual-inversion token spelled out for
        ``tokenizer`` (default: the first)."""
        if self._expand is None:
            return text
        return self._expand(text, tokenizer or self.pairs[0][0])

    @property
    def max_tokens(self) -> int:
        """The token length every encoder takes: a hand-assembled tokenizer config may claim
        10**30, the encoder's position table is what bounds it."""
        lengths = []
        for tokenizer, encoder in self.pairs:
            positions = getattr(encoder.config, "max_position_embeddings", None)
            lengths.append(int(min(tokenizer.model_max_length, positions or 10**9)))
        return min(lengths)

    def check_words(self, tokens: PromptTokens) -> PromptTokens:
        """``tokens`` (a prompt as the first tokenizer splits it), once every other tokenizer
        splits each of its words into as many tokens: an edit addresses words by token
        position, and every encoder must see them at the same positions."""
        for tokenizer, _ in self.pairs[1:]:
            for word, span in zip(tokens.words, tokens.spans, strict=True):
                ids = tokenizer(self.expand(word, tokenizer), add_special_tokens=False).input_ids
                if len(ids) != len(span):
                    raise Clp2pError(
                        f"the model's two tokenizers split '{word[:40]}' differently, so it "
                        "would sit at different token positions for its two text encoders: "
                        "use another word, or check the model's tokenizer_2"
                    )
        return tokens

    @torch.inference_mode()
    def encode(self, prompts: list[str], length: int) -> Embeds:
        """The embeddings of ``prompts``, each padded to ``length`` tokens."""
        contexts, pooled = [], None
        for tokenizer, encoder in self.pairs:
            ids = tokenizer(
                [self.expand(p, tokenizer) for p in prompts],
                padding="max_length",
                max_length=length,
                truncation=True,
                return_tensors="pt",
            )
            mask = None
            if getattr(encoder.config, "use_attention_mask", False):
                mask = ids.attention_mask.to(self.device)
            if not self.xl:
                contexts.append(encoder(ids.input_ids.to(self.device), attention_mask=mask)[0])
                continue
            out = encoder(ids.input_ids.to(self.device), output_hidden_states=True)
            contexts.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's: its pooled projection (text_embeds)
        tokens = torch.cat(contexts, dim=-1).to(self.dtype)
        return Embeds(tokens, None if pooled is None else pooled.to(self.dtype))

    def unconditional(self, length: int) -> Embeds:
        """The unconditional embedding of guidance: the empty prompt's, or zeros where the
        model asks for them."""
        if not self.zeros_for_empty:
            return self.encode([""], length)
        width = sum(int(encoder.config.hidden_size) for _, encoder in self.pairs)
        pooled = int(self.pairs[-1][1].config.projection_dim)
        kw = {"device": self.device, "dtype": self.dtype}
        return Embeds(torch.zeros(1, length, width, **kw), torch.zeros(1, pooled, **kw))

    def added_conditions(self, embeds: Embeds, size: tuple[int, int]) -> dict | None:
        """The UNet's ``added_cond_kwargs`` for ``embeds`` at ``size`` (height, width):
        SDXL's pooled text and its micro-conditioning, original size = target size =
        ``size`` and crop corner (0, 0), as the pipeline's defaults; None for SD 1.x / 2.x."""
        if not self.time_ids:
            return None
        h, w = size
        ids = torch.tensor([[h, w, 0, 0, h, w]], device=embeds.tokens.device)
        return {
            "text_embeds": embeds.pooled,
            "time_ids": ids.to(embeds.tokens.dtype).expand(len(embeds), -1),
        }
