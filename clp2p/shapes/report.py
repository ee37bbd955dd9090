"""Markdown tables of the shapes evaluation (``clp2p eval shapes`` results), pure text."""

from __future__ import annotations

from clp2p.shapes.scoring import KINDS

COLUMNS: dict[str, tuple[str, str]] = {
    "success": ("edit success", "pct"),
    "iou": ("mask IoU src/tgt", "f2"),
    "kept": ("other attrs kept", "pct"),
    "keep_mad": ("MAD kept region", "f1"),
    "cycle_mad": ("cycle MAD", "f1"),
    "cycle_iou": ("cycle mask IoU", "f2"),
    "cold_mad": ("cold cycle MAD", "f1"),
    "cold_iou": ("cold cycle IoU", "f2"),
}
"""Metric key -> (column title, number format)."""


def _fmt(value: float | None, how: str) -> str:
    if value is None:
        return "-"
    if how == "pct":
        return f"{value:.0%}"
    return f"{value:.2f}" if how == "f2" else f"{value:.1f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def edit_table(table: dict) -> str:
    """One row per (swap kind, method): ``table[method][kind]`` summaries."""
    methods = list(table)
    lines = [
        _row(["swap", "method", "n", *(title for title, _ in COLUMNS.values())]),
        _row(["---"] * (3 + len(COLUMNS))),
    ]
    for kind in (*KINDS, "all"):
        for method in methods:
            cell = table[method].get(kind)
            if cell is None:
                continue
            values = [_fmt(cell[key], how) for key, (_, how) in COLUMNS.items()]
            lines.append(_row([kind, f"`{method}`", str(cell["n"]), *values]))
    return "\n".join(lines)


def generate_table(result: dict) -> str:
    """Hit rate per attribute against its goal."""
    lines = [_row(["attribute", "read as prompted", "goal", "met"]), _row(["---"] * 4)]
    for name, value in result["figures"].items():
        goal = result["goals"].get(name)
        met = "-" if goal is None else ("yes" if goal["met"] else "**no**")
        lines.append(
            _row([name, f"{value:.1%}", "-" if goal is None else f">= {goal['goal']:.0%}", met])
        )
    return "\n".join(lines)


def v_search_table(search: dict, top: int = 8) -> str:
    """The plain ``cl-p2p`` baseline and the ``top`` V settings by chain cycle error, then by
    cold cycle error."""
    cells = search["cells"]
    names = [n for n in cells if n != "cl-p2p"]
    ranked = sorted(names, key=lambda n: (cells[n]["cycle_mad"], cells[n]["cold_mad"]))[:top]
    ranked += [
        n for n in sorted(names, key=lambda n: cells[n]["cold_mad"])[:top] if n not in ranked
    ]
    keys = ("success", "iou", "cycle_mad", "cycle_iou", "cold_mad", "cold_iou")
    lines = [
        _row(["setting (window/beta/layers)", *(COLUMNS[k][0] for k in keys)]),
        _row(["---"] * (1 + len(keys))),
    ]
    for name in ["cl-p2p", *ranked]:
        lines.append(_row([f"`{name}`", *(_fmt(cells[name][k], COLUMNS[k][1]) for k in keys)]))
    return "\n".join(lines)


def sweep_tables(result: dict) -> str:
    """Per k, a self (rows) x cross (columns) table of ``success / mask IoU``."""
    axes, cells = result["axes"], result["cells"]
    parts = []
    for k in axes["k"]:
        lines = [
            f"k = {k:g} (cells: colour hit / mask IoU source vs target)",
            "",
            _row(["self \\ cross", *(f"{c:g}" for c in axes["cross"])]),
            _row(["---"] * (1 + len(axes["cross"]))),
        ]
        for s in axes["self"]:
            row = [f"{s:g}"]
            for c in axes["cross"]:
                cell = cells[f"{k:g}/{c:g}/{s:g}"]
                row.append(f"{_fmt(cell['success'], 'pct')} / {_fmt(cell['iou'], 'f2')}")
            lines.append(_row(row))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
