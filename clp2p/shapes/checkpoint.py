"""Checkpoints of the shapes model's training stages: every module's state, the optimiser,
the random generator, the step and the loss rows, so a rerun of the same command goes on
where the last one stopped."""

from __future__ import annotations

from pathlib import Path

import torch

from clp2p.atomic import write_with


def save(path: Path, modules: dict, opt, gen: torch.Generator, step: int, rows: list[dict]):
    """Write ``modules`` (anything with ``state_dict``: networks, schedulers), the optimiser,
    the generator's state, ``step`` and ``rows`` to ``path`` atomically."""
    state = {
        **{key: module.state_dict() for key, module in modules.items()},
        "opt": opt.state_dict(),
        "gen": gen.get_state(),
        "step": step,
        "rows": rows,
    }
    write_with(path, lambda f: torch.save(state, f))


def resume(path: Path, modules: dict, opt, gen: torch.Generator, rows: list[dict], stage: str):
    """Load ``path`` into ``modules``, the optimiser, the generator and ``rows``; the step to
    go on from (0 without a checkpoint)."""
    if not path.exists():
        return 0
    ckpt = torch.load(path, weights_only=False)
    for key, module in modules.items():
        module.load_state_dict(ckpt[key])
    opt.load_state_dict(ckpt["opt"])
    gen.set_state(ckpt["gen"])
    rows[:] = ckpt["rows"]
    print(f"resumed {stage} at step {ckpt['step']}", flush=True)
    return ckpt["step"]
