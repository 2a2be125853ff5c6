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
