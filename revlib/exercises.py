"""Checkers for the chapters' exercises: they say *why* an answer is off, not just that it is.

Each checker takes the reader's answer (``None`` = not answered yet) and returns a
:class:`Feedback`, which prints as one or two sentences in a notebook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import N_SPECIAL, preset


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


def _number(answer) -> float | None:
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def chance_level(n_pairs: int, answer) -> Feedback:
    """Chapter 1, exercise 1: chance 1/V for a world of ``n_pairs`` facts."""
    V = 2 * n_pairs + N_SPECIAL
    if answer is None:
        return Feedback(None, f"Set `answer` to the probability of guessing right with {n_pairs} pairs.")
    value = _number(answer)
    if value is None:
        return Feedback(False, f"Give a number (a probability), not {answer!r}.")
    if math.isclose(value, 1 / V, rel_tol=1e-3):
        return Feedback(True, f"V = 2*{n_pairs} + {N_SPECIAL} = {V} tokens, so chance is 1/{V} = {1 / V:.4f}.")
    if math.isclose(value, V, rel_tol=1e-3):
        return Feedback(False, "That is the vocabulary size V; chance is the probability 1/V.")
    for counted, why in ((2 * n_pairs, "the entities but not the special tokens [M], is and rev"),
                         (n_pairs, "one entity per pair; each pair has two"),
                         (2 * n_pairs + 1, "only one special token; there are three: [M], is, rev"),
                         (2 * n_pairs + 2, "two special tokens; there are three: [M], is, rev")):
        if math.isclose(value, 1 / counted, rel_tol=1e-3):
            return Feedback(False, f"You counted {why}.")
    if value > 1 or value <= 0:
        return Feedback(False, "A probability lies in (0, 1].")
    return Feedback(False, "Count every token the model can output: two entities per pair plus the special tokens.")


def arm_reversal_with_examples(answer, both_fraction: float = 0.5) -> Feedback:
    """Chapter 1, exercise 2: the ARM's b2a accuracy on never-reversed pairs when
    ``both_fraction`` of the pairs is also trained reversed. Trains (cached) to check."""
    from .cache import cached_train

    if answer is None:
        return Feedback(None, "Set `answer` to the b2a accuracy you expect (0 to 1), then run the cell.")
    value = _number(answer)
    if value is None or not 0 <= value <= 1:
        return Feedback(False, f"An accuracy lies in [0, 1]; got {answer!r}.")
    run = cached_train(preset("ar", both_fraction=both_fraction), progress=False)
    measured = float(run.final["b2a"]["acc"][0])
    if abs(value - measured) <= 0.1:
        return Feedback(True, f"Measured: {measured:.2f}. The reversed pairs are separate facts to the ARM; "
                              "they teach nothing about the held-out pairs.")
    return Feedback(False, f"Measured: {measured:.2f}. Seeing 'b rev a' for other pairs gives the ARM no route "
                           "from b to a for these ones: the causal mask never lets b_i be context for a_i.")


def smallest_head_correlation(answer) -> Feedback:
    """Chapter 2, exercise 1: Corr(S_infill, S_b2a) for a RoPE head of size d = 2, offset 2, base 10^4."""
    from .theory import rope_corr

    expected = rope_corr(2, 2)  # one plane, theta_0 = 1: cos(2 * 2 * 1) = cos 4
    if answer is None:
        return Feedback(None, "Set `answer` to the correlation for d = 2, offset 2 (a number in [-1, 1]).")
    value = _number(answer)
    if value is None or not -1 <= value <= 1:
        return Feedback(False, f"A correlation lies in [-1, 1]; got {answer!r}.")
    if math.isclose(value, expected, abs_tol=2e-3):
        return Feedback(True, f"cos(2 * 2 * theta_0) with theta_0 = 1: cos 4 = {expected:.3f}. The one plane turns "
                              "the key by 2 rad each way, 4 rad apart in total: more than pi/2, so negative.")
    if math.isclose(value, math.cos(2.0), abs_tol=2e-3):
        return Feedback(False, "That is cos(Delta theta): but the two scores see R(+Delta) and R(-Delta), "
                               "which differ by an angle of 2 Delta theta.")
    if math.isclose(value, -expected, abs_tol=2e-3):
        return Feedback(False, "Right size, wrong sign: cos 4 is negative (4 rad is past pi/2).")
    if math.isclose(value, 1.0, abs_tol=2e-3):
        return Feedback(False, "With d = 2 there is only the fastest plane, theta_0 = base^0 = 1: it is not slow.")
    return Feedback(False, "With one plane the average (2/d) sum_k cos(2 Delta theta_k) has one term, k = 0.")


def worst_offset(answer, d: int = 32, max_offset: int = 32) -> Feedback:
    """Chapter 2, exercise 2: the offset 0..max_offset whose RoPE correlation is smallest for head size d."""
    from .theory import rope_corr

    corr = {o: rope_corr(d, o) for o in range(max_offset + 1)}
    best = min(corr, key=corr.get)
    if answer is None:
        return Feedback(None, f"Set `answer` to an offset between 0 and {max_offset}.")
    value = _number(answer)
    if value is None or value != int(value) or not 0 <= value <= max_offset:
        return Feedback(False, f"An offset is a whole number between 0 and {max_offset}; got {answer!r}.")
    value = int(value)
    if value == best:
        return Feedback(True, f"Offset {best}: correlation {corr[best]:.3f}, still well above zero because most "
                              f"planes turn slowly. Our facts only use offsets 1 and 2 ({corr[2]:.3f}).")
    return Feedback(False, f"Offset {value} gives {corr[value]:.3f}; a smaller correlation exists. Scan "
                           f"[theory.rope_corr({d}, o) for o in range({max_offset + 1})].")
