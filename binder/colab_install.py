#!/usr/bin/env python3
"""Install revlib and what the notebooks need into a Jupyter that lacks them (Colab), never touching torch.

    python binder/colab_install.py REPO_DIR

The first cell of every notebook runs this (after ``git clone`` of the book into REPO_DIR) when
``revlib`` is not importable. It

1. stops with a clear message, installing nothing, if ``torch`` is not importable: the host
   must bring its own torch (Colab always has one; elsewhere install torch first, or use
   ``make venv`` / Binder, which install the pinned CPU build);
2. installs revlib from REPO_DIR with ``pip install --no-deps -e REPO_DIR``;
3. installs only those of numpy, matplotlib, ipywidgets and tqdm that are not importable, at
   the versions pinned in REPO_DIR/requirements.txt, with the installed torch version as a
   pip constraint, so that nothing pip resolves can install, upgrade or downgrade torch;
4. checks that torch's version is the one it found;
5. fetches the results bundle of this code from the hosting repository's release, where one is
   published (``python -m revlib results fetch --from-release --if-available``), so that a chapter
   loads its numbers in seconds instead of training them; where none is reachable it says so in
   one line and the chapters train.

Packages that are importable are left as they are, whatever their version. Standard library
only; the only network access is pip's. ``plan()`` holds every decision, so tests can call it
with a fake "importable" predicate (tests/test_launch.py).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

# What the notebooks import besides torch and revlib; for each the import name is also the
# distribution name. torch is deliberately not in this list: it is never installed from here.
NEEDED = ("numpy", "matplotlib", "ipywidgets", "tqdm")
NEVER_INSTALL = ("torch",)

TORCH_MISSING = (
    "colab_install: torch is not importable in {python}.\n"
    "This script never installs torch (an unpinned torch is a multi-GB CUDA download, and a\n"
    "host's own torch must not be replaced). Install torch first, for the CPU build e.g.\n"
    "  {python} -m pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
    "or use the book's own set-up (`make venv`) or its Binder button. Colab always has torch."
)


class TorchMissing(RuntimeError):
    """torch is not importable: the script installs nothing."""


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(requirements: Path) -> dict[str, str]:
    """{normalized name: version} for every ``name==version`` line of a requirements file.

    Comments, blank lines, options (``--extra-index-url ...``) and requirements that are not
    exact pins are skipped; markers and extras are dropped.
    """
    pins: dict[str, str] = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)\s*(?:;.*)?$", line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def importable(name: str) -> bool:
    """Whether ``import name`` would find a module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Plan:
    """What to install: revlib (always, editable, without dependencies) and the missing packages."""

    repo_dir: Path
    missing: list[str] = field(default_factory=list)  # import names that are not importable
    install: list[str] = field(default_factory=list)  # pip requirements for them, name==version
    unpinned: list[str] = field(default_factory=list)  # missing packages requirements.txt does not pin

    def commands(self, python: str, constraints: Path | None = None) -> list[list[str]]:
        """The pip commands that carry out the plan, in order."""
        pip = [python, "-m", "pip", "install"]
        cmds = [pip + ["--no-deps", "-e", str(self.repo_dir)]]
        if self.install:
            cmds.append(pip + (["-c", str(constraints)] if constraints else []) + self.install)
        return cmds


def plan(repo_dir: Path | str, is_importable: Callable[[str], bool] = importable,
         pins: dict[str, str] | None = None) -> Plan:
    """Decide what to install. Raises TorchMissing, deciding nothing, when torch is not importable.

    ``pins`` defaults to REPO_DIR/requirements.txt. A missing package that requirements.txt
    does not pin is installed unpinned (and listed in ``Plan.unpinned``). torch is never part
    of the plan, whatever ``is_importable`` and ``pins`` say.
    """
    repo_dir = Path(repo_dir)
    if not is_importable("torch"):
        raise TorchMissing(TORCH_MISSING.format(python=sys.executable))
    if pins is None:
        pins = read_pins(repo_dir / "requirements.txt")
    p = Plan(repo_dir)
    for name in NEEDED:
        if normalize(name) in NEVER_INSTALL or is_importable(name):
            continue
        p.missing.append(name)
        version = pins.get(normalize(name))
        if version is None:
            p.unpinned.append(name)
            p.install.append(name)
        else:
            p.install.append(f"{name}=={version}")
    return p


def torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None, run: Callable = subprocess.run,
         is_importable: Callable[[str], bool] = importable) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: colab_install.py REPO_DIR   (the book's checkout, e.g. revlib-book)", file=sys.stderr)
        return 2
    repo_dir = Path(args[0]).resolve()
    if not (repo_dir / "pyproject.toml").is_file() or not (repo_dir / "revlib").is_dir():
        print(f"colab_install: {repo_dir} is not the book's checkout (no pyproject.toml and revlib/)",
              file=sys.stderr)
        return 2
    try:
        p = plan(repo_dir, is_importable)
    except TorchMissing as e:
        print(e, file=sys.stderr)
        return 1
    before = torch_version()
    print(f"colab_install: torch {before} found; it is left as it is.")
    print(f"colab_install: missing: {', '.join(p.missing) or 'nothing'}")
    for name in p.unpinned:
        print(f"colab_install: warning: {name} is not pinned in requirements.txt; installing the latest")
    with tempfile.TemporaryDirectory() as tmp:
        constraints = None
        if before:  # pip may resolve dependencies of what it installs: torch stays where it is
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text(f"torch=={before}\n", encoding="utf-8")
        for cmd in p.commands(sys.executable, constraints):
            print("colab_install: " + " ".join(cmd), flush=True)
            rc = run(cmd, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}).returncode
            if rc:
                print(f"colab_install: pip failed (exit status {rc})", file=sys.stderr)
                return rc
    after = torch_version()
    if after != before:
        print(f"colab_install: torch changed from {before} to {after}; this must not happen", file=sys.stderr)
        return 1
    fetch = [sys.executable, "-m", "revlib", "results", "fetch", "--from-release", "--if-available"]
    print("colab_install: " + " ".join(fetch[1:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(repo_dir), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if run(fetch, env=env, cwd=str(repo_dir)).returncode:  # a damaged bundle: the chapters train instead
        print("colab_install: the results bundle could not be used; the chapters will train", file=sys.stderr)
    print(f"colab_install: done (revlib from {repo_dir}; torch {after} unchanged).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
