"""Every figure and table of the book, for ``python -m revlib figures --out DIR`` and ``tables``.

Importing this module imports the chapter modules, which register their figures and tables
(revlib.book.registry). Each is drawn from its chapter's results with the book's settings
(revlib.recipes), through the cache, so the command line draws the book's figures.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt

from ..cache import cache_dir
from . import ch1, ch2, ch3, ch4, ch5, perf  # noqa: F401  (the chapter modules register their figures and tables)
from . import plot
from .registry import REGISTRY, TABLES, build, chapter_of, draw

__all__ = ["REGISTRY", "TABLES", "save_all"]


TIMINGS = "timings.json"  # written beside the figures: wall seconds per chapter module


def _chapter(name: str) -> str:
    """The chapter a figure or table belongs to: "ch1", ..., "perf"."""
    return chapter_of(name)


def _draw(out: Path, names: list[str]) -> tuple[list[Path], dict[str, float]]:
    import matplotlib

    matplotlib.use("Agg")
    plot.use_style()
    written, seconds = [], {}
    for name in names:
        start = time.perf_counter()
        if name in TABLES:  # a table: its rows and numbers as JSON
            path = out / f"{name}.json"
            path.write_text(json.dumps(build(name).to_json(), indent=1, ensure_ascii=False, allow_nan=False))
            written.append(path)
        else:
            fig = draw(name)
            for ext in ("png", "svg"):
                path = out / f"{name}.{ext}"
                fig.savefig(path, metadata={"Date": None} if ext == "svg" else None)
                written.append(path)
            plt.close(fig)
        seconds[_chapter(name)] = seconds.get(_chapter(name), 0.0) + time.perf_counter() - start
    return written, seconds


def _worker(out: str, names: list[str]) -> tuple[list[str], dict[str, float]]:
    import torch

    torch.set_num_threads(1)  # one thread per process: two processes share a 2-core machine well
    written, seconds = _draw(Path(out), names)
    return [str(p) for p in written], seconds


def _cache_entries() -> int:
    folder = cache_dir()
    return len(list(folder.glob("*.pt"))) if folder is not None and folder.is_dir() else 0


def read_timings(out: str | Path) -> dict | None:
    """What the last ``save_all`` into ``out`` wrote to its timings file, or None."""
    path = Path(out) / TIMINGS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_all(out: str | Path, names: list[str] | None = None, jobs: int = 1, with_tables: bool = False) -> list[Path]:
    """Draw every registered figure (or ``names``) and write NAME.png and NAME.svg into ``out``;
    with ``with_tables``, also every registered table as NAME.json.

    With ``jobs`` > 1 the chapters are drawn in that many processes (one torch thread each),
    the figures of one chapter in one process, since they share its trained runs; the
    performance page is drawn last, alone, because it times the machine.

    Also writes ``timings.json``: the wall seconds of each chapter module (training included
    where its runs were not cached), the whole command's wall time, the number of jobs and of
    results-cache entries before and after (none before: the book was drawn from an empty cache).
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries_before = _cache_entries()
    names = list(names or REGISTRY) + (list(TABLES) if with_tables and not names else [])
    timing = [n for n in names if _chapter(n) == "perf"]
    rest = [n for n in names if n not in timing]
    seconds: dict[str, float] = {}
    if jobs <= 1 or len(rest) <= 1:
        written, seconds = _draw(out, rest + timing)
    else:
        written = _draw_in_processes(out, rest, jobs, seconds)
        more, perf_seconds = _draw(out, timing)
        written += more
        seconds.update(perf_seconds)
    path = out / TIMINGS
    path.write_text(json.dumps({"chapter_seconds": {k: round(v, 2) for k, v in sorted(seconds.items())},
                                "wall_seconds": round(time.perf_counter() - start, 2), "jobs": jobs,
                                "cores": os.cpu_count(), "cache_entries_before": entries_before,
                                "cache_entries_after": _cache_entries()}, indent=1))
    return written + [path]


def _draw_in_processes(out: Path, names: list[str], jobs: int, seconds: dict[str, float]) -> list[Path]:
    """Draw ``names`` in ``jobs`` processes, whole chapters per process, balanced by their cold cost."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    chapters: dict[str, list[str]] = {}
    for n in names:
        chapters.setdefault(_chapter(n), []).append(n)
    cost = {"ch1": 4, "ch2": 2, "ch3": 1, "ch4": 5, "ch5": 10}  # measured cold cost, to balance the workers
    shares: list[list[str]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for chapter, group in sorted(chapters.items(), key=lambda kv: -cost.get(kv[0], 1)):
        i = load.index(min(load))
        shares[i] += group
        load[i] += cost.get(chapter, 1)
    written: list[Path] = []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for paths, secs in pool.map(_worker, [str(out)] * jobs, shares):
            written += [Path(p) for p in paths]
            seconds.update(secs)
    return written
