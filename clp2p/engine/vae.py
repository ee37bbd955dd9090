"""The VAE's side of a render: pictures to latents and back, scaled as the UNet expects, the
precision the VAE runs in, and decoding an edit with its source's decoder statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


class DecoderNorms:
    """The VAE decoder's GroupNorm statistics taken from one decode and used in another.

    The decoder normalises every feature map over the whole picture, so the statistics of a
    latent that is mostly its source's but carries another picture's region inside a mask
    (local blend) can shift, and the decoder then repaints pixels far from the mask. An edit
    decoded :meth:`using` the statistics :meth:`recording` took from its source's latent is
    normalised as its source was. Statistics are matched to the decoder's norms by the order
    they run in, which is fixed for latents of one size (tiled decoding included), and are
    kept in float32 whatever the VAE's dtype."""

    def __init__(self, vae) -> None:
        self.norms = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
        self._stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._using = False
        self._next = 0

    @contextmanager
    def recording(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Decodes inside the block are unchanged; the list it yields then holds their
        statistics, (mean, variance) per norm call, each (batch, groups, 1)."""
        self._stats, self._using = [], False
        with self._hooked():
            yield self._stats

    @contextmanager
    def using(self, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        """Decodes inside the block normalise with ``stats`` (from :meth:`recording` of a
        decode of a latent of the same size) instead of their own."""
        self._stats, self._using, self._next = stats, True, 0
        with self._hooked():
            yield
        if self._next != len(stats):
            raise RuntimeError(f"decoder ran {self._next} norms with {len(stats)} statistics")

    @contextmanager
    def _hooked(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook) for m in self.norms]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, norm: torch.nn.GroupNorm, args: tuple, output: torch.Tensor):
        x = args[0]
        groups = x.float().reshape(x.shape[0], norm.num_groups, -1)
        if not self._using:
            var, mean = torch.var_mean(groups, dim=-1, correction=0, keepdim=True)
            self._stats.append((mean, var))
            return None
        if self._next >= len(self._stats):
            raise RuntimeError(f"decoder ran more norms than the {len(self._stats)} recorded")
        mean, var = self._stats[self._next]
        self._next += 1
        y = ((groups - mean) * torch.rsqrt(var + norm.eps)).reshape(x.shape)
        if norm.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * norm.weight.float().reshape(shape) + norm.bias.float().reshape(shape)
        return y.to(output.dtype)


Stats = list[tuple[torch.Tensor, torch.Tensor]]


def decode_branches(
    vae, decode, latents: torch.Tensor, controller: AttentionController
) -> tuple[list[np.ndarray], dict[int, Stats]]:
    """The final latents (branches, C, h, w) decoded one at a time by ``decode`` (as the UNet
    passes), and the decoder statistics each branch the ``controller`` records was decoded
    with.

    Each ``blend_norm`` edit of the controller's local blend is decoded with the statistics
    its source was decoded with (a recorded source's are in its record), any other branch
    with its own. So a chain of local edits is normalised as the picture it started from,
    and an edit back to that picture, whose latent is that picture's, decodes to it."""
    blend, keep = controller.blend, set(controller.records)
    borrow = blend.norm_sources()
    lenders = set(borrow.values())
    if not borrow and not keep:
        return [image for z in latents.split(1) for image in decode(z)], {}
    norms, stats = DecoderNorms(vae), {}
    if RECORDED in lenders:
        stats[RECORDED] = blend.record.norms or _own(norms, decode, blend.record, latents)
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
    """The statistics of a record's final latent, for a record that kept none."""
    with norms.recording() as stats:
        decode(to_device(record.latents[-1], like)[None])
    return stats
