"""What a loaded model renders with, as digests: :func:`weights_fingerprint` over the weights
of its networks, and :func:`engine_identity`, which adds what else decides a render's bits
(scheduler, tokenizer, device, dtype, library versions). Records kept on disk outlive the
process, so they are filed under it: a record never serves a model it was not made by."""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import TYPE_CHECKING

import torch

from clp2p.model.card import DEFAULT_GRID_FRACTION

if TYPE_CHECKING:
    from clp2p.engine.engine import Engine

NETWORKS = ("unet", "text_encoder", "text_encoder_2", "vae")  # those a pipeline has count
CHUNK_ELEMENTS = 2**24  # a tensor goes to the host this many elements at a time


def weights_fingerprint(pipe) -> str:
    """sha256 (hex) over every parameter and buffer of ``pipe``'s networks: each one's
    network, name, shape, dtype and bytes, in a fixed order. Reads all the weights (about a
    second per GiB); large tensors are copied to the host in chunks, so a model on a GPU
    needs no second copy of itself in host memory."""
    digest = hashlib.sha256()
    for network in NETWORKS:
        module = getattr(pipe, network, None)
        if module is None:
            continue
        tensors = [*module.named_parameters(), *module.named_buffers()]
        for name, tensor in sorted(tensors, key=lambda item: item[0]):
            head = [network, name, list(tensor.shape), str(tensor.dtype)]
            digest.update(json.dumps(head).encode() + b"\0")
            _update(digest, tensor)
    return digest.hexdigest()


def _update(digest, tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s bytes (in row-major order) to ``digest``."""
    flat = tensor.detach().reshape(-1)
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        part = flat[start : start + CHUNK_ELEMENTS].cpu().contiguous()
        # as bytes: numpy has no bfloat16, and the bits are what matters
        digest.update(part.view(torch.uint8).numpy())


# engine -> its weights' fingerprint; an engine's weights never change after loading
_WEIGHTS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def weights_of(engine: Engine) -> str:
    """The :func:`weights_fingerprint` of ``engine``'s pipeline, read on first use for each
    engine (every weight) and kept."""
    weights = _WEIGHTS.get(engine)
    if weights is None:
        weights = _WEIGHTS[engine] = weights_fingerprint(engine.pipe)
    return weights


def engine_identity(engine: Engine) -> str:
    """sha256 (hex) of what decides ``engine``'s render bits besides the render's inputs:
    its :func:`weights_fingerprint`, the scheduler's config, the tokenizer's size and
    length, the device (and which GPU), the dtype, on the CPU the number of threads (a
    matrix product split over another number of threads may round differently), and the
    versions of torch, diffusers and clp2p, and the card's attention grid when it names one
    (the weights: :func:`weights_of`)."""
    weights = weights_of(engine)
    return _identity(engine.pipe, engine.device, engine.dtype, weights, engine.card.attention_grid)


def _identity(
    pipe,
    device: torch.device,
    dtype: torch.dtype,
    weights: str,
    grid: float = DEFAULT_GRID_FRACTION,
) -> str:
    import diffusers

    import clp2p

    tokenizer = pipe.tokenizer
    doc = {
        "weights": weights,
        "scheduler": [type(pipe.scheduler).__name__, dict(pipe.scheduler.config)],
        "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.model_max_length],
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "dtype": str(dtype),
        **({"threads": torch.get_num_threads()} if device.type == "cpu" else {}),
        "versions": [torch.__version__, diffusers.__version__, clp2p.__version__],
    }
    if (
        grid != DEFAULT_GRID_FRACTION
    ):  # the card's attention grid decides the blend grid and what records hold
        doc["attention_grid"] = grid
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
