"""Every figure and table of the book, for ``python -m revlib figures --out DIR`` and ``tables``.

Importing this module imports the chapter modules, which register their figures and tables
(revlib.book.registry). Called with no arguments, a figure function computes or loads its data
through the cache exactly as its chapter does, so the command line draws the book's figures.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import ch1  # noqa: F401  (the chapter modules register their figures and tables)
from . import plot
from .registry import REGISTRY, TABLES

__all__ = ["REGISTRY", "TABLES", "save_all"]


def save_all(out: str | Path, names: list[str] | None = None) -> list[Path]:
    """Draw every registered figure (or ``names``) and write NAME.png and NAME.svg into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot.use_style()
    written = []
    for name in names or list(REGISTRY):
        fig = REGISTRY[name]()
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, metadata={"Date": None} if ext == "svg" else None)
            written.append(path)
        plt.close(fig)
    return written
