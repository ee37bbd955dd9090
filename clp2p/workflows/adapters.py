"""LoRA and textual-inversion files as sessions name them: found, hashed and checked on this
machine (see :class:`~clp2p.model.adapters.Adapter`)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from clp2p.errors import Clp2pError
from clp2p.model.adapters import MAX_ADAPTERS, Adapter, lora_scale, split_spec


def file_sha256(path: Path, what: str) -> str:
    """The sha256 of a regular file's content (a FIFO or a device is refused unread)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise Clp2pError(f"{what} '{path}': cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Clp2pError(f"{what} '{path}' is not a regular file: give a weights file")
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def adapters_from(loras: list[str], embeddings: list[str]) -> tuple[Adapter, ...]:
    """The adapters of ``--lora FILE[:SCALE]`` and ``--embedding FILE[:TOKEN]`` (a token
    defaults to ``<file stem>``), each file read and hashed."""
    if len(loras) + len(embeddings) > MAX_ADAPTERS:
        raise Clp2pError(f"at most {MAX_ADAPTERS} LoRA and embedding files: give fewer")
    out = []
    for spec in loras:
        path, scale = split_spec(spec, "lora")
        full = Path(path).expanduser().absolute()
        out.append(Adapter("lora", str(full), file_sha256(full, "LoRA"), lora_scale(scale)))
    for spec in embeddings:
        path, token = split_spec(spec, "embedding")
        full = Path(path).expanduser().absolute()
        digest = file_sha256(full, "embedding")
        out.append(Adapter("embedding", str(full), digest, token=token or f"<{full.stem}>"))
    return tuple(out)


def verify(adapters: tuple[Adapter, ...]) -> None:
    """Refuse, in one line, adapters whose file is gone or is not the one the session was
    made with (its content hash differs)."""
    for a in adapters:
        what = "LoRA" if a.kind == "lora" else "embedding"
        path = Path(a.path)
        if not path.exists():
            raise Clp2pError(
                f"the session uses the {what} '{a.path}', which is missing: put the file back "
                f"there (sha256 {a.sha256[:12]}...)"
            )
        if file_sha256(path, what) != a.sha256:
            raise Clp2pError(
                f"the {what} '{a.path}' is not the file the session was made with (its content "
                f"changed; sha256 {a.sha256[:12]}... expected): put the original back"
            )
