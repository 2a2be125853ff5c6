"""The notebooks read and run anywhere: static checks of their structure (no kernel).

- Each chapter has one visible ``parameters`` cell (the papermill convention) that sets ``seeds``
  and ``world_seed``, and its claims cell passes every setting of the chapter to
  ``recipes.check``.
- Each chapter shows its experiments: at least four visible cells of at most about ten lines call
  the core, and no more than half of its visible code cells are calls into ``revlib.book`` alone.
- Each chapter has a coding exercise whose checker tests the reader's function.
- The prose uses no MyST role that JupyterLab cannot render (``{glue}``, ``{cite}``, ``{term}``,
  ``{doc}``), and every ``{eval}`` name is assigned by an earlier code cell.
- Every figure cell carries the caption and alt text of revlib.book.nb.CAPTIONS in its metadata,
  and the ``remove-stdout`` tag (the printed caption is for Jupyter only).
- The worksheet lists every exercise with the kind, difficulty and minutes its chapter gives.
- Every "Try it" states its time from an empty cache and gives code that parses.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import revlib.book.ch1  # noqa: F401  (register the captions)
import revlib.book.ch2  # noqa: F401
import revlib.book.ch3  # noqa: F401
import revlib.book.ch4  # noqa: F401
import revlib.book.ch5  # noqa: F401
import revlib.book.perf  # noqa: F401
import revlib.book.schematics  # noqa: F401
from revlib import recipes
from revlib.book.nb import CAPTIONS

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS + [ROOT / "intro.ipynb", ROOT / "paper.ipynb", ROOT / "course.ipynb"] + sorted((ROOT / "appendix").glob("*.ipynb"))
CORE_CALL = re.compile(r"\b(revlib\.(sweep|make_world|preset|train)|coupling\.|alignment\.|measure\.|lm_probe\.|theory\.|"
                       r"minimal\.|recipes\.ch\d)")


def cells(path: Path) -> list[dict]:
    nb = json.loads(path.read_text())
    return [{"type": c["cell_type"], "source": "".join(c["source"]), "tags": c.get("metadata", {}).get("tags", []),
             "metadata": c.get("metadata", {})} for c in nb["cells"]]


def hidden(cell: dict) -> bool:
    """Not shown in the book: removed whole, or both its input and its output removed."""
    tags = cell["tags"]
    return "remove-cell" in tags or ("remove-input" in tags and "remove-output" in tags)


def visible_code(path: Path) -> list[dict]:
    return [c for c in cells(path) if c["type"] == "code" and not hidden(c)]


def chapter_name(path: Path) -> str:
    return f"ch{int(path.name[:2])}"


def test_there_are_five_chapters():
    assert [p.name[:2] for p in CHAPTERS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_one_visible_parameters_cell_sets_the_seeds_and_every_setting(path):
    params = [c for c in cells(path) if "parameters" in c["tags"]]
    assert len(params) == 1 and not hidden(params[0])
    assigned = {t.id for node in ast.walk(ast.parse(params[0]["source"])) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    knobs = set(recipes.chapter(chapter_name(path)).KNOBS)
    assert {"seeds", "world_seed"} <= assigned and knobs <= assigned, knobs - assigned
    check = [c for c in cells(path) if re.search(rf'recipes\.check\(\s*"{chapter_name(path)}"', c["source"])]
    assert len(check) == 1
    for name in knobs | {"seeds", "world_seed"}:  # the claims see the settings the reader chose
        assert re.search(rf"\b{name}={name}\b", check[0]["source"]), name


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_shows_its_experiments(path):
    code = visible_code(path)
    experiments = [c for c in code if CORE_CALL.search(c["source"]) and len(c["source"].splitlines()) <= 12]
    assert len(experiments) >= 4, [c["source"][:60] for c in code]
    book_only = [c for c in code if re.search(r"\b(book|nb|schematics)\.", c["source"]) and not CORE_CALL.search(c["source"])
                 and "def " not in c["source"] and "exercises." not in c["source"]]
    assert len(book_only) <= len(code) / 2, (len(book_only), len(code))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_has_a_coding_exercise_checked_against_the_library(path):
    coding = [c for c in visible_code(path) if re.search(r"^def \w+\(", c["source"], re.M)
              and re.search(r"exercises\.check_\w+\(\w+\)", c["source"]) and "NotImplementedError" in c["source"]]
    assert len(coding) == 1
    md = "\n".join(c["source"] for c in cells(path) if c["type"] == "markdown")
    assert re.search(r"\*\*Exercise \d\.1\*\* \(coding,", md)
    assert "<details><summary>Solution" not in md  # solutions live apart (solutions/)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_prose_renders_in_jupyterlab(path):
    md = "\n".join(c["source"] for c in cells(path) if c["type"] == "markdown")
    for role in ("{glue", "{cite", "{term}", "{doc}"):
        assert role not in md, f"{role} does not render in JupyterLab"
    defined: set[str] = set()
    for c in cells(path):
        if c["type"] == "code":
            tree = ast.parse(re.sub(r"^[%!].*$", "", c["source"], flags=re.M))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for t in targets:
                        for n in ast.walk(t):
                            if isinstance(n, ast.Name):
                                defined.add(n.id)
        else:
            for name in re.findall(r"\{eval\}`([^`]+)`", c["source"]):
                assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name), f"{{eval}} takes a bare name, not {name!r}"
                assert name in defined, f"{path.name}: {{eval}}`{name}` is used before a cell assigns it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_book_runs_every_cell_that_the_prose_reads(path):
    """MyST-NB's inline execution drops cells tagged ``remove-cell`` before it runs anything, and
    runs the others only when it renders a later code cell: an {eval} reading a name that only a
    ``remove-cell`` cell assigns renders empty in the book. Cells that compute for the prose are
    tagged ``remove-input`` and ``remove-output`` instead; ``remove-cell`` is for the install cell
    and the live widgets (which must not run in the build)."""
    for c in cells(path):
        if c["type"] == "code" and "remove-cell" in c["tags"]:
            assert "skip-execution" in c["tags"] or "pip" in c["source"] or "subprocess" in c["source"], (
                f"{path.name}: a remove-cell code cell the build would skip:\n{c['source'][:120]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figure_captions_and_alt_texts_match_the_book_and_show_in_jupyter(path):
    for c in cells(path):
        fig = c["metadata"].get("mystnb", {}).get("figure")
        if not fig:
            assert "nb.figure(" not in c["source"], "a figure without its caption metadata"
            continue
        name = fig["name"]
        assert name in CAPTIONS, name
        assert fig["caption"] == CAPTIONS[name].text, f"{name}: the metadata caption differs from revlib.book"
        assert c["metadata"]["mystnb"]["image"]["alt"] == CAPTIONS[name].alt, name
        assert "remove-stdout" in c["tags"] and f'"{name}")' in c["source"]


def test_the_worksheet_lists_every_exercise_with_its_time():
    sheet = (ROOT / "worksheet.md").read_text()
    for path in CHAPTERS:
        md = "\n".join(c["source"] for c in cells(path) if c["type"] == "markdown")
        for num, meta in re.findall(r"\*\*Exercise (\d+\.\d+)\*\* \(([^)]*)\)", md):
            parts = [p.strip() for p in meta.split(",")]
            coding = parts[0] == "coding"
            parts = parts[1:] if coding else parts
            row = re.search(rf"^\| {re.escape(num)} \(chapter \d\) \| ([^|]+) \| ([^|]+) \| (\d+) \|", sheet, re.M)
            assert row, f"exercise {num} is missing from the worksheet"
            assert (row[1].strip() == "coding") == coding and row[2].strip() == parts[0], num
            assert int(row[3]) == int(parts[1].split()[0]), num


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_try_it_states_its_time_and_gives_code_to_run(path):
    """A "Try it" says how long it takes from an empty cache (benchmarks/try_its.py measures it)."""
    md = "\n".join(c["source"] for c in cells(path) if c["type"] == "markdown")
    heads = re.findall(r"\*\*Try it\*\*[^\n]*", md)
    assert len(heads) >= 3, "each chapter offers at least three try-its"
    for head in heads:
        assert re.match(r"\*\*Try it\*\* \(about \d+ s[^)]*\)", head), f"{path.name}: {head[:60]!r} gives no time"
    blocks = re.findall(r"\*\*Try it\*\*.*?```python\n(.*?)```", md, re.S)
    assert len(blocks) == len(heads)
    for code in blocks:
        ast.parse(code)


WIDTH = 75  # columns of code that fit the book's code box (a collapsed cell's, the narrowest) at desktop width


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_shown_in_the_book_fits_its_width(path):
    """Cell inputs the page shows (collapsed ones too) and the try-its' code blocks fit the page
    (tests/browser_check.py measures the same in Chromium)."""
    long = []
    for c in cells(path):
        if c["type"] == "code":
            if "remove-cell" in c["tags"] or "remove-input" in c["tags"]:
                continue
            lines = c["source"].splitlines()
        else:
            lines = [line for block in re.findall(r"```python\n(.*?)```", c["source"], re.S)
                     for line in block.splitlines()]
        long += [line for line in lines if len(line) > WIDTH]
    assert not long, f"{path.name}: {len(long)} line(s) wider than {WIDTH} columns: {long[0]!r}"


def test_the_code_the_book_includes_fits_its_width():
    """Chapter 1 prints the readable model's attention and objective; the solutions page includes
    every function of solutions/solutions.py."""
    import inspect

    from revlib import minimal

    shown = inspect.getsource(minimal.Attention) + inspect.getsource(minimal.mdm_loss)
    solutions = (ROOT / "solutions" / "solutions.py").read_text()
    shown += solutions[solutions.index("\ndef "):]
    long = [line for line in shown.splitlines() if len(line) > WIDTH + 2]  # shown open: 2 more columns
    assert not long, long[0]
