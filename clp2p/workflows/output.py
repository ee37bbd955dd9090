"""Writing a render to disk: images, per-word heatmaps and the edit record, atomically."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from clp2p.atomic import write_folder, write_json
from clp2p.attention.heatmap import overlay
from clp2p.engine.engine import RenderResult
from clp2p.model.align import normalise_word

EDIT_FORMAT = "clp2p-edit"
EDIT_VERSION = 1
HEATMAP_MIN_SIDE = 256


def branch_name(index: int) -> str:
    return "source" if index == 0 else f"target-{index}"


def _file_word(word: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", normalise_word(word)).strip("_") or "token"


def heatmap_images(result: RenderResult, branch: int) -> dict[str, np.ndarray]:
    """One overlay per distinct word of the branch's prompt: word -> RGB uint8 image, at least
    ``HEATMAP_MIN_SIDE`` pixels on the short side so that small images stay readable."""
    image = result.images[branch]
    scale = max(1, -(-HEATMAP_MIN_SIDE // min(image.shape[:2])))
    big = np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else image
    out: dict[str, np.ndarray] = {}
    for word in result.attention.prompts[branch].words:
        key = _file_word(word)
        if key not in out:
            out[key] = overlay(big, result.attention.word_map(branch, word))
    return out


def edit_record(
    result: RenderResult,
    model: str,
    device: str,
    dtype: str,
    command: list[str],
    adapters: tuple = (),
):
    return {
        "format": EDIT_FORMAT,
        "version": EDIT_VERSION,
        "model": model,
        "device": device,
        "dtype": dtype,
        "scheduler": result.settings.sampler,
        "settings": result.settings.to_json(),
        **({"adapters": [a.to_json() for a in adapters]} if adapters else {}),
        "source": result.branches[0].prompt,
        "targets": [
            {"prompt": b.prompt, "image": f"{branch_name(i)}.png", "params": b.edit.to_json()}
            for i, b in enumerate(result.branches)
            if i > 0
        ],
        "seconds": round(result.seconds, 3),
        "command": command,
    }


def write_edit(
    out_dir: Path,
    result: RenderResult,
    record: dict,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """DIR/source.png, DIR/target-N.png, DIR/heatmaps/<branch>-<word>.png, DIR/edit.json,
    and whatever ``extra(tmp_dir)`` adds, all or nothing."""

    def write(tmp: Path) -> None:
        (tmp / "heatmaps").mkdir()
        for i in range(len(result.images)):
            name = branch_name(i)
            result.pil(i).save(tmp / f"{name}.png")
            for word, img in heatmap_images(result, i).items():
                Image.fromarray(img).save(tmp / "heatmaps" / f"{name}-{word}.png")
        write_json(tmp / "edit.json", record)
        if extra is not None:
            extra(tmp)

    write_folder(out_dir, write)
