"""revlib.measure: oracle and uniform models score 100% and chance; who can answer which probe."""
from __future__ import annotations

import math

import pytest
import torch

from revlib import DataConfig, ModelConfig, Transformer, evaluate, make_world
from revlib.measure import answer_logits, score_logits

K, N, V = 2, 12, 20


def _answers(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, V, (N,), generator=torch.Generator().manual_seed(seed))


def _noise(seed: int = 1) -> torch.Tensor:
    return torch.randn(K, N, V, generator=torch.Generator().manual_seed(seed))


def test_oracle_scores_everything():
    answers = _answers()
    logits = _noise()
    logits[:, torch.arange(N), answers] += 50.0  # a large value on the right answer
    scores = score_logits(logits, answers)
    assert scores["acc"].shape == (K,) and scores["p_correct"].shape == (K,)
    assert torch.equal(scores["acc"], torch.ones(K))
    assert (scores["p_correct"] > 0.999).all() and (scores["p_correct"] <= 1.0 + 1e-6).all()
    # the probe loss, -log p(answer)
    assert (scores["nll"] >= 0).all() and (scores["nll"] < 1e-3).all()


def test_anti_oracle_scores_nothing():
    answers = _answers()
    logits = _noise()
    logits[:, torch.arange(N), answers] -= 50.0
    scores = score_logits(logits, answers)
    assert torch.equal(scores["acc"], torch.zeros(K))
    assert (scores["p_correct"] < 1e-6).all()


def test_half_oracle_scores_half_and_members_are_scored_separately():
    answers = _answers()
    logits = _noise()
    logits[0, torch.arange(N), answers] += 50.0  # member 0 knows every answer
    logits[1, torch.arange(N // 2), answers[: N // 2]] += 50.0  # member 1 the first half
    logits[1, torch.arange(N // 2, N), answers[N // 2 :]] -= 50.0  # and not the rest
    scores = score_logits(logits, answers)
    assert scores["acc"].tolist() == [1.0, 0.5]
    assert scores["p_correct"][1].item() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("vocab", [7, 35, 67, 1000])
def test_uniform_logits_score_chance(vocab):
    answers = torch.randint(3, vocab, (N,), generator=torch.Generator().manual_seed(vocab))
    scores = score_logits(torch.zeros(K, N, vocab), answers)
    # softmax of equal logits is 1/V (exact up to float32 rounding)
    for p in scores["p_correct"].tolist():
        assert p == pytest.approx(1 / vocab, rel=1e-6)
    for nll in scores["nll"].tolist():
        assert nll == pytest.approx(math.log(vocab), rel=1e-6)
    # all logits tie: argmax returns the first index, token 0 ([M]), never an entity answer
    assert torch.equal(scores["acc"], torch.zeros(K))


def test_uniform_accuracy_is_argmax_of_ties():
    """With tied logits the prediction is token 0: exactly the queries whose answer is 0 count."""
    answers = torch.tensor([0, 5, 0, 7, 9, 0, 4, 11])
    scores = score_logits(torch.zeros(K, len(answers), V), answers)
    assert torch.equal(scores["acc"], torch.full((K,), 3 / 8))
    for p in scores["p_correct"].tolist():
        assert p == pytest.approx(1 / V, rel=1e-6)


def _model(attention: str, vocab: int, seeds=(0, 1)) -> Transformer:
    return Transformer(ModelConfig(d_model=16, attention=attention), vocab, seeds)


def test_arm_has_no_infill_answer(tiny_world):
    world = tiny_world
    model = _model("causal", world.vocab_size)
    assert answer_logits(model, world.probe("infill")) is None
    result = evaluate(model, world)
    assert set(result) == {"a2b", "infill", "b2a"}
    assert result["infill"] is None
    for name in ("a2b", "b2a"):
        assert result[name]["acc"].shape == (2,) and result[name]["p_correct"].shape == (2,)


def test_mdm_answers_every_probe(tiny_world):
    world = tiny_world
    result = evaluate(_model("bidirectional", world.vocab_size), world)
    for name in ("a2b", "infill", "b2a"):
        assert result[name] is not None and result[name]["acc"].shape == (2,)


def test_answer_is_read_where_each_model_predicts_the_blank(tiny_world):
    """The ARM predicts token i at position i-1; the MDM at the [M] slot itself."""
    world = tiny_world
    probe = world.probe("a2b")  # blank at position 2
    arm, mdm = _model("causal", world.vocab_size), _model("bidirectional", world.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(answer_logits(arm, probe), arm(probe.tokens)[:, :, 1])
        torch.testing.assert_close(answer_logits(mdm, probe), mdm(probe.tokens)[:, :, 2])


def test_evaluate_scores_the_models_own_predictions():
    """evaluate == score_logits on the logits at the blank, member by member."""
    world = make_world(DataConfig(n_pairs=16, both_fraction=0.25))
    model = _model("bidirectional", world.vocab_size)
    result = evaluate(model, world)
    for name in ("a2b", "infill", "b2a"):
        probe = world.probe(name)
        with torch.no_grad():
            logits = model(probe.tokens)[:, :, probe.position]
        expected = score_logits(logits, probe.answers)
        torch.testing.assert_close(result[name]["acc"], expected["acc"])
        torch.testing.assert_close(result[name]["p_correct"], expected["p_correct"])


def test_untrained_model_starts_near_chance():
    world = make_world(DataConfig(n_pairs=32))
    result = evaluate(_model("bidirectional", world.vocab_size, seeds=(0, 1, 2, 3)), world)
    for name in ("a2b", "infill", "b2a"):
        p = result[name]["p_correct"]
        assert ((p > 0.5 * world.chance) & (p < 2 * world.chance)).all(), (name, p)


def test_nothing_left_to_reverse_gives_no_b2a_score():
    world = make_world(DataConfig(n_pairs=8, both_fraction=1.0))
    result = evaluate(_model("bidirectional", world.vocab_size), world)
    assert result["b2a"] is None and result["a2b"] is not None
