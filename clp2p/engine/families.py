"""Which family a model belongs to (SD 1.x / 2.x or SDXL), read from its files without
loading weights or importing torch: the CLI chooses the presets' form before it loads a
model, or without loading one at all (``session add``)."""

from __future__ import annotations

import json
from pathlib import Path

from clp2p.resources import SHAPES

XL_PIPELINE = "StableDiffusionXLPipeline"
# SDXL's second text encoder in a single-file checkpoint (see clp2p.engine.loading)
XL_KEY = "conditioner.embedders.1.model.ln_final.weight"


def is_xl(model: str | None) -> bool:
    """Whether ``model`` names an SDXL model: its folder's ``model_index.json`` (also in the
    local Hugging Face cache) or its ``.safetensors`` keys say so. A model that cannot be read
    counts as not SDXL: loading it says why."""
    if not model or model == SHAPES:
        return False
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            return _class_name(path / "model_index.json") == XL_PIPELINE
        if path.is_file() and path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                return XL_KEY in set(f.keys())
        if path.is_file() or len(model.split("/")) != 2:
            return False
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(model, "model_index.json")
        return isinstance(index, str) and _class_name(Path(index)) == XL_PIPELINE
    except Exception:  # unreadable: the load itself reports it in one line
        return False


def _class_name(index: Path) -> str:
    data = json.loads(index.read_text(encoding="utf-8"))
    return str(data.get("_class_name", "")) if isinstance(data, dict) else ""
