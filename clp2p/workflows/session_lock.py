"""Concurrent writers of one session file: every read-modify-write of a session holds an
advisory lock on its folder, and a writer that loaded the file earlier (the studio) names the
version it loaded, so a change another program made meanwhile is never overwritten silently.

The lock is ``flock`` on the folder (POSIX); it is re-entrant within a process, so a save
inside a locked read-modify-write does not wait for itself. Where ``flock`` is not available
the version check still holds."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clp2p.errors import Clp2pError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Stamp:
    """One version of a file: an atomic save makes a new file, so its inode changes."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def stamp(path: str | os.PathLike) -> Stamp | None:
    """The file's version now; None when there is no file."""
    try:
        return Stamp.of(os.stat(path))
    except FileNotFoundError:
        return None


class SessionChanged(Clp2pError):
    """The file changed on disk since it was loaded."""


def check_unchanged(path: Path, expected: Stamp | None) -> None:
    """Refuse to replace ``path`` unless it is still the version ``expected`` (None: there
    was no file)."""
    if stamp(path) != expected:
        what = "was created" if expected is None else "was changed or replaced"
        raise SessionChanged(
            f"'{path.name}' {what} by another program since this session was opened, and was "
            "not overwritten: save under another name, or open the file again to see its changes"
        )


_GUARD = threading.RLock()
_HELD: dict[str, tuple[int, int]] = {}  # folder -> (descriptor, depth)


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of the folder of ``path`` (waiting for another process to let go)."""
    folder = os.path.abspath(Path(path).parent)
    with _GUARD:
        held = _HELD.get(folder)
        if held is not None:
            _HELD[folder] = (held[0], held[1] + 1)
        else:
            _HELD[folder] = (_acquire(folder), 1)
        try:
            yield
        finally:
            fd, depth = _HELD[folder]
            if depth > 1:
                _HELD[folder] = (fd, depth - 1)
            else:
                del _HELD[folder]
                if fd >= 0:
                    os.close(fd)  # closing lets go of the lock


def _acquire(folder: str) -> int:
    """A descriptor holding the folder's lock; -1 when it cannot be locked (no folder yet, no
    permission to read it, or no flock here): the version check is then the only guard."""
    if fcntl is None:
        return -1
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return -1
    return fd
