"""Every figure and table of the book, for ``python -m revlib figures --out DIR`` and ``tables``.

Importing this module imports the chapter modules, which register their figures and tables
(revlib.book.registry). Called with no arguments, a figure function computes or loads its data
through the cache exactly as its chapter does, so the command line draws the book's figures.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import ch1, ch2, ch3, ch4, ch5, perf  # noqa: F401  (the chapter modules register their figures and tables)
from . import plot
from .registry import REGISTRY, TABLES

__all__ = ["REGISTRY", "TABLES", "save_all"]


def _draw(out: Path, names: list[str]) -> list[Path]:
    import json

    import matplotlib

    matplotlib.use("Agg")
    plot.use_style()
    written = []
    for name in names:
        if name in TABLES:  # a table: its rows and numbers as JSON
            path = out / f"{name}.json"
            path.write_text(json.dumps(TABLES[name]().to_json(), indent=1, ensure_ascii=False, allow_nan=False))
            written.append(path)
            continue
        fig = REGISTRY[name]()
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, metadata={"Date": None} if ext == "svg" else None)
            written.append(path)
        plt.close(fig)
    return written


def _worker(out: str, names: list[str]) -> list[str]:
    import torch

    torch.set_num_threads(1)  # one thread per process: two processes share a 2-core machine well
    return [str(p) for p in _draw(Path(out), names)]


def save_all(out: str | Path, names: list[str] | None = None, jobs: int = 1, with_tables: bool = False) -> list[Path]:
    """Draw every registered figure (or ``names``) and write NAME.png and NAME.svg into ``out``;
    with ``with_tables``, also every registered table as NAME.json.

    With ``jobs`` > 1 the chapters are drawn in that many processes (one torch thread each),
    the figures of one chapter in one process, since they share its trained runs; the
    performance page is drawn last, alone, because it times the machine.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names or REGISTRY) + (list(TABLES) if with_tables and not names else [])
    owner = lambda n: (REGISTRY.get(n) or TABLES[n]).__module__  # noqa: E731
    timing = [n for n in names if owner(n).endswith(".perf")]
    rest = [n for n in names if n not in timing]
    if jobs <= 1 or len(rest) <= 1:
        return _draw(out, rest + timing)
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    chapters: dict[str, list[str]] = {}
    for n in rest:
        chapters.setdefault(owner(n), []).append(n)
    cost = {"ch1": 4, "ch2": 2, "ch3": 1, "ch4": 5, "ch5": 10}  # measured cold cost, to balance the workers
    shares: list[list[str]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for module, group in sorted(chapters.items(), key=lambda kv: -cost.get(kv[0].rsplit(".", 1)[-1], 1)):
        i = load.index(min(load))
        shares[i] += group
        load[i] += cost.get(module.rsplit(".", 1)[-1], 1)
    written: list[Path] = []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for paths in pool.map(_worker, [str(out)] * jobs, shares):
            written += [Path(p) for p in paths]
    return written + _draw(out, timing)
