"""The row layout of one UNet pass: which rows of the batch hold which branch, and which
half of classifier-free guidance."""

from __future__ import annotations


class PassLayout:
    """The rows of one UNet pass computing ``active`` (ascending branch indices).

    With guidance the rows are ``[uncond of active, cond of active]``, else ``[active]``.
    Half ``h`` indexes :attr:`half_offsets`: the conditional half is always the last one.
    Immutable once built."""

    __slots__ = ("active", "guided", "half_offsets", "cond", "_pos")

    def __init__(self, active: list[int], guided: bool) -> None:
        self.active = active
        self.guided = guided
        n = len(active)
        self.half_offsets = (0, n) if guided else (0,)
        self.cond = n if guided else 0  # row offset of the conditional half
        self._pos = {b: i for i, b in enumerate(active)}

    @property
    def cond_half(self) -> int:
        """The index of the conditional half."""
        return len(self.half_offsets) - 1

    @property
    def cond_rows(self) -> slice:
        """The conditional rows of every active branch, in branch order."""
        return slice(self.cond, self.cond + len(self.active))

    def computes(self, branch: int) -> bool:
        return branch in self._pos

    def row(self, branch: int, half: int) -> int:
        return self.half_offsets[half] + self._pos[branch]

    def rows(self, branch: int) -> list[int]:
        """Every row of ``branch`` (unconditional first)."""
        return [offset + self._pos[branch] for offset in self.half_offsets]

    def cond_row(self, branch: int) -> int:
        return self.cond + self._pos[branch]

    def edited_halves(self, inject_uncond: bool) -> tuple[int, ...]:
        """The halves an edit touches: the conditional one, and the unconditional one too
        when the edit asks for it (with guidance)."""
        if self.guided and inject_uncond:
            return (0, 1)
        return (self.cond_half,)
