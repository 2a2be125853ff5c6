"""The exercise checkers recognise right answers and explain the common wrong ones."""
import pytest

from revlib import exercises


def test_chance_level_right_answer():
    fb = exercises.chance_level(64, 1 / 131)
    assert fb.ok is True and "131" in fb.message


@pytest.mark.parametrize(
    "answer,hint",
    [(131, "vocabulary size"), (1 / 128, "special tokens"), (1 / 64, "two"), (1 / 130, "three"),
     (2.0, "(0, 1]"), ("abc", "number")],
)
def test_chance_level_explains_wrong_answers(answer, hint):
    fb = exercises.chance_level(64, answer)
    assert fb.ok is False and hint in fb.message


def test_unanswered_is_neither_right_nor_wrong():
    fb = exercises.chance_level(64, None)
    assert fb.ok is None and str(fb).startswith("Not answered yet")


def test_arm_reversal_checker_measures():
    assert exercises.arm_reversal_with_examples(0.0).ok is True
    wrong = exercises.arm_reversal_with_examples(0.8)
    assert wrong.ok is False and "Measured: 0.00" in wrong.message
    assert exercises.arm_reversal_with_examples(3).ok is False


def test_smallest_head_checker():
    import math

    assert exercises.smallest_head_correlation(math.cos(4)).ok is True
    assert "2 Delta theta" in exercises.smallest_head_correlation(math.cos(2)).message
    assert "sign" in exercises.smallest_head_correlation(-math.cos(4)).message
    assert exercises.smallest_head_correlation(None).ok is None


def test_worst_offset_checker():
    from revlib import theory

    best = min(range(33), key=lambda o: theory.rope_corr(32, o))
    assert exercises.worst_offset(best).ok is True
    wrong = exercises.worst_offset(2 if best != 2 else 3)
    assert wrong.ok is False and "smaller correlation exists" in wrong.message
    assert exercises.worst_offset(2.5).ok is False
