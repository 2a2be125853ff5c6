#!/usr/bin/env python3
"""Time every "Try it" of the chapters from an empty results cache.

    .venv/bin/python benchmarks/try_its.py [chapters/02_*.ipynb ...] [--json FILE]

A try-it is the ```python block of a markdown cell that starts a paragraph with **Try it**. For
each one, the chapter's code cells above it run first, with the usual results cache (so what the
try-it builds on is loaded, not trained); then the cache is switched to an empty folder and the
try-it's code runs, timed: the seconds it takes to train and measure what it asks for. The
chapters state these times ("about N s from an empty cache"); this script is how they were
measured, on the machine it runs on (two cores, one torch thread). It is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"\*\*Try it\*\*.*?```python\n(.*?)```", re.S)


class TryItFailed(Exception):
    """A try-it (or a cell above it) raised."""


def try_its(path: Path) -> list[tuple[int, str]]:
    """(index of the markdown cell, code) of every try-it of a notebook, in order."""
    nb = nbformat.read(path, as_version=4)
    return [(i, m.group(1)) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
            for m in BLOCK.finditer(c.source)]


def time_one(path: Path, at: int, code: str) -> float:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells[:at] if c.cell_type == "code" and "skip-execution" not in c.metadata.get("tags", [])]
    with tempfile.TemporaryDirectory() as empty:
        timing = (f"import os, time\nos.environ['REVLIB_CACHE'] = {empty!r}\n__t = time.perf_counter()\n"
                  + code + "\nprint('TRY-IT-SECONDS', time.perf_counter() - __t)")
        nb.cells = cells + [nbformat.v4.new_code_cell(timing)]
        try:
            NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        except CellExecutionError as err:
            raise TryItFailed(str(err).strip().splitlines()[-1]) from None
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    return float(re.search(r"TRY-IT-SECONDS ([0-9.]+)", out).group(1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, default=sorted((ROOT / "chapters").glob("*.ipynb")))
    ap.add_argument("--json", type=Path, help="also write the times here")
    args = ap.parse_args(argv)
    results, failed = [], []
    for path in args.notebooks:
        for k, (at, code) in enumerate(try_its(path)):
            first_line = code.strip().splitlines()[0][:70]
            try:
                seconds = time_one(path, at, code)
            except TryItFailed as err:
                failed.append(f"{path.name} try-it {k + 1} ({first_line}): {err}")
                print("FAILED", failed[-1], flush=True)
                continue
            results.append({"notebook": path.name, "index": k, "seconds": round(seconds, 1), "first_line": first_line})
            print(f"{path.name} try-it {k + 1}: {seconds:5.1f} s   {first_line}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    slow = [r for r in results if r["seconds"] > 30]
    print(f"{len(results)} try-its; the slowest {max(r['seconds'] for r in results):.1f} s; "
          f"{len(slow)} over 30 s; {len(failed)} failed")
    for line in failed:
        print("FAILED", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
