"""Measure how well a shapes-world model follows its prompts.

    python -m clp2p.shapes.check resources/models/shapes [--grid samples.png]

Loads the folder with the stock diffusers StableDiffusionPipeline and a DDIMScheduler, samples
one image per seed with seeds spread round-robin over every (colour, shape, background)
prompt, and reads each image back with ``clp2p.shapes.metrics``.
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
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from clp2p.model.card import card_of
from clp2p.resources import SHAPES
from clp2p.shapes import cleanliness, metrics, two_objects, world
from clp2p.shapes import seeds as seed_ranges
from clp2p.shapes.reading import match_objects, read_objects

_RECOMMENDED = card_of(SHAPES).settings()  # the shipped model's card says how to sample it


@dataclass(frozen=True)
class CheckConfig:
    """Sampling settings of the check: the shipped model's recommended ones (its card)."""

    samples: int = 200
    steps: int = _RECOMMENDED.steps
    guidance: float = _RECOMMENDED.guidance
    batch: int = 27


@dataclass(frozen=True)
class Sample:
    """One generated image (uint8 (H, W, 3)) with what was asked and what was read."""

    seed: int
    asked: tuple[str, str, str]  # (colour, shape, background)
    read: tuple[str, str, str]
    image: np.ndarray


def load_pipeline(folder: Path) -> StableDiffusionPipeline:
    """The model folder through the stock pipeline, offline, with DDIM sampling."""
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, prompts: list[str], seeds: list[int], cfg: CheckConfig) -> list[np.ndarray]:
    """uint8 (H, W, 3) pictures of ``prompts``, one seed each."""
    images = pipe(
        prompts,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
    ).images  # (B, H, W, 3) float in [0, 1]
    return [np.round(image * 255).clip(0, 255).astype(np.uint8) for image in images]


def generate(pipe: StableDiffusionPipeline, cfg: CheckConfig) -> list[Sample]:
    """Sample ``cfg.samples`` images of one-object captions, seeds from the held-out range
    (:data:`seed_ranges.GENERATE`); sample i asks for combination i mod 54."""
    combos = world.combinations()
    out: list[Sample] = []
    first_seed = seed_ranges.GENERATE.first
    for first in range(0, cfg.samples, cfg.batch):
        index = list(range(first, min(first + cfg.batch, cfg.samples)))
        asked = [combos[i % len(combos)] for i in index]
        seeds = [first_seed + i for i in index]
        prompts = [f"a {c} {s} on a {b} background" for c, s, b in asked]
        for seed, want, pixels in zip(
            seeds, asked, _sample(pipe, prompts, seeds, cfg), strict=True
        ):
            reading = metrics.read_image(pixels)
            read = (reading.colour, reading.shape, reading.background)
            out.append(Sample(seed, want, read, pixels))
    return out


def generate_two(pipe: StableDiffusionPipeline, cfg: CheckConfig) -> tuple[list, list[dict]]:
    """``cfg.samples`` pictures of two-object captions (the held-out deck, the same seeds as
    :func:`generate`) and their scores (:func:`two_objects.score_generation`)."""
    deck = two_objects.deck(cfg.samples, seed_ranges.GENERATE.deck)
    images, rows = [], []
    for first in range(0, cfg.samples, cfg.batch):
        combos = deck[first : first + cfg.batch]
        seeds = [seed_ranges.GENERATE.first + first + i for i in range(len(combos))]
        prompts = [two_objects.two_caption(c) for c in combos]
        for combo, pixels in zip(combos, _sample(pipe, prompts, seeds, cfg), strict=True):
            images.append(pixels)
            rows.append(two_objects.score_generation(combo, pixels))
    return images, rows


VAE_SCENES = 200
"""Ground-truth scenes of each world that :func:`vae_ceiling` sends through the VAE."""


def vae_ceiling(vae, scenes: int = VAE_SCENES, seed: int = 0) -> dict[str, dict[str, float]]:
    """What survives the VAE alone: rendered one- and two-object scenes encoded (posterior
    mean), decoded and read back. No generation can read back better than this, so a model
    whose colours fail here needs a better VAE, not a better denoiser. Returns per world
    (``one``, ``two``) the fractions of right colours and classes (per object), the mean
    absolute pixel error and the share of pictures with stray marks."""
    rng = np.random.default_rng(seed)
    out = {}
    for world_name in ("one", "two"):
        colour = shape = objects = marked = 0
        errors = []
        for _ in range(scenes):
            if world_name == "one":
                scene = world.MultiScene.from_scene(world.sample_scene(rng))
            else:
                scene = world.sample_two(rng)
            image, _ = world.render_objects(scene, vae.config.sample_size)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
            with torch.no_grad():
                y = vae.decode(vae.encode(x.to(vae.dtype)).latent_dist.mean).sample
            back = ((y[0].float().permute(1, 2, 0).numpy() + 1) * 127.5).round()
            back = back.clip(0, 255).astype(np.uint8)
            errors.append(np.abs(back.astype(np.int16) - image).mean())
            wanted = [(o.colour, o.shape) for o in scene.objects]
            matches = match_objects(wanted, read_objects(back))
            colour += sum(m.colour_ok for m in matches)
            shape += sum(m.shape_ok for m in matches)
            objects += len(wanted)
            marked += cleanliness.clean(back, len(wanted), scene.background)["marked"]
        out[world_name] = {
            "colour": colour / objects,
            "shape": shape / objects,
            "mad": float(np.mean(errors)),
            "marked": marked / scenes,
        }
    return out


def score(samples: list[Sample]) -> dict[str, float]:
    """Fractions of samples whose colour, shape, background (and all three) match the prompt,
    that carry no stray marks (``unmarked``) and whose background is within
    ``BACKGROUND_GOAL`` levels of its named colour (``background_clean``; see
    :mod:`clp2p.shapes.cleanliness`)."""
    n = len(samples)
    hits = Counter()
    for s in samples:
        for i, name in enumerate(("colour", "shape", "background")):
            hits[name] += s.read[i] == s.asked[i]
        hits["all"] += s.read == s.asked
        found = cleanliness.clean(s.image, 1, s.asked[2])
        hits["unmarked"] += not found["marked"]
        hits["background_clean"] += not found["tinted"]
    names = ("colour", "shape", "background", "all", "unmarked", "background_clean")
    return {k: hits[k] / n for k in names}


def per_class(samples: list[Sample], index: int) -> dict[str, float]:
    """Hit rate of attribute ``index`` broken down by the asked value."""
    asked = Counter(s.asked[index] for s in samples)
    hit = Counter(s.asked[index] for s in samples if s.read[index] == s.asked[index])
    return {k: hit[k] / asked[k] for k in sorted(asked)}


def save_grid(samples: list[Sample], path: Path, columns: int = 9) -> None:
    """One tile per sample, titled with the prompt; misread attributes in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(samples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.45))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, s in zip(np.ravel(axes), samples, strict=False):
        ax.imshow(s.image, interpolation="nearest")
        ok = s.read == s.asked
        title = f"{s.asked[0]} {s.asked[1]} / {s.asked[2]}"  # one line: no overlap
        ax.set_title(title, fontsize=6, color="black" if ok else "red")
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--samples", type=int, default=CheckConfig.samples)
    parser.add_argument("--steps", type=int, default=CheckConfig.steps)
    parser.add_argument("--guidance", type=float, default=CheckConfig.guidance)
    parser.add_argument("--grid", type=Path, help="save the first 54 samples as a PNG grid")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = CheckConfig(samples=args.samples, steps=args.steps, guidance=args.guidance)
    start = time.time()
    pipe = load_pipeline(args.folder)
    ceiling = vae_ceiling(pipe.vae)
    for name, figures in ceiling.items():
        print(
            f"VAE alone, {name}-object scenes: "
            + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
        )
    samples = generate(pipe, cfg)
    figures = score(samples)
    print(
        f"{len(samples)} samples, {cfg.steps} DDIM steps, guidance {cfg.guidance}, "
        f"{time.time() - start:.0f} s"
    )
    for name, value in figures.items():
        print(f"  {name:<10} {value:6.1%}")
    breakdown = {
        "colour": per_class(samples, 0),
        "shape": per_class(samples, 1),
        "background": per_class(samples, 2),
    }
    for name, table in breakdown.items():
        print(f"  {name} by class: " + ", ".join(f"{k} {v:.0%}" for k, v in table.items()))
    confusion = Counter((s.asked[1], s.read[1]) for s in samples if s.asked[1] != s.read[1])
    print("  shape confusions: " + ", ".join(f"{a}->{r} x{n}" for (a, r), n in confusion.items()))
    _, rows = generate_two(pipe, cfg)
    two = two_objects.generation_figures(rows)
    print(f"{len(rows)} two-object samples")
    for name, value in two.items():
        goal = two_objects.TWO_GOALS.get(name)
        print(f"  {name:<10} {value:6.1%}" + (f"  (goal >= {goal:.0%})" if goal else ""))
    if args.grid:
        save_grid(samples[: len(world.combinations())], args.grid)
    if args.json:
        doc = {"config": asdict(cfg), "figures": figures, "by_class": breakdown, "two": two}
        doc["vae_ceiling"] = ceiling
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
