"""The seeds every chapter uses, in one place.

The book states every claim about "the MDM" or "the ARM" over ``SEEDS`` (eight training seeds)
on the fact world of ``WORLD_SEED``. To check that a claim does not depend on them, rebuild with
a disjoint set: ``REVLIB_BOOK_SEEDS=100`` uses seeds 100..107 and the world of seed 100 (the
chapters print which set they ran with). Every hidden assert must pass for both.
"""
from __future__ import annotations

import os

N_SEEDS = 8


def seed_set() -> tuple[range, int]:
    """(training seeds, world seed) from ``$REVLIB_BOOK_SEEDS`` (the first seed; default 0)."""
    text = os.environ.get("REVLIB_BOOK_SEEDS", "0")
    try:
        first = int(text)
    except ValueError:
        raise ValueError(f"REVLIB_BOOK_SEEDS must be an integer (the first seed), got {text!r}") from None
    if not 0 <= first <= 2**32 - 1 - N_SEEDS:
        raise ValueError(f"REVLIB_BOOK_SEEDS must lie in [0, 2^32 - {N_SEEDS + 1}], got {first}")
    return range(first, first + N_SEEDS), first


SEEDS, WORLD_SEED = seed_set()


def describe() -> str:
    return f"seeds {SEEDS.start}..{SEEDS.stop - 1}, world seed {WORLD_SEED}"
