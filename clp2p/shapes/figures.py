"""Matplotlib figures of the shapes evaluation: metric bars, image grids, sweep surfaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clp2p.shapes import metrics

BAR_METRICS: tuple[tuple[str, str], ...] = (
    ("success", "edit success (target attribute read)"),
    ("iou", "mask IoU source vs target"),
    ("kept", "other attributes kept"),
    ("keep_mad", "MAD where nothing should change"),
    ("cycle_mad", "chain cycle error: MAD of A->B->A to A"),
    ("cycle_iou", "chain cycle: mask IoU with A"),
    ("cold_mad", "cold cycle error (reversal from plain B)"),
    ("cold_iou", "cold cycle: mask IoU with A"),
)

TWO_BAR_METRICS: tuple[tuple[str, str], ...] = (
    ("success", "edit success (edited object read)"),
    ("other_kept", "other object kept (colour, class)"),
    ("other_iou", "other object: mask IoU src vs tgt"),
    ("other_mad", "other object: MAD src vs tgt"),
    ("background_mad", "background: MAD src vs tgt"),
    ("edited_iou", "edited object: mask IoU (colour)"),
    ("cycle_mad", "chain cycle error: MAD of A->B->A to A"),
    ("cold_mad", "cold cycle error (reversal from plain B)"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 110) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    fig.clf()


def edit_bars(table: dict, path: Path) -> None:
    """Grouped bars: one panel per metric, swap kinds on x, one bar per method."""
    plt = _pyplot()
    methods = list(table)
    groups = list(dict.fromkeys(g for cells in table.values() for g in cells))
    groups.sort(key=lambda g: g == "all")
    first = table[methods[0]][groups[0]]
    bars = TWO_BAR_METRICS if "other_mad" in first else BAR_METRICS
    fig, axes = plt.subplots(2, 4, figsize=(17, 7))
    width = 0.8 / len(methods)
    # a colour per method (tab10's ten repeat past ten methods), the legend in two rows
    colours = plt.get_cmap("tab20" if len(methods) > 10 else "tab10").colors
    for ax, (key, title) in zip(axes.ravel(), bars, strict=True):
        for m, method in enumerate(methods):
            values = [table[method].get(g, {}).get(key) for g in groups]
            xs = np.arange(len(groups)) + (m - (len(methods) - 1) / 2) * width
            heights = [np.nan if v is None else v for v in values]
            ax.bar(xs, heights, width, label=method, color=colours[m % len(colours)])
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_title(title, fontsize=10)
        if not key.endswith("_mad"):
            ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    rows = 1 if len(methods) <= 8 else 2
    fig.legend(handles, labels, loc="upper right", ncol=-(-len(methods) // rows), fontsize=9)
    title = "Shapes world: edits by swap kind and method\n(MAD in 0-255 pixel units)"
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95 - 0.03 * rows))
    _save(fig, path)
    plt.close(fig)


def edit_examples(examples: list, methods: list[str], path: Path) -> None:
    """Three rows per pair: the source A, then per method (a column each) its target B (title
    red when the edit is not read), its chain reversal B -> A and its cold reversal (from a
    plain generation of B), each reversal titled with its MAD to A."""
    plt = _pyplot()
    cols, rows = 1 + len(methods), 3 * len(examples)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, 0.3 + rows * 1.45), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for e, (pair, images) in enumerate(examples):
        top = 3 * e
        _tile(axes[top, 0], images.source, "source A\n" + pair.label())
        for c, m in enumerate(methods, 1):
            target = images.targets[m]
            ok = pair.score(images.source, target)["success"]
            _tile(axes[top, c], target, f"{m}\nB", "black" if ok else "red")
            for r, (what, backs) in enumerate((("chain", images.backs), ("cold", images.colds)), 1):
                back = backs.get(m)
                if back is None:
                    axes[top + r, c].set_title(f"{m}\nno {what}", fontsize=6, color="gray")
                    continue
                mad = metrics.mean_abs_diff(back, images.source)
                _tile(axes[top + r, c], back, f"{what} B -> A\nMAD {mad:.1f}")
    fig.tight_layout(pad=0.3)
    _save(fig, path, dpi=130)
    plt.close(fig)


def _tile(ax, image: np.ndarray, title: str, colour: str = "black") -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=6, color=colour)


def sweep_heatmaps(result: dict, path: Path) -> None:
    """Success and mask IoU over cross (x) x self (y), one column per k."""
    plt = _pyplot()
    axes_info, cells = result["axes"], result["cells"]
    ks, crosses, selves = axes_info["k"], axes_info["cross"], axes_info["self"]
    fig, axes = plt.subplots(2, len(ks), figsize=(4.2 * len(ks), 7), squeeze=False)
    two = "other_iou" in next(iter(cells.values()))
    second = (
        ("other_iou", "other object's IoU", 0.5) if two else ("iou", "mask IoU src vs tgt", 0.5)
    )
    for col, k in enumerate(ks):
        for row, (key, title, vmin) in enumerate((("success", "colour swap success", 0.0), second)):
            grid = np.array(
                [[cells[f"{k:g}/{c:g}/{s:g}"][key] or 0.0 for c in crosses] for s in selves]
            )  # (self, cross)
            ax = axes[row, col]
            im = ax.imshow(grid, origin="lower", vmin=vmin, vmax=1.0, cmap="viridis")
            for (i, j), value in np.ndenumerate(grid):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
            ax.set_xticks(range(len(crosses)), [f"{c:g}" for c in crosses])
            ax.set_yticks(range(len(selves)), [f"{s:g}" for s in selves])
            ax.set_xlabel("cross-attention window")
            ax.set_ylabel("self-attention window")
            ax.set_title(f"{title}, k = {k:g}", fontsize=10)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _mosaic(images: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tile a rows x cols list of uint8 (H, W, 3) images with white gaps."""
    h, w = images[0][0].shape[:2]
    rows, cols = len(images), len(images[0])
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for r, line in enumerate(images):
        for c, image in enumerate(line):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return out


def sweep_grid(result: dict, examples: list, path: Path) -> None:
    """Per example pair: the source, then per k the targets over cross (x) x self (y)."""
    plt = _pyplot()
    axes_info = result["axes"]
    ks, crosses, selves = axes_info["k"], axes_info["cross"], axes_info["self"]
    fig, axes = plt.subplots(
        len(examples),
        1 + len(ks),
        figsize=(1.6 + 3.6 * len(ks), 3.8 * len(examples)),
        squeeze=False,
        gridspec_kw={"width_ratios": [0.45] + [1.0] * len(ks)},
    )
    for row, (pair, images) in enumerate(examples):
        axes[row, 0].imshow(images.source, interpolation="nearest")
        axes[row, 0].set_title("source\n" + pair.label(), fontsize=8)
        axes[row, 0].axis("off")
        for col, k in enumerate(ks, start=1):
            tiles = [
                [images.targets[f"{k:g}/{c:g}/{s:g}"] for c in crosses] for s in reversed(selves)
            ]
            mosaic = _mosaic(tiles)
            ax = axes[row, col]
            ax.imshow(mosaic, interpolation="nearest")
            step = mosaic.shape[1] / len(crosses)
            ax.set_xticks((np.arange(len(crosses)) + 0.5) * step, [f"{c:g}" for c in crosses])
            ax.set_yticks((np.arange(len(selves)) + 0.5) * step, [f"{s:g}" for s in selves[::-1]])
            ax.set_xlabel("cross-attention window")
            ax.set_ylabel("self-attention window")
            ax.set_title(f"k = {k:g}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def two_object_grid(images: list, captions: list[str], rows: list[dict], path: Path) -> None:
    """Two-object generations, six to a row, titled with their captions; red where an object
    did not read as asked."""
    plt = _pyplot()
    columns = 6
    count = len(images)
    lines = -(-count // columns)
    # two title lines per picture: room for them between the rows (h_pad, in font sizes)
    fig, axes = plt.subplots(lines, columns, figsize=(columns * 1.9, lines * 2.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, text, row in zip(axes.ravel(), images, captions, rows, strict=False):
        ok = row["present"] and all(row["colour_ok"]) and all(row["shape_ok"])
        words = text.split()
        title = f"{' '.join(words[1:3])} +\n{' '.join(words[5:7])} / {words[-2]}"
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=7, color="black" if ok else "red")
    fig.tight_layout(pad=0.3, h_pad=1.0)
    _save(fig, path, dpi=110)
    plt.close(fig)
