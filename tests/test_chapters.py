"""Chapters 1 and 2 run with the reader's settings: two seeds, another world, a changed knob. Every
cell executes (nbclient, as nbval and the build do), and the claims at the end are reported for these
settings instead of failing. nbval runs every notebook with the book's settings, where the claims
are enforced."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def run_with(path: Path, parameters: str) -> nbformat.NotebookNode:
    """Execute a chapter with ``parameters`` injected after its ``parameters`` cell (the papermill
    convention); cells tagged ``skip-execution`` (the live explorers, which wait for a reader) are
    left out, as the build leaves them out."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "skip-execution" not in c.metadata.get("tags", [])]
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(parameters, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def outputs_text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
            for mime in ("text/plain", "text/html"):
                if mime in o.get("data", {}):
                    out.append(o["data"][mime])
    return "\n".join(out)


@pytest.mark.parametrize("chapter, parameters", [
    ("01_the_reversal_curse.ipynb", "seeds = (11, 12)\nworld_seed = 7\nn_pairs = 32\npositionals = ('rope', 'alibi')"),
    ("02_weight_sharing_coupling.ipynb", "seeds = (11, 12)\nworld_seed = 7\nn_pairs = 32\nheads = (1, 2)\ninit_models = 8"),
], ids=["ch1", "ch2"])
def test_a_chapter_recomputes_with_changed_parameters(chapter, parameters):
    nb = run_with(ROOT / "chapters" / chapter, parameters)
    text = outputs_text(nb)
    assert "Traceback" not in text and not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert "settings other than the book's" in text  # the claims are reported, not enforced
    assert "2 seeds (11, 12)" in text  # the tables say what was trained
    first = json.dumps(nb.cells[2].get("outputs", []))
    assert "Where this page's numbers came from" in first and "trained here" in first

