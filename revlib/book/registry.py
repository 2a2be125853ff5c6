"""The registry of the book's figures and tables: ``python -m revlib figures`` and ``tables`` draw
what the chapter modules register here, from the results of the chapter's recipes
(revlib.recipes) with the book's settings."""
from __future__ import annotations

from typing import Callable

REGISTRY: dict[str, tuple[str, Callable]] = {}  # figure name -> (chapter, draw(results) -> Figure)
TABLES: dict[str, tuple[str, Callable]] = {}  # table name -> (chapter, build(results) -> Table)
_RESULTS: dict[str, dict] = {}


def figure(name: str, chapter: str):
    """Register ``fn(results)`` as figure ``name`` of ``chapter`` ("ch1" ... "ch5", "perf")."""
    def wrap(fn):
        REGISTRY[name] = (chapter, fn)
        return fn
    return wrap


def table(name: str, chapter: str):
    """Register ``fn(results)`` as table ``name`` of ``chapter``."""
    def wrap(fn):
        TABLES[name] = (chapter, fn)
        return fn
    return wrap


def chapter_of(name: str) -> str:
    return (REGISTRY.get(name) or TABLES[name])[0]


def results(chapter: str) -> dict:
    """The chapter's results with the book's settings (computed once per process, through the cache)."""
    if chapter not in _RESULTS:
        if chapter == "perf":
            from .perf import results as perf_results

            _RESULTS[chapter] = perf_results()
        else:
            from ..recipes import compute

            _RESULTS[chapter] = compute(chapter)
    return _RESULTS[chapter]


def draw(name: str):
    chapter, fn = REGISTRY[name]
    return fn(results(chapter))


def build(name: str):
    chapter, fn = TABLES[name]
    return fn(results(chapter))
