"""The training log of the shapes model: progress lines with ETA, and the loss curve."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np


class Progress:
    """Collects the loss curve (with the loss's named parts, when given) and prints steps,
    running loss and ETA."""

    def __init__(self, stage: str, total: int, every: int, start: float, rows: list[dict]):
        self.stage, self.total, self.every, self.start, self.rows = stage, total, every, start, rows
        self.window: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.stage_start = time.time()
        self.first_step: int | None = None

    def step(self, step: int, loss: float, lr: float, parts: dict[str, float] | None = None):
        if self.first_step is None:
            self.first_step = step
        self.window.append(loss)
        for name, value in (parts or {}).items():
            self.parts.setdefault(name, []).append(value)
        if (step + 1) % self.every and step + 1 != self.total:
            return
        mean = float(np.mean(self.window))
        self.window.clear()
        parts = {name: float(np.mean(values)) for name, values in self.parts.items()}
        self.parts.clear()
        now = time.time()
        done = step + 1 - self.first_step
        eta = (now - self.stage_start) / max(done, 1) * (self.total - step - 1)
        self.rows.append(
            {
                "stage": self.stage,
                "step": step + 1,
                "loss": mean,
                "lr": lr,
                "minutes": (now - self.start) / 60,
                **parts,
            }
        )
        shown = "".join(f" {name} {value:.4f}" for name, value in parts.items())
        print(
            f"[{self.stage}] step {step + 1}/{self.total} loss {mean:.4f}{shown} lr {lr:.2e} "
            f"elapsed {(now - self.start) / 60:.1f} min, stage ETA {eta / 60:.1f} min",
            flush=True,
        )


def write_rows(rows: list[dict], path: Path) -> None:
    """The loss rows as CSV: stage, step, loss, lr, minutes, then the loss's named parts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        names = ["stage", "step", "loss", "lr", "minutes"]
        names += sorted({key for row in rows for key in row} - set(names))
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def write_curve(rows: list[dict], figures: Path) -> None:
    """Loss curve as ``shapes-loss.csv`` and ``shapes-loss.png`` under ``figures``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_rows(rows, figures / "shapes-loss.csv")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, stage, title in zip(
        axes, ("vae", "unet"), ("VAE (MSE + KL)", "UNet + text (min-SNR eps MSE)"), strict=True
    ):
        pts = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage]
        if pts:
            ax.plot(*zip(*pts, strict=True))
        ax.set(title=title, xlabel="step", ylabel="loss", yscale="log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figures / "shapes-loss.png", dpi=100)
    plt.close(fig)
