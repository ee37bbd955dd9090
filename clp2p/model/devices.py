"""The devices and precisions a model can be loaded on, by name (``--device``, ``--dtype``,
the studio's model dialog); :mod:`clp2p.engine.loading` maps them to torch's."""

from __future__ import annotations

AUTO = "auto"
DEVICES = (AUTO, "cpu", "cuda", "mps")  # and "cuda:N" for the N-th GPU
DTYPES = (AUTO, "fp32", "fp16", "bf16")  # auto: fp16 on a GPU, fp32 on the CPU
