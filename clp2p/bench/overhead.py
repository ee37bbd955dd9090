"""``clp2p bench overhead``: the engine's cost against diffusers' plain generation.

An SD-1.5-architecture pipeline (UNet, VAE, CLIP text encoder) is built with random weights
from the configs in ``resources/configs/sd15`` (no download; same cost as the real model).
Plain: ``StableDiffusionPipeline`` generating the two prompts. Engine: a word swap of the same
two prompts with cross, self and V injection, local blend and heatmap collection on, timed in
both of its modes: one UNet pass per branch (the default, bit-exact across renders) and all
branches in one batch (``RenderOptions.batch_branches``, as the pipeline batches its prompts).
Peak memory is the process's peak resident memory during the run above what it held before
(the loaded model), read from ``/proc`` (Linux).
"""

from __future__ import annotations

import gc
import os
import re
import time
from pathlib import Path

import torch

from clp2p import atomic
from clp2p.model.params import CrossWindow, EditParams, StepWindow

SOURCE = "a photo of a cat sitting on a wooden bench in a park"
TARGET = "a photo of a dog sitting on a wooden bench in a park"
EDIT = EditParams(
    kind="swap",
    cross=CrossWindow(StepWindow(0.0, 0.8)),
    self_window=StepWindow(0.0, 0.8),
    self_res=32,
    v_window=StepWindow(0.0, 0.5),
    v_blend=0.5,
    v_layers="both",
    k=0.3,
    blend_words=("cat", "dog"),
    preset="bench",
)
GOALS = {"time": 1.10, "memory": 1.15}


def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def _measure(fn) -> tuple[float, float]:
    """(seconds, peak MiB above the resident memory at the start) of ``fn()``."""
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    base = _status_kb("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, (_status_kb("VmHWM") - base) / 1024


def build_sd15_random(config_dir: Path | None = None):
    """A StableDiffusionPipeline of SD 1.5's architecture with random weights (or of the
    architecture of ``config_dir``: SD 2.x, or SDXL through :func:`build_xl_random`)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from clp2p.resources import resources_dir

    root = config_dir or resources_dir() / "configs" / "sd15"
    if (root / "text_encoder_2").is_dir():
        return build_xl_random(root)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
        unet=unet.eval(),
        scheduler=DDIMScheduler.from_pretrained(root, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_xl_random(root: Path):
    """A StableDiffusionXLPipeline of SDXL base's architecture (``root``: its configs) with
    random weights."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(root / "text_encoder_2"))
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text.eval(),
        text_encoder_2=text_2.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(root / "tokenizer_2"),
        unet=unet.eval(),
        scheduler=DDIMScheduler.from_config(DDIMScheduler.load_config(root / "scheduler")),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_run(pipe, size: int, steps: int):
    """diffusers' pipeline generating the two prompts."""

    def run():
        with torch.inference_mode():
            pipe(
                [SOURCE, TARGET],
                num_inference_steps=steps,
                guidance_scale=7.5,
                height=size,
                width=size,
                generator=torch.Generator("cpu").manual_seed(0),
                output_type="np",
            )

    return run


def _engine_run(engine, size: int, steps: int, batched: bool = False):
    """The engine rendering the word swap of the same prompts with every control on."""
    from clp2p.engine.engine import RenderOptions
    from clp2p.model.settings import RenderSettings

    settings = RenderSettings(seed=0, steps=steps, guidance=7.5, width=size, height=size)
    options = RenderOptions(batch_branches=batched)

    def run():
        engine.edit(SOURCE, [(TARGET, EDIT)], settings, options=options)

    return run


def _row(runs: dict, size: int, steps: int, repeats: int) -> dict:
    """Best time and peak memory of each run, alternating, and the ratios to the pipeline."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # alternate, keep the best of each
        for name, run in runs.items():
            t, m = _measure(run)
            times[name].append(t)
            peaks[name].append(m)
    row = {"size": size, "steps": steps}
    for name in runs:
        row[f"{name}_s"] = round(min(times[name]), 3)
        row[f"{name}_peak_mib"] = round(min(peaks[name]), 1)
    for name, suffix in (("engine", ""), ("engine_batched", "_batched")):
        row[f"time_ratio{suffix}"] = round(row[f"{name}_s"] / row["plain_s"], 3)
        row[f"memory_ratio{suffix}"] = round(
            row[f"{name}_peak_mib"] / max(row["plain_peak_mib"], 1e-6), 3
        )
    print(
        f"{size:>4} px {steps} steps: plain {row['plain_s']:.2f} s "
        f"{row['plain_peak_mib']:.0f} MiB | engine {row['engine_s']:.2f} s "
        f"{row['engine_peak_mib']:.0f} MiB, x{row['time_ratio']:.3f} time, "
        f"x{row['memory_ratio']:.3f} memory | engine in one batch "
        f"{row['engine_batched_s']:.2f} s {row['engine_batched_peak_mib']:.0f} MiB, "
        f"x{row['time_ratio_batched']:.3f} time, x{row['memory_ratio_batched']:.3f} memory "
        f"(goals <= x{GOALS['time']} time, <= x{GOALS['memory']} memory)",
        flush=True,
    )
    return row


def run_overhead(json_path: str | None = None, quick: bool = False) -> dict:
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import choose_device, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(os.cpu_count() or 1)
    print("building an SD 1.5-architecture pipeline with random weights ...", flush=True)
    pipe = build_sd15_random()
    engine = Engine(pipe, choose_device("cpu", "fp32"), name="sd15-random")
    configs = [(128, 2)] if quick else [(256, 4), (512, 2)]
    repeats = 1 if quick else 2
    _pipeline_run(pipe, configs[0][0], 1)()  # warm-up of both paths at the smallest size
    _engine_run(engine, configs[0][0], 1)()
    rows = []
    for size, steps in configs:
        runs = {
            "plain": _pipeline_run(pipe, size, steps),
            "engine": _engine_run(engine, size, steps),
            "engine_batched": _engine_run(engine, size, steps, batched=True),
        }
        rows.append(_row(runs, size, steps, repeats))
    report = {
        "benchmark": "overhead",
        "model": "sd15 architecture, random weights",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "edit": EDIT.to_json(),
        "goals": GOALS,
        "rows": rows,
        "met": all(
            r["time_ratio"] <= GOALS["time"] and r["memory_ratio"] <= GOALS["memory"] for r in rows
        ),
        "met_batched": all(
            r["time_ratio_batched"] <= GOALS["time"]
            and r["memory_ratio_batched"] <= GOALS["memory"]
            for r in rows
        ),
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(json_path, report)
    return report
