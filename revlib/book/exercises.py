"""Checkers for the chapters' exercises: they say *why* an answer is off, not just that it is.

Each checker takes the reader's answer (``None`` = not answered yet) and returns a
:class:`Feedback`, which prints as one or two sentences in a notebook. Answers may be numbers or
strings such as ``"1/131"``, ``"0.0076"`` or ``"7.6e-3"``; a number is right when it agrees with
the answer to the precision it is written with, within 2 % (``0.0076`` for 1/131 = 0.00763 is
right, ``0.01`` is not), or to 0.1 %.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ..config import N_SPECIAL


@dataclass(frozen=True)
class Feedback:
    """``ok`` is True (right), False (wrong) or None (not answered); ``message`` says why."""

    ok: bool | None
    message: str

    @property
    def verdict(self) -> str:
        return {True: "Correct.", False: "Not quite.", None: "Not answered yet."}[self.ok]

    def __str__(self) -> str:
        return f"{self.verdict} {self.message}"

    def _repr_markdown_(self) -> str:
        return f"**{self.verdict}** {self.message}"

    __repr__ = __str__


def parse(answer) -> tuple[float, float] | None:
    """``(value, half a unit of its last written digit)``, or None if ``answer`` is not a number.

    ``"1/131"`` -> (0.00763.., 0), ``"0.0076"`` -> (0.0076, 0.00005), ``0.5`` -> (0.5, 0.05).
    """
    if isinstance(answer, bool) or answer is None:
        return None
    if isinstance(answer, Fraction):
        return float(answer), 0.0
    text = str(answer).strip().replace(" ", "").replace("≈", "").replace("~", "")
    if "/" in text:
        try:
            frac = Fraction(text)
        except (ValueError, ZeroDivisionError):
            return None
        return float(frac), 0.0
    try:
        dec = Decimal(text)
    except InvalidOperation:
        return None
    if not dec.is_finite():
        return None
    exponent = dec.as_tuple().exponent
    half_unit = 0.5 * 10.0 ** exponent if isinstance(exponent, int) and exponent < 0 else 0.0
    return float(dec), half_unit


def matches(answer, expected: float, rel: float = 1e-3) -> bool:
    """Is ``answer`` ``expected``, to its written precision (at most 2 % off) or to ``rel``?"""
    got = parse(answer)
    if got is None:
        return False
    value, half_unit = got
    rounding = min(half_unit * (1 + 1e-9), 0.02 * abs(expected))  # "0.0076" yes, "0.01" no, for 1/131
    return abs(value - expected) <= max(rounding, rel * abs(expected), 1e-12)


def _not_a_number(answer, what: str) -> Feedback:
    return Feedback(False, f"Give {what} as a number or a fraction such as '1/100', not {answer!r}.")


# ---------------------------------------------------------------------------------------------
# chapter 1
# ---------------------------------------------------------------------------------------------

def chance_level(n_pairs: int, answer) -> Feedback:
    """Exercise 1.1: chance 1/V for a world of ``n_pairs`` one-token facts."""
    V = 2 * n_pairs + N_SPECIAL
    if answer is None:
        return Feedback(None, f"Set `answer` to the probability of guessing right with {n_pairs} pairs.")
    got = parse(answer)
    if got is None:
        return _not_a_number(answer, "a probability")
    if matches(answer, 1 / V):
        return Feedback(True, f"V = 2·{n_pairs} + {N_SPECIAL} = {V} tokens, so chance is 1/{V} ≈ {1 / V:.4f}.")
    if matches(answer, V):
        return Feedback(False, "That is the vocabulary size V; chance is the probability 1/V.")
    for counted, why in ((2 * n_pairs, "the entities but not the special tokens [M], is and rev"),
                         (n_pairs, "one entity per pair; each pair has two"),
                         (2 * n_pairs + 1, "only one special token; there are three: [M], is, rev"),
                         (2 * n_pairs + 2, "two special tokens; there are three: [M], is, rev")):
        if matches(answer, 1 / counted):
            return Feedback(False, f"You counted {why}.")
    if not 0 < got[0] <= 1:
        return Feedback(False, "A probability lies in (0, 1].")
    return Feedback(False, "Count every token the model can output: two entities per pair plus the special tokens.")


def arm_reversal_with_examples(answer) -> Feedback:
    """Exercise 1.2: the ARM's b2a accuracy on never-reversed pairs when half of the pairs are also
    trained reversed ("b rev a"). Trains (cached) to check."""
    from ..cache import cached_train
    from ..recipes import book_world_seed, ch1

    if answer is None:
        return Feedback(None, "Set `answer` to the b2a accuracy you expect (0 to 1), then run the cell.")
    got = parse(answer)
    if got is None or not 0 <= got[0] <= 1:
        return Feedback(False, f"An accuracy lies in [0, 1]; got {answer!r}.")
    run = cached_train(ch1.base(book_world_seed(), objective="ar", attention="causal", reversed_fraction=0.5,
                                relations="inverse"))
    measured = float(run.final["b2a"]["acc"][0])
    if abs(got[0] - measured) <= 0.1:
        return Feedback(True, f"Measured: {measured:.2f}. The reversed pairs are separate facts to the ARM; "
                              "they teach nothing about the held-out pairs.")
    return Feedback(False, f"Measured: {measured:.2f}. Seeing 'b rev a' for other pairs gives the ARM no route "
                           "from b to a for these ones: the causal mask never lets b_i be context for a_i.")


# ---------------------------------------------------------------------------------------------
# chapter 2
# ---------------------------------------------------------------------------------------------

def smallest_head_correlation(answer) -> Feedback:
    """Exercise 2.1: Corr(S_infill, S_b2a) for a RoPE head of size d = 2, offset 2, base 10^4."""
    from ..theory import rope_corr

    expected = rope_corr(2, 2)  # one plane, theta_0 = 1: cos(2 * 2 * 1) = cos 4
    if answer is None:
        return Feedback(None, "Set `answer` to the correlation for d = 2, offset 2 (a number in [-1, 1]).")
    got = parse(answer)
    if got is None or not -1 <= got[0] <= 1:
        return Feedback(False, f"A correlation lies in [-1, 1]; got {answer!r}.")
    if matches(answer, expected, rel=3e-3):
        return Feedback(True, f"cos(2·2·θ_0) with θ_0 = 1: cos 4 ≈ {expected:.3f}. The one plane turns the key "
                              "by 2 rad each way, 4 rad apart in total: more than π/2, so negative.")
    if matches(answer, math.cos(2.0), rel=3e-3):
        return Feedback(False, "That is cos(Δθ): but the two scores see R(+Δ) and R(−Δ), which differ by an "
                               "angle of 2Δθ.")
    if matches(answer, -expected, rel=3e-3):
        return Feedback(False, "Right size, wrong sign: cos 4 is negative (4 rad is past π/2).")
    if matches(answer, 1.0):
        return Feedback(False, "With d = 2 there is only the fastest plane, θ_0 = base^0 = 1: it is not slow.")
    return Feedback(False, "With one plane the average (2/d) Σ_k cos(2Δθ_k) has one term, k = 0.")


def worst_offset(answer, d: int = 32, max_offset: int = 32) -> Feedback:
    """Exercise 2.2: the offset 0..max_offset whose RoPE correlation is smallest for head size d."""
    from ..theory import rope_corr

    corr = {o: rope_corr(d, o) for o in range(max_offset + 1)}
    best = min(corr, key=corr.get)
    if answer is None:
        return Feedback(None, f"Set `answer` to an offset between 0 and {max_offset}.")
    got = parse(answer)
    if got is None or got[0] != int(got[0]) or not 0 <= got[0] <= max_offset:
        return Feedback(False, f"An offset is a whole number between 0 and {max_offset}; got {answer!r}.")
    value = int(got[0])
    if value == best:
        return Feedback(True, f"Offset {best}: correlation {corr[best]:.3f}, still well above zero because most "
                              f"planes turn slowly. Our facts only use offsets 1 and 2 ({corr[2]:.3f}).")
    return Feedback(False, f"Offset {value} gives {corr[value]:.3f}; a smaller correlation exists. Scan "
                           f"[theory.rope_corr({d}, o) for o in range({max_offset + 1})].")


def negative_base(answer, d: int = 32, offset: int = 2) -> Feedback:
    """Exercise 2.3: a RoPE base in [1, 10] for which the closed-form correlation is negative."""
    from ..theory import rope_corr

    if answer is None:
        return Feedback(None, "Set `answer` to a base between 1 and 10.")
    got = parse(answer)
    if got is None or not 1 <= got[0] <= 1e12:
        return Feedback(False, f"A base for RoPE lies in [1, 1e12]; got {answer!r}.")
    c = rope_corr(d, offset, got[0])
    if c < 0:
        return Feedback(True, f"Base {got[0]:g}: correlation {c:.3f}. With a small base every plane turns fast, "
                              "and 2Δθ_k is past π/2 in most of them.")
    return Feedback(False, f"Base {got[0]:g} gives {c:+.3f}. Make the base smaller: the slowest plane turns by "
                           "base^(-(d-2)/d) per position.")


# ---------------------------------------------------------------------------------------------
# chapter 3
# ---------------------------------------------------------------------------------------------

def residual_factor(answer) -> Feedback:
    """Exercise 3.2: (p1 - e_A)·(p2 - e_A) for p1 = (0.5, 0.3, 0.2), p2 = (0.2, 0.6, 0.2), A = 0."""
    p1, p2 = (0.5, 0.3, 0.2), (0.2, 0.6, 0.2)
    expected = (p1[0] - 1) * (p2[0] - 1) + p1[1] * p2[1] + p1[2] * p2[2]
    if answer is None:
        return Feedback(None, "Set `answer` to the inner product (a number).")
    got = parse(answer)
    if got is None:
        return _not_a_number(answer, "the inner product")
    if matches(answer, expected):
        return Feedback(True, f"(1 − 0.5)(1 − 0.2) + 0.3·0.6 + 0.2·0.2 = {expected:.2f}: positive, as it must be "
                              "for two predictions of the same answer.")
    if matches(answer, sum(a * b for a, b in zip(p1, p2))):
        return Feedback(False, "That is p1·p2; subtract the one-hot e_A from both first.")
    return Feedback(False, "Write it as (1 − p1_A)(1 − p2_A) + Σ_{v≠A} p1_v p2_v.")


def first_order_change(answer, eta: float = 0.01, dot: float = 2.5) -> Feedback:
    """Exercise 3.3: the first-order change of l_b2a after a step η on l_infill with <g_b2a, g_infill> = dot."""
    expected = -eta * dot
    if answer is None:
        return Feedback(None, f"Set `answer` to the predicted change of l_b2a for η = {eta} and an inner product {dot}.")
    got = parse(answer)
    if got is None:
        return _not_a_number(answer, "the change")
    if matches(answer, expected):
        return Feedback(True, f"−η ⟨g_b2a, g_infill⟩ = −{eta}·{dot} = {expected:g}: the loss falls.")
    if matches(answer, -expected):
        return Feedback(False, "Right size, wrong sign: the step goes against g_infill, so a positive inner "
                               "product lowers l_b2a.")
    return Feedback(False, "To first order, l(θ − η g) − l(θ) = −η ⟨∇l, g⟩.")


# ---------------------------------------------------------------------------------------------
# chapter 4
# ---------------------------------------------------------------------------------------------

def _words(answer) -> set[str]:
    text = str(answer).lower().replace(" + ", "+").replace(" +", "+").replace("+ ", "+")
    for sep in (";", "/", " and "):
        text = text.replace(sep, ",")
    return {w.strip().strip("\"'.") for w in text.split(",") if w.strip()}


def evidence_cells(answer) -> Feedback:
    """Exercise 4.1: the objective + attention cells whose training writes u_a W E[b]."""
    right = {"mdm+bidirectional", "prefix+bidirectional"}
    if answer is None:
        return Feedback(None, 'Set `answer` to a comma-separated list of objective+attention cells, e.g. "ar+causal" (the format, not the answer).')
    got = {w.replace("bidir", "bidirectional").replace("bidirectionalectional", "bidirectional") for w in _words(answer)}
    if got == right:
        return Feedback(True, "Only these make a the target while b is in view: with causal attention a (first) "
                              "never sees b, and ar and suffix never make a a target.")
    missing, extra = right - got, got - right
    hints = []
    if extra:
        hints.append(f"{', '.join(sorted(extra))} never makes a a target with b in view")
    if missing:
        hints.append(f"{', '.join(sorted(missing))} does: it masks the first entity with bidirectional attention")
    return Feedback(False, "; ".join(hints) + ".")


def swap_without_positions(answer) -> Feedback:
    """Exercise 4.2: swap accuracy of a one-layer MDM without positions, relative to infill."""
    if answer is None:
        return Feedback(None, 'Set `answer` to "equal", "lower" or "higher".')
    word = str(answer).strip().lower()
    if word in ("equal", "the same", "same", "="):
        return Feedback(True, "Exactly equal: the network is invariant to reversing the sentence, and 'b is [M]' "
                              "reversed is '[M] is b', the infill query.")
    if word in ("lower", "higher"):
        return Feedback(False, "Reverse the swap query token by token and compare it with the infill query; "
                               "what can a network without positions tell apart?")
    return Feedback(False, f'Answer "equal", "lower" or "higher", not {answer!r}.')


def untied_values(answer) -> Feedback:
    """Exercise 4.3: the probe an MDM with one W_V per position still answers."""
    if answer is None:
        return Feedback(None, "Set `answer` to a probe name: infill or b2a.")
    got = _words(answer)
    if got and got <= {"infill", "a2b"}:
        return Feedback(True, "Its blank reads b (or a) through the value matrix of the position b (or a) has in "
                              "training; in b2a, b sits at position 0, whose value matrix never stored b => a.")
    if "b2a" in got:
        return Feedback(False, "b2a is the one that fails: b sits at position 0 there, and W_V[0] never stored b => a.")
    return Feedback(False, "Name a probe: a2b, infill or b2a.")


# ---------------------------------------------------------------------------------------------
# chapter 5
# ---------------------------------------------------------------------------------------------

def whole_name_chance(answer, k: int = 3, V: int = 131) -> Feedback:
    """Exercise 5.1: the chance of guessing a whole k-token name, each slot uniform over V tokens."""
    expected = float(V) ** -k
    if answer is None:
        return Feedback(None, f"Set `answer` to the probability of guessing all {k} tokens right with V = {V}.")
    if parse(answer) is None:
        return _not_a_number(answer, "a probability")
    if matches(answer, expected):
        return Feedback(True, f"(1/{V})^{k} ≈ {expected:.3g}: every slot must be right, so chance multiplies.")
    if matches(answer, 1 / V):
        return Feedback(False, "That is one slot; the whole name needs all of them right.")
    if matches(answer, k / V):
        return Feedback(False, "Chances of independent slots multiply, they do not add.")
    return Feedback(False, "Each of the k slots is right with probability 1/V, independently.")


def span_both_masked(answer, t: float = 0.5) -> Feedback:
    """Exercise 5.2: the probability that both tokens of a two-token name are masked at rate t,
    with span masking (the answer) against token masking (t squared)."""
    if answer is None:
        return Feedback(None, f"Set `answer` to the probability, with span masking at t = {t}.")
    if parse(answer) is None:
        return _not_a_number(answer, "a probability")
    if matches(answer, t):
        return Feedback(True, f"With span masking the name is masked whole or not at all: probability t = {t}. "
                              f"Token masking masks both with probability t² = {t * t:g}.")
    if matches(answer, t * t):
        return Feedback(False, "That is token masking, where each token is masked on its own; a span is one unit.")
    return Feedback(False, "A span is masked or kept as one unit, with the sentence's rate t.")


# ---------------------------------------------------------------------------------------------
# coding exercises: the reader writes a function, the checker tests it on random inputs against
# revlib and names the usual mistake (ARENA style). The solutions live in solutions/, apart from
# the chapters, so that a teacher can withhold them.
# ---------------------------------------------------------------------------------------------

def _call(fn, name: str, *args):
    """(value, None) or (None, Feedback) when the reader's function is unwritten or raises."""
    if not callable(fn):
        return None, Feedback(None, f"Define `{name}` in the cell above, then run this cell.")
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, Feedback(None, f"Write the body of `{name}` (it still raises NotImplementedError), then run this cell.")
    except Exception as err:  # the reader's code: report it in one line, never a traceback
        return None, Feedback(False, f"`{name}` raised {type(err).__name__}: {err}")


def _close(a, b, tol: float = 1e-5) -> bool:
    import torch

    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol))


def _cases(seed: int, n: int = 5):
    import torch

    return torch.Generator().manual_seed(seed), range(n)


def check_mdm_loss(fn) -> Feedback:
    """Exercise 1.1: ``fn(logits (B, T, V), tokens (B, T), mask (B, T) bool, t (B,)) -> scalar``,
    the MDM objective: cross entropy of the masked tokens, each weighted 1/t, summed and divided by
    all B·T slots (revlib.minimal.mdm_loss computes the same from a model)."""
    import torch
    import torch.nn.functional as F

    gen, cases = _cases(11)
    for _ in cases:
        B, T, V = (int(x) for x in torch.randint(2, 6, (3,), generator=gen))
        logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
        tokens = torch.randint(V, (B, T), generator=gen)
        t = 0.05 + 0.95 * torch.rand(B, generator=gen, dtype=torch.float64)
        mask = torch.rand(B, T, generator=gen) < t[:, None]
        mask[0, 0] = True
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (B, T)
        expected = (ce * mask / t[:, None]).sum() / (B * T)
        got, problem = _call(fn, "mdm_loss", logits.clone(), tokens.clone(), mask.clone(), t.clone())
        if problem:
            return problem
        if _close(got, expected):
            continue
        if _close(got, (ce * mask / t[:, None]).sum() / mask.sum()):
            return Feedback(False, "You divided by the number of masked slots. The objective divides by all B·T "
                                   "slots: with the 1/t weight that makes it an upper bound on the likelihood.")
        if _close(got, (ce * mask).sum() / (B * T)):
            return Feedback(False, "Each masked token is weighted 1/t, its sentence's masking rate; you left it out.")
        if _close(got, (ce / t[:, None]).sum() / (B * T)) or _close(got, ce.mean()):
            return Feedback(False, "Only the masked slots are scored; the unmasked ones are given, not predicted.")
        if _close(got, (ce * mask * t[:, None]).sum() / (B * T)):
            return Feedback(False, "The weight is 1/t, not t: rarely masked sentences count for more.")
        return Feedback(False, f"On a random batch ({B} sentences, {T} positions, V = {V}) the objective is "
                               f"{float(expected):.4f}; your function gave {float(torch.as_tensor(got)):.4f}.")
    return Feedback(True, "It matches the objective on five random batches. This function is the whole "
                          "difference between training an MDM and an ARM.")


def check_rope_corr(fn) -> Feedback:
    """Exercise 2.1: ``fn(d, offset, base) -> float``, Corr(S_infill, S_b2a) for isotropic q, k:
    (2/d) Σ_m cos(2 Δ θ_m), θ_m = base^(-2m/d), m = 0 .. d/2 - 1 (revlib.theory.rope_corr)."""
    import numpy as np

    from ..theory import rope_corr

    rng = np.random.default_rng(3)
    for _ in range(6):
        d, offset, base = int(rng.choice([2, 6, 8, 16, 32, 64])), int(rng.integers(1, 9)), float(10 ** rng.uniform(0.2, 5))
        expected = rope_corr(d, offset, base)
        got, problem = _call(fn, "rope_corr", d, offset, base)
        if problem:
            return problem
        try:
            got = float(got)
        except (TypeError, ValueError):
            return Feedback(False, f"`rope_corr` should return a number, got {type(got).__name__}.")
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        thetas = base ** (-2 * np.arange(d // 2) / d)
        if math.isclose(got, 2 / d * np.cos(offset * thetas).sum(), abs_tol=1e-9):
            return Feedback(False, "The two scores are rotated by +Δ and −Δ: they differ by 2Δ, so the angle is 2Δθ_m.")
        if math.isclose(got, 2 / d * np.cos(2 * offset * base ** (-np.arange(d // 2) / d)).sum(), abs_tol=1e-9):
            return Feedback(False, "θ_m = base^(−2m/d): the exponent has a 2, because plane m holds coordinates 2m, 2m+1.")
        if math.isclose(got, np.cos(2 * offset * thetas).sum(), abs_tol=1e-9):
            return Feedback(False, "Normalise: the variance of a score is tr(I) = d, so the sum over d/2 planes "
                                   "(each contributing 2 cos) is divided by d.")
        return Feedback(False, f"For d = {d}, Δ = {offset}, base {base:.4g} the correlation is {expected:.4f}; "
                               f"your function gave {got:.4f}.")
    return Feedback(True, "It matches revlib.theory.rope_corr at six random head sizes, offsets and bases.")


def check_ov_inner_product(fn) -> Feedback:
    """Exercise 3.1: ``fn(U (V, d), p1 (V,), p2 (V,), answer, c1 (d,), c2 (d,)) -> float``, the
    Frobenius inner product of the OV gradients g1 c1ᵀ and g2 c2ᵀ with g = Uᵀ(p - e_answer):
    (p1 - e)ᵀ U Uᵀ (p2 - e) · c1ᵀ c2, checked against autograd."""
    import torch

    gen, cases = _cases(5)
    for _ in cases:
        V, d = int(torch.randint(3, 9, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen))
        U = torch.randn(V, d, generator=gen, dtype=torch.float64)
        E = torch.randn(2, d, generator=gen, dtype=torch.float64)
        answer = int(torch.randint(V, (1,), generator=gen))
        c1, c2 = E[0], E[1]
        # autograd: l_i(W) = -log softmax(U (W c_i))[answer], gradient at W = W0 (random)
        W0 = torch.randn(d, d, generator=gen, dtype=torch.float64)
        grads, ps = [], []
        for c in (c1, c2):
            W = W0.clone().requires_grad_(True)
            logits = U @ (W @ c)
            loss = -torch.log_softmax(logits, 0)[answer]
            grads.append(torch.autograd.grad(loss, W)[0])
            ps.append(torch.softmax(logits.detach(), 0))
        expected = float((grads[0] * grads[1]).sum())
        got, problem = _call(fn, "ov_inner_product", U.clone(), ps[0].clone(), ps[1].clone(), answer, c1.clone(), c2.clone())
        if problem:
            return problem
        try:
            got = float(got)
        except (TypeError, ValueError):
            return Feedback(False, f"`ov_inner_product` should return a number, got {type(got).__name__}.")
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        e = torch.zeros(V, dtype=torch.float64)
        e[answer] = 1
        if math.isclose(got, float(ps[0] @ U @ U.T @ ps[1] * (c1 @ c2)), rel_tol=1e-6):
            return Feedback(False, "∂ℓ/∂z = p − e_answer: subtract the one-hot answer from each softmax.")
        if math.isclose(got, float((ps[0] - e) @ (ps[1] - e) * (c1 @ c2)), rel_tol=1e-6):
            return Feedback(False, "The residual gradient is g = Uᵀ(p − e), so the residual factor is "
                                   "(p₁ − e)ᵀ U Uᵀ (p₂ − e), not (p₁ − e)·(p₂ − e) (that is the case U Uᵀ = I).")
        if math.isclose(got, float((ps[0] - e) @ U @ U.T @ (ps[1] - e)), rel_tol=1e-6):
            return Feedback(False, "You have the residual factor; multiply by the mixture factor c₁ᵀc₂.")
        return Feedback(False, f"Autograd gives {expected:.5f} on a random case (V = {V}, d = {d}); your function "
                               f"gave {got:.5f}.")
    return Feedback(True, "It equals autograd's inner product on five random cases: the OV gradients of two "
                          "losses on one answer factorise exactly.")


def check_project_out(fn) -> Feedback:
    """Exercise 4.1: ``fn(update (n,), grad (n,)) -> (n,)``, the update with its component along
    ``grad`` removed, as the intervention of chapter 4 does to each value-side update
    (revlib.training.ProjectOut): update - (update·grad / grad·grad) grad; a zero grad removes nothing."""
    import torch

    gen, cases = _cases(7)
    for i in cases:
        n = int(torch.randint(2, 12, (1,), generator=gen))
        update = torch.randn(n, generator=gen, dtype=torch.float64)
        grad = torch.zeros(n, dtype=torch.float64) if i == 4 else torch.randn(n, generator=gen, dtype=torch.float64) * 3
        norm = grad @ grad
        expected = update - (update @ grad / norm) * grad if norm > 0 else update.clone()
        got, problem = _call(fn, "project_out", update.clone(), grad.clone())
        if problem:
            return problem
        if _close(got, expected, 1e-8):
            continue
        got_t = torch.as_tensor(got, dtype=torch.float64)
        if norm == 0:
            return Feedback(False, "When the gradient is zero there is nothing to remove: return the update unchanged "
                                   "(and never divide by zero).")
        if _close(got_t, (update @ grad / norm) * grad, 1e-8):
            return Feedback(False, "That is the component *along* the gradient; the intervention keeps the rest: "
                                   "update minus that component.")
        if _close(got_t, update - (update @ grad / grad.norm()) * grad, 1e-8):
            return Feedback(False, "Divide by |g|², not |g|: the component along g is (u·g / g·g) g.")
        return Feedback(False, "The result should satisfy result·grad = 0 and differ from the update only along grad.")
    return Feedback(True, "Orthogonal to the gradient and otherwise unchanged, on seven random cases (one with a "
                          "zero gradient): to first order this update can no longer move l_b2a.")


def check_b2a_query(fn) -> Feedback:
    """Exercise 5.1: ``fn(tokenize, fact (revlib.lm_probe.TextFact), mask_id) -> (ids, positions,
    answer_ids)``, the b2a query "object converse [M]..[M]" for any masked LM, as
    revlib.lm_probe.queries builds it."""
    from ..lm_probe import MaskedLM, TextFact, queries

    vocab = {w: i + 1 for i, w in enumerate("ada bo cy di eve fay lee mo nu is the parent child of son daughter".split())}

    def tokenize(text):
        return [vocab[w] for w in text.split()]

    lm = MaskedLM(lambda ids: None, tokenize, 0)
    facts = [TextFact("ada", "is the parent of", "bo", "is the child of"),
             TextFact("cy di", "is the parent of", "eve fay lee", "is the child of"),
             TextFact("mo nu", "is", "ada"),  # no converse given: the relation itself
             TextFact("bo", "is the daughter of", "cy di", "is the parent of")]
    for fact in facts:
        expected = queries(lm, fact)["b2a"]
        got, problem = _call(fn, "b2a_query", tokenize, fact, 0)
        if problem:
            return problem
        try:
            ids, positions, answer = (list(map(int, x)) for x in got)
        except (TypeError, ValueError):
            return Feedback(False, "Return three lists: the query's token ids, the answer positions and the answer ids.")
        if (ids, positions, answer) == tuple(list(x) for x in expected):
            continue
        conv = tokenize(fact.converse or fact.relation)
        if ids[: len(tokenize(fact.object))] != tokenize(fact.object):
            return Feedback(False, "b2a starts with the object (b): it asks 'b r′ [M]' for the subject.")
        if fact.converse and ids[len(tokenize(fact.object)):][: len(tokenize(fact.relation))] == tokenize(fact.relation) \
                and tokenize(fact.relation) != conv:
            return Feedback(False, "Use the converse relation (\"is the child of\"), not the fact's own: with the "
                                   "relation itself you built the false converse, chapter 4's swap probe.")
        if len(positions) != len(tokenize(fact.subject)):
            return Feedback(False, "Put one [M] per token of the answer: a multi-token subject needs several blanks.")
        return Feedback(False, f"For {fact} the query is {expected}; your function gave {(ids, positions, answer)}.")
    return Feedback(True, "It builds the same b2a queries as revlib.lm_probe for one- and multi-token names, with "
                          "and without a converse relation.")
