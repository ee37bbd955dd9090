"""The VAE's side of a render: pictures to latents and back, scaled as the UNet expects, the
precision the VAE runs in, and decoding an edit with its source's decoder statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from clp2p.attention.records import to_device
from clp2p.model.params import RECORDED

if TYPE_CHECKING:
    from clp2p.attention.control import AttentionController


def keep_vae_precise(pipe, dtype: torch.dtype, xl: bool) -> None:
    """SDXL's VAE overflows in float16, and its config says so (``force_upcast``, which
    diffusers' SDXL pipeline reads): on SDXL models in float16 the VAE runs in float32 while
    the UNet and text encoders stay in float16 (about 160 MB more). A VAE fixed for float16
    (``force_upcast`` false) and SD 1.x / 2.x VAEs stay in the model's dtype."""
    if xl and dtype == torch.float16 and pipe.vae.config.get("force_upcast"):
        pipe.vae.to(torch.float32)


@torch.no_grad()
def image_latent(vae, image: np.ndarray, device: torch.device) -> torch.Tensor:
    """The latent (1, C, h, w) of an RGB uint8 image (H, W, 3): the VAE posterior's mean,
    scaled as the UNet expects, in the VAE's dtype."""
    x = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    x = (x / 127.5 - 1.0).to(device, vae.dtype)
    z = vae.encode(x).latent_dist.mean
    if getattr(vae.config, "shift_factor", None):
        z = z - vae.config.shift_factor
    return z * vae.config.scaling_factor


@torch.inference_mode()
def latent_images(vae, image_processor, latents: torch.Tensor) -> list[np.ndarray]:
    """Latents (B, C, h, w) to RGB uint8 images (H, W, 3)."""
    z = latents.to(vae.dtype) / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    image = vae.decode(z, return_dict=False)[0]
    arr = image_processor.postprocess(image, output_type="np")
    return [np.ascontiguousarray((a * 255).round().astype(np.uint8)) for a in arr]


def decode_bytes(vae, latent_hw: tuple[int, int], scale: int) -> int:
    """The bytes a branch record keeps of its decode: the uint8 RGB picture of a latent of
    ``latent_hw`` (``scale`` pixels a cell) and the decoder statistics (a float32 mean and
    variance per group of each GroupNorm, which runs once per decode)."""
    groups = sum(m.num_groups for m in group_norms(vae))
    return 3 * latent_hw[0] * latent_hw[1] * scale**2 + 2 * 4 * groups


Stats = list[tuple[torch.Tensor, torch.Tensor]]


def group_norms(vae) -> list[torch.nn.GroupNorm]:
    """The VAE decoder's GroupNorms, in the order they run."""
    return [m for m in vae.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]


class DecoderNorms:
    """The VAE decoder's GroupNorm statistics taken from one decode and used in another.

    The decoder normalises every feature map over the whole picture, so the statistics of a
    latent that is mostly its source's but carries another picture's region inside a mask
    (local blend) can shift, and the decoder then repaints pixels far from the mask. An edit
    decoded :meth:`using` the statistics :meth:`recording` took from its source's decode is
    normalised as its source was. Statistics are (mean, variance) per norm call, each
    (batch, groups, 1) in float32, matched to the decoder's norms by the order they run in
    (fixed for latents of one size)."""

    def __init__(self, vae) -> None:
        self.norms = group_norms(vae)
        self._stats: Stats = []
        self._using = False
        self._next = 0

    @contextmanager
    def recording(self) -> Iterator[Stats]:
        """Decodes inside the block are unchanged (each norm runs as it always does); the list
        it yields then holds their statistics."""
        self._stats, self._using = [], False
        with self._patched():
            yield self._stats

    @contextmanager
    def using(self, stats: Stats) -> Iterator[None]:
        """Decodes inside the block normalise with ``stats`` (from :meth:`recording` of a
        decode of a latent of the same size) instead of their own."""
        self._stats, self._using, self._next = stats, True, 0
        with self._patched():
            yield
        if self._next != len(stats):
            raise RuntimeError(f"decoder ran {self._next} norms with {len(stats)} statistics")

    @contextmanager
    def _patched(self) -> Iterator[None]:
        """Inside the block each norm runs :meth:`_norm`; after it, what it ran before."""
        before = [(m, m.__dict__.get("forward")) for m in self.norms]
        for m in self.norms:
            m.forward = partial(self._norm, m, m.forward)
        try:
            yield
        finally:
            for m, forward in before:
                if forward is None:
                    del m.forward  # the class's own again
                else:
                    m.forward = forward

    def _norm(self, norm: torch.nn.GroupNorm, native, x: torch.Tensor) -> torch.Tensor:
        if not self._using:
            self._stats.append(group_stats(x, norm.num_groups))
            return native(x)
        if self._next >= len(self._stats):
            raise RuntimeError(f"decoder ran more norms than the {len(self._stats)} recorded")
        mean, var = (t.to(x.device) for t in self._stats[self._next])
        self._next += 1
        if mean.shape[1] != norm.num_groups or mean.shape[0] not in (1, x.shape[0]):
            raise RuntimeError(f"statistics of shape {tuple(mean.shape)} for {tuple(x.shape)}")
        # per channel: y = x * scale + shift, the norm and its affine folded together
        scale = torch.rsqrt(var + norm.eps).repeat_interleave(x.shape[1] // norm.num_groups, 1)
        shift = -mean.repeat_interleave(x.shape[1] // norm.num_groups, 1) * scale
        if norm.affine:
            scale = scale * norm.weight.float()[None, :, None]
            shift = shift * norm.weight.float()[None, :, None] + norm.bias.float()[None, :, None]
        shape = (scale.shape[0], -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.to(x.dtype).reshape(shape), x, scale.to(x.dtype).reshape(shape))


def group_stats(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) of ``x`` (batch, channels, ...) over each of ``groups`` channel
    groups and every position, each (batch, groups, 1) in float32; a half-precision
    activation a group at a time (no float32 copy of the whole of it)."""
    grouped = x.reshape(x.shape[0], groups, -1)
    if x.dtype == torch.float32:  # one pass: every record's decode takes this path
        var, mean = torch.var_mean(grouped, dim=-1, correction=0, keepdim=True)
        return mean, var
    parts = grouped.split(1, dim=1)
    pairs = [torch.var_mean(g.float(), dim=-1, correction=0, keepdim=True) for g in parts]
    return torch.cat([m for _, m in pairs], 1), torch.cat([v for v, _ in pairs], 1)


def decode_branches(
    vae, decode, latents: torch.Tensor, controller: AttentionController
) -> tuple[list[np.ndarray], dict[int, Stats]]:
    """The final latents (branches, C, h, w) decoded one at a time by ``decode`` (as the UNet
    passes), and the decoder statistics each branch the ``controller`` records was decoded
    with.

    Each ``blend_norm`` edit of the controller's local blend is decoded with the statistics
    its source was decoded with (a recorded source's are in its record), any other branch
    with its own. So a chain of local edits is normalised as the picture it started from,
    and an edit back to that picture, whose latent is that picture's, decodes to it (to float
    rounding)."""
    blend, keep = controller.blend, set(controller.records)
    borrow = blend.norm_sources()
    lenders = set(borrow.values())
    if not borrow and not keep:
        return [image for z in latents.split(1) for image in decode(z)], {}
    norms, stats = DecoderNorms(vae), {}
    if RECORDED in lenders:  # a record made outside sessions may have kept none
        kept = blend.record.norms
        stats[RECORDED] = kept if kept is not None else _own(norms, decode, blend.record, latents)
    images: list[np.ndarray] = []
    for b, z in enumerate(latents.split(1)):
        if b in borrow:
            stats[b] = stats[borrow[b]]
            with norms.using(stats[b]):
                images += decode(z)
        elif b in lenders or b in keep:
            with norms.recording() as stats[b]:
                images += decode(z)
        else:
            images += decode(z)
    return images, {b: s for b, s in stats.items() if b in keep}


def _own(norms: DecoderNorms, decode, record, like: torch.Tensor) -> Stats:
    """The statistics of a record's final latent, for a record that kept none (a
    :class:`~clp2p.engine.engine.Recording` made by hand: sessions never serve a
    ``blend_norm`` edit from a record without them, see ``session_render``)."""
    with norms.recording() as stats:
        decode(to_device(record.latents[-1], like)[None])
    return stats
