"""The presets: named sets of edit parameters from the literature, and their form for SDXL
models."""

from __future__ import annotations

from clp2p.errors import Clp2pError
from clp2p.model.params import CrossWindow, EditParams, StepWindow

PRESETS: dict[str, EditParams] = {
    # The prompt-to-prompt paper defaults as the CL P2P study quotes them.
    "p2p": EditParams(
        cross=CrossWindow(StepWindow(0.0, 0.8)),
        self_window=StepWindow(0.0, 0.2),
        self_res=16,
        k=0.3,
        preset="p2p",
    ),
    # CL P2P: no local blend, short cross-attention injection, long self-attention injection.
    "cl-p2p": EditParams(
        cross=CrossWindow(StepWindow(0.0, 0.2)),
        self_window=StepWindow(0.0, 0.8),
        self_res=16,
        k=0.0,
        preset="cl-p2p",
    ),
    # FreePromptEditing (Liu et al., seed 003): the source's self-attention in layers 4 to 14
    # of SD 1.x's 16, in every step; no cross-attention injection, no local blend.
    "fpe": EditParams(
        cross=CrossWindow(StepWindow(0.0, 0.0)),
        self_window=StepWindow(0.0, 1.0),
        self_res=None,
        self_layers=(4, 14),
        k=0.0,
        preset="fpe",
    ),
}

# SDXL attends at 64x64 and 32x32 at its 1024 px: the presets' 16x16 (a quarter of SD 1.x's
# latent side) is SDXL's 32x32, where its deep transformer stacks sit. FreePromptEditing's
# layers 4 to 14 of 16 leave out SD 1.x's outermost full-resolution layers; on SDXL the same
# idea is every self-attention layer at 32x32 (layers 5 to 64 of its 70), all steps.
XL_CHANGES: dict[str, dict] = {
    "p2p": {"self_res": 32},
    "cl-p2p": {"self_res": 32},
    "fpe": {"self_res": 32, "self_layers": None},
}


def preset(name: str, xl: bool = False) -> EditParams:
    """The preset ``name``, for an SDXL model when ``xl``."""
    try:
        params = PRESETS[name]
    except KeyError:
        raise Clp2pError(f"preset '{name}' is unknown: use one of {', '.join(PRESETS)}") from None
    return params.with_(**XL_CHANGES[name]) if xl else params
