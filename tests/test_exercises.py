"""The exercise checkers: tolerant of how a right answer is written, specific about wrong ones."""
from fractions import Fraction

import pytest

from revlib.book import exercises as ex
from revlib.config import N_SPECIAL

V64 = 2 * 64 + N_SPECIAL  # chapter 1's world: 64 pairs


@pytest.mark.parametrize("text, value, half", [
    ("1/131", 1 / 131, 0.0), ("0.0076", 0.0076, 0.00005), ("7.6e-3", 0.0076, 0.00005), (" ≈ 0.5 ", 0.5, 0.05),
    (Fraction(1, 4), 0.25, 0.0), (3, 3.0, 0.0)])
def test_parse_reads_fractions_decimals_and_their_written_precision(text, value, half):
    got = ex.parse(text)
    assert got is not None and got[0] == pytest.approx(value) and got[1] == pytest.approx(half)


@pytest.mark.parametrize("text", [None, True, "", "abc", "1/0", "nan", "inf", "1/x"])
def test_parse_refuses_what_is_not_a_number(text):
    assert ex.parse(text) is None


def test_chance_level_accepts_the_solution_as_written_and_the_exact_fraction():
    assert 1 / V64 == pytest.approx(0.00763, abs=1e-5)
    for right in (0.0076, "0.0076", f"1/{V64}", 1 / V64, "7.63e-3", "≈0.0076"):
        assert ex.chance_level(64, right).ok is True, right
    for wrong, says in ((V64, "vocabulary size"), ("1/128", "special tokens"), ("1/64", "two"),
                        (0.008, "Count"), (2, "probability")):
        fb = ex.chance_level(64, wrong)
        assert fb.ok is False and says in fb.message, (wrong, fb.message)
    assert ex.chance_level(64, None).ok is None
    assert "number" in ex.chance_level(64, "a lot").message


def test_written_precision_is_not_a_licence_for_any_number():
    assert ex.matches("0.0076", 1 / 131) and not ex.matches("0.0077", 1 / 131)
    assert not ex.matches("0.008", 1 / 131) and not ex.matches("0.01", 1 / 131)  # 5 % and 31 % off
    assert ex.matches("4.4e-7", 131 ** -3) and not ex.matches("4e-7", 131 ** -3)
    assert ex.matches(0.5, 0.5) and not ex.matches("0.25", 0.5)


def test_chapter_2_and_3_checkers_separate_the_right_answer_from_the_usual_mistakes():
    import math
    from revlib.theory import rope_corr

    assert ex.smallest_head_correlation(f"{math.cos(4):.3f}").ok is True
    assert "2Δθ" in ex.smallest_head_correlation(f"{math.cos(2):.3f}").message
    assert "sign" in ex.smallest_head_correlation(f"{-math.cos(4):.3f}").message
    best = min(range(33), key=lambda o: rope_corr(32, o))
    assert ex.worst_offset(best).ok is True and ex.worst_offset(best - 1).ok is False
    assert ex.worst_offset(2.5).ok is False and ex.worst_offset(99).ok is False
    assert ex.negative_base(1.5).ok is True and ex.negative_base(10_000).ok is False
    assert ex.negative_base(0.5).ok is False  # outside what RoPE accepts
    assert ex.residual_factor("0.62").ok is True and "e_A" in ex.residual_factor("0.32").message
    assert ex.first_order_change("-0.025").ok is True and "sign" in ex.first_order_change(0.025).message


def test_chapter_4_and_5_checkers():
    assert ex.evidence_cells("mdm+bidirectional, prefix+bidir").ok is True
    fb = ex.evidence_cells("mdm+bidirectional, suffix+bidirectional")
    assert fb.ok is False and "suffix+bidirectional" in fb.message and "prefix+bidirectional" in fb.message
    assert ex.swap_without_positions("Equal").ok is True and ex.swap_without_positions("lower").ok is False
    assert ex.untied_values("infill").ok is True and ex.untied_values("b2a").ok is False
    assert ex.whole_name_chance(str(131 ** -3)).ok is True and ex.whole_name_chance("1/2248091").ok is True
    assert ex.whole_name_chance("4.4e-7").ok is True and "one slot" in ex.whole_name_chance("1/131").message
    assert ex.span_both_masked(0.5).ok is True and "token masking" in ex.span_both_masked(0.25).message


@pytest.mark.parametrize("checker", [ex.smallest_head_correlation, ex.worst_offset, ex.negative_base,
                                     ex.residual_factor, ex.first_order_change, ex.evidence_cells,
                                     ex.swap_without_positions, ex.untied_values, ex.whole_name_chance,
                                     ex.span_both_masked])
def test_every_checker_says_not_answered_for_none_and_prints_a_verdict(checker):
    fb = checker(None)
    assert fb.ok is None and str(fb).startswith("Not answered yet.") and fb.message


# ---------------------------------------------------------------------------------------------
# coding exercises: every checker passes the solution in solutions/ and fails a typical mistake
# with the message that names it
# ---------------------------------------------------------------------------------------------

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions" / "solutions.py"


@pytest.fixture(scope="module")
def solutions():
    if not SOLUTIONS.exists():  # a teacher withheld them (solutions/index.md says how)
        pytest.skip("solutions/ withheld")
    spec = importlib.util.spec_from_file_location("book_solutions", SOLUTIONS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mdm_masked_mean(logits, tokens, mask, t):
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    return (ce * mask / t[:, None]).sum() / mask.sum()


def _mdm_no_weight(logits, tokens, mask, t):
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    return (ce * mask).sum() / tokens.numel()


def _rope_one_delta(d, offset, base):
    theta = base ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    return float(2 / d * torch.cos(offset * theta).sum())


def _ov_no_unembedding(U, p1, p2, answer, c1, c2):
    e = torch.zeros_like(p1)
    e[answer] = 1
    return float((p1 - e) @ (p2 - e) * (c1 @ c2))


def _project_along(update, grad):
    return (update @ grad / (grad @ grad)) * grad


def _b2a_with_relation(tokenize, fact, mask_id):
    b, r, a = tokenize(fact.object), tokenize(fact.relation), tokenize(fact.subject)
    ids = b + r + [mask_id] * len(a)
    return ids, list(range(len(b) + len(r), len(ids))), a


CODING = [
    ("mdm_loss", ex.check_mdm_loss, _mdm_masked_mean, "divided by the number of masked slots"),
    ("mdm_loss", ex.check_mdm_loss, _mdm_no_weight, "weighted 1/t"),
    ("rope_corr", ex.check_rope_corr, _rope_one_delta, "2Δθ_m"),
    ("ov_inner_product", ex.check_ov_inner_product, _ov_no_unembedding, "U Uᵀ"),
    ("project_out", ex.check_project_out, _project_along, "component *along*"),
    ("b2a_query", ex.check_b2a_query, _b2a_with_relation, "converse relation"),
]


@pytest.mark.parametrize("name, checker, wrong, words", CODING, ids=[f"{c[0]}-{c[2].__name__}" for c in CODING])
def test_coding_checkers_pass_the_solution_and_name_a_typical_mistake(solutions, name, checker, wrong, words):
    right = checker(getattr(solutions, name))
    assert right.ok is True, right.message
    fb = checker(wrong)
    assert fb.ok is False and words in fb.message, fb.message


@pytest.mark.parametrize("checker", sorted({c[1] for c in CODING}, key=lambda f: f.__name__))
def test_coding_checkers_report_an_unwritten_or_crashing_function_in_one_line(checker):
    def unwritten(*args):
        raise NotImplementedError

    def crashes(*args):
        return {}["oops"]

    assert checker(unwritten).ok is None and "NotImplementedError" in checker(unwritten).message
    assert checker(None).ok is None
    fb = checker(crashes)
    assert fb.ok is False and "raised KeyError" in fb.message and "\n" not in fb.message
