"""Loading LoRA weights and textual-inversion embeddings into a pipeline, through diffusers'
own loaders (``load_lora_weights`` with the PEFT backend, ``load_textual_inversion``). Files
are read without running code: safetensors, or torch files with ``weights_only``."""

from __future__ import annotations

from pathlib import Path

import torch

from clp2p.errors import Clp2pError
from clp2p.model.adapters import Adapter


def _state(path: str, what: str) -> dict:
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or foreign file
        raise Clp2pError(
            f"{what} '{Path(path).name}' is not readable ({type(exc).__name__}): check the file"
        ) from None
    if not isinstance(state, dict):
        raise Clp2pError(f"{what} '{Path(path).name}' holds no weights by name: check the file")
    return state


def _doesnt_fit(what: str, path: str, exc: Exception) -> Clp2pError:
    text = str(exc).strip().splitlines()
    detail = text[0][:160] if text else type(exc).__name__
    return Clp2pError(f"{what} '{Path(path).name}' does not fit this model ({detail})")


def apply_adapters(pipe, adapters: tuple[Adapter, ...], xl: bool) -> None:
    """Load ``adapters`` into ``pipe`` (LoRAs at their scales, embeddings under their
    tokens). An SDXL embedding holds one vector set per text encoder (``clip_l``,
    ``clip_g``); an SD one a single set."""
    names, scales = [], []
    for i, a in enumerate(x for x in adapters if x.kind == "lora"):
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(_state(a.path, "LoRA"), adapter_name=name)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise _doesnt_fit("LoRA", a.path, exc) from None
        loaded = {n for names in pipe.get_list_adapters().values() for n in names}
        if name not in loaded:  # diffusers skips weights that name no layer of the model
            raise _doesnt_fit("LoRA", a.path, ValueError("none of its weights name a layer"))
        names.append(name)
        scales.append(a.scale)
    if names:
        pipe.set_adapters(names, scales)
    for a in (x for x in adapters if x.kind == "embedding"):
        state = _state(a.path, "embedding")
        try:
            if xl:
                if not {"clip_l", "clip_g"} <= set(state):
                    raise ValueError("an SDXL embedding holds 'clip_l' and 'clip_g' vectors")
                for key, encoder, tokenizer in (
                    ("clip_l", pipe.text_encoder, pipe.tokenizer),
                    ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2),
                ):
                    pipe.load_textual_inversion(
                        state[key], token=a.token, text_encoder=encoder, tokenizer=tokenizer
                    )
            else:
                pipe.load_textual_inversion(state, token=a.token)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise _doesnt_fit("embedding", a.path, exc) from None
