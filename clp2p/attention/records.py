"""What a render leaves for later edits of its branches: a :class:`BranchRecord` per branch,
filled by :class:`BranchRecorder`, of which a :class:`RecordPolicy` chooses the ones to keep;
and :class:`Recording`, what one render reads from and leaves to a record cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from clp2p.attention.layout import PassLayout
from clp2p.model.reuse import FULL, RecordSpec

LayerKey = tuple[int, str]  # (denoising step, attention layer name as in unet.attn_processors)


@dataclass
class BranchRecord:
    """What an edit of a branch needs from it, per step and attention layer: the queries,
    keys and values its self-attention used, the probabilities and values its
    cross-attention used, after each step its latent and cumulative blend maps, and its final
    picture. Tensors are (1, heads, ...): only the conditional half of guidance is kept (an
    edit that also edits the unconditional half is rendered from its source's own branch
    instead). ``spec`` says which of them were kept; a tensor not kept is None."""

    prompt: str
    tokens: int  # token positions kept in blend_sum
    self_qkv: dict[LayerKey, tuple[torch.Tensor | None, ...]]
    cross: dict[LayerKey, tuple[torch.Tensor | None, ...]]
    latents: list[torch.Tensor]  # per step, (C, h, w)
    blend_sum: list[torch.Tensor]  # per step, (pixels, tokens)
    spec: RecordSpec = FULL
    # the branch's picture as shown, (H, W, 3) uint8: what an edit that keeps its source's
    # pixels outside the blend mask lays itself over (set after decoding)
    image: torch.Tensor | None = None
    # the VAE decoder statistics the picture was decoded with, (mean, variance) per norm
    # call, each (1, groups, 1) float32: what an edit decoded with its source's statistics
    # (``blend_norm``) takes (set after decoding)
    norms: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def nbytes(self) -> int:
        tensors = [t for qkv in self.self_qkv.values() for t in qkv]
        tensors += [t for pv in self.cross.values() for t in pv]
        tensors += self.latents + self.blend_sum + [self.image]
        tensors += [t for pair in self.norms or () for t in pair]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


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
    ``keep``: chooses the branches whose records the render returns (None: no records).
    ``spec``: what those records keep (see :class:`~clp2p.model.reuse.RecordSpec`)."""

    source: BranchRecord | None = None
    keep: RecordPolicy | None = None
    spec: RecordSpec = FULL


def to_host(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in host memory (pinned, copied asynchronously, from a GPU); ``t``
    itself when it is there already. Records live in host memory with their own budget, so
    device memory stays the model's."""
    if t.device.type == "cpu":
        return t
    host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
    return host.copy_(t, non_blocking=True)


def to_device(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A recorded tensor on the device of ``like`` (asynchronous from pinned memory)."""
    return None if t is None else t.to(like.device, non_blocking=True)


Layers = dict[tuple[str, str], tuple[int, list[int]]]  # (kind, layer) -> (pixels, bytes each)


def kept(spec: RecordSpec, kind: str, step: int, steps: int, pixels: int) -> tuple[bool, ...]:
    """Which of a layer's tensors (self: q, k, v; cross: probabilities, values) ``spec``
    keeps in ``step``."""
    if kind == "self_qkv":
        qk, v = spec.keeps_self(step, steps, pixels)
        return qk, qk, v
    return spec.keeps_cross(step, steps)


def projected_bytes(layers: Layers, spec: RecordSpec, steps: int, per_step: int) -> int:
    """The size of a record of ``steps`` steps whose layers hold tensors of ``layers``'s
    sizes: the attention tensors ``spec`` keeps in each step, and ``per_step`` bytes of
    latents and blend maps."""
    total = per_step * steps
    for (kind, _), (pixels, sizes) in layers.items():
        for step in range(steps):
            chosen = kept(spec, kind, step, steps, pixels)
            total += sum(n for n, k in zip(sizes, chosen, strict=True) if k)
    return total


def layer_sizes(record: BranchRecord) -> tuple[Layers, int]:
    """The layers of a record that kept every tensor of its first step (e.g. made with
    :data:`~clp2p.model.reuse.FULL`), and its bytes of latents and blend maps per step: what
    :func:`projected_bytes` needs to size records of any spec and length."""
    layers: Layers = {}
    for kind in ("self_qkv", "cross"):
        for (step, layer), tensors in getattr(record, kind).items():
            if step == 0:
                layers[(kind, layer)] = (
                    tensors[0].shape[2],
                    [t.numel() * t.element_size() for t in tensors],
                )
    per_step = sum(t.numel() * t.element_size() for t in (record.latents[0], record.blend_sum[0]))
    return layers, per_step


class BranchRecorder:
    """Fills a :class:`BranchRecord` per branch of a render, keeping what ``spec`` says.
    After the first step, each record's size is projected over all ``steps`` and only the
    branches ``policy`` chooses are kept, so records never fill the device; without a policy
    nothing is recorded."""

    def __init__(
        self,
        prompts: tuple[str, ...],
        tokens: int,
        steps: int,
        policy: RecordPolicy | None = None,
        spec: RecordSpec = FULL,
        picture: int = 0,
    ) -> None:
        self.steps, self.policy, self.spec = steps, policy, spec
        self.picture = picture  # bytes of a branch's final picture, which its record keeps
        self.records: dict[int, BranchRecord] = {}
        # (kind, layer) -> (pixels, bytes of each tensor of one branch), seen in the first step
        self._layers: Layers = {}
        if policy is not None:
            self.records = {
                b: BranchRecord(prompt, tokens, {}, {}, [], [], spec)
                for b, prompt in enumerate(prompts)
            }

    def _kept(self, kind: str, step: int, pixels: int) -> tuple[bool, ...]:
        return kept(self.spec, kind, step, self.steps, pixels)

    def keep(self, kind: str, key: LayerKey, layout: PassLayout, tensors) -> None:
        """Record the conditional rows of ``tensors`` (``self_qkv``: q, k, v, each (rows,
        heads, pixels, d); ``cross``: probabilities (rows, heads, pixels, tokens), values)
        that the spec keeps, for the recorded branches of this pass."""
        if not self.records:
            return
        pixels = tensors[0].shape[2]
        if key[0] == 0:
            sizes = [t[0].numel() * t.element_size() for t in tensors]
            self._layers[(kind, key[1])] = (pixels, sizes)
        kept = self._kept(kind, key[0], pixels)
        if not any(kept):
            return
        for b in self.records:
            if layout.computes(b):
                # indexing with a list already copies: the record owns its tensors
                rows = [layout.cond_row(b)]
                getattr(self.records[b], kind)[key] = tuple(
                    to_host(t[rows]) if k else None for t, k in zip(tensors, kept, strict=True)
                )

    def projected_bytes(self, per_step: int) -> int:
        """A record's size after all steps: see :func:`projected_bytes`."""
        return projected_bytes(self._layers, self.spec, self.steps, per_step) + self.picture

    def end_step(self, step: int, latents: torch.Tensor, blend_sum: torch.Tensor) -> None:
        """latents: (branches, C, h, w) after the step; blend_sum: (branches, pixels, tokens)."""
        for b, record in self.records.items():
            record.latents.append(to_host(latents[b].clone()))
            record.blend_sum.append(to_host(blend_sum[b].clone()))
        if step == 0 and self.records:
            per_step = sum(t.numel() * t.element_size() for t in (latents[0], blend_sum[0]))
            size = self.projected_bytes(per_step)
            chosen = self.policy.choose({b: size for b in self.records})
            self.records = {b: r for b, r in self.records.items() if b in chosen}
