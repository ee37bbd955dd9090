"""The disk tier of the record cache: branch records evicted from memory, one file each in a
folder beside the session file (``NAME.records/``), least recently used deleted first past a
size limit.

The folder is the only state, so several processes may share it and it survives restarts: a
file's modification time is when its record was last written or read. A file is named by a
hash of the record's key and of the identity of the engine that made it (weights, device,
dtype...: see :attr:`clp2p.engine.engine.Engine.identity`), so no user text reaches a file
name and a record never serves another model. Files are written whole or not at all
(:mod:`clp2p.atomic`) as ``torch.save`` of plain containers of tensors and numbers, and read
with ``weights_only``: loading never runs code from the file. A file that does not load, has
another format version, or holds another key is deleted and counts as a miss."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import time
from pathlib import Path

from clp2p import atomic
from clp2p.attention.records import BranchRecord
from clp2p.model.params import StepWindow
from clp2p.model.reuse import RecordSpec

DEFAULT_SPILL = 0  # bytes: off unless asked, since records are GiBs beside the user's files
FORMAT = "clp2p-record"
VERSION = 2  # 2: records keep their decoder statistics (``norms``)
SUFFIX = ".record"
_NAME = re.compile(r"[0-9a-f]{64}\.record")
_TEMPORARY = re.compile(r"\.[0-9a-f]{64}\.record\..*\.tmp")  # atomic.write_with's, left by a kill
STALE_SECONDS = 3600  # a temporary file this old belongs to no running write
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def records_folder(session_file: str | os.PathLike) -> Path:
    """Where the records of the session in ``session_file`` spill: ``NAME.records/`` beside
    it (``trip.json`` -> ``trip.json.records/``). Not a ``.images`` folder, so the session's
    own file checks never take it for the session's images; the session file never names it."""
    path = Path(session_file)
    return path.parent / f"{path.name}.records"


class RecordSpill:
    """Branch records as files in ``folder``, at most ``limit`` bytes of them, the least
    recently used deleted first. ``identity``: the engine's (records of other engines in the
    folder are never read, and are deleted in their turn)."""

    def __init__(self, folder: Path, limit: int, identity: str = "") -> None:
        self.folder, self.limit, self.identity = Path(folder), limit, identity
        self.writes = self.failures = 0  # records written; writes that failed (e.g. disk full)
        self._last_touch = 0

    # ---- files ----------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        name = hashlib.sha256(f"{FORMAT}\n{self.identity}\n{key}".encode()).hexdigest()
        return self.folder / f"{name}{SUFFIX}"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def files(self) -> list[tuple[int, int, Path]]:
        """Every record file in the folder, least recently used first: (time ns, bytes,
        path). Temporary files a killed write left long ago are deleted on the way."""
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        now = time.time_ns()
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if _NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    found.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
                elif _TEMPORARY.fullmatch(entry.name) and (
                    now - st.st_mtime_ns > STALE_SECONDS * 10**9
                ):
                    os.unlink(entry.path)
            except OSError:
                continue
        return sorted(found)

    @property
    def nbytes(self) -> int:
        return sum(size for _, size, _ in self.files())

    def __len__(self) -> int:
        return len(self.files())

    def _touch(self, path: Path) -> None:
        """Mark ``path`` as just used: a modification time later than any this spill set."""
        self._last_touch = max(time.time_ns(), self._last_touch + 1)
        os.utime(path, ns=(self._last_touch, self._last_touch))

    def _trim(self, limit: int, keep: Path | None = None) -> None:
        """Delete the least recently used files (never ``keep``) until at most ``limit``
        bytes are left."""
        files = self.files()
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= limit:
                break
            if path == keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another process deleted it
            except OSError:
                continue
            total -= size

    # ---- records --------------------------------------------------------------------------
    def put(self, key: str, record: BranchRecord) -> bool:
        """Write ``record`` under ``key`` (replacing any file there), after deleting the least
        recently used files it needs room from. A record larger than the limit is not
        written; a failed write (disk full, no permission) leaves no file and only counts
        in :attr:`failures`: the record is then recomputed when needed. Whether it was
        written."""
        size = record.nbytes
        if size > self.limit:
            return False
        target = self.path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._trim(self.limit - size, keep=target)
            atomic.write_with(target, lambda f: _save(_document(key, self.identity, record), f))
            if target.stat().st_size > self.limit:  # the tensors fit, their file does not
                target.unlink()
                return False
            self._touch(target)
        except (OSError, RuntimeError):  # torch.save reports a failed write as RuntimeError
            self.failures += 1
            return False
        self.writes += 1
        self._trim(self.limit, keep=target)
        return True

    def keep(self, key: str) -> bool:
        """Mark the file of ``key`` as just used, when there is one (its record left memory
        unchanged since it was read from it). Whether there is one."""
        try:
            self._touch(self.path(key))
        except OSError:
            return False
        return True

    def get(self, key: str) -> BranchRecord | None:
        """The record filed under ``key``, or None. A file that cannot be a record of
        ``key`` (damaged, truncated, foreign, another format version, larger than the limit)
        is deleted and is a miss."""
        path = self.path(key)
        try:
            # never follow a link, never wait on a FIFO
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return None
        except OSError:
            fd = -1  # e.g. a link: not a record
        record = None
        if fd >= 0:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and st.st_size <= self.limit:
                    try:
                        record = _record(_load(f), key, self.identity)
                    except Exception:  # a damaged file fails anywhere in torch's reader
                        record = None  # no record is better than a wrong one
        if record is None:
            with contextlib.suppress(OSError):  # e.g. a read-only folder: it stays a miss
                path.unlink()
            return None
        with contextlib.suppress(OSError):  # e.g. a read-only folder: the record serves
            self._touch(path)
        return record


def _save(doc: dict, f) -> None:
    import torch

    torch.save(doc, f)


def _load(f) -> object:
    import torch

    return torch.load(f, weights_only=True, map_location="cpu")


def _window(w: StepWindow | None) -> list[float] | None:
    return None if w is None else [float(w.start), float(w.end)]


def _document(key: str, identity: str, record: BranchRecord) -> dict:
    """``record`` as plain containers: what ``torch.load(weights_only=True)`` reads back."""
    spec = record.spec
    return {
        "format": FORMAT,
        "version": VERSION,
        "identity": identity,
        "key": key,
        "prompt": record.prompt,
        "tokens": record.tokens,
        "self_qkv": [[step, layer, list(ts)] for (step, layer), ts in record.self_qkv.items()],
        "cross": [[step, layer, list(ts)] for (step, layer), ts in record.cross.items()],
        "latents": list(record.latents),
        "blend_sum": list(record.blend_sum),
        "image": record.image,
        "norms": None if record.norms is None else [list(pair) for pair in record.norms],
        "spec": {
            "self_qk": _window(spec.self_qk),
            "self_pixels": spec.self_pixels,
            "self_v": _window(spec.self_v),
            "cross_probs": _window(spec.cross_probs),
            "cross_v": _window(spec.cross_v),
        },
    }


class _NotARecord(ValueError):
    pass


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise _NotARecord(what)


def _norms(raw: object) -> list | None:
    """A record's decoder statistics as loaded: None, or (mean, variance) pairs of float32
    (batch, groups, 1) tensors."""
    import torch

    if raw is None:
        return None
    _check(isinstance(raw, list), "norms")
    for pair in raw:
        _check(isinstance(pair, list) and len(pair) == 2, "a norm's statistics")
        for t in pair:
            _check(isinstance(t, torch.Tensor) and t.dtype == torch.float32, "a norm")
            _check(t.dim() == 3 and t.shape == pair[0].shape and t.shape[2] == 1, "a norm")
    return [tuple(pair) for pair in raw]


def _record(doc: object, key: str, identity: str) -> BranchRecord:
    """The record in a loaded document, checked field by field; :class:`_NotARecord` (or the
    error of a bad value) when it is not one made by ``identity`` under ``key``."""
    import torch

    def tensor(t: object, optional: bool = False) -> torch.Tensor | None:
        _check(isinstance(t, torch.Tensor) or (optional and t is None), "not a tensor")
        return t

    def layers(raw: object, width: int) -> dict:
        _check(isinstance(raw, list), "layers")
        out = {}
        for item in raw:
            _check(isinstance(item, list) and len(item) == 3, "a layer")
            step, layer, ts = item
            _check(type(step) is int and isinstance(layer, str), "a layer's key")
            _check(isinstance(ts, list) and len(ts) == width, "a layer's tensors")
            out[(step, layer)] = tuple(tensor(t, optional=True) for t in ts)
        return out

    def window(raw: object) -> StepWindow | None:
        if raw is None:
            return None
        _check(isinstance(raw, list) and len(raw) == 2, "a window")
        _check(all(type(x) is float for x in raw), "a window's ends")
        return StepWindow(raw[0], raw[1])  # checks the bounds

    _check(isinstance(doc, dict), "not a dictionary")
    _check(doc.get("format") == FORMAT and doc.get("version") == VERSION, "format version")
    _check(doc.get("identity") == identity and doc.get("key") == key, "another record")
    _check(isinstance(doc.get("prompt"), str) and type(doc.get("tokens")) is int, "prompt")
    for name in ("latents", "blend_sum"):
        _check(isinstance(doc.get(name), list), name)
    spec = doc.get("spec")
    _check(isinstance(spec, dict), "spec")
    image = tensor(doc.get("image"), optional=True)
    _check(image is None or (image.dtype == torch.uint8 and image.dim() == 3), "image")
    pixels = spec.get("self_pixels")
    _check(pixels is None or type(pixels) is int, "self_pixels")
    return BranchRecord(
        prompt=doc["prompt"],
        tokens=doc["tokens"],
        self_qkv=layers(doc.get("self_qkv"), 3),
        cross=layers(doc.get("cross"), 2),
        latents=[tensor(t) for t in doc["latents"]],
        blend_sum=[tensor(t) for t in doc["blend_sum"]],
        image=image,
        norms=_norms(doc.get("norms")),
        spec=RecordSpec(
            self_qk=window(spec.get("self_qk")),
            self_pixels=pixels,
            self_v=window(spec.get("self_v")),
            cross_probs=window(spec.get("cross_probs")),
            cross_v=window(spec.get("cross_v")),
        ),
    )
