"""The attention grids of a UNet at a latent size, and the grid that local blend and heatmaps
use: both follow the model's config and the image size, never fixed resolutions."""

from __future__ import annotations

from clp2p.model.card import DEFAULT_GRID_FRACTION


def attention_grids(unet_config, latent_hw: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """Attention grid (h, w) of each UNet level that has attention, keyed by pixel count.

    Level ``l`` works on the latent downsampled ``l`` times (stride-2 convs: ceil halving).
    """
    h, w = latent_hw
    levels = {i for i, t in enumerate(unet_config.down_block_types) if "Attn" in t}
    levels |= {
        len(unet_config.up_block_types) - 1 - i
        for i, t in enumerate(unet_config.up_block_types)
        if "Attn" in t
    }
    mid = getattr(unet_config, "mid_block_type", None) or ""
    if "Attn" in mid:
        levels.add(len(unet_config.down_block_types) - 1)
    grids = {}
    for level in sorted(levels):
        gh, gw = h, w
        for _ in range(level):
            gh, gw = -(-gh // 2), -(-gw // 2)
        grids[gh * gw] = (gh, gw)
    return grids


def blend_grid(
    grids: dict[int, tuple[int, int]],
    latent_hw: tuple[int, int],
    fraction: float = DEFAULT_GRID_FRACTION,
) -> tuple[int, int]:
    """The grid local blend and heatmaps use: the largest attention grid whose side is at
    most ``fraction`` of the latent's (a quarter: 16x16 for SD 1.x at 512 px; a model's card
    may name another, measured where its maps localise), else the smallest."""
    limit = int(max(latent_hw) * fraction)
    fitting = [g for g in grids.values() if max(g) <= limit]
    pool = fitting or list(grids.values())
    return max(pool, key=lambda g: g[0] * g[1]) if fitting else min(pool, key=lambda g: g[0] * g[1])


_GROUPS = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_layer_numbers(names) -> dict[str, int]:
    """The self-attention layers (``...attn1...`` among the UNet's attention processor names)
    numbered from 1 in the order the UNet runs them: down blocks, the middle block, up blocks,
    and within each by block, attention and transformer block. (``unet.attn_processors``
    lists the up blocks before the middle block, so its order is not the running order.)"""

    def order(name: str) -> tuple:
        parts = name.split(".")
        return (_GROUPS.get(parts[0], 3), *(int(p) for p in parts if p.isdigit()))

    layers = sorted((n for n in names if ".attn1." in f".{n}."), key=order)
    return {name: i for i, name in enumerate(layers, start=1)}
