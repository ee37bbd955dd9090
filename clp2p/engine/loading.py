"""Loading a Stable Diffusion checkpoint from local files, with no silent downloads.

Accepted: ``shapes`` (the embedded default model), a diffusers folder, a single-file
``.safetensors`` / ``.ckpt`` SD 1.x / 2.x checkpoint (component configs from ``resources/``),
or a Hugging Face repo id already in the local cache (downloading only when allowed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from clp2p.errors import Clp2pError
from clp2p.model.card import ModelCard
from clp2p.model.devices import DTYPES
from clp2p.resources import SHAPES, resources_dir, shapes_model_dir

TORCH_DTYPES = dict(zip(DTYPES[1:], (torch.float32, torch.float16, torch.bfloat16), strict=True))
# A key of the UNet's cross-attention whose width tells SD 2.x (1024) from SD 1.x (768).
_V2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"


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
        width = state[_V2_KEY].shape[-1] if _V2_KEY in state else None
    if width is None:
        raise Clp2pError(
            f"'{path.name}' is not a Stable Diffusion 1.x/2.x checkpoint (no UNet cross-attention "
            "weights found): give an SD 1.x/2.x .safetensors/.ckpt or a diffusers folder"
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
):
    """A diffusers ``StableDiffusionPipeline`` on ``choice.device`` / ``choice.dtype``."""
    quiet_libraries()
    from diffusers import StableDiffusionPipeline

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
        pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, **kwargs)
    elif path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise Clp2pError(
                f"'{model}' is not a .safetensors or .ckpt checkpoint: "
                "give one, or a diffusers folder"
            )
        try:
            config = _single_file_config(path, prediction_type)
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), config=str(config), local_files_only=True, **kwargs
            )
        except (Clp2pError, OSError):
            raise
        except Exception as exc:  # a damaged or foreign file: pickle, safetensors, key errors
            raise Clp2pError(
                f"'{model}' is not a readable SD 1.x/2.x checkpoint ({type(exc).__name__}: "
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
    return pipe.to(choice.device, choice.dtype)


def model_card(model: str) -> ModelCard:
    """The card of ``model`` (:class:`ModelCard`), read from its folder; a single-file
    checkpoint or a Hub id has none."""
    path = shapes_model_dir() if model == SHAPES else Path(model).expanduser()
    return ModelCard.read(path) if path.is_dir() else ModelCard()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _looks_like_repo_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~"))


def _from_hub_cache(repo_id: str, allow_download: bool, kwargs: dict):
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(
            repo_id, local_files_only=not allow_download, **kwargs
        )
    except OSError as exc:
        if allow_download:
            raise Clp2pError(f"could not download '{repo_id}': {exc}") from None
        raise Clp2pError(
            f"'{repo_id}' is not in the local Hugging Face cache: pass --allow-download to "
            "download it (several GB), or give a local folder or checkpoint file"
        ) from None
