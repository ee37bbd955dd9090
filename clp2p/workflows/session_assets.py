"""The files beside a session (``NAME.images/``: its images and an imported picture's
inversion arrays), read and written with bounds: a reference resolves only to a regular file
inside the ``.images`` folder, a picture is decoded only after its header shows it is no
larger than the session's renders, inversion arrays are size-checked before they are
inflated, and a file is trusted only after its content was checked against its name."""

from __future__ import annotations

import base64
import io
import os
import re
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np

from clp2p.model import limits
from clp2p.model.session import image_hash
from clp2p.model.settings import RenderSettings
from clp2p.workflows.session_lock import Stamp


def read_npz(base: Path, ref: str) -> bytes:
    """The inversion arrays' file: a regular file inside the session's ``.images`` folder."""
    path = (base / ref).resolve(strict=True)
    if path.parent != (base / ref.split("/", 1)[0]).resolve(strict=True):
        raise ValueError("it leads out of the session's .images folder")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ValueError("it is not a regular file")
    return path.read_bytes()


def check_npz(blob: bytes, settings: RenderSettings) -> bytes:
    """``blob`` if its members (from the zip directory, before anything is inflated) are no
    larger than a trajectory and embeddings of this session's size can be."""
    # (steps + 1) latents of up to 16 channels at 1/8 of the picture, float32; null-text's
    # (steps, 77 tokens, up to 2048 wide) embeddings; 1 MiB of slack
    steps = settings.steps
    cap = (steps + 1) * 16 * max_pixels(settings) // 64 * 4 + steps * 77 * 2048 * 4 + 2**20
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        if sum(member.file_size for member in archive.infolist()) > cap:
            raise ValueError("its arrays are larger than this session's pictures can have")
    return blob


IMAGE_REF = re.compile(r"[^/\\]+\.images/[0-9a-f]{64}\.png")  # NAME.images/<hash>.png


def image_file(base: Path, ref: str) -> Path | None:
    """The file an image reference names, when it is a regular file inside a ``.images``
    folder beside the session (never an absolute path, ``..``, a link out of the folder, a
    FIFO or a device); else None."""
    if not IMAGE_REF.fullmatch(ref):
        return None
    folder = base / ref.split("/", 1)[0]
    try:
        resolved = (base / ref).resolve(strict=True)
        inside = resolved.parent == folder.resolve(strict=True)
        regular = stat.S_ISREG(resolved.stat().st_mode)
    except (OSError, RuntimeError):
        return None
    return resolved if inside and regular else None


def read_image(base: Path, ref: str, key: str, settings: RenderSettings) -> np.ndarray | None:
    """The image under ``ref`` if it is what ``key`` says: read only from inside the
    session's folder (or the file itself), and decoded only after its header shows a picture
    no larger than the session's renders."""
    from PIL import Image

    try:
        if ref.startswith("data:image/png;base64,"):
            raw: io.BytesIO | Path = io.BytesIO(
                base64.b64decode(ref.split(",", 1)[1], validate=True)
            )
        else:
            found = image_file(base, ref)
            if found is None:
                return None
            raw = found
            stamp = _stamp(base / ref)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(raw) as im:
                if im.width * im.height > max_pixels(settings):
                    return None
                image = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None  # a missing image is re-rendered on demand
    if image_hash(image) != key:
        return None
    if not ref.startswith("data:") and stamp is not None:
        _VERIFIED.add(stamp)  # saving the session again need not check it
    return image


def max_pixels(settings: RenderSettings) -> int:
    """The most pixels an image of a session with ``settings`` can have."""
    width = settings.width or limits.MAX_SIZE
    height = settings.height or limits.MAX_SIZE
    return width * height


# Files beside sessions known to hold what their name says: (path, version) of each.
_VERIFIED: set[tuple[str, Stamp]] = set()


def _stamp(path: Path) -> tuple[str, Stamp] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return (os.path.abspath(path), Stamp.of(st)) if stat.S_ISREG(st.st_mode) else None


def remember(path: Path) -> None:
    stamp = _stamp(path)
    if stamp is not None:
        _VERIFIED.add(stamp)


def holds(path: Path) -> bool:
    """Whether the file at ``path`` (named ``<hash>.png`` or ``<hash>.npz``) holds its
    content: checked by its hash once per change of the file, so a damaged or emptied file is
    written again instead of being trusted."""
    stamp = _stamp(path)
    if stamp is None:
        return False
    if stamp in _VERIFIED:
        return True
    key = path.stem
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                ok = image_hash(np.asarray(im.convert("RGB"))) == key
        else:
            with np.load(path, allow_pickle=False) as data:
                ok = "latents" in data.files
    except (OSError, ValueError, zipfile.BadZipFile):
        ok = False
    if ok:
        _VERIFIED.add(stamp)
    return ok


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
