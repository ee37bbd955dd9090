"""Heatmap maths in numpy (clp2p.attention.heatmap) against torch, which wrote the heatmaps
before: the same bicubic upsampling and the same overlay pixels."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clp2p.attention.heatmap import colourise, normalise, overlay, upsample

ROOT = Path(__file__).resolve().parent.parent


def torch_upsample(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(map2d, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=size, mode="bicubic", align_corners=False)[0, 0]
    return out.clamp_min(0).numpy()


def torch_overlay(image: np.ndarray, map2d: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """The overlay as clp2p computed it with torch."""
    heat = colourise(normalise(torch_upsample(map2d, image.shape[:2])))
    out = image.astype(np.float32) * (1 - opacity) + heat.astype(np.float32) * opacity
    return out.round().clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((4, 4), (64, 64)), ((16, 16), (256, 256)), ((3, 5), (17, 9)), ((8, 8), (512, 512))]
    + [((1, 6), (1, 40)), ((7, 1), (50, 3)), ((5, 5), (5, 5)), ((9, 13), (100, 61))],
)
def test_upsample_matches_torch_bicubic(shape, size):
    rng = np.random.default_rng(sum(shape + size))
    for map2d in (
        rng.random(shape, dtype=np.float32),
        (rng.random(shape, dtype=np.float32) ** 8 / 77).astype(np.float32),  # peaked and small
        rng.standard_normal(shape).astype(np.float32),  # negative lobes are clipped at 0
    ):
        ours, theirs = upsample(map2d, size), torch_upsample(map2d, size)
        assert ours.dtype == np.float32 and ours.shape == size
        assert np.abs(ours - theirs).max() < 1e-5


def test_overlay_matches_the_torch_overlay():
    rng = np.random.default_rng(7)
    same = total = 0
    for side, grid in ((64, 8), (256, 16), (512, 16), (96, 32)):
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        for _ in range(4):
            map2d = rng.random((grid, grid), dtype=np.float32) ** 3
            ours, theirs = overlay(image, map2d), torch_overlay(image, map2d)
            same += int((ours == theirs).all(axis=-1).sum())
            total += side * side
    assert same / total >= 0.999


def test_attention_maps_and_heatmaps_need_no_torch():
    for module in ("maps.py", "heatmap.py"):
        tree = ast.parse((ROOT / "clp2p" / "attention" / module).read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m and m.split(".")[0] == "torch"}, module
