"""What a render leaves for later edits of its branches: a :class:`BranchRecord` per branch,
filled by :class:`BranchRecorder`, of which a :class:`RecordPolicy` chooses the ones to keep;
and :class:`Recording`, what one render reads from and leaves to a record cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from clp2p.attention.layout import PassLayout

LayerKey = tuple[int, str]  # (denoising step, attention layer name as in unet.attn_processors)


@dataclass
class BranchRecord:
    """What an edit of a branch needs from it, per step and attention layer: the queries,
    keys and values its self-attention used, the probabilities and values its
    cross-attention used, and after each step its latent and cumulative blend maps. Tensors
    are (1, heads, ...): only the conditional half of guidance is kept (an edit that also
    edits the unconditional half is rendered from its source's own branch instead)."""

    prompt: str
    tokens: int  # token positions kept in blend_sum
    self_qkv: dict[LayerKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    cross: dict[LayerKey, tuple[torch.Tensor, torch.Tensor]]
    latents: list[torch.Tensor]  # per step, (C, h, w)
    blend_sum: list[torch.Tensor]  # per step, (pixels, tokens)

    @property
    def nbytes(self) -> int:
        tensors = [t for qkv in self.self_qkv.values() for t in qkv]
        tensors += [t for pv in self.cross.values() for t in pv]
        tensors += self.latents + self.blend_sum
        return sum(t.numel() * t.element_size() for t in tensors)


class RecordPolicy(Protocol):
    """Chooses which branches of a render keep their records."""

    def choose(self, sizes: dict[int, int]) -> set[int]:
        """The branches to keep, given each branch's projected record size in bytes for the
        whole render (branch index -> bytes). Asked once, after the first step."""
        ...


class KeepAll:
    """Keeps every branch's record, whatever its size."""

    def choose(self, sizes: dict[int, int]) -> set[int]:
        return set(sizes)


KEEP_ALL = KeepAll()


@dataclass(frozen=True)
class Recording:
    """What a render reads from and leaves to a record cache.

    ``source``: a branch recorded by an earlier render with the same settings, which branch 0
    edits (``Branch(prompt, RECORDED, params)``), so its chain is not rendered again.
    ``keep``: chooses the branches whose records the render returns (None: no records)."""

    source: BranchRecord | None = None
    keep: RecordPolicy | None = None


class BranchRecorder:
    """Fills a :class:`BranchRecord` per branch of a render. After the first step, each
    record's size is projected over all ``steps`` and only the branches ``policy`` chooses
    are kept, so records never fill the device; without a policy nothing is recorded."""

    def __init__(
        self,
        prompts: tuple[str, ...],
        tokens: int,
        steps: int,
        policy: RecordPolicy | None = None,
    ) -> None:
        self.steps = steps
        self.policy = policy
        self.records: dict[int, BranchRecord] = {}
        if policy is not None:
            self.records = {
                b: BranchRecord(prompt, tokens, {}, {}, [], []) for b, prompt in enumerate(prompts)
            }

    def keep(self, kind: str, key: LayerKey, layout: PassLayout, tensors) -> None:
        """Record the conditional rows of ``tensors`` (``self_qkv``: q, k, v; ``cross``:
        probabilities, values) for the recorded branches of this pass."""
        for b in self.records:
            if layout.computes(b):
                # indexing with a list already copies: the record owns its tensors
                rows = [layout.cond_row(b)]
                getattr(self.records[b], kind)[key] = tuple(t[rows] for t in tensors)

    def end_step(self, step: int, latents: torch.Tensor, blend_sum: torch.Tensor) -> None:
        """latents: (branches, C, h, w) after the step; blend_sum: (branches, pixels, tokens)."""
        for b, record in self.records.items():
            record.latents.append(latents[b].clone())
            record.blend_sum.append(blend_sum[b].clone())
        if step == 0 and self.records:
            sizes = {b: record.nbytes * self.steps for b, record in self.records.items()}
            chosen = self.policy.choose(sizes)
            self.records = {b: r for b, r in self.records.items() if b in chosen}
