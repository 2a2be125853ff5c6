"""Readers anywhere: the Colab installer, the repository URL, the Binder files, the browser check.

Offline and fast. The Chromium test at the end runs the browser check on small hand-made
pages; it is skipped where no Chromium is installed, except under CI=true, where it fails.
"""
from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import re
import shutil
import stat
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BINDER = REPO_ROOT / "binder"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is created
    spec.loader.exec_module(mod)
    return mod


colab_install = _load("colab_install", BINDER / "colab_install.py")
set_repo_url = _load("set_repo_url", BINDER / "set_repo_url.py")
browser_check = _load("browser_check", REPO_ROOT / "tests" / "browser_check.py")


def pins_of(path: Path) -> dict[str, str]:
    """{lower-case name: version} for the name==version lines of a requirements file (parsed
    here independently of colab_install.read_pins)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


TOP_PINS = pins_of(REPO_ROOT / "requirements.txt")


def book_notebooks() -> list[Path]:
    """Every notebook of the book: at the top (intro, paper, course), chapters/ and appendix/."""
    nbs = sorted(REPO_ROOT.glob("*.ipynb"))
    assert {p.name for p in nbs} >= {"intro.ipynb", "paper.ipynb", "course.ipynb"}
    for folder in ("chapters", "appendix"):
        nbs += sorted((REPO_ROOT / folder).glob("*.ipynb"))
    return nbs


def config_repo_url(root: Path = REPO_ROOT) -> str:
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]


# ---------------------------------------------------------------- binder/colab_install.py


def test_both_scripts_use_the_standard_library_only():
    for script in ("colab_install.py", "set_repo_url.py"):
        tree = ast.parse((BINDER / script).read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert mods <= set(sys.stdlib_module_names), f"{script} imports {sorted(mods - set(sys.stdlib_module_names))}"


def test_read_pins_matches_requirements_txt():
    pins = colab_install.read_pins(REPO_ROOT / "requirements.txt")
    assert pins == TOP_PINS
    for name in (*colab_install.NEEDED, "torch"):
        assert name in pins, f"requirements.txt does not pin {name}"


def test_plan_installs_only_what_is_missing_at_the_pinned_versions():
    present = {"torch", "numpy", "ipywidgets"}
    p = colab_install.plan(REPO_ROOT, lambda n: n in present)
    assert p.missing == ["matplotlib", "tqdm"]
    assert p.install == [f"matplotlib=={TOP_PINS['matplotlib']}", f"tqdm=={TOP_PINS['tqdm']}"]
    assert p.unpinned == []
    # Everything present: only revlib itself.
    everything = colab_install.plan(REPO_ROOT, lambda n: True)
    assert everything.install == []
    assert everything.commands("py") == [["py", "-m", "pip", "install", "--no-deps", "-e", str(REPO_ROOT)]]


@pytest.mark.parametrize("n_missing", range(len(colab_install.NEEDED) + 1))
def test_plan_never_installs_torch(n_missing):
    """Whatever is missing, and even if the pins or the package list named torch."""
    pins = dict(TOP_PINS, torch="2.13.0")
    for missing in itertools.combinations(colab_install.NEEDED, n_missing):
        p = colab_install.plan(REPO_ROOT, lambda n: n == "torch" or n not in missing, pins)
        assert sorted(p.missing) == sorted(missing)
        for cmd in p.commands("py", Path("c.txt")):
            assert not any(re.match(r"(?i)torch\b", arg) for arg in cmd), cmd
            assert cmd[:4] == ["py", "-m", "pip", "install"]


def test_plan_stops_when_torch_is_missing():
    with pytest.raises(colab_install.TorchMissing, match="never installs torch"):
        colab_install.plan(REPO_ROOT, lambda n: n != "torch")


def test_plan_installs_an_unpinned_package_unpinned():
    p = colab_install.plan(REPO_ROOT, lambda n: n != "tqdm", pins={})
    assert p.install == ["tqdm"] and p.unpinned == ["tqdm"]


def test_main_runs_pip_in_order_with_torch_held_by_a_constraint(capsys):
    calls, constraints = [], []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if "-c" in cmd:
            constraints.append(Path(cmd[cmd.index("-c") + 1]).read_text())
        return type("Done", (), {"returncode": 0})()

    rc = colab_install.main([str(REPO_ROOT)], run=fake_run, is_importable=lambda n: n not in ("tqdm", "ipywidgets"))
    assert rc == 0, capsys.readouterr()
    py = sys.executable
    assert calls[0] == [py, "-m", "pip", "install", "--no-deps", "-e", str(REPO_ROOT)]
    assert calls[1][:4] == [py, "-m", "pip", "install"] and calls[1][-2:] == [
        f"ipywidgets=={TOP_PINS['ipywidgets']}", f"tqdm=={TOP_PINS['tqdm']}"]
    assert calls[2] == [py, "-m", "revlib", "results", "fetch", "--from-release", "--if-available"]  # the bundle, if any
    assert len(calls) == 3
    import importlib.metadata
    assert constraints == [f"torch=={importlib.metadata.version('torch')}\n"]


def test_main_without_torch_installs_nothing(capsys):
    calls = []
    rc = colab_install.main([str(REPO_ROOT)], run=lambda cmd, **kw: calls.append(cmd), is_importable=lambda n: False)
    assert rc == 1 and calls == []
    assert "torch is not importable" in capsys.readouterr().err


def test_main_rejects_a_folder_that_is_not_the_book(tmp_path, capsys):
    assert colab_install.main([str(tmp_path)], run=lambda *a, **k: pytest.fail("ran pip")) == 2
    assert colab_install.main([], run=lambda *a, **k: pytest.fail("ran pip")) == 2


# ---------------------------------------------------------------- binder/set_repo_url.py

INSTALL_CELL = [
    "import importlib.util, subprocess, sys\n",
    'if importlib.util.find_spec("revlib") is None:\n',
    '    REPO = "https://github.com/revlib/reversal-curse-book"  # the book\'s repository\n',
    '    subprocess.run(["git", "clone", "--depth", "1", REPO, "revlib-book"], check=True)\n',
    '    subprocess.run([sys.executable, "revlib-book/binder/colab_install.py", "revlib-book"], check=True)\n',
    '    sys.path.insert(0, "revlib-book")',
]


def _notebook(first_cell_source=None) -> dict:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Título — ü\n", "text"]}]
    if first_cell_source is not None:
        cells.insert(0, {"cell_type": "code", "execution_count": None, "metadata": {"tags": ["remove-cell"]},
                         "outputs": [], "source": list(first_cell_source)})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def book_copy(tmp_path):
    """The book's _config.yml and notebooks in tmp_path, plus two notebooks of our own: one with
    the install cell, one without."""
    shutil.copy(REPO_ROOT / "_config.yml", tmp_path)
    shutil.copy(REPO_ROOT / "CITATION.cff", tmp_path)
    for nb in book_notebooks():
        dest = tmp_path / nb.relative_to(REPO_ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(nb, dest)
    set_repo_url.write_notebook(tmp_path / "chapters" / "98_with_cell.ipynb", _notebook(INSTALL_CELL))
    set_repo_url.write_notebook(tmp_path / "appendix" / "99_without_cell.ipynb", _notebook())
    return tmp_path


def test_set_repo_url_rewrites_config_and_install_cells(book_copy, capsys):
    old_config = (book_copy / "_config.yml").read_text()
    old_url = config_repo_url(book_copy)
    before = {p: json.loads(p.read_text()) for p in set_repo_url.notebooks(book_copy)}
    new = "https://github.com/acme/the-book-test"
    assert new != old_url
    rc = set_repo_url.main([new + ".git/", "--root", str(book_copy)])  # .git and the slash are dropped
    out = capsys.readouterr()
    assert rc == 1 and "99_without_cell.ipynb has no install cell" in out.err  # it says which lack one
    assert config_repo_url(book_copy) == new
    changed = [(a, b) for a, b in zip(old_config.splitlines(), (book_copy / "_config.yml").read_text().splitlines()) if a != b]
    assert changed == [(f"  url: {old_url}", f"  url: {new}")]
    with_cell = 0
    for path, nb in before.items():
        text = path.read_text(encoding="utf-8")
        after = json.loads(text)
        assert text == json.dumps(after, indent=1, ensure_ascii=False) + "\n", f"{path.name}: JSON formatting changed"
        if set_repo_url.install_cell(nb) is None:
            assert after == nb, f"{path.name} has no install cell but was changed"
            continue
        with_cell += 1
        assert set_repo_url.cell_repo_url(after) == new
        old_src, new_src = nb["cells"][0]["source"], after["cells"][0]["source"]
        cell_url = set_repo_url.cell_repo_url(nb)
        assert [(a, b) for a, b in zip(old_src, new_src) if a != b] == [
            (line, line.replace(cell_url, new)) for line in old_src if "REPO =" in line]
        old_pages = set_repo_url.pages_url(old_url)
        replaced = json.loads(json.dumps(nb["cells"][1:]).replace(old_pages, set_repo_url.pages_url(new)))
        assert after["cells"][1:] == replaced and after["metadata"] == nb["metadata"]
    assert with_cell >= 1 and set_repo_url.cell_repo_url(
        json.loads((book_copy / "chapters" / "98_with_cell.ipynb").read_text())) == new
    # Running it again changes nothing.
    snapshot = {p: p.read_bytes() for p in before}
    set_repo_url.main([new, "--root", str(book_copy)])
    assert {p: p.read_bytes() for p in before} == snapshot
    # the citation file and the rendered book's address follow
    citation = yaml.safe_load((book_copy / "CITATION.cff").read_text())
    assert citation["repository-code"] == new and citation["url"] == "https://acme.github.io/the-book-test/"
    for path in before:
        assert "revlib.github.io" not in path.read_text(), path.name


def test_set_repo_url_sets_the_branch_of_the_config_and_of_every_install_cell(book_copy, capsys):
    assert set_repo_url.main(["https://github.com/acme/book", "--branch", "gh-pages-src", "--root", str(book_copy)]) in (0, 1)
    assert yaml.safe_load((book_copy / "_config.yml").read_text())["repository"]["branch"] == "gh-pages-src"
    for path in set_repo_url.notebooks(book_copy):
        nb = json.loads(path.read_text())
        if set_repo_url.install_cell(nb) is not None and path.parent.name != "chapters" or path.name != "98_with_cell.ipynb":
            if set_repo_url.cell_branch(nb) is not None:
                assert set_repo_url.cell_branch(nb) == "gh-pages-src", path.name
    assert set_repo_url.cell_branch(json.loads((book_copy / "chapters" / "01_the_reversal_curse.ipynb").read_text())) \
        == "gh-pages-src"
    assert set_repo_url.main(["https://github.com/acme/book", "--branch", "bad branch", "--root", str(book_copy)]) == 2


def test_every_notebook_clones_the_configured_branch():
    branch = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["repository"]["branch"]
    for path in book_notebooks():
        nb = json.loads(path.read_text())
        assert set_repo_url.cell_branch(nb) == branch, path.name
        assert '"--branch", BRANCH' in "".join(set_repo_url.install_cell(nb)["source"]), path.name


@pytest.mark.parametrize("url", [
    "http://github.com/acme/book",       # not https
    "https://github.com/acme/my book",   # a space
    "https://gitlab.com/acme/book",      # Colab opens GitHub only; the theme warns (-W fails)
    "https://github.com/acme",           # no repository
    "https://github.com/acme/book/tree/main",
    "github.com/acme/book",
])
def test_set_repo_url_rejects_bad_urls_and_changes_nothing(book_copy, url, capsys):
    snapshot = {p: p.read_bytes() for p in book_copy.rglob("*") if p.is_file()}
    assert set_repo_url.main([url, "--root", str(book_copy)]) == 2
    assert "set_repo_url:" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in book_copy.rglob("*") if p.is_file()} == snapshot


def test_config_repository_url_is_a_valid_github_url():
    url = config_repo_url()
    assert set_repo_url.normalize_url(url) == url
    assert set_repo_url.config_url((REPO_ROOT / "_config.yml").read_text()) == url


@pytest.mark.parametrize("nb", book_notebooks(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_notebook_begins_with_the_install_cell_for_the_configured_repository(nb):
    rel = nb.relative_to(REPO_ROOT).as_posix()
    data = json.loads(nb.read_text(encoding="utf-8"))
    cell = set_repo_url.install_cell(data)
    assert cell is not None, (
        f"{rel} does not begin with the install cell: every notebook's first cell must be the code "
        "cell (tag remove-cell) that, when revlib is not importable (Colab), clones the book and runs "
        "binder/colab_install.py, with a REPO = \"...\" line (copy it from "
        "chapters/01_the_reversal_curse.ipynb)")
    assert "remove-cell" in cell.get("metadata", {}).get("tags", []), f"{rel}: the install cell lacks the tag remove-cell"
    src = "".join(cell["source"])
    assert 'find_spec("revlib") is None' in src, f"{rel}: the install cell must do nothing where revlib is importable"
    assert "binder/colab_install.py" in src and "revlib-book" in src, f"{rel}: the install cell must run binder/colab_install.py revlib-book"
    assert set_repo_url.cell_repo_url(data) == config_repo_url(), (
        f"{rel}: the install cell's REPO is {set_repo_url.cell_repo_url(data)}, _config.yml's repository.url "
        f"is {config_repo_url()}; run python3 binder/set_repo_url.py URL")


# ---------------------------------------------------------------- binder/ (repo2docker)


def test_binder_runtime_is_python_3_11():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_binder_requirements_pin_the_books_versions_and_the_cpu_torch():
    text = (BINDER / "requirements.txt").read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    options = [ln for ln in lines if ln.startswith("-")]
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"], options  # PyPI stays the index
    reqs = [ln for ln in lines if not ln.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[^\s=]+", r) for r in reqs), f"not all exact pins: {reqs}"
    pins = pins_of(BINDER / "requirements.txt")
    assert pins["torch"] == "2.13.0"
    for name, version in pins.items():
        assert name in TOP_PINS, f"binder/requirements.txt pins {name}, requirements.txt does not"
        assert version == TOP_PINS[name], f"{name}: binder {version}, requirements.txt {TOP_PINS[name]}"
    for name in ("torch", *colab_install.NEEDED):
        assert name in pins, f"binder/requirements.txt lacks {name}"
    assert "revlib" not in pins  # postBuild installs it


def test_binder_postbuild_installs_revlib_without_dependencies():
    post = BINDER / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR, "binder/postBuild must be executable"
    text = post.read_text()
    assert text.startswith("#!")
    assert re.search(r"^pip install --no-deps -e \.$", text, re.M), text
    assert "torch" not in re.sub(r"#.*", "", text)


def test_pyproject_declares_revlib_without_pinning_torch():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["requires-python"] == ">=3.11"
    deps = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower(): d for d in project["dependencies"]}
    assert set(deps) >= {"torch", "numpy", "matplotlib", "tqdm"}
    assert "==" not in deps["torch"], "pyproject.toml must not pin torch exactly (requirements.txt does)"
    extras = project["optional-dependencies"]
    assert any(d.startswith("transformers") for d in extras["hf"])
    lab = " ".join(extras["lab"])  # what a student needs to run the notebooks, and nothing to build or test
    for name in ("jupyterlab", "jupyterlab-myst", "ipywidgets", "ipykernel"):
        assert name in lab
    for name in ("jupyter-book", "nbval", "pytest", "hypothesis"):
        assert name not in lab
    book = " ".join(extras["book"])
    for name in ("revlib[lab]", "jupyter-book", "nbval"):
        assert name in book
    assert set(meta["tool"]["setuptools"]["packages"]) >= {"revlib", "revlib.book", "revlib.recipes"}


# ---------------------------------------------------------------- tests/browser_check.py


def test_browser_check_walks_every_page_folder(tmp_path):
    for rel in ("index.html", "intro.html", "chapters/01.html", "chapters/new_chapter.html",
                "appendix/performance.html", "new_part/page.html", "_static/x.html",
                "_sources/chapters/01.html", "mathjax/a.html", "requirejs/b.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<html></html>")
    found = [p.relative_to(tmp_path).as_posix() for p in browser_check.find_pages(tmp_path)]
    assert found == ["appendix/performance.html", "chapters/01.html", "chapters/new_chapter.html",
                     "index.html", "intro.html", "new_part/page.html"]


STYLE = ("<style>body{width:700px;margin:20px} div.highlight pre{overflow:auto;font:14px monospace;padding:8px}"
         " td,th{border:1px solid #ccc;padding:2px 6px} .cell_output .output{overflow-x:auto}</style>")
FIXTURES = {
    "index.html": """<h1 id="clean">A clean page</h1>
<div class="highlight"><pre>x = 1  # fits easily</pre></div>
<table><tr><th>a</th><th>b</th></tr><tr><td>0.97 ± 0.01</td><td>short</td></tr></table>
<div class="cell"><div class="cell_input"><div class="highlight"><pre>print("hello")</pre></div></div>
<div class="cell_output"><div class="output stream"><div class="highlight"><pre>hello</pre></div></div></div></div>
<div style="overflow-x:auto;width:300px"><table id="scroller"><tr><td style="white-space:nowrap">
a wide table in a scrolling box: readable, a note ..........................</td></tr></table></div>
<p><a href="chapters/wide_code.html">code</a> <a href="appendix/clipped_table.html">tables</a></p>""",
    "chapters/wide_code.html": """<section id="wide-code"><h1>Code that scrolls</h1>
<div class="cell"><div class="cell_input"><div class="highlight"><pre>result = train(model, world, steps=300, lr=3e-3, batch_size=32, seeds=(0, 1, 2, 3), log_every=50)</pre></div></div>
<div class="cell_output"><div class="output text_html"><div style="width:1200px">a wide HTML output</div></div></div></div>
<div class="highlight"><pre>short = "a code block that fits"</pre></div>
<details class="hide above-input"><summary>Show code</summary><div class="cell_input"><div class="highlight">
<pre>hidden_but_long = some_function(alpha=1, beta=2, gamma=3, delta=4, epsilon=5, zeta=6, eta=7)</pre></div></div></details>
</section>""",
    "appendix/clipped_table.html": """<section id="clipped"><h1>Tables that are cut</h1>
<div class="holder" style="overflow:hidden;width:400px"><table id="too-wide">
<tr><th>model</th><th>a2b</th><th>b2a</th><th>infill</th></tr>
<tr><td style="white-space:nowrap">a long model description that does not fit</td><td>0.97 ± 0.01 [0.95, 0.99]</td>
<td>0.03 ± 0.01 [0.01, 0.05]</td><td>0.96 ± 0.02 [0.93, 0.99]</td></tr></table></div>
<table id="fixed" style="table-layout:fixed;width:300px"><tr><th>name</th><th>value</th></tr>
<tr><td style="white-space:nowrap;overflow:hidden;text-overflow:ellipsis">a cell whose text is cut off by its box</td>
<td>ok</td></tr></table></section>""",
}


def test_browser_check_fails_on_clipped_tables_and_scrolling_code(tmp_path, capsys):
    if browser_check.find_chromium() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no Chromium found and CI=true: the browser check's own test must run in CI")
        pytest.skip("no Chromium (apt-get install chromium); CI=true makes this a failure")
    site = tmp_path / "html"
    for rel, body in FIXTURES.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{rel}</title>'
                                f"{STYLE}</head><body>{body}</body></html>", encoding="utf-8")
    rc = browser_check.main([str(site), "--screenshots", str(tmp_path / "shots")])
    out = capsys.readouterr().out
    assert rc == 1, out
    pages = {m.group(2): (m.group(1), m.end()) for m in re.finditer(r"^(PASS|FAIL)  (\S+)", out, re.M)}
    assert set(pages) == set(FIXTURES), out
    assert pages["index.html"][0] == "PASS", out
    assert "(note) table scrolls sideways: table#scroller" in out

    def block(page):  # the lines printed under a page
        return out[pages[page][1]:].split("\n", 1)[1].split("\nPASS ")[0].split("\nFAIL ")[0]

    assert pages["chapters/wide_code.html"][0] == "FAIL"
    code = block("chapters/wide_code.html")
    assert re.search(r"code cell scrolls horizontally: pre \(cell 1 input in #wide-code, \"result = train", code), code
    assert "code cell scrolls horizontally: div.output.text_html (cell 1 output" in code, code
    assert re.search(r"code block scrolls horizontally: pre \(#wide-code, collapsed on the page, \"hidden_but_long", code), code
    assert "short" not in code and code.count("scrolls horizontally") == 3, code

    assert pages["appendix/clipped_table.html"][0] == "FAIL"
    tables = block("appendix/clipped_table.html")
    assert re.search(r"clipped table: table#too-wide .* div\.holder \(overflow hidden\) shows 400 px", tables), tables
    assert re.search(r"table cell text cut: td \(row 2, column 1 of table#fixed.*cut \(overflow hidden\)", tables), tables
    assert "table cut off at phone width by div" in tables, tables  # the same table, at 390 px
    assert tables.count("- ") == 3, tables
    assert out.rstrip().endswith("1 passed, 2 failed")


# ---------------------------------------------------------------- the notebooks read in Jupyter

@pytest.mark.parametrize("nb", book_notebooks(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_markdown_renders_in_jupyter_as_in_the_book(nb):
    """Jupyter shows a MyST directive (```{...} or :::{...}) as raw text and a solution in the open:
    boxes are HTML (<div class="admonition ...">) and every solution sits in a <details> block,
    both of which render in the book and in Jupyter alike."""
    rel = nb.relative_to(REPO_ROOT).as_posix()
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "markdown"):
        src = "".join(cell["source"])
        fences = re.findall(r"^(?:```|:::)\{[\w:-]+\}", src, flags=re.M)
        assert not fences, f"{rel}, markdown cell {i}: {fences[0]} shows as raw text in Jupyter; use HTML"
        opened = src.count("<details>")
        assert opened == src.count("</details>"), f"{rel}, markdown cell {i}: unbalanced <details>"
        solutions = len(re.findall(r"\bSolution\b", src))
        hidden = len(re.findall(r"<details><summary>Solution", src))
        assert solutions <= hidden, (
            f"{rel}, markdown cell {i}: a solution outside <details><summary>Solution...")


def test_browser_check_moves_explorers_checks_phone_width_and_the_first_output(tmp_path, capsys):
    """A real FrameExplorer passes; the same explorer without its script (the figure never changes)
    fails; a page wider than a phone fails at 390 px, and every page gets a phone screenshot. A
    first output that still reads zero fails; one that the page's final count replaced passes."""
    if browser_check.find_chromium() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no Chromium found and CI=true: the browser check's own test must run in CI")
        pytest.skip("no Chromium (apt-get install chromium); CI=true makes this a failure")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from revlib.book.explore import FrameExplorer

    def draw(i, j):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [i, j])
        ax.set_title(f"frame {i},{j}")
        return fig

    html = FrameExplorer("demo", {"a": ["0", "1"], "b": ["x", "y", "z"]}, draw, alt="a line")._repr_html_()
    broken = re.sub(r"<script>.*?</script>", "", html.replace('id="explorer-demo"', 'id="explorer-broken"'), flags=re.S)
    from revlib.book import nb

    zero = ("<p class='revlib-provenance'><b>Where this page's numbers came from</b> (code version x): 0 runs "
            "trained here (0 s); 0 measurements computed here (0 s); 0 results loaded from the local cache; "
            "none from a results bundle.</p>")
    final = (zero.replace("revlib-provenance", "revlib-provenance-final")
             .replace("0 results loaded", "12 results loaded") + nb._COPY_TO_TOP)
    pages = {"index.html": "<h1>Explorer</h1>" + zero + html + final,  # the final count reaches the top
             "zero.html": "<h1>Zero</h1>" + zero,
             "broken.html": "<h1>Broken</h1>" + broken,
             "wide.html": '<h1>Wide</h1><div style="width:600px">a box as wide as a desktop column</div>'}
    site = tmp_path / "html"
    site.mkdir()
    book_css = (REPO_ROOT / "_static" / "custom.css").read_text()  # the book's phone rules: figures keep their size
    for rel, body in pages.items():
        (site / rel).write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{rel}</title>'
                                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                                f"<style>body{{margin:8px}} img{{max-width:100%}} {book_css}</style></head>"
                                f"<body>{body}</body></html>",
                                encoding="utf-8")
    shots = tmp_path / "shots"
    rc = browser_check.main([str(site), "--screenshots", str(shots)])
    out = capsys.readouterr().out
    assert rc == 1, out
    status = {m[2]: m[1] for m in re.finditer(r"^(PASS|FAIL)\s+(\S+)", out, re.M)}
    assert status == {"index.html": "PASS", "broken.html": "FAIL", "wide.html": "FAIL", "zero.html": "FAIL"}, out
    assert "the first output says that nothing was trained, computed or loaded" in out, out
    assert 'explorer explorer-broken slider "a" did not change the figure' in out, out
    assert 'slider "b" did not change the figure' in out, out
    assert "the page scrolls sideways at phone width: " in out, out
    assert {p.name for p in (shots / "390").glob("*.png")} == {"index.png", "broken.png", "wide.png", "zero.png"}
