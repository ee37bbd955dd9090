"""clp2p: prompt-to-prompt and CL P2P attention control for Stable Diffusion (no Qt here)."""

__version__ = "0.1.0"
