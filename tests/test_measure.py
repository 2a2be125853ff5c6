"""revlib.measure: whole-entity scores (oracle, anti-oracle, chance), where each objective reads its
answer, evaluate's probes, and which seeds failed to learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from revlib import DataConfig, evaluate, make_world
from revlib.measure import METRICS, failed, probe_logits, score_logits, trained_probes

from conftest import tiny_model

V = 20


def _answers(n=6, k=1, seed=0):
    return torch.randint(3, V, (n, k), generator=torch.Generator().manual_seed(seed))


def _onehot_logits(answers, K=2, value=50.0):
    n, k = answers.shape
    logits = torch.zeros(K, n, k, V)
    logits.scatter_(-1, answers.expand(K, n, k)[..., None], value)
    return logits


@pytest.mark.parametrize("k", [1, 2, 3])
def test_oracle_scores_one_and_zero_nll(k):
    answers = _answers(k=k)
    s = score_logits(_onehot_logits(answers), answers)
    assert set(s) == set(METRICS)
    assert s["acc"].tolist() == [1.0, 1.0]
    torch.testing.assert_close(s["p_correct"], torch.ones(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(s["nll"], torch.zeros(2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2])
def test_anti_oracle_scores_zero(k):
    answers = _answers(k=k)
    s = score_logits(_onehot_logits(answers, value=-50.0), answers)
    assert s["acc"].tolist() == [0.0, 0.0]
    assert (s["p_correct"] < 1e-20).all() and (s["nll"] > 40 * k).all()


@pytest.mark.parametrize("k", [1, 2])
def test_uniform_logits_score_chance(k):
    answers = _answers(k=k)
    s = score_logits(torch.zeros(3, 6, k, V), answers)
    torch.testing.assert_close(s["p_correct"], torch.full((3,), float(V) ** -k))
    torch.testing.assert_close(s["nll"], torch.full((3,), k * math.log(V)))
    assert s["acc"].tolist() == [0.0] * 3  # argmax of ties is token 0, [M], never an answer


def test_whole_entity_accuracy_requires_every_slot():
    answers = torch.tensor([[3, 4], [5, 6], [7, 8], [9, 10]])
    logits = _onehot_logits(answers, K=1)
    logits[0, 0, 1] = 0.0
    logits[0, 0, 1, 11] = 50.0  # query 0: second slot wrong
    logits[0, 1, 0] = 0.0
    logits[0, 1, 0, 12] = 50.0  # query 1: first slot wrong
    s = score_logits(logits, answers)
    assert s["acc"].item() == 0.5
    assert s["p_correct"].item() == pytest.approx(0.5, abs=1e-6)


def test_scores_are_per_member():
    answers = _answers()
    logits = torch.stack([_onehot_logits(answers, K=1)[0], torch.zeros(6, 1, V)])
    s = score_logits(logits, answers)
    assert s["acc"].tolist() == [1.0, 0.0]
    assert s["nll"][1].item() == pytest.approx(math.log(V))


def test_ar_reads_one_position_before_the_blank_and_has_no_infill():
    world = make_world(DataConfig(n_pairs=8, entity_tokens=2, seed=0))
    model = tiny_model("causal", "rope", vocab=world.vocab_size, seeds=(0, 1), max_len=5)
    result = evaluate(model, world, "ar")
    assert result["infill"] is None and set(result) == {"a2b", "infill", "b2a"}
    assert probe_logits(model, world.probe("infill"), "ar") is None
    for name in ("a2b", "b2a"):
        p = world.probe(name)
        assert p.slots == (3, 4)
        with torch.no_grad():
            logits = model(p.full)[:, :, [2, 3]]  # teacher-forced, read at slot - 1
        expected = score_logits(logits, p.answers)
        for m in METRICS:
            torch.testing.assert_close(result[name][m], expected[m])
        torch.testing.assert_close(probe_logits(model, p, "ar"), logits)


@pytest.mark.parametrize("objective", ["mdm", "suffix"])
def test_a_causal_model_with_a_masked_objective_reads_at_the_blank(objective):
    world = make_world(DataConfig(n_pairs=8, seed=0))
    model = tiny_model("causal", "rope", vocab=world.vocab_size, seeds=(0,), max_len=3)
    result = evaluate(model, world, objective)
    for name in ("a2b", "infill", "b2a"):
        p = world.probe(name)
        with torch.no_grad():
            logits = model(p.tokens)[:, :, list(p.slots)]  # the masked query, read at the blank
        expected = score_logits(logits, p.answers)
        for m in METRICS:
            torch.testing.assert_close(result[name][m], expected[m])
    assert result["infill"] is not None  # with causal attention the blank at 0 sees only itself
    ar = evaluate(model, world, "ar")
    assert not torch.equal(ar["a2b"]["nll"], result["a2b"]["nll"])


def test_evaluate_covers_every_probe_of_the_world():
    world = make_world(DataConfig(n_pairs=8, relations="inverse", reversed_fraction=0.25, seed=0))
    model = tiny_model("bidirectional", "rope", vocab=world.vocab_size, seeds=(0, 1, 2), max_len=3)
    result = evaluate(model, world, "mdm")
    assert set(result) == {"a2b", "infill", "b2a", "swap"}
    for m in result.values():
        assert set(m) == set(METRICS) and all(v.shape == (3,) for v in m.values())
        assert ((m["p_correct"] > 0) & (m["p_correct"] < 1)).all()
        torch.testing.assert_close(m["nll"] > 0, torch.ones(3, dtype=torch.bool))


def test_failed_flags_seeds_that_did_not_learn_the_trained_direction():
    final = {"a2b": {"acc": np.array([1.0, 0.95, 0.5, 1.0])}, "infill": {"acc": np.array([1.0, 0.2, 1.0, 0.9])},
             "b2a": {"acc": np.array([0.0, 0.0, 0.0, 0.0])}}
    assert failed(final, "mdm").tolist() == [False, True, True, False]
    assert failed(final, "ar").tolist() == [False, False, True, False]
    assert failed(final, "suffix").tolist() == [False, False, True, False]
    assert failed(final, "mdm", threshold=0.99).tolist() == [False, True, True, True]
    assert trained_probes("mdm") == ("a2b", "infill") and trained_probes("ar") == ("a2b",)


# --- iterative decoding (chapter 5) -------------------------------------------------------------

class _Oracle(torch.nn.Module):
    """A stand-in masked model over a probe's queries. Plain: every blank's right token gets a
    large logit (later slots more confident). ``needs_second``: the first blank's right token
    is only known once the second is filled in; until then a wrong token leads, with low
    confidence, while the second blank is confident and right."""

    def __init__(self, world, probe, K=1, needs_second=False):
        super().__init__()
        self.V, self.probe, self.n_members, self.needs_second = world.vocab_size, probe, K, needs_second

    def forward(self, tokens):  # (K, N, T) -> (K, N, T, V)
        K, N, T = tokens.shape
        logits = torch.zeros(K, N, T, self.V)
        rows = torch.arange(N)
        for j, slot in enumerate(self.probe.slots):
            logits[:, rows, slot, self.probe.answers[:, j]] = 5.0 + j
        if self.needs_second:
            first, second = self.probe.slots[:2]
            known = tokens[:, :, second] != 0  # (K, N): the second blank is filled in
            wrong = (self.probe.answers[:, 0] + 1) % self.V
            logits[:, :, first] = torch.where(known[..., None], logits[:, :, first], 0.0)
            logits[:, rows, first, wrong] = torch.where(known, 0.0, 2.0)
        return logits


def test_iterative_decoding_of_an_oracle_is_right_and_equals_one_pass_for_one_token():
    from revlib import ModelConfig, Transformer
    from revlib.measure import iterative_accuracy

    world = make_world(DataConfig(n_pairs=8, entity_tokens=3, seed=1))
    p = world.probe("b2a")
    assert torch.equal(iterative_accuracy(_Oracle(world, p, K=2), p), torch.ones(2))
    one = make_world(DataConfig(n_pairs=8, seed=1))
    p1 = one.probe("b2a")
    model = Transformer(ModelConfig(d_model=8), one.vocab_size, seeds=(0, 1))
    one_pass = score_logits(probe_logits(model, p1, "mdm"), p1.answers)["acc"]
    torch.testing.assert_close(iterative_accuracy(model, p1), one_pass)


def test_iterative_decoding_fills_the_most_confident_blank_first():
    from revlib.measure import iterative_accuracy

    world = make_world(DataConfig(n_pairs=8, entity_tokens=2, seed=1))
    p = world.probe("b2a")
    oracle = _Oracle(world, p, needs_second=True)
    one_pass = score_logits(oracle(p.tokens.expand(1, *p.tokens.shape))[:, :, list(p.slots)], p.answers)["acc"]
    assert one_pass.item() == 0.0  # all blanks at once: the first one is wrong
    assert iterative_accuracy(oracle, p).item() == 1.0  # the confident second blank first, then the first
