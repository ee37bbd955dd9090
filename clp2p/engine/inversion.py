"""Real-image inversion: turn a picture and a prompt that describes it into the starting point
of a render, so the picture can be edited like a generated one.

Three methods, all starting from a DDIM inversion of the image's latent under its prompt:

- ``null-text`` (Mokady et al.): per step, optimise the unconditional embedding so that the
  guided DDIM step lands on the inversion trajectory; the edits use those embeddings.
- ``negative-prompt`` (Miyake et al.): no optimisation; the source prompt's own embedding
  takes the unconditional embedding's place in every step of every branch.
- ``direct`` (Ju et al.): the source branch is put back onto the inversion trajectory after
  every step (the per-step offsets), the edits follow it with plain guidance.

The result, :class:`Inversion`, is plain numpy: sessions store it and renders reuse it, so an
image is inverted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.imported import DEFAULT_METHOD, METHODS, Inversion


@dataclass(frozen=True)
class InversionResult:
    inversion: Inversion
    image: np.ndarray  # (H, W, 3) uint8: the input as fitted to the model
    unet_forward: int  # UNet forward passes
    unet_backward: int  # ... and backward passes (null-text's optimisation)
    seconds: float


class _Counter:
    """The engine's UNet, counting its passes."""

    def __init__(self, engine) -> None:
        self.engine, self.unet, self.forward, self.backward = engine, engine.pipe.unet, 0, 0

    def __call__(self, z, t, embeds):
        self.forward += 1
        return self.engine.unet_output(z, t, embeds)


def invert(
    engine,
    image: np.ndarray,
    prompt: str,
    settings,
    method: str = DEFAULT_METHOD,
    *,
    inner_steps: int = 10,
    on_step: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InversionResult:
    """Invert ``image`` (H, W, 3 uint8, already at the render size) under ``prompt`` with
    ``settings`` (steps, guidance). ``on_step(done, total)`` reports progress; ``cancel`` is
    checked between UNet passes and raises :class:`RenderCancelled`."""
    settings = _checked_settings(engine, image, prompt, settings, method)
    start = time.perf_counter()
    unet = _Counter(engine)
    steps = settings.steps
    total = steps + (steps * (inner_steps + 2) if method == "null-text" else 0)
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if on_step is not None:
            on_step(min(done, total), total)
        if cancel is not None and cancel():
            raise RenderCancelled("inversion cancelled; nothing was changed")

    # no_grad, not inference_mode: null-text's optimisation differentiates through these
    with torch.no_grad():
        z0 = engine.encode_image(image)
        cond = engine.encode([prompt]).clone()
        empty = engine.unconditional().clone()
        scheduler = engine.scheduler()
        scheduler.set_timesteps(steps, device=engine.device)
        trajectory = _ddim_invert(unet, scheduler, z0, cond, tick)
    uncond = None
    if method == "null-text":
        uncond = _null_text(
            unet, scheduler, trajectory, cond, empty, settings.guidance, inner_steps, tick
        )
    latents = torch.stack(trajectory).float().cpu().numpy()[:, 0]  # (steps + 1, C, h, w)
    guidance = settings.guidance if method == "null-text" else 0.0
    result = Inversion(method, prompt, latents, uncond, guidance)
    return InversionResult(result, image, unet.forward, unet.backward, time.perf_counter() - start)


def _checked_settings(engine, image: np.ndarray, prompt: str, settings, method: str):
    """``settings`` resolved by the engine, once the method, the prompt, the image size and
    the guidance are known to suit an inversion."""
    from clp2p.model.settings import RenderSettings

    if method not in METHODS:
        raise Clp2pError.about(
            "{method} '{value}': choose one of {methods}", value=method, methods=", ".join(METHODS)
        )
    if not prompt.strip():
        raise Clp2pError.about("{prompt}: describe the image; the edits change words of it")
    settings = engine.resolve_settings(settings)
    assert isinstance(settings, RenderSettings)
    if image.shape[:2] != (settings.height, settings.width):
        raise Clp2pError(
            f"the image is {image.shape[1]}x{image.shape[0]}, the render "
            f"{settings.width}x{settings.height}: fit it first (crop or fit)"
        )
    if method == "null-text" and settings.guidance <= 1.0:
        raise Clp2pError.about(
            "{guidance} {value:g}: null-text inversion optimises the unconditional embedding "
            "that guidance uses; raise {guidance} above 1 or use {method} direct",
            value=settings.guidance,
        )
    engine.tokens(prompt)  # the prompt must fit the tokenizer
    return settings


def _alpha(scheduler, t: int) -> torch.Tensor:
    return scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod


def _ddim_invert(unet, scheduler, z0, cond, tick) -> list[torch.Tensor]:
    """DDIM inversion under ``cond`` alone; returns latents in sampling order, from the most
    noisy (where sampling starts) to ``z0``. Like diffusers' ``DDIMInverseScheduler``, the
    model is evaluated at the noisier timestep on the current latent and its output is read
    at the current noise level."""
    timesteps = [int(t) for t in scheduler.timesteps]  # descending
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    kind = scheduler.config.prediction_type
    z = z0.float()  # the update in float32, as DDIMScheduler.step does it
    out = [z]
    for t in reversed(timesteps):
        a_cur = _alpha(scheduler, t - stride).float()
        a_next = _alpha(scheduler, t).float()
        model_out = unet(z.to(z0.dtype), t, cond).float()
        x0, eps = _split(model_out, z, a_cur, kind)
        z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        out.append(z)
        tick()
    return out[::-1]


def _split(model_out, z, alpha, kind: str):
    """(predicted clean latent, predicted noise) of a model output at noise level ``alpha``."""
    if kind == "epsilon":
        return (z - (1 - alpha).sqrt() * model_out) / alpha.sqrt(), model_out
    if kind == "v_prediction":
        return (
            alpha.sqrt() * z - (1 - alpha).sqrt() * model_out,
            alpha.sqrt() * model_out + (1 - alpha).sqrt() * z,
        )
    if kind == "sample":
        return model_out, (z - alpha.sqrt() * model_out) / (1 - alpha).clamp_min(1e-12).sqrt()
    raise Clp2pError(f"the model's prediction type '{kind}' cannot be inverted")


def _null_text(unet, scheduler, trajectory, cond, empty, guidance, inner, tick) -> np.ndarray:
    """Mokady et al.'s null-text optimisation: per step, Adam on the unconditional embedding
    toward the next latent of the inversion trajectory, at most ``inner`` iterations. Their
    schedule for 50 steps (lr 1e-2 falling to half, early stop at loss 1e-5 + 2e-5 x step) is
    stretched to any number of steps. The guided step and the loss run in float32; on half
    precision models the loss is scaled so its gradient does not underflow. What is optimised
    is the unconditional half's token embeddings (the cross-attention context); on SDXL its
    pooled embedding and size conditioning stay the model's unconditional ones."""
    model = unet.unet
    dtype = cond.tokens.dtype
    loss_scale = 1.0 if dtype == torch.float32 else 2.0**14
    steps = len(trajectory) - 1
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    u = empty.tokens.detach().clone().float()
    z = trajectory[0].float()
    out = []
    try:
        for i, t in enumerate(scheduler.timesteps):
            progress = i * 50 / steps  # the step in the reference's 50-step schedule
            target = trajectory[i + 1].float()
            with torch.no_grad():
                out_c = unet(z.to(dtype), t, cond).float()
            u = u.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([u], lr=1e-2 * (1.0 - progress / 100.0))
            for j in range(inner):
                with torch.enable_grad():
                    out_u = unet(z.to(dtype), t, empty.with_tokens(u.to(dtype))).float()
                    guided = out_u + guidance * (out_c - out_u)
                    prev = scheduler.step(guided, t, z, eta=0.0).prev_sample
                    loss = torch.nn.functional.mse_loss(prev, target)
                    opt.zero_grad(set_to_none=True)
                    (loss * loss_scale).backward()
                unet.backward += 1
                opt.step()
                tick()
                if loss.item() < 1e-5 + progress * 2e-5:
                    tick(inner - j - 1)
                    break
            u = u.detach()
            out.append(u[0].cpu().numpy())
            with torch.no_grad():
                out_u = unet(z.to(dtype), t, empty.with_tokens(u.to(dtype))).float()
                guided = out_u + guidance * (out_c - out_u)
                z = scheduler.step(guided, t, z, eta=0.0).prev_sample
            tick(2)
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return np.stack(out).astype(np.float32)
