"""The contact sheet of a sweep or batch: one picture of every result with its parameters and
scores, the source at the start of each row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clp2p import atomic

THUMB = (128, 256)  # smallest and largest side of a thumbnail in pixels
TEXT_LINES = 3
LINE = 14
PAD = 6
HEADLINE = ("success", "iou", "keep_mad")  # the scores a cell shows, when it has them


def _thumb(path: Path, side: int) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = side / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            small = scale >= 1
            return im.resize(size, Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)
    except OSError:
        return None


def _score_line(row: dict) -> str:
    if row.get("status") != "done":
        return (row.get("error") or row.get("status") or "")[:40]
    scores = row.get("scores") or {}
    parts = []
    for name in HEADLINE:
        value = scores.get(name)
        if isinstance(value, bool):
            parts.append("ok" if value else "MISS")
        elif isinstance(value, int | float):
            parts.append(f"{name} {value:.2f}")
    return " ".join(parts) or f"{row.get('seconds') or 0:.1f} s"


def _layout(rows: list[dict], columns: str | None) -> tuple[list[str], list[str], dict]:
    """Row labels, column labels and (row, column) -> row of the table."""
    axes = _axes(rows)
    row_labels, col_labels, cells = [], [], {}
    for i, row in enumerate(rows):
        values = {k: v for k, v in row.items() if k in axes}
        if columns and columns in values:
            col = f"{columns}={values.pop(columns)}"
            label = " ".join(f"{k}={v}" for k, v in values.items())
        else:
            col = "result"
            label = row.get("name") or f"item {i + 1}"
            label += f" seed={row.get('seed')}" if row.get("seed") is not None else ""
        row_labels += [label] if label not in row_labels else []
        col_labels += [col] if col not in col_labels else []
        cells[(label, col)] = row
    return row_labels, col_labels, cells


def _axes(rows: list[dict]) -> list[str]:
    """The varied values of the rows: the keys before ``source`` in every row."""
    first = rows[0]
    keys = list(first)
    return keys[1 : keys.index("source")] if "source" in keys else []


def contact_sheet(folder: Path, rows: list[dict], path: Path, columns: str | None = None) -> None:
    """Write the sheet of ``rows`` (the results table; images under ``folder``) to ``path``:
    one row per combination of the other values, one column per value of ``columns``."""
    rows = [r for r in rows if "source" in r]
    if not rows:
        return
    row_labels, col_labels, cells = _layout(rows, columns)
    first = next((r for r in rows if r.get("status") == "done"), rows[0])
    probe = _thumb(folder / "items" / first["key"][:16] / "result.png", THUMB[1])
    native = max(probe.size) if probe else THUMB[0]
    side = min(THUMB[1], max(THUMB[0], native))
    cell_w, cell_h = side + PAD, side + PAD + TEXT_LINES * LINE
    font = ImageFont.load_default()
    sheet = Image.new(
        "RGB", (PAD + cell_w * (len(col_labels) + 1), PAD + cell_h * len(row_labels)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for r, label in enumerate(row_labels):
        y = PAD + r * cell_h
        row_items = [cells[(label, c)] for c in col_labels if (label, c) in cells]
        source = _thumb(folder / "items" / row_items[0]["key"][:16] / "source.png", side)
        if source is not None:
            sheet.paste(source, (PAD, y))
        draw.text((PAD, y + side + 2), "source", fill="black", font=font)
        draw.text((PAD, y + side + 2 + LINE), label[:40], fill="black", font=font)
        for c, col in enumerate(col_labels):
            row = cells.get((label, col))
            if row is None:
                continue
            x = PAD + (c + 1) * cell_w
            image = _thumb(folder / "items" / row["key"][:16] / "result.png", side)
            if image is not None:
                sheet.paste(image, (x, y))
            else:
                draw.rectangle((x, y, x + side - 1, y + side - 1), outline="red")
            draw.text((x, y + side + 2), col[:40], fill="black", font=font)
            ok = row.get("status") == "done"
            draw.text(
                (x, y + side + 2 + LINE), _score_line(row), fill="black" if ok else "red", font=font
            )
    atomic.write_png(path, np.asarray(sheet))
