"""The record cache of session renders: each rendered branch's :class:`BranchRecord` by
record key, least recently used evicted first past a memory budget, to an optional second
tier on disk (:class:`~clp2p.workflows.record_spill.RecordSpill`) that a lookup missing
memory falls back to. The budget and the spill's limit also decide, during a render, which
of its branches are recorded at all (:meth:`RecordCache.choose`)."""

from __future__ import annotations

from collections import OrderedDict

from clp2p.attention.records import BranchRecord
from clp2p.workflows.record_spill import RecordSpill


def default_budget() -> int:
    """Half the host memory the system can give now (records live in host memory, also when
    the model runs on a GPU), at least 1 GiB."""
    import torch

    from clp2p.engine.loading import available_memory

    return max(2**30, available_memory(torch.device("cpu")) // 2)


DEFAULT_BUDGET = default_budget()  # the CLI's and the model dialog's default


class RecordCache:
    """Branch records by key, least recently used evicted first past ``budget`` bytes of
    memory; evicted records go to ``spill`` (if any), where :meth:`get` finds them again.
    A :class:`~clp2p.attention.records.RecordPolicy` for the renders that fill it."""

    def __init__(self, budget: int = DEFAULT_BUDGET, spill: RecordSpill | None = None) -> None:
        self.budget = budget
        self._items: OrderedDict[str, BranchRecord] = OrderedDict()
        self._spill = spill
        self._on_disk: set[str] = set()  # records in memory just as the spill holds them
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0
        self.spill_hits = 0  # hits served from the spill (counted in hits too)

    @property
    def spill(self) -> RecordSpill | None:
        return self._spill

    @spill.setter
    def spill(self, spill: RecordSpill | None) -> None:
        """Another disk tier (or none): records evicted from now on go there."""
        self._spill = spill
        self._on_disk.clear()

    def __len__(self) -> int:
        """Records in memory."""
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items or (self._spill is not None and key in self._spill)

    @property
    def spilled(self) -> int:
        """Record files in the spill's folder (of any engine)."""
        return 0 if self._spill is None else len(self._spill)

    @property
    def spilled_bytes(self) -> int:
        return 0 if self._spill is None else self._spill.nbytes

    def choose(self, sizes: dict[int, int]) -> set[int]:
        """The branches of a render to record, given each one's projected bytes: the deepest
        (highest index, the end of the chain) first, while they fit in the memory budget and
        the spill's limit together (each one in one of them), so a large model never fills
        the device with records."""
        limit = 0 if self._spill is None else self._spill.limit
        kept, total = set(), 0
        for branch in sorted(sizes, reverse=True):
            size = sizes[branch]
            if total + size <= self.budget + limit and size <= max(self.budget, limit):
                kept.add(branch)
                total += size
        return kept

    def get(self, key: str) -> BranchRecord | None:
        record = self._items.get(key)
        if record is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return record
        record = None if self._spill is None else self._spill.get(key)
        if record is None:
            self.misses += 1
            return None
        self.hits += 1
        self.spill_hits += 1
        if record.nbytes <= self.budget:  # back in memory; evicted again, its file stays
            self._insert(key, record)
            self._on_disk.add(key)
        return record

    def put(self, key: str, record: BranchRecord) -> None:
        self._on_disk.discard(key)
        if key in self._items:
            self.nbytes -= self._items.pop(key).nbytes
        if record.nbytes > self.budget:  # larger than the whole budget: straight to the spill
            self._to_spill(key, record)
        else:
            self._insert(key, record)

    def _insert(self, key: str, record: BranchRecord) -> None:
        self._evict_until(self.budget - record.nbytes)
        self._items[key] = record
        self.nbytes += record.nbytes

    def clear(self) -> None:
        """Forget the records in memory (the spill's files stay)."""
        self._items.clear()
        self._on_disk.clear()
        self.nbytes = 0

    def resize(self, budget: int) -> None:
        """A new budget; the least recently used records go until the rest fits."""
        self.budget = budget
        self._evict_until(budget)

    def _evict_until(self, limit: int) -> None:
        """Move the least recently used records to the spill (or drop them without one)
        until at most ``limit`` bytes are held in memory."""
        while self._items and self.nbytes > limit:
            key, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1
            self._to_spill(key, old)

    def _to_spill(self, key: str, record: BranchRecord) -> None:
        if self._spill is None:
            return
        if key in self._on_disk:
            self._on_disk.discard(key)
            if self._spill.keep(key):  # its file is still there: only mark it used
                return
        self._spill.put(key, record)
