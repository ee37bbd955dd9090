"""What clp2p knows about a model beyond diffusers' configs: its card, the optional
``clp2p.json`` beside ``model_index.json`` (diffusers ignores it, so the folder still loads
with the stock pipeline).

``metrics``: names of extra reversal metrics that hold for this model's pictures (plug-ins
registered under the ``clp2p.metrics`` entry point group, e.g. the shapes world's foreground
``mask_iou``). ``scores``: names of edit scores (plug-ins of the ``clp2p.scores`` group, e.g.
the shapes world's ground-truth reading of an edit) that sweeps and batches add to their
tables. ``sampling``: the model's recommended steps, guidance and size, the defaults of a new
session's root on it (the CLI's and the studio's); where a card says nothing, Stable
Diffusion's usual values (the fields' defaults of ``RenderSettings``). ``attention_grid``: the
side of the attention grid that local blend and the heatmaps use, as a fraction of the latent's
side (prompt-to-prompt's quarter where the card says nothing); the shapes model's card names
the grid its evaluation measured its word maps to localise at. A model without a card has
none of these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clp2p.errors import Clp2pError
from clp2p.model.settings import RenderSettings
from clp2p.resources import SHAPES, shapes_model_dir

CARD_FILE = "clp2p.json"
DEFAULT_GRID_FRACTION = 0.25
"""Side of the grid local blend and heatmaps use, as a fraction of the latent's side, where a
model's card does not say: prompt-to-prompt's 16x16 for SD 1.x at 512 px."""
CARD_FORMAT = "clp2p-model-card"


@dataclass(frozen=True)
class ModelCard:
    metrics: tuple[str, ...] = ()
    scores: tuple[str, ...] = ()
    sampling: tuple[tuple[str, object], ...] = ()  # (field, value): steps, guidance, size
    attention_grid: float = DEFAULT_GRID_FRACTION

    def settings(self, **given: object) -> RenderSettings:
        """Sampling settings with the model's recommended values, and ``given`` ones (those
        not None) on top."""
        recommended = dict(self.sampling)
        size = recommended.pop("size", None)
        if size is not None:
            recommended |= {"width": size, "height": size}
        return RenderSettings(**(recommended | {k: v for k, v in given.items() if v is not None}))

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        """The card in ``folder`` (an empty card when there is none)."""
        path = Path(folder) / CARD_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Clp2pError(
                f"model card '{path}' cannot be read ({exc}): fix or remove it"
            ) from None
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise Clp2pError(f"'{path}' is not a clp2p model card: remove it")
        names = {}
        for field in ("metrics", "scores"):
            value = data.get(field, [])
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise Clp2pError(f"'{path}': {field} must be a list of names")
            names[field] = tuple(value)
        sampling = data.get("sampling", {})
        if not isinstance(sampling, dict) or not set(sampling) <= set(SAMPLING_FIELDS):
            raise Clp2pError(f"'{path}': sampling takes {', '.join(SAMPLING_FIELDS)}")
        grid = data.get("attention_grid", DEFAULT_GRID_FRACTION)
        if isinstance(grid, bool) or not isinstance(grid, int | float) or not 0 < grid <= 1:
            raise Clp2pError(f"'{path}': attention_grid must be a fraction in (0, 1], e.g. 0.25")
        card = cls(**names, sampling=tuple(sorted(sampling.items())), attention_grid=float(grid))
        try:
            card.settings()
        except (TypeError, ValueError) as exc:  # a Clp2pError is a ValueError
            raise Clp2pError(f"'{path}': sampling: {exc}") from None
        return card


SAMPLING_FIELDS = ("steps", "guidance", "size")


def card_of(model: str) -> ModelCard:
    """The card of ``model`` as ``--model`` names it, read from its folder (the embedded
    shapes model's for ``shapes``); a single-file checkpoint or a Hub id has none."""
    path = shapes_model_dir() if model == SHAPES else Path(model).expanduser()
    return ModelCard.read(path) if path.is_dir() else ModelCard()
