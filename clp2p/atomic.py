"""Atomic file writes: every file clp2p writes appears whole or not at all.

The data goes to a new temporary file beside the target (``mkstemp``: a fresh name, created
exclusively, so a planted file or symlink is never followed), is flushed to disk, takes the
mode the target had (a new file gets the usual ``0o666`` less the umask), and replaces the
target in one rename. On any failure the temporary file is removed and the target is as it
was."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from clp2p.errors import Clp2pError


def write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Run ``write(f)`` on a temporary binary file beside ``path``, then put it in place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    write_with(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: object, indent: int = 2) -> None:
    """JSON as clp2p writes it (UTF-8, a final newline). Numbers must be finite: NaN and
    infinity are not JSON, and a file holding them would not load again."""
    try:
        text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise Clp2pError(
            f"'{Path(path).name}' was not written: a value is not a finite number"
        ) from None
    write_text(path, text + "\n")


def write_png(path: str | os.PathLike, image: np.ndarray, **options: object) -> None:
    """An RGB uint8 image (H, W, 3) as a PNG file (``options`` go to PIL, e.g. ``pnginfo``)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image))
    write_with(path, lambda f: picture.save(f, format="PNG", **options))


def write_folder(folder: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` into a temporary folder beside ``folder``, then move its files into
    ``folder`` (the whole folder in one rename when it is new). If ``write`` fails,
    ``folder`` is untouched."""
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write(tmp)
        if not folder.exists():
            os.replace(tmp, folder)
            return
        for path in sorted(tmp.rglob("*")):
            dest = folder / path.relative_to(tmp)
            if path.is_dir():
                dest.mkdir(exist_ok=True)
            else:
                os.replace(path, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
