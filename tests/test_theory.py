"""revlib.theory: the closed forms of the route coupling against their definitions and against
Monte-Carlo (within 4 standard errors, with the standard error itself calibrated)."""
from __future__ import annotations

import math

import pytest
import torch

from revlib import theory
from revlib.theory import (absolute_corr, analytic_corr, monte_carlo_bytes, monte_carlo_corr, pearson, rope_corr,
                           rope_corr_fixed_query, rope_corr_limit, rope_matrix, rope_thetas)


@pytest.mark.parametrize("d,offset,base", [(2, 1, 10_000.0), (8, 2, 10_000.0), (32, 2, 10_000.0), (16, 7, 100.0),
                                           (64, -3, 1e6), (8, 0, 10.0), (4, 2.5, 1.0)])
def test_closed_form_is_the_trace_of_R_two_delta_over_d(d, offset, base):
    expected = float(torch.trace(rope_matrix(d, 2 * offset, base))) / d
    assert rope_corr(d, offset, base) == pytest.approx(expected, abs=1e-12)
    by_hand = (2 / d) * sum(math.cos(2 * offset * base ** (-2 * j / d)) for j in range(d // 2))
    assert rope_corr(d, offset, base) == pytest.approx(by_hand, abs=1e-12)


def test_closed_form_limits_and_extremes():
    assert rope_corr(8, 0) == pytest.approx(1.0)  # no offset: the scores are equal
    assert rope_corr(2, math.pi / 4, 1.0) == pytest.approx(0.0, abs=1e-12)  # one plane turned by pi/2
    assert rope_corr(2, math.pi / 2, 1.0) == pytest.approx(-1.0)
    assert abs(rope_corr(4096, 2) - rope_corr_limit(2)) < 2e-3  # d -> infinity
    assert analytic_corr("alibi") == analytic_corr("none") == 1.0
    assert analytic_corr("rope", d=32) == rope_corr(32)
    assert analytic_corr("absolute", d=32) == pytest.approx(0.25 + 0.25 / 32)
    assert absolute_corr(1.0) == 1.0 and absolute_corr(0.0, symmetry=1.0) == 1.0 and absolute_corr(0.0) == 0.0


def test_rope_thetas():
    torch.testing.assert_close(rope_thetas(8, 10_000.0),
                               torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64))


@pytest.mark.parametrize("positional,d", [("rope", 8), ("rope", 32), ("alibi", 8), ("none", 4), ("absolute", 8)])
def test_monte_carlo_agrees_with_the_closed_form_within_4_standard_errors(positional, d):
    mc = monte_carlo_corr(positional, d=d, samples=20_000, seed=1)
    assert mc.samples == 20_000
    analytic = analytic_corr(positional, d=d)
    if positional in ("alibi", "none"):
        assert mc.estimate == pytest.approx(1.0, abs=1e-9)
    else:
        assert mc.stderr > 0
        assert abs(mc.estimate - analytic) < 4 * mc.stderr, (mc, analytic)


def test_monte_carlo_is_deterministic_per_seed():
    a, b = monte_carlo_corr("rope", d=8, samples=1000, seed=3), monte_carlo_corr("rope", d=8, samples=1000, seed=3)
    c = monte_carlo_corr("rope", d=8, samples=1000, seed=4)
    assert a == b and a.estimate != c.estimate
    state = torch.get_rng_state()
    monte_carlo_corr("absolute", d=4, samples=500, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_standard_error_is_calibrated():
    """Across independent runs the estimates scatter by about the reported standard error."""
    runs = [monte_carlo_corr("rope", d=8, offset=3, samples=2000, seed=s) for s in range(40)]
    estimates = torch.tensor([r.estimate for r in runs], dtype=torch.float64)
    mean_se = sum(r.stderr for r in runs) / len(runs)
    ratio = float(estimates.std()) / mean_se
    assert 0.7 < ratio < 1.4, ratio
    # and the closed form lies within the scatter of the mean
    assert abs(float(estimates.mean()) - rope_corr(8, 3)) < 4 * mean_se / math.sqrt(40)


def test_pearson_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, generator=g, dtype=torch.float64)
    y = 0.6 * x + 0.8 * torch.randn(500, generator=g, dtype=torch.float64)
    r, se = pearson(x, y)
    xc, yc = x - x.mean(), y - y.mean()
    assert float(r) == pytest.approx(float((xc * yc).sum() / (xc.norm() * yc.norm())), abs=1e-12)
    # for bivariate normal data se is about (1 - r^2) / sqrt(n)
    assert float(se) == pytest.approx((1 - float(r) ** 2) / math.sqrt(500), rel=0.25)
    r2, _ = pearson(torch.stack([x, -x]), torch.stack([y, y]))  # batched over leading axes
    assert r2.tolist() == pytest.approx([float(r), -float(r)])
    with pytest.raises(ValueError):
        pearson(x[:2], y[:2])
    with pytest.raises(ValueError):
        pearson(x, y[:10])


@pytest.mark.parametrize("d,offset", [(8, 2), (16, 3)])
def test_fixed_query_correlation(d, offset):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(d, generator=g, dtype=torch.float64)
    R2 = rope_matrix(d, 2 * offset)
    expected = float(q @ R2 @ q / (q @ q))
    assert float(rope_corr_fixed_query(q, offset)) == pytest.approx(expected, abs=1e-12)
    # Monte-Carlo over isotropic keys with this one query
    k = torch.randn(20_000, d, generator=g, dtype=torch.float64)
    s_plus, s_minus = k @ (rope_matrix(d, offset).T @ q), k @ (rope_matrix(d, -offset).T @ q)
    r, se = pearson(s_plus, s_minus)
    assert abs(float(r) - expected) < 4 * float(se)
    # batched, and its mean over isotropic queries is the random-pair closed form
    qs = torch.randn(20_000, d, generator=g, dtype=torch.float64)
    values = rope_corr_fixed_query(qs, offset)
    assert values.shape == (20_000,)
    assert abs(float(values.mean()) - rope_corr(d, offset)) < 4 * float(values.std()) / math.sqrt(20_000)


@pytest.mark.parametrize("call", [
    lambda: rope_corr(3), lambda: rope_corr(0), lambda: rope_corr(True), lambda: rope_corr(8.0),
    lambda: rope_corr(8, float("inf")), lambda: rope_corr(8, float("nan")), lambda: rope_corr(8, 5000),
    lambda: rope_corr(8, True), lambda: rope_corr(8, 2, 0.5), lambda: rope_corr(8, 2, 1e13),
    lambda: rope_corr(8, 2, float("nan")), lambda: rope_matrix(5, 1), lambda: rope_corr_limit(2, 0.0),
    lambda: rope_corr_fixed_query(torch.ones(3)),
    lambda: monte_carlo_corr("sinusoidal"), lambda: monte_carlo_corr(samples=2), lambda: monte_carlo_corr(samples=1.5),
    lambda: monte_carlo_corr(samples=10**9), lambda: monte_carlo_corr(offset=1.5), lambda: monte_carlo_corr(offset=10**5),
    lambda: monte_carlo_corr(seed=-1), lambda: monte_carlo_corr(seed=2**32), lambda: monte_carlo_corr(seed=1.0),
    lambda: monte_carlo_corr("alibi", d=0), lambda: monte_carlo_corr("rope", d=7),
    lambda: monte_carlo_corr("absolute", d=4, samples=10, token_share=1.5),
    lambda: absolute_corr(-0.1), lambda: absolute_corr(0.5, symmetry=2.0), lambda: analytic_corr("sinusoidal"),
])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def test_monte_carlo_bytes_grows_with_samples_and_d():
    for positional in ("rope", "absolute", "alibi", "none"):
        assert monte_carlo_bytes(positional, 8, 2000) > monte_carlo_bytes(positional, 8, 1000)
        assert monte_carlo_bytes(positional, 16, 1000) > monte_carlo_bytes(positional, 8, 1000)
        assert monte_carlo_bytes(positional, 8, 1000) >= 8 * 2 * 8 * 1000  # at least q and k in float64
    assert monte_carlo_bytes("absolute", 32, 10**5) > monte_carlo_bytes("rope", 32, 10**5)
    assert monte_carlo_bytes("absolute", 32, 10**5) < 2**30  # the CLI's default absolute run fits
    assert theory.MAX_OFFSET == 4096
