"""``python -m revlib figures``: writes a registered figure as PNG and SVG; an unknown name is a usage error.

Both run as real processes on the default run cache (the chapter-1 models, which the book's
build stores), so the figure is loaded rather than trained when the cache is warm.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _revlib(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("REVLIB_CACHE", None)  # the default cache, as the book uses it
    return subprocess.run([sys.executable, "-m", "revlib", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=1800)


def test_figures_cli_writes_png_and_svg(tmp_path):
    out = tmp_path / "figs"
    result = _revlib("figures", "--only", "curse-headline", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["curse-headline.png", "curse-headline.svg"]
    assert (out / "curse-headline.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (out / "curse-headline.svg").read_bytes()[:2000]


def test_figures_cli_unknown_name_is_a_usage_error(tmp_path):
    result = _revlib("figures", "--only", "no-such-figure", "--out", str(tmp_path / "figs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-figure" in lines[0], result.stderr
    assert not (tmp_path / "figs").exists()
