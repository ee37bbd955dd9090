"""The record cache of session renders: each rendered branch's :class:`BranchRecord` by chain
key, least recently used evicted first past a memory budget. The budget also decides, during
a render, which of its branches are recorded at all (:meth:`RecordCache.choose`)."""

from __future__ import annotations

from collections import OrderedDict

from clp2p.attention.records import BranchRecord


def default_budget() -> int:
    """Half the host memory the system can give now (records live in host memory, also when
    the model runs on a GPU), at least 1 GiB."""
    import torch

    from clp2p.engine.loading import available_memory

    return max(2**30, available_memory(torch.device("cpu")) // 2)


DEFAULT_BUDGET = default_budget()  # the CLI's and the model dialog's default


class RecordCache:
    """Branch records by chain key, least recently used evicted first past ``budget`` bytes.
    A :class:`~clp2p.attention.records.RecordPolicy` for the renders that fill it."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._items: OrderedDict[str, BranchRecord] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def choose(self, sizes: dict[int, int]) -> set[int]:
        """The branches of a render to record, given each one's projected bytes: the deepest
        (highest index, the end of the chain) first, while they fit in the budget together,
        so a large model never fills the device with records."""
        kept, total = set(), 0
        for branch in sorted(sizes, reverse=True):
            if total + sizes[branch] <= self.budget:
                kept.add(branch)
                total += sizes[branch]
        return kept

    def get(self, key: str) -> BranchRecord | None:
        record = self._items.get(key)
        if record is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return record

    def put(self, key: str, record: BranchRecord) -> None:
        size = record.nbytes
        if key in self._items:
            self.nbytes -= self._items.pop(key).nbytes
        if size > self.budget:
            return  # larger than the whole budget: not kept
        self._evict_until(self.budget - size)
        self._items[key] = record
        self.nbytes += size

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def resize(self, budget: int) -> None:
        """A new budget; the least recently used records go until the rest fits."""
        self.budget = budget
        self._evict_until(budget)

    def _evict_until(self, limit: int) -> None:
        """Drop the least recently used records until at most ``limit`` bytes are held."""
        while self._items and self.nbytes > limit:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1
