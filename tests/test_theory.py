"""revlib.theory: the RoPE correlation in closed form against brute force and Monte-Carlo."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from revlib import theory
from revlib.model import apply_rope, rope_angles


def model_rotation(d: int, position: int, base: float) -> torch.Tensor:
    """The matrix by which revlib.model rotates a vector at ``position``, read off its columns."""
    eye = torch.eye(d, dtype=torch.float64)
    return apply_rope(eye, rope_angles(d, torch.full((d,), position), base).double()).T  # column j = R e_j


@pytest.mark.parametrize("d", [2, 6, 8, 16, 32, 64])
@pytest.mark.parametrize("offset", [1, 2, 3, 7])
@pytest.mark.parametrize("base", [10.0, 10_000.0, 500_000.0])
def test_closed_form_equals_trace_of_the_models_rotations(d, offset, base):
    # tr(R_(+Δ) R_(-Δ)^T) / d, with R built from the model's own apply_rope at positions ±Δ
    # (a rotation by position p of a key and by 0 of the query is R_(p-0) = R_p)
    brute = torch.trace(model_rotation(d, offset, base) @ model_rotation(d, -offset, base).T) / d
    assert theory.rope_corr(d, offset, base) == pytest.approx(float(brute), abs=1e-6)


@pytest.mark.parametrize("d,offset", [(8, 2), (16, -3), (32, 5)])
def test_rope_matrix_is_the_relative_rotation_of_the_model(d, offset):
    # (R_i q)^T (R_j k) = q^T R_(j-i) k: the model's scores depend on j - i through rope_matrix
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    i, j = 4, 4 + offset
    score = (model_rotation(d, i, 1e4) @ q) @ (model_rotation(d, j, 1e4) @ k)
    # (the model computes its angles in float32, hence the tolerance)
    assert float(score) == pytest.approx(float(q @ theory.rope_matrix(d, offset) @ k), abs=1e-5)
    R = theory.rope_matrix(d, offset)
    assert torch.allclose(R @ R.T, torch.eye(d, dtype=torch.float64), atol=1e-12)  # a rotation


def test_published_values_and_the_bound():
    # chapter 2's table: Δ = 2, base 10^4
    for d, value in {6: 0.443, 8: 0.567, 16: 0.695, 32: 0.729, 64: 0.748, 128: 0.759}.items():
        assert theory.rope_corr(d) == pytest.approx(value, abs=5e-4)
    assert theory.rope_corr_limit() == pytest.approx(0.77, abs=0.005)
    assert all(theory.rope_corr(d) > 0.4 for d in range(6, 1025, 2))
    assert theory.rope_corr(4) < 0.4  # the bound needs d >= 6
    assert theory.rope_corr(4096) == pytest.approx(theory.rope_corr_limit(), abs=1e-3)


@pytest.mark.parametrize("d,offset", [(6, 2), (32, 2), (16, 1), (8, 5)])
def test_closed_form_agrees_with_monte_carlo(d, offset):
    mc = theory.monte_carlo_corr("rope", d, offset, samples=40_000, seed=1)
    assert abs(mc.estimate - theory.rope_corr(d, offset)) < 4 * mc.stderr
    assert 0 < mc.stderr < 0.02


def test_monte_carlo_standard_error_is_calibrated():
    runs = [theory.monte_carlo_corr("rope", 16, 2, samples=2_000, seed=s) for s in range(60)]
    spread = np.std([r.estimate for r in runs], ddof=1)
    claimed = np.mean([r.stderr for r in runs])
    assert 0.7 < spread / claimed < 1.4
    assert runs[0] == theory.monte_carlo_corr("rope", 16, 2, samples=2_000, seed=0)  # seeded
    assert runs[0].estimate != runs[1].estimate


def test_other_encodings():
    assert theory.analytic_corr("alibi") == theory.analytic_corr("none") == 1.0
    for positional in ("alibi", "none"):
        mc = theory.monte_carlo_corr(positional, 16, samples=1_000)
        assert mc.estimate == pytest.approx(1.0) and mc.stderr == pytest.approx(0.0, abs=1e-9)
    for d, share in [(8, 0.5), (16, 0.8), (32, 0.3)]:
        mc = theory.monte_carlo_corr("absolute", d, samples=30_000, seed=2, token_share=share)
        expected = theory.analytic_corr("absolute", d, token_share=share)
        assert expected == pytest.approx(share**2 + (1 - share) ** 2 / d)
        assert abs(mc.estimate - expected) < 4 * mc.stderr
    assert theory.absolute_corr(1.0) == 1.0 and theory.absolute_corr(0.0, symmetry=-1.0) == -1.0


def test_fixed_query_correlation():
    # a fixed q: the formula equals a Monte-Carlo over isotropic keys ...
    gen = torch.Generator().manual_seed(3)
    d = 16
    q = torch.randn(d, generator=gen, dtype=torch.float64)
    k = torch.randn(50_000, d, generator=gen, dtype=torch.float64)
    s_plus, s_minus = k @ theory.rope_matrix(d, 2).T @ q, k @ theory.rope_matrix(d, -2).T @ q
    r, se = theory.pearson(s_plus, s_minus)
    assert abs(float(r) - float(theory.rope_corr_fixed_query(q))) < 4 * float(se)
    # ... and its mean over Gaussian queries is the closed form (Dirichlet shares, mean 2/d)
    qs = torch.randn(200_000, d, generator=gen)
    assert float(theory.rope_corr_fixed_query(qs).mean()) == pytest.approx(theory.rope_corr(d), abs=2e-3)


def test_pearson_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 500, generator=gen)
    y = x + torch.randn(3, 500, generator=gen)
    r, se = theory.pearson(x, y)
    for i in range(3):
        assert float(r[i]) == pytest.approx(np.corrcoef(x[i], y[i])[0, 1], abs=1e-6)
    assert torch.all(se > 0)
    with pytest.raises(ValueError):
        theory.pearson(torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("call", [
    lambda: theory.rope_corr(7),
    lambda: theory.rope_corr(0),
    lambda: theory.rope_corr(8, base=-1.0),
    lambda: theory.rope_corr(8, offset=math.inf),
    lambda: theory.monte_carlo_corr("sinusoidal"),
    lambda: theory.monte_carlo_corr("rope", 8, samples=2),
    lambda: theory.monte_carlo_corr("rope", 8, offset=1.5),
    lambda: theory.absolute_corr(1.5),
    lambda: theory.analytic_corr("learned"),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()
