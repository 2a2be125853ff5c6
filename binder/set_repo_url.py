#!/usr/bin/env python3
"""Point the book at the repository that hosts it, once: the launch buttons, every notebook's install
cell, the citation file, the rendered book's address and so the results bundle's URL.

    python binder/set_repo_url.py https://github.com/OWNER/REPO [--branch BRANCH] [--root DIR]

Rewrites

- ``repository.url`` (and, with ``--branch``, ``repository.branch``) in _config.yml (the Binder
  and Colab buttons and the repository button are built from it; the rest of the file, comments
  included, is kept as it is). The results bundle's URL is derived from it
  (``python -m revlib results url``);
- the ``REPO = "..."`` (and ``BRANCH = "..."``) line of the install cell (the first cell, the one
  that runs binder/colab_install.py) of every notebook (*.ipynb at the top, chapters/*.ipynb and
  appendix/*.ipynb), keeping the notebooks' JSON formatting (indent 1, UTF-8 characters as they
  are, a final newline);
- the rendered book's address (``https://OWNER.github.io/REPO/``, GitHub Pages) wherever the
  notebooks' text gives it;
- ``repository-code`` and ``url`` in CITATION.cff.

The URL must be ``https://github.com/OWNER/REPO``: the theme builds the Binder and Colab links
from its last two parts, and Colab opens notebooks from GitHub only (for another host the
theme warns, and the strict build, ``-W``, fails). A trailing ``/`` or ``.git`` is dropped.
Prints what it changed; exits 2 on an invalid URL, 1 when a notebook has no install cell.
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL_RE = re.compile(r"^https://github\.com/[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]+$")
# The install cell's line: `    REPO = "https://..."  # comment`
REPO_LINE = re.compile(r'^(\s*REPO\s*=\s*)(["\'])([^"\']*)\2')
BRANCH_LINE = re.compile(r'^(\s*BRANCH\s*=\s*)(["\'])([^"\']*)\2')
CONFIG_BRANCH = re.compile(r"^(repository:[^\n]*\n(?:(?:[ \t]+[^\n]*|[ \t]*|#[^\n]*)\n)*?[ \t]+branch:[ \t]*)([^\s#]+)", re.M)
BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
# _config.yml: `repository:` at the top level, then an indented `url:` before the next top-level key.
CONFIG_URL = re.compile(r"^(repository:[^\n]*\n(?:(?:[ \t]+[^\n]*|[ \t]*|#[^\n]*)\n)*?[ \t]+url:[ \t]*)([^\s#]+)",
                        re.M)


def normalize_url(url: str) -> str:
    """The URL as the book stores it; raises ValueError, saying why, if it is not usable."""
    if any(c.isspace() for c in url):
        raise ValueError(f"the URL contains whitespace: {url!r}")
    if not url.startswith("https://"):
        raise ValueError(f"the URL must start with https:// (got {url!r})")
    url = url.rstrip("/")
    if url.endswith(".git"):
        url = url[: -len(".git")]
    if not URL_RE.match(url):
        raise ValueError(
            f"the URL must be https://github.com/OWNER/REPO (got {url!r}): the Binder and Colab "
            "buttons are built from its owner and name, and Colab opens notebooks from GitHub only")
    return url


def pages_url(repo_url: str) -> str:
    """The GitHub Pages address of a repository's book: https://OWNER.github.io/REPO/."""
    owner, name = repo_url.rstrip("/").split("/")[-2:]
    return f"https://{owner.lower()}.github.io/{name}/"


def notebooks(root: Path) -> list[Path]:
    """The book's notebooks: *.ipynb at the top (intro, paper, course), chapters/, appendix/."""
    found = sorted(p for p in root.glob("*.ipynb"))
    for folder in ("chapters", "appendix"):
        found += sorted(p for p in (root / folder).glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return found


def install_cell(nb: dict) -> dict | None:
    """The notebook's install cell: its first cell, if it is code that runs colab_install.py."""
    cells = nb.get("cells") or []
    if not cells or cells[0].get("cell_type") != "code":
        return None
    src = cells[0].get("source", "")
    text = "".join(src) if isinstance(src, list) else src
    if "colab_install.py" in text and any(REPO_LINE.match(line) for line in text.splitlines()):
        return cells[0]
    return None


def cell_repo_url(nb: dict) -> str | None:
    """The REPO URL of the notebook's install cell, None if it has none."""
    cell = install_cell(nb)
    if cell is None:
        return None
    src = cell["source"]
    for line in (src if isinstance(src, list) else src.splitlines(keepends=True)):
        m = REPO_LINE.match(line)
        if m:
            return m.group(3)
    return None


def cell_branch(nb: dict) -> str | None:
    """The BRANCH of the notebook's install cell, None if it has none."""
    cell = install_cell(nb)
    if cell is None:
        return None
    src = cell["source"]
    for line in (src if isinstance(src, list) else src.splitlines(keepends=True)):
        m = BRANCH_LINE.match(line)
        if m:
            return m.group(3)
    return None


def _sub_lines(cell: dict, pattern: re.Pattern, value: str) -> None:
    src = cell["source"]
    as_list = isinstance(src, list)
    lines = src if as_list else src.splitlines(keepends=True)
    new = [pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{value}{m.group(2)}", line, count=1) for line in lines]
    cell["source"] = new if as_list else "".join(new)


def set_cell_url(nb: dict, url: str, branch: str | None = None, old_pages: str | None = None) -> bool:
    """Rewrite the install cell's REPO (and BRANCH) line and the book's Pages address in the
    markdown cells; False if the notebook has no install cell."""
    cell = install_cell(nb)
    if cell is None:
        return False
    _sub_lines(cell, REPO_LINE, url)
    if branch is not None:
        _sub_lines(cell, BRANCH_LINE, branch)
    if old_pages and old_pages != pages_url(url):
        for c in nb["cells"]:
            if c.get("cell_type") == "markdown":
                src = c["source"]
                c["source"] = ([line.replace(old_pages, pages_url(url)) for line in src] if isinstance(src, list)
                               else src.replace(old_pages, pages_url(url)))
    return True


def config_url(text: str) -> str | None:
    m = CONFIG_URL.search(text)
    return m.group(2) if m else None


def set_config_url(text: str, url: str, branch: str | None = None) -> str:
    if not CONFIG_URL.search(text):
        raise ValueError("_config.yml has no `repository:` section with a `url:` key")
    text = CONFIG_URL.sub(lambda m: m.group(1) + url, text, count=1)
    if branch is not None:
        if not CONFIG_BRANCH.search(text):
            raise ValueError("_config.yml has no `repository:` section with a `branch:` key")
        text = CONFIG_BRANCH.sub(lambda m: m.group(1) + branch, text, count=1)
    return text


def set_citation(text: str, url: str) -> str:
    """CITATION.cff with repository-code and url pointing at the new host."""
    text = re.sub(r'^(repository-code:\s*)"?[^"\n]*"?', lambda m: f'{m.group(1)}"{url}"', text, count=1, flags=re.M)
    return re.sub(r'^(url:\s*)"?[^"\n]*"?', lambda m: f'{m.group(1)}"{pages_url(url)}"', text, count=1, flags=re.M)


def write_notebook(path: Path, nb: dict) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="the repository that hosts the book: https://github.com/OWNER/REPO")
    ap.add_argument("--branch", default=None, help="the branch the book is published from (default: unchanged)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the book's folder (default: this repository)")
    args = ap.parse_args(argv)
    try:
        url = normalize_url(args.url)
        if args.branch is not None and not BRANCH_RE.match(args.branch):
            raise ValueError(f"not a branch name: {args.branch!r}")
    except ValueError as e:
        print(f"set_repo_url: {e}", file=sys.stderr)
        return 2
    root = args.root.resolve()
    config = root / "_config.yml"
    text = config.read_text(encoding="utf-8")
    try:
        new_text = set_config_url(text, url, args.branch)
    except ValueError as e:
        print(f"set_repo_url: {config}: {e}", file=sys.stderr)
        return 1
    old = config_url(text)
    old_pages = pages_url(old) if old else None
    if new_text != text:
        config.write_text(new_text, encoding="utf-8")
    print(f"{config.relative_to(root)}: repository.url {old} -> {url}" + (f", branch {args.branch}" if args.branch else ""))
    citation = root / "CITATION.cff"
    if citation.is_file():
        ctext = citation.read_text(encoding="utf-8")
        new_ctext = set_citation(ctext, url)
        if new_ctext != ctext:
            citation.write_text(new_ctext, encoding="utf-8")
        print(f"CITATION.cff: repository-code {url}, url {pages_url(url)}")

    lacking = []
    for path in notebooks(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        before, snapshot = cell_repo_url(nb), json.dumps(nb)
        if not set_cell_url(nb, url, args.branch, old_pages):
            lacking.append(path.relative_to(root).as_posix())
            continue
        if json.dumps(nb) != snapshot:
            write_notebook(path, nb)
            print(f"{path.relative_to(root).as_posix()}: REPO {before} -> {url}")
        else:
            print(f"{path.relative_to(root).as_posix()}: REPO already {url}")
    for rel in lacking:
        print(f"set_repo_url: {rel} has no install cell (a first code cell running binder/colab_install.py "
              "with a REPO = \"...\" line); not changed", file=sys.stderr)
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())
