"""The registry of the book's figures and tables: ``python -m revlib figures`` and ``tables`` list
what the chapter modules register here."""
from __future__ import annotations

from typing import Callable

REGISTRY: dict[str, Callable] = {}  # figure name -> function drawing it (computing or loading its data)
TABLES: dict[str, Callable] = {}  # table name -> function returning a revlib.book.tables.Table


def figure(name: str):
    """Register a figure function under ``name`` (called with no arguments by the CLI)."""
    def wrap(fn):
        REGISTRY[name] = fn
        return fn
    return wrap


def table(name: str):
    """Register a table function under ``name`` (called with no arguments by the CLI)."""
    def wrap(fn):
        TABLES[name] = fn
        return fn
    return wrap
