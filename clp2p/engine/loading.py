"""Loading a Stable Diffusion checkpoint from local files, with no silent downloads.

Accepted: ``shapes`` (the embedded default model), a diffusers folder, a single-file
``.safetensors`` / ``.ckpt`` SD 1.x / 2.x checkpoint (component configs from ``resources/``),
or a Hugging Face repo id already in the local cache (downloading only when allowed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from clp2p.attention.grids import attention_grids, blend_grid
from clp2p.engine.adapters import apply_adapters
from clp2p.engine.families import XL_KEY, XL_PIPELINE
from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.card import DEFAULT_GRID_FRACTION, ModelCard, card_of
from clp2p.model.devices import DTYPES
from clp2p.resources import SHAPES, resources_dir, shapes_model_dir

TORCH_DTYPES = dict(zip(DTYPES[1:], (torch.float32, torch.float16, torch.bfloat16), strict=True))
# A key of the UNet's cross-attention whose width tells SD 2.x (1024) from SD 1.x (768).
_V2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
# SDXL's second text encoder (OpenCLIP ViT-bigG) in its original checkpoint layout; the
# refiner has it as its only text encoder (embedders.0).
_XL_KEY = XL_KEY
_REFINER_KEY = "conditioner.embedders.0.model.ln_final.weight"
# The pipeline classes clp2p renders with: SD 1.x / 2.x and SDXL (base and its fine-tunes).
PIPELINES = ("StableDiffusionPipeline", XL_PIPELINE)


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype


def choose_device(device: str | None = None, dtype: str | None = None) -> DeviceChoice:
    """``auto``: CUDA with fp16, then Apple MPS with fp16, then the CPU with fp32."""
    name = device or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise Clp2pError.about(
            "{device} '{value}' is unknown: use auto, cpu, cuda, cuda:N or mps", value=name
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise Clp2pError.about("{device} cuda: no CUDA GPU is available here; use {device} cpu")
    if dtype in (None, "auto"):
        dt = torch.float32 if dev.type == "cpu" else torch.float16
    elif dtype in TORCH_DTYPES:
        dt = TORCH_DTYPES[dtype]
    else:
        raise Clp2pError.about(
            "{dtype} '{value}' is unknown: use auto, {names}",
            value=dtype,
            names=", ".join(TORCH_DTYPES),
        )
    if dev.type == "cpu" and dt == torch.float16:
        raise Clp2pError.about("{dtype} fp16 is not supported on the CPU: use fp32 (or bf16)")
    return DeviceChoice(dev, dt)


def available_memory(device: torch.device) -> int:
    """Bytes a render may still allocate on ``device``: on CUDA the free memory plus what
    torch's allocator holds unused; on MPS the recommended working set less what is in use;
    on the CPU the RAM the system can give without swapping (``MemAvailable``), within the
    process's cgroup limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    try:
        import psutil  # a dependency of accelerate

        ram = psutil.virtual_memory().available
    except ImportError:
        ram = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(ram, _cgroup_room())


def _cgroup_room() -> int:
    """What the process's cgroup (v2) still allows, or a number larger than any RAM."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return int(limit) - int(used)
    except (OSError, ValueError):  # no cgroup v2 here, or no limit ("max")
        return 2**62


def attention_heads(unet) -> dict[int, int]:
    """The most heads of a self-attention layer (diffusers' ``attn1``) at each UNet level that
    has attention (0: the full latent grid; level ``l`` works on it halved ``l`` times)."""
    config = unet.config
    deepest, ups = len(config.down_block_types) - 1, len(config.up_block_types) - 1
    heads: dict[int, int] = {}
    for name, module in unet.named_modules():
        if not name.endswith(".attn1"):
            continue
        block, index = name.split(".")[:2]
        if block == "down_blocks":
            level = int(index)
        elif block == "up_blocks":
            level = ups - int(index)
        else:  # mid_block
            level = deepest
        heads[level] = max(heads.get(level, 0), int(module.heads))
    return heads


def peak_bytes(
    pipe,
    device: torch.device,
    dtype: torch.dtype,
    size: tuple[int, int],
    *,
    tokens: int = 77,
    branches: int = 1,
    per_pass: int = 1,
    guided: bool = True,
    grid: float = DEFAULT_GRID_FRACTION,
) -> int:
    """Estimated peak bytes of a render of ``branches`` at ``size`` (height, width) pixels,
    ``per_pass`` branches to a UNet pass, besides the weights: the latents and the heatmaps'
    running self-attention sum, plus the largest of what one step materialises:
    cross-attention scores and probabilities (float32, ``tokens`` keys), the self-attention
    probabilities (rows x heads x pixels², unless the device runs fused attention kernels,
    as CPUs and CUDA do), the heatmaps' self-attention probabilities at the blend grid
    (float32), and the decoder's activations at full size. Not counted: activations that
    grow with the pixels but not their square (the UNet's, edit sources kept for a step)."""
    item, fused = dtype.itemsize, device.type in ("cpu", "cuda")
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    latent = (size[0] // scale, size[1] // scale)
    rows = per_pass * (2 if guided else 1)
    heads = attention_heads(pipe.unet)
    # decoding: the last decoder block works at full size on the channels of the block before
    # it (upsampled) and its own, each as input and output (256 + 128 channels for SD's VAE)
    channels = pipe.vae.config.block_out_channels
    step = 2 * (channels[min(1, len(channels) - 1)] + channels[0]) * size[0] * size[1] * item
    if not fused:  # the VAE's mid-block attention: one head over the latent grid
        step = max(step, (latent[0] * latent[1]) ** 2 * item)
    for level, n_heads in heads.items():
        h, w = latent
        for _ in range(level):
            h, w = -(-h // 2), -(-w // 2)
        step = max(step, 2 * rows * n_heads * h * w * tokens * 4)
        if not fused:
            step = max(step, rows * n_heads * (h * w) ** 2 * item)
    bh, bw = blend_grid(attention_grids(pipe.unet.config, latent), latent, grid)
    blend = (bh * bw) ** 2 * 4  # one head-mean self-attention map at the blend grid
    step = max(step, per_pass * max(heads.values(), default=1) * blend)
    latents = 4 * branches * pipe.unet.config.in_channels * latent[0] * latent[1] * 4
    return latents + branches * blend + step


def fits_memory(pipe, device: torch.device, dtype: torch.dtype, size: tuple[int, int], **kw):
    """Refuse a render at ``size`` (height, width) whose :func:`peak_bytes` (``kw``: its
    arguments) exceed the memory ``device`` has free: one line, before anything is allocated."""
    need = peak_bytes(pipe, device, dtype, size, **kw)
    where = f"{size[1]}x{size[0]}"
    limits.memory(where, need, available_memory(device), device.type)


def _common_kwargs() -> dict:
    # Weights load in their stored precision and are cast after loading (pipe.to): the
    # keyword for a load dtype differs between diffusers releases.
    return {"safety_checker": None, "requires_safety_checker": False}


def quiet_libraries() -> None:
    """Loading progress bars and advice go to stderr; the CLI's stderr is for our errors."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


def _single_file_config(path: Path, prediction_type: str | None) -> Path:
    """The shipped config folder that fits a single-file checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            width = f.get_slice(_V2_KEY).get_shape()[-1] if _V2_KEY in keys else None
            step = None
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        step = state.get("global_step") if isinstance(state, dict) else None
        state = state.get("state_dict", state) if isinstance(state, dict) else {}
        keys = set(state)
        width = state[_V2_KEY].shape[-1] if _V2_KEY in state else None
    if _XL_KEY in keys:
        return resources_dir() / "configs" / "sdxl"
    if _REFINER_KEY in keys:
        raise Clp2pError(_REFINER)
    if width is None:
        raise Clp2pError(
            f"'{path.name}' is not a Stable Diffusion 1.x/2.x or SDXL checkpoint (no UNet "
            "cross-attention weights found): give one as .safetensors/.ckpt, or a diffusers "
            "folder"
        )
    if width == 768:
        return resources_dir() / "configs" / "sd15"
    if prediction_type is None:
        # SD 2.x base (512 px) is epsilon, 2.x 768 px is v-prediction; the global step of the
        # published 2-base checkpoint is the only hint a file carries.
        prediction_type = "epsilon" if step == 875000 else "v_prediction"
    name = "sd2-base" if prediction_type == "epsilon" else "sd21"
    return resources_dir() / "configs" / name


def load_pipeline(
    model: str,
    choice: DeviceChoice,
    *,
    allow_download: bool = False,
    prediction_type: str | None = None,
    adapters: tuple = (),
):
    """A diffusers ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` on
    ``choice.device`` / ``choice.dtype``, with ``adapters`` (LoRAs, embeddings) loaded."""
    quiet_libraries()
    kwargs = _common_kwargs()
    path = shapes_model_dir() if model == SHAPES else Path(model).expanduser()
    if model == SHAPES and not (path / "model_index.json").is_file():
        raise Clp2pError(
            "the embedded shapes model is not installed in this build (resources/models/shapes): "
            "give --model a local Stable Diffusion folder or checkpoint"
        )
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise Clp2pError(
                f"'{model}' is a folder but not a diffusers model (no model_index.json): give "
                "the folder that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/"
            )
        pipe = _pipeline_class(path / "model_index.json").from_pretrained(
            str(path), local_files_only=True, **kwargs
        )
    elif path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise Clp2pError(
                f"'{model}' is not a .safetensors or .ckpt checkpoint: "
                "give one, or a diffusers folder"
            )
        try:
            config = _single_file_config(path, prediction_type)
            pipe = _pipeline_class(config / "model_index.json").from_single_file(
                str(path), config=str(config), local_files_only=True, **kwargs
            )
        except (Clp2pError, OSError):
            raise
        except Exception as exc:  # a damaged or foreign file: pickle, safetensors, key errors
            raise Clp2pError(
                f"'{model}' is not a readable SD checkpoint ({type(exc).__name__}: "
                f"{_first_line(exc)}): check the file, or give a diffusers folder"
            ) from None
    elif _looks_like_repo_id(model):
        pipe = _from_hub_cache(model, allow_download, kwargs)
    else:
        raise Clp2pError(
            f"model '{model}' not found: give 'shapes', a diffusers folder, a .safetensors/.ckpt "
            "file, or a Hugging Face repo id that is in the local cache"
        )
    if prediction_type is not None and not path.is_file():
        pipe.scheduler.register_to_config(prediction_type=prediction_type)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(choice.device, choice.dtype)
    apply_adapters(pipe, adapters, getattr(pipe, "text_encoder_2", None) is not None)
    return pipe


def model_card(model: str) -> ModelCard:
    """The card of ``model`` (:class:`ModelCard`), read from its folder; a single-file
    checkpoint or a Hub id has none."""
    return card_of(model)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _looks_like_repo_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~"))


def _from_hub_cache(repo_id: str, allow_download: bool, kwargs: dict):
    from huggingface_hub import hf_hub_download

    try:
        index = hf_hub_download(repo_id, "model_index.json", local_files_only=not allow_download)
        return _pipeline_class(Path(index)).from_pretrained(
            repo_id, local_files_only=not allow_download, **kwargs
        )
    except OSError as exc:
        if allow_download:
            raise Clp2pError(f"could not download '{repo_id}': {exc}") from None
        raise Clp2pError(
            f"'{repo_id}' is not in the local Hugging Face cache: pass --allow-download to "
            "download it (several GB), or give a local folder or checkpoint file"
        ) from None


_REFINER = (
    "this is SDXL's refiner, which edits only as a second stage: give the SDXL base model (or "
    "a fine-tune of it)"
)


def _pipeline_class(index: Path):
    """The diffusers pipeline class a model folder's ``model_index.json`` names, if clp2p
    renders with it: SD 1.x / 2.x or SDXL; the SDXL refiner and other pipelines are refused."""
    import json

    import diffusers

    try:
        data = json.loads(index.read_text())
        name = str(data.get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        raise Clp2pError(f"'{index}' is not readable JSON: check the model folder") from None
    if name not in PIPELINES:
        if name.startswith("StableDiffusionXL") and (data.get("text_encoder") or [None])[0] is None:
            raise Clp2pError(_REFINER)
        raise Clp2pError(
            f"the model is a {name or 'unnamed'} pipeline: clp2p renders with "
            f"{' and '.join(PIPELINES)} models (SD 1.x / 2.x, SDXL)"
        )
    return getattr(diffusers, name)
