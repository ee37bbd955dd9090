"""Where clp2p's shipped files live: the tokenizer, component configs, schemas and the
embedded shapes model (``resources/`` beside the package, or ``$CLP2P_RESOURCES``)."""

from __future__ import annotations

import os
from pathlib import Path

SHAPES = "shapes"  # the model name of the embedded shapes-world model


def resources_dir() -> Path:
    """The ``resources/`` folder: ``$CLP2P_RESOURCES`` or the one beside the package."""
    env = os.environ.get("CLP2P_RESOURCES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "resources"


def shapes_model_dir() -> Path:
    return resources_dir() / "models" / "shapes"
