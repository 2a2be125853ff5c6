"""Closed forms for the attention-route coupling of our formalisation (chapter 2), and a Monte-Carlo check.

In our formalisation of the one-layer model the ``[M]`` query of ``infill`` ("[M] is b") sees
the key of b at offset +Δ, and the ``[M]`` query of ``b2a`` ("b is [M]") sees it at offset -Δ,
with the *same* query q = W_Q E[M] and key k = W_K E[b]. The positional encoding alone decides
how the two pre-softmax scores differ:

============  ==============================================  ===============================
encoding      S_infill, S_b2a                                 Corr(S_infill, S_b2a)
============  ==============================================  ===============================
RoPE          q^T R_(+Δ) k,  q^T R_(-Δ) k                     (2/d) Σ_k cos(2Δθ_k)
ALiBi         q^T k - m|Δ| for both                           1 (the scores are equal)
none          q^T k for both                                  1 (the scores are equal)
absolute      (t_q + p_i)^T A (t_k + p_j), positions swapped   s^2 + (1-s)^2/d (s: token share)
============  ==============================================  ===============================

Everything here is about *random* q and k (independent, isotropic): "how related are the two
scores of a query-key pair drawn at random?". :func:`rope_corr_fixed_query` gives the version
that matches a measurement across the facts of one model, where the ``[M]`` query is one
fixed vector and only the key varies.

Nothing here trains or touches a global RNG; the Monte-Carlo estimator takes its own
``torch.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import POSITIONALS
from .model import apply_rope

MAX_OFFSET = 4096  # the longest sequence a revlib model accepts
MAX_SAMPLES = 10**8

DEFAULT_BASE = 10_000.0
DEFAULT_OFFSET = 2  # "[M] is b": the blank and b are two positions apart


def _check(d: int, offset, base: float) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d <= 0 or d % 2:
        raise ValueError(f"RoPE needs a positive even head size d, got {d!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset) \
            or abs(offset) > MAX_OFFSET:
        raise ValueError(f"offset must be a number of positions between -{MAX_OFFSET} and {MAX_OFFSET}, got {offset!r}")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) \
            or not 1.0 <= base <= 1e12:
        raise ValueError(f"base must lie in [1, 1e12] (as ModelConfig.rope_base), got {base!r}")


def rope_thetas(d: int, base: float = DEFAULT_BASE) -> torch.Tensor:
    """The RoPE frequencies θ_k = base^(-2k/d), k = 0 .. d/2-1, in float64, shape (d/2,)."""
    _check(d, 0, base)
    return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def rope_matrix(d: int, offset: float, base: float = DEFAULT_BASE) -> torch.Tensor:
    """R_Δ (d, d): rotation of the coordinate pairs (j, j + d/2) by Δθ_j, the layout of revlib.model.

    revlib.model rotates a query at position i by R_i and a key at j by R_j, so
    (R_i q)^T (R_j k) = q^T R_i^T R_j k = q^T R_(j-i) k.
    """
    _check(d, offset, base)
    angles = offset * rope_thetas(d, base)
    R = torch.zeros(d, d, dtype=torch.float64)
    c, s = angles.cos(), angles.sin()
    idx, half = torch.arange(d // 2), d // 2
    R[idx, idx], R[idx, idx + half] = c, -s
    R[idx + half, idx], R[idx + half, idx + half] = s, c
    return R


def rope_corr(d: int, offset: float = DEFAULT_OFFSET, base: float = DEFAULT_BASE) -> float:
    """Corr(q^T R_(+Δ) k, q^T R_(-Δ) k) for independent q, k ~ N(0, I_d): (2/d) Σ_k cos(2Δθ_k).

    Derivation: both scores have mean 0. With E[k k^T] = I and E[q q^T] = I,
    Cov = E[q^T R_(+Δ) k k^T R_(-Δ)^T q] = tr(R_(+Δ) R_(-Δ)^T) = tr(R_(2Δ)), and each score has
    variance tr(R R^T) = d. A 2x2 rotation by φ has trace 2 cos φ, hence the sum.
    """
    _check(d, offset, base)
    return float((2.0 / d) * torch.cos(2 * offset * rope_thetas(d, base)).sum())


def rope_corr_limit(offset: float = DEFAULT_OFFSET, base: float = DEFAULT_BASE) -> float:
    """The d → ∞ limit of :func:`rope_corr`: the mean of cos(2Δ base^(-x)) over x in [0, 1].

    The frequencies θ_k = base^(-2k/d) fill [1/base, 1] on a log scale as d grows, so the
    Riemann sum (2/d) Σ_k becomes an integral. Evaluated with the midpoint rule on 10^5 points.
    """
    _check(2, offset, base)
    n = 100_000
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return float(torch.cos(2 * offset * base ** (-x)).mean())


def rope_corr_fixed_query(q: torch.Tensor, offset: float = DEFAULT_OFFSET, base: float = DEFAULT_BASE) -> torch.Tensor:
    """Corr over isotropic keys k of (q^T R_(+Δ) k, q^T R_(-Δ) k) for a *fixed* query q (..., d).

    With k ~ N(0, I) and q fixed the correlation is ``q^T R_(2Δ) q / |q|^2`` = Σ_k w_k cos(2Δθ_k),
    where w_k is the share of ``|q|^2`` in rotation plane k. This is what a measurement across the
    facts of one model sees (one ``[M]`` query, many keys). For an isotropic Gaussian q the
    shares w_k are Dirichlet(1, ..., 1) with mean 2/d, so its expectation over q is exactly
    :func:`rope_corr`; a single model scatters around it. Returns shape (...).
    """
    d = q.shape[-1]
    _check(d, offset, base)
    q = q.detach().double()
    energy = q[..., : d // 2] ** 2 + q[..., d // 2:] ** 2  # (..., d/2): |q|^2 per rotation plane (j, j + d/2)
    return (energy * torch.cos(2 * offset * rope_thetas(d, base))).sum(-1) / energy.sum(-1)


def absolute_corr(token_share: float = 0.5, symmetry: float = 0.0) -> float:
    """Corr(S_infill, S_b2a) with learned absolute positions: s^2 + (1 - s)^2 · ρ.

    Model: a position's input to the layer is token part + position part, t + p, with all parts
    independent isotropic Gaussians; s = Var(t) / (Var(t) + Var(p)) is the token share of the
    variance. With A = W_Q W_K^T the scores are x^T A y, and ``infill`` and ``b2a`` swap the
    position parts: S_infill = (t_M + p_0)^T A (t_b + p_Δ), S_b2a = (t_M + p_Δ)^T A (t_b + p_0).
    Expanding, two products survive in the covariance: the shared token term
    E[(t_M^T A t_b)^2] ∝ s^2 ||A||_F^2 and the position term E[p_0^T A p_Δ · p_Δ^T A p_0]
    ∝ (1 - s)^2 tr(A^2); each score has variance ∝ ||A||_F^2. Hence the formula with
    ``symmetry`` ρ = tr(A^2) / ||A||_F^2 in [-1, 1] (1 for a symmetric A). For random Gaussian
    W_Q, W_K (d x e, model width d) the ratio of expectations gives ρ = 1/d.

    So the coupling lives in the shared token parts. revlib initialises embeddings and
    positions with equal variance (s = 1/2): about 1/4 for random pairs, against 0.73 for
    RoPE at d = 32. Across the facts of one model the query token and both positions are
    fixed and only the key token varies; the key's position part is then a constant, and the
    correlation is the cosine of A^T(t_M + p_0) and A^T(t_M + p_Δ), about s = 1/2 for large d.
    """
    if not 0.0 <= token_share <= 1.0:
        raise ValueError(f"token_share must lie in [0, 1], got {token_share!r}")
    if not -1.0 <= symmetry <= 1.0:
        raise ValueError(f"symmetry must lie in [-1, 1], got {symmetry!r}")
    return float(token_share**2 + (1 - token_share) ** 2 * symmetry)


def analytic_corr(positional: str = "rope", d: int = 32, offset: float = DEFAULT_OFFSET,
                  base: float = DEFAULT_BASE, token_share: float = 0.5) -> float:
    """Corr(S_infill, S_b2a) for random isotropic q, k under each positional encoding."""
    if positional == "rope":
        return rope_corr(d, offset, base)
    if positional in ("alibi", "none"):
        return 1.0  # the score depends on |Δ| (ALiBi) or not at all: S_infill = S_b2a
    if positional == "absolute":
        return absolute_corr(token_share, symmetry=1.0 / d)  # E over random W_Q, W_K of width d
    raise ValueError(f"positional must be one of {POSITIONALS}, got {positional!r}")


def pearson(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson correlation of x, y (..., n) along the last axis, and its standard error.

    The standard error comes from the influence function of r (no normality assumed): with
    standardised x, y, ψ_i = x_i y_i - r (x_i^2 + y_i^2) / 2 and se = sd(ψ) / sqrt(n). A
    constant x or y gives NaN. Returns two tensors of shape (...).
    """
    n = x.shape[-1]
    if y.shape[-1] != n or n < 3:
        raise ValueError(f"need two samples of equal size >= 3, got {x.shape[-1]} and {y.shape[-1]}")
    x = x.double() - x.double().mean(-1, keepdim=True)
    y = y.double() - y.double().mean(-1, keepdim=True)
    x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
    y = y / y.pow(2).mean(-1, keepdim=True).sqrt()
    r = (x * y).mean(-1)
    psi = x * y - r[..., None] * (x**2 + y**2) / 2
    return r, psi.std(-1) / math.sqrt(n)


@dataclass(frozen=True)
class MonteCarlo:
    """A Monte-Carlo estimate of Corr(S_infill, S_b2a) with its standard error."""

    estimate: float
    stderr: float
    samples: int


def monte_carlo_corr(positional: str = "rope", d: int = 32, offset: int = DEFAULT_OFFSET,
                     base: float = DEFAULT_BASE, samples: int = 100_000, seed: int = 0,
                     token_share: float = 0.5) -> MonteCarlo:
    """Draw ``samples`` independent pairs (q, k) and correlate the two scores.

    The scores are computed the way :mod:`revlib.model` computes them, not from the closed
    form: RoPE rotates the query by its position and the key by its own (``apply_rope``), with
    ``infill`` placing the query at 0 and the key at Δ, and ``b2a`` the other way round.
    For ``absolute`` the inputs are token part + position part with variances s and 1 - s.
    Randomness comes from a private generator seeded with ``seed``.
    """
    if positional not in POSITIONALS:
        raise ValueError(f"positional must be one of {POSITIONALS}, got {positional!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or not 3 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be an integer between 3 and {MAX_SAMPLES}, got {samples!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > MAX_OFFSET:
        raise ValueError(f"offset must be an integer number of positions between -{MAX_OFFSET} and "
                         f"{MAX_OFFSET}, got {offset!r}")
    if positional == "rope":
        _check(d, offset, base)
    elif isinstance(d, bool) or not isinstance(d, int) or d <= 0:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
        raise ValueError(f"seed must be an integer in [0, 2^32 - 1], got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(samples, d, generator=gen, dtype=torch.float64)
    k = torch.randn(samples, d, generator=gen, dtype=torch.float64)
    if positional == "rope":
        def score(qpos: int, kpos: int) -> torch.Tensor:
            return (apply_rope(q, torch.tensor([qpos]), base) * apply_rope(k, torch.tensor([kpos]), base)).sum(-1)
        s_infill, s_b2a = score(0, offset), score(offset, 0)
    elif positional == "absolute":
        if not 0.0 <= token_share <= 1.0:
            raise ValueError(f"token_share must lie in [0, 1], got {token_share!r}")
        # q, k above are the token parts t_M, t_b in model space; each of the two positions adds
        # its own part, and every sample draws its own W_Q, W_K (d x d, entries N(0, 1/d)).
        # Drawn in chunks so that the (chunk, d, d) weights stay small.
        a, b = math.sqrt(token_share), math.sqrt(1 - token_share)
        p0 = torch.randn(samples, d, generator=gen, dtype=torch.float64)
        p1 = torch.randn(samples, d, generator=gen, dtype=torch.float64)
        s_infill, s_b2a = torch.empty(samples, dtype=torch.float64), torch.empty(samples, dtype=torch.float64)
        for lo in range(0, samples, 1024):
            sl = slice(lo, min(lo + 1024, samples))
            n = sl.stop - sl.start
            W_Q = torch.randn(n, d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
            W_K = torch.randn(n, d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
            head = lambda x, W: torch.einsum("nd,nde->ne", x, W)  # noqa: E731  (n, d) -> (n, e)
            tq, tk, P0, P1 = a * q[sl], a * k[sl], b * p0[sl], b * p1[sl]
            s_infill[sl] = (head(tq + P0, W_Q) * head(tk + P1, W_K)).sum(-1)
            s_b2a[sl] = (head(tq + P1, W_Q) * head(tk + P0, W_K)).sum(-1)
    else:  # alibi and none: the distance penalty is the same for ±Δ, or absent
        slope = 0.5 if positional == "alibi" else 0.0
        s_infill = (q * k).sum(-1) - slope * abs(offset)
        s_b2a = (q * k).sum(-1) - slope * abs(-offset)
    r, se = pearson(s_infill, s_b2a)
    if not (math.isfinite(float(r)) and math.isfinite(float(se))):
        raise ValueError("the Monte-Carlo scores are constant or overflowed: no correlation to estimate")
    return MonteCarlo(float(r), float(se), samples)


def monte_carlo_bytes(positional: str, d: int, samples: int) -> int:
    """Memory :func:`monte_carlo_corr` allocates, in bytes (float64 throughout): the drawn
    vectors, the two scores and their products, and for ``absolute`` the per-sample weights
    of one chunk and the position parts."""
    per_sample = 8 * (2 * d + 8)  # q, k; two scores, standardised copies and products
    if positional == "rope":
        per_sample += 8 * 4 * d  # the rotated copies and their products
    if positional == "absolute":
        per_sample += 8 * (2 * d + 6 * d)  # position parts; token + position sums and heads
    chunk = 8 * 1024 * 2 * d * d if positional == "absolute" else 0
    return samples * per_sample + chunk
