"""Train the shapes-world model from scratch on the CPU and export a diffusers pipeline.

    python -m clp2p.shapes.train --out resources/models/shapes

Stage 1 trains the AutoencoderKL on rendered scenes; stage 2 encodes a fixed data set once;
stage 3 trains the UNet and the text encoder jointly on those latents (epsilon prediction,
min-SNR weighting, 10% empty captions for classifier-free guidance, EMA weights exported).
Checkpoints land in ``--work-dir`` and a rerun resumes from them.

    python -m clp2p.shapes.train --init resources/models/shapes --out OUT

fine-tunes a trained model instead (:data:`FINETUNE`): its VAE is kept, stage 3 starts from
its UNet and text encoder. The shipped model is the base run followed by this fine-tune.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # OpenMP threads that spin while they wait make a shared 2-core machine crawl (measured: a
    # training step took 14x longer while another process ran); they must sleep instead. This
    # has to be set before torch loads its OpenMP runtime, and only when run as a script:
    # importing this module changes nothing in the importing process.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from clp2p import atomic
from clp2p.attention.processor import ControlledAttnProcessor
from clp2p.model.card import CARD_FILE
from clp2p.shapes import checkpoint, grounding, world
from clp2p.shapes import model as shapes_model
from clp2p.shapes.model import ModelConfig
from clp2p.shapes.train_log import Progress, write_curve


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyperparameter; the defaults produce the shipped model."""

    seed: int = 0
    # the share of two-object scenes (0: the one-object world of the first shipped model)
    two_fraction: float = 0.6
    threads: int = 2
    dataset_size: int = 40_000
    vae_steps: int = 3_000
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4  # on the per-element mean KL
    steps: int = 3_000
    batch: int = 64
    lr: float = 6e-4
    warmup: int = 100
    final_lr_fraction: float = 0.1
    caption_drop: float = 0.1
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    # token grounding (:mod:`clp2p.shapes.grounding`): weights of its token and pixel terms
    grounding: float = 0.3
    grounding_pixel: float = 0.2
    grounding_word: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 20
    checkpoint_every: int = 200
    max_minutes: float = 100.0  # stage 3 stops early (and still exports) past this
    init: str = ""  # a trained model folder to fine-tune (``--init``)


FINETUNE: dict[str, object] = {
    "steps": 800,
    "lr": 1.5e-4,
    "warmup": 50,
    "grounding_word": 0.3,
    "max_minutes": 40.0,
}
"""What ``--init`` changes in the defaults: a short, gentle run that adds the word term of the
grounding loss (:mod:`clp2p.shapes.grounding`) to the base model's training."""


def make_dataset(cfg: TrainConfig, mcfg: ModelConfig) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Render ``cfg.dataset_size`` seeded scenes: uint8 (N, S, S, 3), their captions, and each
    object's latent mask (:func:`~clp2p.shapes.grounding.latent_masks`, uint8 (N, 2, L, L)).
    With ``two_fraction`` 0 the scenes are the one-object world's, drawn as the first model
    drew them."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.two_fraction <= 0:
        scenes = [world.sample_scene(rng) for _ in range(cfg.dataset_size)]
        multi = [world.MultiScene.from_scene(s) for s in scenes]
        captions = [world.prompt(s) for s in scenes]
    else:
        multi = [world.sample_one_or_two(rng, cfg.two_fraction) for _ in range(cfg.dataset_size)]
        captions = [world.caption(s) for s in multi]
    drawn = [world.render_objects(s, mcfg.image_size) for s in multi]
    images = np.stack([image for image, _ in drawn])
    masks = np.stack([grounding.latent_masks(m, mcfg.latent_size) for _, m in drawn])
    return images, captions, masks


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(
    cfg: TrainConfig, mcfg: ModelConfig, images: np.ndarray, rows: list[dict], start: float
) -> AutoencoderKL:
    """Stage 1: reconstruction (MSE) plus a small KL term."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    vae = shapes_model.build_vae(mcfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.vae_lr, total_steps=cfg.vae_steps, pct_start=0.05
    )
    progress = Progress("vae", cfg.vae_steps, cfg.log_every, start, rows)
    for step in range(cfg.vae_steps):
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=gen).numpy()
        x = to_pixels(images[idx])  # (B, 3, S, S)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean() / x[0, 0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress.step(step, loss.item(), sched.get_last_lr()[0])
    return vae.eval()


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: posterior mean and std of every image, each (N, C, L, L)."""
    means, stds = [], []
    for i in range(0, len(images), 256):
        dist = vae.encode(to_pixels(images[i : i + 256])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def token_ids(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every caption, (N, T), and of the empty caption, (T,), by the tokenizer
    ``tok``."""

    def encode(texts: list[str]) -> torch.Tensor:
        return tok(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids

    captions = sorted(set(texts))
    table = dict(zip(captions, encode(captions), strict=True))
    ids = torch.stack([table[t] for t in texts])
    return ids, encode([""])[0]


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    floor = cfg.final_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress)))


def _denoiser_loss(
    cfg, unet, text, data: dict, alphas, gen: torch.Generator, capture
) -> tuple[torch.Tensor, dict[str, float]]:
    """The min-SNR weighted noise-prediction loss of one random batch, plus the grounding
    terms when ``capture`` (an :class:`~clp2p.shapes.grounding.AttentionCapture` installed in
    ``unet``) is given; the loss and its parts."""
    idx = torch.randint(len(data["mean"]), (cfg.batch,), generator=gen)
    eps_z = torch.randn(data["mean"][idx].shape, generator=gen)
    z0 = (data["mean"][idx] + data["std"][idx] * eps_z) * float(data["scale"])  # (B, C, L, L)
    ids = data["ids"][idx].clone()  # (B, T)
    dropped = torch.rand(cfg.batch, generator=gen) < cfg.caption_drop
    ids[dropped] = data["empty"]
    t = torch.randint(len(alphas), (cfg.batch,), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    a = alphas[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    pred = unet(zt, t, text(ids).last_hidden_state).sample
    snr = (alphas[t] / (1 - alphas[t])).clamp(min=1e-8)
    weight = snr.clamp(max=cfg.min_snr_gamma) / snr  # (B,)
    loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
    if capture is None:
        return loss, {}
    where = data["where"][idx].clone()  # (B, K, W)
    where[dropped] = -1
    masks = data["masks"][idx].float() / 255  # (B, K, L, L)
    terms = grounding.grounding_loss(capture.take(), masks, where)
    weights = {"token": cfg.grounding, "pixel": cfg.grounding_pixel, "word": cfg.grounding_word}
    total = loss + sum(weights[name] * term for name, term in terms.items())
    parts = {name: term.item() for name, term in terms.items() if weights[name] > 0}
    return total, {"denoise": loss.item(), **parts}


def train_denoiser(
    cfg: TrainConfig,
    mcfg: ModelConfig,
    data: dict[str, torch.Tensor],
    work: Path,
    rows: list[dict],
    start: float,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Stage 3: UNet and text encoder jointly; returns their EMA copies."""
    torch.manual_seed(cfg.seed + 2)
    unet, text = shapes_model.build_unet(mcfg), shapes_model.build_text_encoder(mcfg)
    if cfg.init:
        init = Path(cfg.init)
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(init / "unet").state_dict())
        text.load_state_dict(CLIPTextModel.from_pretrained(init / "text_encoder").state_dict())
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    params = [*unet.parameters(), *text.parameters()]
    ema_params = [*ema_unet.parameters(), *ema_text.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    alphas = shapes_model.build_scheduler(mcfg).alphas_cumprod  # (T,)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    modules = {"unet": unet, "text": text, "ema_unet": ema_unet, "ema_text": ema_text}
    ckpt_path = work / "denoiser.pt"
    first = checkpoint.resume(ckpt_path, modules, opt, gen, rows, "stage 3")
    progress = Progress("unet", cfg.steps, cfg.log_every, start, rows)
    stage_start = time.time()
    grounded = max(cfg.grounding, cfg.grounding_pixel, cfg.grounding_word) > 0
    capture = grounding.AttentionCapture() if grounded else None
    if capture is not None:
        layers = unet.attn_processors
        unet.set_attn_processor({n: ControlledAttnProcessor(capture, n) for n in layers})
    for step in range(first, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss, parts = _denoiser_loss(cfg, unet, text, data, alphas, gen, capture)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        progress.step(step, loss.item(), opt.param_groups[0]["lr"], parts)
        last = step + 1 == cfg.steps
        over = (time.time() - start) / 60 > cfg.max_minutes
        if (step + 1) % cfg.checkpoint_every == 0 or last or over:
            checkpoint.save(ckpt_path, modules, opt, gen, step + 1, rows)
        if over:
            print(f"time budget reached after {step + 1} steps; stopping early", flush=True)
            break
    print(f"stage 3: {(time.time() - stage_start) / 60:.1f} min", flush=True)
    return ema_unet, ema_text


def export(
    mcfg: ModelConfig, vae: AutoencoderKL, unet: torch.nn.Module, text: torch.nn.Module, out: Path
) -> None:
    """Write a complete StableDiffusionPipeline folder (safetensors, no safety checker)."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=shapes_model.load_tokenizer(mcfg),
        unet=unet,
        scheduler=shapes_model.build_scheduler(mcfg),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
    shapes_model.write_tokenizer(mcfg, out / "tokenizer")
    atomic.write_json(out / CARD_FILE, shapes_model.CARD, indent=1)


def _configs(items: list[str], init: Path | None = None) -> tuple[TrainConfig, ModelConfig]:
    """The default configs (with :data:`FINETUNE` when fine-tuning ``init``) and
    ``FIELD=VALUE`` overrides (``--set``)."""
    cfg, mcfg = TrainConfig(), ModelConfig()
    if init is not None:
        cfg = dataclasses.replace(cfg, **FINETUNE, init=str(init))  # type: ignore[arg-type]
    for item in items:
        key, value = item.split("=", 1)
        target = cfg if key in {f.name for f in dataclasses.fields(cfg)} else mcfg
        typed = type(getattr(target, key))
        parsed = tuple(int(v) for v in value.split(",")) if typed is tuple else typed(value)
        if target is cfg:
            cfg = dataclasses.replace(cfg, **{key: parsed})
        else:
            mcfg = dataclasses.replace(mcfg, **{key: parsed})
    return cfg, mcfg


def _stage1(cfg, mcfg, images, work: Path, rows: list[dict], start: float):
    """The VAE (trained, loaded from ``work``, or the fine-tuned model's) and the latent
    posterior of every image."""
    if cfg.init:
        vae = AutoencoderKL.from_pretrained(Path(cfg.init) / "vae").eval()
        print(f"kept the VAE of {cfg.init}", flush=True)
        return vae, *encode_dataset(vae, images)
    vae_dir = work / "vae"
    if (vae_dir / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
        rows.extend(json.loads((work / "vae_rows.json").read_text()))
        print("loaded stage 1 VAE from the work dir", flush=True)
    else:
        vae = train_vae(cfg, mcfg, images, rows, start)
    mean, std = encode_dataset(vae, images)
    if not (vae_dir / "config.json").exists():
        # Unit-variance latents for the denoiser, as Stable Diffusion's 0.18215 does.
        sample = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
        vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
        vae.save_pretrained(vae_dir)
        (work / "vae_rows.json").write_text(json.dumps(rows))
    return vae, mean, std


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("resources/models/shapes"))
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/clp2p-shapes-train"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--init", type=Path, help="fine-tune this trained model folder")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override TrainConfig / ModelConfig fields (for timed trials)",
    )
    args = parser.parse_args(argv)
    cfg, mcfg = _configs(args.set, args.init)
    torch.set_num_threads(cfg.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    start, rows = time.time(), []
    print(f"train config: {cfg}\nmodel config: {mcfg}", flush=True)

    images, captions, masks = make_dataset(cfg, mcfg)
    vae, mean, std = _stage1(cfg, mcfg, images, args.work_dir, rows, start)
    print(
        f"latents {tuple(mean.shape)}, scaling_factor {vae.config.scaling_factor:.4f}, "
        f"{(time.time() - start) / 60:.1f} min",
        flush=True,
    )
    tok = shapes_model.load_tokenizer(mcfg)
    ids, empty = token_ids(tok, captions)
    data = {
        "mean": mean,
        "std": std,
        "ids": ids,
        "empty": empty,
        "scale": torch.tensor(vae.config.scaling_factor),
        "masks": torch.from_numpy(masks),
        "where": torch.from_numpy(grounding.positions(ids.numpy(), grounding.word_ids(tok))),
    }
    unet, text = train_denoiser(cfg, mcfg, data, args.work_dir, rows, start)
    export(mcfg, vae, unet, text, args.out)
    write_curve(rows, args.figures)
    minutes = (time.time() - start) / 60
    size = sum(p.stat().st_size for p in args.out.rglob("*.safetensors")) / 2**20
    print(f"done: {minutes:.1f} min wall time, weights {size:.1f} MiB in {args.out}", flush=True)


if __name__ == "__main__":
    main()
