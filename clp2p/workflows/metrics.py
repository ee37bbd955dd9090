"""How far a cycle reversal lands from the ancestor it reverses: metrics for every model, and
extra metrics that a model's card names (plug-ins, e.g. the shapes world's foreground mask
IoU). Plug-ins register under the ``clp2p.metrics`` entry point group; nothing here knows a
model by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib.metadata import entry_points

import numpy as np

from clp2p.errors import Clp2pError

ENTRY_POINT_GROUP = "clp2p.metrics"
SCORES_GROUP = "clp2p.scores"
ReversalMetric = Callable[[np.ndarray, np.ndarray], float]
# (source prompt, target prompt, source image, edited image) -> scores, {} when they do not apply
EditScore = Callable[[str, str, np.ndarray, np.ndarray], dict]


@cache
def registered() -> dict[str, ReversalMetric]:
    """Every installed reversal metric plug-in by name."""
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def score_plugins() -> dict[str, EditScore]:
    """Every installed edit-score plug-in by name."""
    return {ep.name: ep.load() for ep in entry_points(group=SCORES_GROUP)}


def _plugin(kind: str, name: str, plugins: dict):
    if name not in plugins:
        raise Clp2pError(
            f"the model's card names the {kind} '{name}', which no installed plug-in "
            f"provides (installed: {', '.join(plugins) or 'none'}): reinstall clp2p"
        )
    return plugins[name]


def edit_scores(
    names: Sequence[str], source_prompt: str, target_prompt: str, source, edited
) -> dict:
    """The scores a model's card names (``scores``: plug-ins of the ``clp2p.scores`` group,
    e.g. the shapes world's ground truth) of one edit: each plug-in's, merged."""
    out: dict = {}
    for name in names:
        out |= _plugin("score", name, score_plugins())(source_prompt, target_prompt, source, edited)
    return out


def reversal_metrics(image: np.ndarray, ancestor: np.ndarray, extra: Sequence[str] = ()) -> dict:
    """Distance of a cycle reversal (H, W, 3) uint8 to its ancestor: mean absolute difference
    (0-255), PSNR (dB; None when the images are identical), SSIM, and each metric in
    ``extra`` (plug-in names, see :func:`registered`)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = image.astype(np.float64), ancestor.astype(np.float64)
    mae = float(np.abs(a - b).mean())
    psnr = float(peak_signal_noise_ratio(ancestor, image, data_range=255)) if mae > 0 else None
    side = min(image.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    ssim = float(
        structural_similarity(ancestor, image, channel_axis=2, data_range=255, win_size=win)
    )
    metrics = {"mae": round(mae, 4), "psnr": psnr and round(psnr, 3), "ssim": round(ssim, 5)}
    plugins = registered()
    for name in extra:
        metrics[name] = round(float(_plugin("metric", name, plugins)(image, ancestor)), 5)
    return metrics
