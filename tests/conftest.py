"""Shared fixtures and helpers for the revlib tests: tiny worlds, tiny models, tiny experiments.

Tiny models (d_model 8..16, 16-32 pairs, a few steps) are dispatch-bound on a CPU, so the whole
suite runs on one torch thread, the rule revlib.train applies to small models.

Every test runs with its own empty cache folder (``REVLIB_CACHE`` points into ``tmp_path``), so
no test reads an entry another test (or the book's build) wrote, and nothing is written into the
checkout.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import revlib  # noqa: E402  (after the path)
from revlib import DataConfig, ModelConfig, Transformer, make_world, preset  # noqa: E402
from revlib import cache as revlib_cache  # noqa: E402

torch.set_num_threads(1)

# hypothesis keeps a folder of its own (example database, collected constants); keep it out of the
# checkout. test_properties.py also turns the example database off.
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "revlib-tests-hypothesis")


def pytest_configure(config):
    # torch.func.jvp loads torch's own jit-scripted decompositions on first use (torch's warning, not ours)
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# ---------------------------------------------------------------------------------------------
# isolation
# ---------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder per test; the orphan clean-up runs again for it."""
    folder = tmp_path / "revlib-cache"
    monkeypatch.setenv("REVLIB_CACHE", str(folder))
    monkeypatch.setattr(revlib_cache, "_cleaned", set())
    return folder


@pytest.fixture
def cache_folder(isolated_cache) -> Path:
    """The test's cache folder (``REVLIB_CACHE``)."""
    return isolated_cache


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment for ``python -m revlib`` subprocesses: the repo on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


# ---------------------------------------------------------------------------------------------
# tiny things
# ---------------------------------------------------------------------------------------------

TINY = dict(n_pairs=16, d_model=8, steps=12, eval_every=4)


def tiny(name: str = "mdm", **overrides) -> revlib.Experiment:
    """A preset shrunk to 16 pairs, d_model 8 and 12 steps (``overrides`` win)."""
    return preset(name, **{**TINY, **overrides})


@pytest.fixture
def tiny_world():
    """16 pairs, every fact trained in one direction only (V = 3 + 32 = 35)."""
    return make_world(DataConfig(n_pairs=16, seed=0))


def tiny_model(attention: str = "bidirectional", positional: str = "rope", *, vocab: int = 13, seeds=(0,),
               max_len: int = 8, **overrides) -> Transformer:
    """A small Transformer; ``overrides`` are ModelConfig fields (d_model 16, 2 heads by default)."""
    fields = {"n_layers": 1, "n_heads": 2, "d_model": 16}
    fields.update(overrides)
    cfg = ModelConfig(attention=attention, positional=positional, **fields)
    return Transformer(cfg, vocab, seeds, max_len=max_len)


@pytest.fixture
def make_model():
    """Factory for tiny Transformers: ``make_model("causal", "alibi", mlp="gelu", n_layers=2)``."""
    return tiny_model


# ---------------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------------

def assert_same_weights(m1, m2, members1=None, members2=None) -> None:
    """Bit-for-bit equal parameters (optionally of the given members of each model)."""
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for name in s1:
        a = s1[name] if members1 is None else s1[name][list(members1)]
        b = s2[name] if members2 is None else s2[name][list(members2)]
        assert torch.equal(a, b), name


def history_column(history: dict, key: str, member: int) -> np.ndarray:
    """One member's column of a history entry (``step`` has no member axis)."""
    v = history[key]
    return v if v.ndim == 1 else v[:, member]


def assert_same_history(h1: dict, h2: dict, member1: int | None = None, member2: int | None = None) -> None:
    assert h1.keys() == h2.keys()
    for key in h1:
        a = h1[key] if member1 is None else history_column(h1, key, member1)
        b = h2[key] if member2 is None else history_column(h2, key, member2)
        assert np.array_equal(a, b), key


@pytest.fixture
def cli(capsys):
    """Run ``revlib.cli.main`` in-process: ``code, out, err = cli("train", "--pairs", "16")``."""
    from revlib.cli import main

    def run(*args: str):
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
