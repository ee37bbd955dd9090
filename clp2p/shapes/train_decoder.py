"""Fine-tune the decoder of a trained shapes model; its encoder, UNet and text encoder are kept.

    python -m clp2p.shapes.train_decoder --init resources/models/shapes --out OUT

The denoiser's latents are never exactly the encoder's: a decoder trained only on encoder
posteriors turns the gap into stray coloured marks and tinted backgrounds. This stage freezes
the encoder (so every latent the denoiser learnt, and every inversion, stays valid) and trains
the decoder to map posterior samples plus extra Gaussian latent noise back to the rendered
scene. ``extra_layers`` first adds resnets to every block: each new resnet starts as the
identity (its second convolution is zero), so the encoder's output does not change by a bit.
The shipped model is the two-stage run of :mod:`clp2p.shapes.train` followed by this stage,
run three times (runs 5, 6 and 7 of ``docs/shapes-training.md``).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # sleeping OpenMP waits on a shared 2-core machine (see clp2p.shapes.train)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from clp2p.shapes import checkpoint, denoised
from clp2p.shapes.train import encode_dataset, to_pixels
from clp2p.shapes.train_log import Progress, write_rows


@dataclass(frozen=True)
class DecoderConfig:
    """Every hyperparameter of the decoder stage. The defaults are run 5's stage (from run 4);
    the shipped run 10 is three more runs from it (``docs/shapes-training.md``)."""

    seed: int = 12_345  # the scenes' seed: not the denoiser's training seed, no evaluation's
    scenes: int = 20_000
    two_fraction: float = 0.6
    extra_layers: int = 1  # resnets added to every encoder and decoder block
    latent_noise: float = 0.3  # std of the added noise, in the denoiser's (scaled) latent units
    steps: int = 2_500
    batch: int = 32
    lr: float = 3e-4
    threads: int = 2
    log_every: int = 20
    checkpoint_every: int = 200
    # scenes whose latents the model's own denoiser draws (clp2p.shapes.denoised), and the
    # share of every batch taken from them; 0: posteriors only
    denoised: int = 0
    denoised_share: float = 0.0
    denoised_seed: int = 777  # their scenes' seed
    denoised_noise: int = 10_000  # scene i's noise seed is this + i (no evaluation's seeds)
    # share of the posterior samples spliced: another scene's objects (and one latent cell
    # around them) pasted in, in the latent and in the pixels alike, so that a latent cell
    # decodes to its own region whatever surrounds it (local blend splices latents)
    spliced_share: float = 0.0


SHARES = ("two_fraction", "denoised_share", "spliced_share")  # DecoderConfig's fractions
COUNTS = ("scenes", "steps", "batch", "threads", "log_every", "checkpoint_every")  # >= 1


def grow(vae: AutoencoderKL, extra: int) -> AutoencoderKL:
    """The same VAE with ``extra`` more resnets per block, each the identity at first (its
    second convolution is zero, so ``x + conv2(...)`` is ``x``): outputs are unchanged."""
    if extra <= 0:
        return vae
    config = dict(vae.config)
    config["layers_per_block"] = config["layers_per_block"] + extra
    bigger = AutoencoderKL.from_config(config)
    missing = bigger.load_state_dict(vae.state_dict(), strict=False).missing_keys
    params = dict(bigger.named_parameters())
    with torch.no_grad():
        for key in missing:
            if ".conv2." in key:
                params[key].zero_()
    return bigger.eval()


@dataclass
class Pairs:
    """What the decoder learns from: rendered scenes (uint8 (N, S, S, 3)) with their
    posteriors, and rendered scenes with the latents the denoiser drew for them (none when
    the stage does not ask for them)."""

    images: np.ndarray
    denoised_images: np.ndarray | None = None  # (M, S, S, 3)
    denoised: torch.Tensor | None = None  # (M, C, L, L), unscaled


def pairs(cfg: DecoderConfig, init: Path, vae: AutoencoderKL, work: Path) -> Pairs:
    """The scenes of ``cfg`` and, when it asks for them, the denoiser's latents of
    ``cfg.denoised`` more (drawn by ``init``'s UNet, kept in ``work``)."""
    size = vae.config.sample_size
    images = denoised.render(denoised.scenes(cfg.scenes, cfg.seed, cfg.two_fraction), size)
    drawn = denoised.scenes(cfg.denoised, cfg.denoised_seed, cfg.two_fraction)
    if not drawn:
        return Pairs(images)
    latents = denoised.denoised_latents(init, vae, drawn, cfg.denoised_noise, work)
    return Pairs(images, denoised.render(drawn, size), latents)


def backgrounds(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3): the background colour of rendered scenes (uint8 (N, S, S, 3)), read at
    the top-left corner, which no object reaches (``world.MARGIN``)."""
    return images[:, 0, 0]


def object_cells(images: np.ndarray, latent: int) -> torch.Tensor:
    """bool (N, L, L): the latent cells of rendered scenes (uint8 (N, S, S, 3)) that hold any
    object pixel (one not of the :func:`backgrounds` colour), grown by one cell as local
    blend's max-pooling grows its masks."""
    objects = (images != backgrounds(images)[:, None, None]).any(-1)  # (N, S, S)
    cells = torch.from_numpy(objects).float()[:, None]
    cells = F.adaptive_max_pool2d(cells, latent)
    return F.max_pool2d(cells, 3, stride=1, padding=1)[:, 0] > 0


def partners(pixels: np.ndarray, gen) -> torch.Tensor:
    """For each scene (uint8 (B, S, S, 3)) another of the same background colour (itself when
    it has none), drawn with ``gen``: a local blend splices a picture's edited region into
    the same picture's background, never into another background."""
    background = [tuple(colour) for colour in backgrounds(pixels)]
    out = []
    for i, colour in enumerate(background):
        same = [j for j, other in enumerate(background) if other == colour and j != i] or [i]
        out.append(same[int(torch.randint(len(same), (1,), generator=gen))])
    return torch.tensor(out)


def splice(z, pixels: np.ndarray, cells: torch.Tensor, gen) -> tuple[torch.Tensor, np.ndarray]:
    """Latents (B, C, L, L) and their scenes (uint8 (B, S, S, 3)) with, for each, the object
    cells ``cells`` (B, L, L) of another of the same background (:func:`partners`) pasted
    in, alike in both."""
    partner = partners(pixels, gen)
    m = cells[partner]  # (B, L, L)
    z = torch.where(m[:, None], z[partner], z)
    scale = pixels.shape[1] // m.shape[-1]
    big = m.repeat_interleave(scale, 1).repeat_interleave(scale, 2).numpy()[..., None]
    return z, np.where(big, pixels[partner.numpy()], pixels)


def _batch(cfg, data: Pairs, mean, std, noise, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and the pixels they should decode to: ``denoised_share`` of the batch from
    the denoiser's latents, the rest posterior samples plus ``noise`` (unscaled units), of
    which ``spliced_share`` spliced (:func:`splice`)."""
    own = round(cfg.batch * cfg.denoised_share) if data.denoised is not None else 0
    idx = torch.randint(len(data.images), (cfg.batch - own,), generator=gen)
    z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
    z = z + noise * torch.randn(z.shape, generator=gen)
    pixels = [data.images[idx.numpy()]]
    spliced = round(len(idx) * cfg.spliced_share)
    if spliced:
        cells = object_cells(pixels[0][:spliced], z.shape[-1])
        z[:spliced], pixels[0][:spliced] = splice(z[:spliced], pixels[0][:spliced], cells, gen)
    if own:
        j = torch.randint(len(data.denoised), (own,), generator=gen)
        z = torch.cat([z, data.denoised[j]])
        pixels.append(data.denoised_images[j.numpy()])
    return z, to_pixels(np.concatenate(pixels))


def train(cfg: DecoderConfig, vae: AutoencoderKL, data: Pairs, work: Path) -> list[dict]:
    """Train ``vae``'s decoder in place (MSE on pixels in [-1, 1]); the loss rows."""
    vae.requires_grad_(False)
    mean, std = encode_dataset(vae, data.images)  # (N, C, L, L) each, frozen encoder
    noise = cfg.latent_noise / vae.config.scaling_factor
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05
    )
    gen, rows = torch.Generator().manual_seed(cfg.seed + 1), []
    ckpt_path = work / "decoder.pt"
    modules = {"vae": vae, "sched": sched}
    first = checkpoint.resume(ckpt_path, modules, opt, gen, rows, "the decoder stage")
    progress = Progress("decoder", cfg.steps, cfg.log_every, time.time(), rows)
    vae.train()
    for step in range(first, cfg.steps):
        z, pixels = _batch(cfg, data, mean, std, noise, gen)
        loss = F.mse_loss(vae.decode(z).sample, pixels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress.step(step, loss.item(), sched.get_last_lr()[0])
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint.save(ckpt_path, modules, opt, gen, step + 1, rows)
    vae.eval().requires_grad_(False)
    return rows


def export(init: Path, vae: AutoencoderKL, out: Path) -> None:
    """``init``'s pipeline folder with ``vae`` in place of its VAE."""
    if out.resolve() != init.resolve():
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(init, out)
    shutil.rmtree(out / "vae")
    vae.save_pretrained(out / "vae", safe_serialization=True)


def _config(parser: argparse.ArgumentParser, items: list[str]) -> DecoderConfig:
    """The defaults with ``FIELD=VALUE`` overrides; a bad one ends with one line naming it."""
    cfg = DecoderConfig()
    fields = [f.name for f in dataclasses.fields(cfg)]
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            parser.error(f"--set {item}: FIELD is one of {', '.join(fields)}")
        try:
            cfg = dataclasses.replace(cfg, **{key: type(getattr(cfg, key))(value)})
        except ValueError:
            kind = "a whole number" if type(getattr(cfg, key)) is int else "a number"
            parser.error(f"--set {item}: {key} takes {kind}")
        value = getattr(cfg, key)
        if key in SHARES and not 0.0 <= value <= 1.0:  # NaN fails too
            parser.error(f"--set {item}: {key} takes a number from 0 to 1")
        if type(value) is int and value < (1 if key in COUNTS else 0):
            least = "at least 1" if key in COUNTS else "0 or more"
            parser.error(f"--set {item}: {key} takes a whole number, {least}")
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, required=True, help="the trained model folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/clp2p-shapes-decoder"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    cfg = _config(parser, args.set)
    torch.set_num_threads(cfg.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"decoder config: {cfg}", flush=True)
    vae = grow(AutoencoderKL.from_pretrained(args.init / "vae").eval(), cfg.extra_layers)
    rows = train(cfg, vae, pairs(cfg, args.init, vae, args.work_dir), args.work_dir)
    export(args.init, vae, args.out)
    write_rows(rows, args.figures / "shapes-decoder-loss.csv")
    minutes = (time.time() - start) / 60
    size = sum(p.stat().st_size for p in args.out.rglob("*.safetensors")) / 2**20
    print(f"done: {minutes:.1f} min wall time, weights {size:.1f} MiB in {args.out}", flush=True)


if __name__ == "__main__":
    main()
