"""The samplers a render may use, built from the model's scheduler config: DDIM with eta 0
(the default, and what inversion follows), DPM-Solver++ 2M and Euler, each deterministic
and, like DDIM, stepping every branch by the same elementwise rule, so a branch's pixels do
not depend on the other branches of its render (records serve later renders exactly). Edit
windows count steps the same way for all of them."""

from __future__ import annotations


def make_scheduler(config, name: str = "ddim", karras: bool = False):
    """A fresh scheduler ``name`` (see :data:`~clp2p.model.params.SCHEDULERS`) with the
    model's training schedule (``config``), timesteps not set."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if name == "dpm++2m":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=karras
        )
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config, use_karras_sigmas=karras)
    return DDIMScheduler.from_config(config)


def step_options(name: str) -> dict:
    """Keyword arguments of the scheduler's ``step``: DDIM's eta 0 (no noise added)."""
    return {"eta": 0.0} if name == "ddim" else {}
