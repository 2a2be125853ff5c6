"""The book's experiments, one module per chapter (``ch1`` ... ``ch5``), with the book's settings
as defaults.

Each chapter module holds:

* ``KNOBS``: the chapter's own settings with the book's values (sizes, variants, depths, ...);
* one function per experiment, each taking its settings as arguments (``seeds``, ``world_seed``
  and the knobs it uses) and calling the core (``preset``, ``sweep``, ``coupling``,
  ``alignment``, ...), so the command line, the figures and the tests run exactly what the
  chapter runs;
* ``compute(seeds, world_seed, **knobs)``: every result of the chapter, by name;
* ``claims(results, **params)``: the chapter's claims (revlib.claims) about those results.

The chapter notebooks show the same calls in their cells; :func:`check` evaluates a chapter's
claims on the notebook's own results, strictly when the settings are the book's.

**Seed sets.** The book states its claims over eight training seeds and one fact world:
seeds 0..7 on world 0, or, with ``REVLIB_BOOK_SEEDS=FIRST``, seeds FIRST..FIRST+7 on world
FIRST. Every claim must hold on every such set (``python -m revlib claims --seed-sets N``).
"""
from __future__ import annotations

import importlib
import os

from ..config import ConfigError, as_seed, as_seeds

N_SEEDS = 8
CHAPTERS = ("ch1", "ch2", "ch3", "ch4", "ch5")


def seed_set(first: int, n: int = N_SEEDS) -> tuple[tuple[int, ...], int]:
    """(training seeds first..first+n-1, world seed first)."""
    first = as_seed("first seed", first)
    if first + n - 1 > 2**32 - 1:
        raise ConfigError(f"a seed set of {n} starting at {first} runs past the largest seed")
    return tuple(range(first, first + n)), first


def book_first_seed() -> int:
    """The first seed of the book's seed set: ``$REVLIB_BOOK_SEEDS``, default 0."""
    text = os.environ.get("REVLIB_BOOK_SEEDS", "0")
    try:
        first = int(text)
    except ValueError:
        raise ConfigError(f"REVLIB_BOOK_SEEDS must be an integer (the first seed), got {text!r}") from None
    if not 0 <= first <= 2**32 - N_SEEDS:
        raise ConfigError(f"REVLIB_BOOK_SEEDS must lie in [0, 2^32 - {N_SEEDS}], got {first}")
    return first


def book_seeds() -> tuple[int, ...]:
    """The book's eight training seeds (``REVLIB_BOOK_SEEDS`` moves them)."""
    return seed_set(book_first_seed())[0]


def book_world_seed() -> int:
    """The book's fact world (the first seed of the seed set)."""
    return book_first_seed()


def chapter(name: str):
    """The recipe module of a chapter: ``chapter("ch2")``."""
    if name not in CHAPTERS:
        raise ConfigError(f"chapter must be one of {', '.join(CHAPTERS)}; got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def params(name: str, seeds=None, world_seed=None, **knobs) -> dict:
    """A chapter's full settings: the given ones, the book's for the rest. Unknown knobs are refused."""
    module = chapter(name)
    unknown = [k for k in knobs if k not in module.KNOBS]
    if unknown:
        raise ConfigError(f"{name} has no setting {unknown[0]!r}; its settings are seeds, world_seed, "
                          f"{', '.join(module.KNOBS)}")
    seeds = book_seeds() if seeds is None else as_seeds(seeds)
    world_seed = book_world_seed() if world_seed is None else as_seed("world_seed", world_seed)
    return {"seeds": tuple(seeds), "world_seed": world_seed, **module.KNOBS, **knobs}


def is_book(name: str, settings: dict) -> bool:
    """True when ``settings`` are the book's (the chapter's defaults on the book's seed set)."""
    from ..cache import canonical

    return canonical(settings) == canonical(params(name))


def compute(name: str, seeds=None, world_seed=None, **knobs) -> dict:
    """Every result of a chapter with these settings (trained through the cache)."""
    p = params(name, seeds, world_seed, **knobs)
    return chapter(name).compute(**p)


def check(name: str, results: dict, seeds=None, world_seed=None, raise_on_failure: bool = True, **knobs):
    """Evaluate a chapter's claims on ``results``: strictly (raising revlib.claims.ClaimsFailed on a
    failure) with the book's settings, as a report otherwise. Returns the revlib.claims.Report."""
    from .. import claims

    p = params(name, seeds, world_seed, **knobs)
    return claims.check(name, p, chapter(name).claims(results, **p), strict=is_book(name, p),
                        raise_on_failure=raise_on_failure)


from . import ch1, ch2, ch3, ch4, ch5, paper  # noqa: E402  (the chapter modules, after the helpers they use)
