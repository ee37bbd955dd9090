"""Heatmaps of attention maps for people: bicubic upsampling to an image's size, display
normalisation, an inferno-like colour map and the blend over the image. numpy only, so the
studio may call it on its GUI thread.

:func:`upsample` reproduces ``torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)`` on the CPU to the last bit (the heatmap PNGs of ``clp2p`` were written
with it): the same source coordinates, cubic weights (A = -0.75), edge-clamped taps, float32
arithmetic and the same rounding of every multiply-add as torch's AVX2 kernel, whose compiler
fuses them into FMA instructions.
"""

from __future__ import annotations

import numpy as np

CUBIC_A = np.float32(-0.75)  # the cubic convolution's free parameter (OpenCV's and torch's)
_FLOAT_TAIL = (1 << 29) - 1  # the 29 low mantissa bits a float64 has beyond a float32
_FLOAT_HALF = 1 << 28  # ... and their value at a float32 midpoint


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, as an FMA instruction does.

    The float64 product of two float32 is exact; the float64 sum is rounded once more, which
    changes the float32 result only when it lands exactly on a float32 midpoint: there the
    exact remainder of the sum (Knuth's two-sum) says which way to go.
    """
    product = np.multiply(a, b, dtype=np.float64)
    total = np.add(product, c, dtype=np.float64)
    ties = np.flatnonzero((total.view(np.uint64) & _FLOAT_TAIL) == _FLOAT_HALF)
    if ties.size:  # a few in a million
        where = np.unravel_index(ties, total.shape)
        p, s = product[where], total[where]
        c64 = np.broadcast_to(c, total.shape)[where].astype(np.float64)
        back = s - p
        remainder = (p - (s - back)) + (c64 - back)  # exact: a * b + c = s + remainder
        away = np.where(remainder == 0, s, np.copysign(np.inf, remainder))
        total[where] = np.nextafter(s, away)
    return total.astype(np.float32)


def _cubic_near(x: np.ndarray) -> np.ndarray:
    """The cubic convolution weight of a tap at distance ``x`` in [0, 1]."""
    inner = _fma(CUBIC_A + 2, x, -(CUBIC_A + 3)) * x
    return inner * x + np.float32(1)


def _cubic_far(x: np.ndarray) -> np.ndarray:
    """The cubic convolution weight of a tap at distance ``x`` in [1, 2]."""
    inner = _fma(_fma(CUBIC_A, x, -5 * CUBIC_A), x, 8 * CUBIC_A)
    return inner * x - 4 * CUBIC_A


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of every output position along one axis: (out, 4) int64,
    clamped to the edge, and (out, 4) float32."""
    scale = np.float32(size_in) / np.float32(size_out)
    centres = np.arange(size_out).astype(np.float32) + np.float32(0.5)
    source = _fma(scale, centres, np.float32(-0.5))  # the output pixel's centre, in the input
    first = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    t = np.clip(source - first.astype(np.float32), np.float32(0), np.float32(1))
    one = np.float32(1)
    weights = np.stack([_cubic_far(t + one), _cubic_near(t), _cubic_near(one - t)], axis=1)
    weights = np.concatenate([weights, _cubic_far((one - t) + one)[:, None]], axis=1)
    index = np.clip(first[:, None] + np.arange(-1, 3), 0, size_in - 1)
    return index, weights


def _weighted_sum(values: list[np.ndarray], weights: list[np.ndarray]) -> np.ndarray:
    """``sum(v * w)`` of four float32 taps, in torch's order of roundings."""
    total = _fma(values[0], weights[0], values[1] * weights[1])
    total = _fma(values[2], weights[2], total)
    return _fma(values[3], weights[3], total)


def upsample(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resampling of a (h, w) map to ``size`` = (H, W), clipped at 0: (H, W) float32."""
    data = np.asarray(map2d, dtype=np.float32)
    rows, row_weights = _taps(data.shape[0], size[0])
    cols, col_weights = _taps(data.shape[1], size[1])
    across = _weighted_sum(
        [np.take(data, cols[:, j], axis=1) for j in range(4)],
        [col_weights[:, j] for j in range(4)],
    )  # (h, W): every input row resampled across
    out = _weighted_sum(
        [np.take(across, rows[:, i], axis=0) for i in range(4)],
        [row_weights[:, i, None] for i in range(4)],
    )  # (H, W)
    return np.maximum(out, np.float32(0))


def normalise(map2d: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] by its maximum (prompt-to-prompt's display normalisation)."""
    peak = float(map2d.max())
    return map2d / peak if peak > 0 else np.zeros_like(map2d)


_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def colourise(map01: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (h, w) to an inferno-like RGB uint8 image (h, w, 3)."""
    x = np.clip(map01, 0.0, 1.0) * (len(_COLOURS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_COLOURS) - 2)
    frac = (x - lo)[..., None]
    rgb = _COLOURS[lo] * (1 - frac) + _COLOURS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def heat_image(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map (h, w) as a coloured heatmap the size of an image: (H, W, 3) uint8."""
    return colourise(normalise(upsample(map2d, size)))


def blend(image: np.ndarray, heat: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """``heat`` (H, W, 3) uint8 over an RGB uint8 image of the same size at ``opacity``."""
    out = image.astype(np.float32) * (1 - opacity) + heat.astype(np.float32) * opacity
    return out.round().clip(0, 255).astype(np.uint8)


def overlay(image: np.ndarray, map2d: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """Blend a normalised heatmap over an RGB uint8 image (H, W, 3) of any size."""
    return blend(image, heat_image(map2d, image.shape[:2]), opacity)
