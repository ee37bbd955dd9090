"""Markdown tables of the shapes evaluation (``clp2p eval shapes`` results), pure text."""

from __future__ import annotations

COLUMNS: dict[str, tuple[str, str]] = {
    "source_ok": ("source as asked", "pct"),
    "success": ("edit success", "pct"),
    "iou": ("mask IoU src/tgt", "f2"),
    "kept": ("other attrs kept", "pct"),
    "keep_mad": ("MAD kept region", "f1"),
    "cycle_mad": ("cycle MAD", "f1"),
    "cycle_iou": ("cycle mask IoU", "f2"),
    "cold_mad": ("cold cycle MAD", "f1"),
    "cold_iou": ("cold cycle IoU", "f2"),
    "edited_iou": ("edited object IoU", "f2"),
    "other_kept": ("other object kept", "pct"),
    "other_iou": ("other object IoU", "f2"),
    "other_mad": ("other object MAD", "f1"),
    "background_mad": ("background MAD", "f1"),
    "cycle_other_mad": ("cycle MAD other object", "f1"),
    "cold_other_mad": ("cold cycle MAD other object", "f1"),
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
    """One row per (swap kind, method): ``table[method][kind]`` summaries, with the columns
    the cells have (one- or two-object metrics)."""
    methods = list(table)
    first = next(iter(table[methods[0]].values()))
    columns = {key: col for key, col in COLUMNS.items() if key in first}
    kinds = list(dict.fromkeys(kind for cells in table.values() for kind in cells))
    kinds.sort(key=lambda kind: kind == "all")  # the total last
    lines = [
        _row(["swap", "method", "n", *(title for title, _ in columns.values())]),
        _row(["---"] * (3 + len(columns))),
    ]
    for kind in kinds:
        for method in methods:
            cell = table[method].get(kind)
            if cell is None:
                continue
            values = [_fmt(cell[key], how) for key, (_, how) in columns.items()]
            lines.append(_row([kind, f"`{method}`", str(cell["n"]), *values]))
    return "\n".join(lines)


def generate_table(result: dict) -> str:
    """Hit rate per attribute against its goal, for one-object captions and (when the result
    has them) two-object ones."""
    parts = [("one object", result)]
    if result.get("two"):
        parts.append(("two objects (colour and class per object)", result["two"]))
    lines = [_row(["captions", "attribute", "read as prompted", "goal", "met"])]
    lines.append(_row(["---"] * 5))
    for title, part in parts:
        for name, value in part["figures"].items():
            goal = part["goals"].get(name)
            met = "-" if goal is None else ("yes" if goal["met"] else "**no**")
            need = "-" if goal is None else f">= {goal['goal']:.0%}"
            lines.append(_row([title, name, f"{value:.1%}", need, met]))
    return "\n".join(lines)


def localise_table(result: dict) -> str:
    """Mean IoU of thresholded word maps with their objects, per grid and step range."""
    lines = [
        f"{result['scored']} of {result['n']} pictures read as asked; cells: colour words / "
        f"shape words (goal >= {result['goal']:g}); sharpest localising grid: "
        f"{result['sharpest'] or 'none'}",
    ]
    by_kind = result.get("sharpest_by_kind")
    if by_kind:
        lines[-1] += "; " + ", ".join(f"{k} words: {g or 'none'}" for k, g in by_kind.items())
    lines.append("")
    table = result["table"]
    ranges = list(next(iter(table.values()))) if table else []
    lines.append(_row(["grid", *(f"steps {r}" for r in ranges)]))
    lines.append(_row(["---"] * (1 + len(ranges))))
    for grid, cells in table.items():
        row = [grid]
        for r in ranges:
            row.append(f"{cells[r]['colour']:.2f} / {cells[r]['shape']:.2f}")
        lines.append(_row(row))
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
    if "other_mad" in cells["cl-p2p"]:  # two-object pairs
        keys = ("success", "other_mad", "cycle_mad", "cycle_other_mad", "cold_mad")
        keys += ("cold_other_mad",)
    lines = [
        _row(["setting (window/beta/layers)", *(COLUMNS[k][0] for k in keys)]),
        _row(["---"] * (1 + len(keys))),
    ]
    for name in ["cl-p2p", *ranked]:
        lines.append(_row([f"`{name}`", *(_fmt(cells[name][k], COLUMNS[k][1]) for k in keys)]))
    return "\n".join(lines)


def sweep_tables(result: dict) -> str:
    """Per k, a self (rows) x cross (columns) table of ``success / mask IoU`` (two-object
    pairs: ``success / other object's IoU / its MAD``)."""
    axes, cells = result["axes"], result["cells"]
    two = "other_iou" in next(iter(cells.values()))
    what = "other object's IoU / its MAD" if two else "mask IoU source vs target"
    parts = []
    for k in axes["k"]:
        lines = [
            f"k = {k:g} (cells: colour hit / {what})",
            "",
            _row(["self \\ cross", *(f"{c:g}" for c in axes["cross"])]),
            _row(["---"] * (1 + len(axes["cross"]))),
        ]
        for s in axes["self"]:
            row = [f"{s:g}"]
            for c in axes["cross"]:
                cell = cells[f"{k:g}/{c:g}/{s:g}"]
                text = f"{_fmt(cell['success'], 'pct')} / "
                if two:
                    text += f"{_fmt(cell['other_iou'], 'f2')} / {_fmt(cell['other_mad'], 'f1')}"
                else:
                    text += _fmt(cell["iou"], "f2")
                row.append(text)
            lines.append(_row(row))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
