"""Latents the model's own denoiser draws for rendered scenes, as training pairs for its
decoder.

A decoder trained on encoder posteriors (even with Gaussian noise added) meets other latents
when it decodes a generation: the denoiser's, whose errors have a structure of their own
(the faint rainbow stripes beside shapes on gray backgrounds, tints). Each rendered scene here
is encoded, noised to a ``strength`` (a share of the sampling schedule, as image-to-image
sampling does) and denoised by the model's UNet under the scene's caption with the model's
recommended steps and guidance. Up to a strength well below 1 the denoiser keeps the scene's
layout, so the rendered scene is still the right picture for the latent it drew, and the
decoder learns to draw it from the denoiser's latents.

Slow (a share of a full sampling run per scene), so the latents are kept in the work folder
every few batches and a rerun goes on from there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline

from clp2p.atomic import write_with
from clp2p.model.card import card_of
from clp2p.shapes import world

STRENGTHS = (0.3, 0.45, 0.6, 0.75)  # batch i is noised to STRENGTHS[i % 4]
BATCH = 48
SAVE_EVERY = 10  # batches between two saves of the latents drawn so far


def scenes(count: int, seed: int, two_fraction: float) -> list[world.MultiScene]:
    """``count`` one- or two-object scenes drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [world.sample_one_or_two(rng, two_fraction) for _ in range(count)]


def render(drawn: list[world.MultiScene], size: int) -> np.ndarray:
    """uint8 (N, S, S, 3): the scenes rendered."""
    return np.stack([world.render_objects(s, size)[0] for s in drawn])


def _key(drawn: list[world.MultiScene], seed: int) -> str:
    """What the kept latents were drawn for: the scenes and the noise seed."""
    return hashlib.sha256(f"{seed}\n{drawn!r}".encode()).hexdigest()


def _pipeline(init: Path, vae: AutoencoderKL) -> StableDiffusionImg2ImgPipeline:
    """``init``'s UNet, text encoder and tokenizer, DDIM sampling, and ``vae`` (whose
    encoder is the model's)."""
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        init, vae=vae, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoised_latents(
    init: Path, vae: AutoencoderKL, drawn: list[world.MultiScene], seed: int, work: Path
) -> torch.Tensor:
    """(N, C, L, L): for each scene of ``drawn`` the latent ``init``'s denoiser draws from it
    (in ``vae``'s unscaled units, as ``vae.decode`` takes them); the noise of scene i is
    seeded by ``seed + i``. Kept in ``work/denoised.pt`` as it goes; a rerun resumes, and a
    run asking for more scenes of the same draw (the first ones are the same scenes) goes on
    from the kept ones."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "denoised.pt"
    done = _resumed(path, drawn, seed)
    if done:
        print(f"resumed the denoised latents at {sum(len(d) for d in done)}", flush=True)
    if len(done) * BATCH < len(drawn):  # the pipeline loads only when some are left
        _draw(init, vae, drawn, seed, done, path)
    return torch.cat(done)


def _resumed(path: Path, drawn: list[world.MultiScene], seed: int) -> list[torch.Tensor]:
    """The kept latents in ``path`` that serve ``drawn``, in whole batches: a draw of its
    first scenes (keyed by them; a file that keyed the whole draw also serves). Anything
    else there (another draw, a foreign or damaged file) serves nothing."""
    if not path.exists():
        return []
    try:
        saved = torch.load(path, weights_only=True)
    except Exception:  # a damaged file fails anywhere in torch's reader: draw anew
        return []
    kept = saved.get("latents") if isinstance(saved, dict) else None
    if not isinstance(kept, torch.Tensor) or not 0 < len(kept) <= len(drawn):
        return []
    if saved.get("key") not in (_key(drawn[: len(kept)], seed), _key(drawn, seed)):
        return []
    whole = len(kept) if len(kept) == len(drawn) else len(kept) // BATCH * BATCH
    return list(kept[:whole].split(BATCH)) if whole else []


def _draw(init, vae, drawn, seed: int, done: list, path: Path) -> None:
    """Draw the latents of the scenes after those in ``done`` into it (batches of
    :data:`BATCH`), saving all of them, keyed by the scenes drawn so far, every
    :data:`SAVE_EVERY` batches and at the end."""
    settings = card_of(str(init)).settings()
    pipe = _pipeline(init, vae)
    for b in range(len(done) * BATCH, len(drawn), BATCH):
        part = drawn[b : b + BATCH]
        image = torch.from_numpy(render(part, vae.config.sample_size)).permute(0, 3, 1, 2) / 255.0
        with torch.no_grad():
            out = pipe(
                [world.caption(s) for s in part],
                image=image,
                strength=STRENGTHS[(b // BATCH) % len(STRENGTHS)],
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                output_type="latent",
                generator=[torch.Generator().manual_seed(seed + b + i) for i in range(len(part))],
            ).images
        done.append(out / vae.config.scaling_factor)
        last = b + BATCH >= len(drawn)
        if len(done) % SAVE_EVERY == 0 or last:
            latents = torch.cat(done)
            state = {"key": _key(drawn[: len(latents)], seed), "latents": latents}
            write_with(path, lambda f, state=state: torch.save(state, f))
            print(f"denoised latents: {min(b + BATCH, len(drawn))}/{len(drawn)}", flush=True)
