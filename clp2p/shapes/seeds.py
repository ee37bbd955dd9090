"""Which render seeds and caption decks each evaluation of the shapes world uses: one home
for every range.

Tuning ranges are looked at while choosing a setting (the study's sweep, the V search, the
picture cycle's search); held-out ranges are never looked at while training or tuning, and
the figures the docs report against the goals are measured on them. Each range also has its
own caption deck (the seed of the shuffle that picks the captions), so two ranges differ in
what they ask for as well as in their noise.
"""

from __future__ import annotations

from typing import NamedTuple


class Range(NamedTuple):
    """Render seeds ``first, first + 1, ...`` and the seed of the caption deck."""

    first: int
    deck: int


# ---- tuning: looked at while choosing settings -------------------------------------------
EDIT_TUNING = Range(1000, 0)  # the one-object sweep's pairs (and the first model's edit table)
V_SEARCH = Range(5000, 1)  # the pairs the V search scores its grid on
PICTURE_SEARCH = Range(1000, 0)  # the picture cycle's V grid
TWO_TUNING = Range(30_000, 4)  # the two-object sweep and V search

# ---- held out: measured once, for the reported figures -----------------------------------
GENERATE = Range(100_000, 5)  # the generation check, one- and two-object captions
EDIT_HELD_OUT = Range(110_000, 6)  # the one-object edit table
TWO_EDIT_HELD_OUT = Range(120_000, 7)  # the two-object edit table
LOCALISE = Range(130_000, 8)  # the pictures whose word maps are scored
PICTURE_CONFIRM = Range(7000, 2)  # the picture cycle's held-out pairs
TWO_PICTURE_CONFIRM = Range(140_000, 9)  # the two-object picture cycle's held-out pairs
