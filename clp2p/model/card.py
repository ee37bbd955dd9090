"""What clp2p knows about a model beyond diffusers' configs: its card, the optional
``clp2p.json`` beside ``model_index.json`` (diffusers ignores it, so the folder still loads
with the stock pipeline).

``metrics``: names of extra reversal metrics that hold for this model's pictures (plug-ins
registered under the ``clp2p.metrics`` entry point group, e.g. the shapes world's foreground
``mask_iou``). ``scores``: names of edit scores (plug-ins of the ``clp2p.scores`` group, e.g.
the shapes world's ground-truth reading of an edit) that sweeps and batches add to their
tables. A model without a card has none."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clp2p.errors import Clp2pError

CARD_FILE = "clp2p.json"
CARD_FORMAT = "clp2p-model-card"


@dataclass(frozen=True)
class ModelCard:
    metrics: tuple[str, ...] = ()
    scores: tuple[str, ...] = ()

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
        return cls(**names)
