"""Shared fixtures for the revlib tests: tiny worlds and tiny models, so the suite stays fast.

Tiny models (d_model 8..16) are dispatch-bound on a CPU, so everything runs on one torch
thread, the same rule revlib.train applies to small models.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from revlib import DataConfig, ModelConfig, Transformer, make_world  # noqa: E402  (after the path)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment for ``python -m revlib`` subprocesses: the repo on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def tiny_world():
    """16 pairs, every fact trained in one direction only (V = 3 + 32 = 35)."""
    return make_world(DataConfig(n_pairs=16, seed=0))


def _tiny_model(
    attention: str = "bidirectional",
    positional: str = "rope",
    *,
    vocab: int = 13,
    seeds=(0,),
    **overrides,
) -> Transformer:
    """A small Transformer; ``overrides`` are ModelConfig fields (d_model 16, 2 heads by default)."""
    fields = {"n_layers": 1, "n_heads": 2, "d_model": 16, "max_len": 8}
    fields.update(overrides)
    cfg = ModelConfig(attention=attention, positional=positional, **fields)
    return Transformer(cfg, vocab, seeds)


@pytest.fixture
def make_model():
    """Factory for tiny Transformers: ``make_model("causal", "alibi", mlp=True, n_layers=2)``."""
    return _tiny_model
