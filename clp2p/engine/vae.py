"""The VAE's side of a render: pictures to latents and back, scaled as the UNet expects, and
the precision the VAE runs in."""

from __future__ import annotations

import numpy as np
import torch


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
