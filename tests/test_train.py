"""revlib.train: determinism, divergence, the ensemble axis, and the reversal curse end to end."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

import revlib
from revlib import ConfigError, Transformer, TrainingDiverged, preset, train

train_module = importlib.import_module("revlib.train")  # ``revlib.train`` is the function

# Everything the results depend on is pinned here, not left to TrainConfig's defaults (tuned
# elsewhere): the one-layer, one-head, attention-only RoPE model of the book's formalisation.
SMALL = dict(n_pairs=16, d_model=8, n_layers=1, n_heads=1, positional="rope", mlp=False,
             layernorm=False, steps=20, lr=0.02, mask_copies=2, t_min=0.05, eval_every=5)


def _small(kind: str, **overrides) -> revlib.Experiment:
    return preset(kind, **{**SMALL, **overrides})


def _assert_same_history(h1: dict, h2: dict) -> None:
    assert h1.keys() == h2.keys()
    for key in h1:
        assert np.array_equal(h1[key], h2[key]), key


@pytest.mark.parametrize("kind", ["ar", "mdm"])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_same_seed_same_history(kind, batch_size):
    exp = _small(kind, batch_size=batch_size)
    r1, r2 = train(exp, progress=False), train(exp, progress=False)
    _assert_same_history(r1.history, r2.history)
    for p1, p2 in zip(r1.model.parameters(), r2.model.parameters()):
        assert torch.equal(p1, p2)


@pytest.mark.parametrize("kind", ["ar", "mdm"])
def test_different_seed_different_history(kind):
    exp = _small(kind)
    r0 = train(exp, seeds=[0], progress=False)
    r1 = train(exp, seeds=[1], progress=False)  # same world, other weights and masks
    assert torch.equal(r0.world.train_tokens, r1.world.train_tokens)
    assert not np.array_equal(r0.history["loss"], r1.history["loss"])
    r2 = train(_small(kind, seed=1), progress=False)  # preset's "seed" also changes the world
    assert not torch.equal(r0.world.a, r2.world.a)
    assert not np.array_equal(r0.history["loss"], r2.history["loss"])


class _SameInit(Transformer):
    """Every member starts from seed 0's weights: members then differ only by training randomness."""

    def __init__(self, cfg, vocab_size, seeds=(0,)):
        super().__init__(cfg, vocab_size, seeds=(0,) * len(seeds))


@pytest.mark.parametrize("kind,batch_size,random", [("mdm", None, True), ("ar", 8, True), ("ar", None, False)])
def test_training_randomness_comes_from_each_seed(monkeypatch, kind, batch_size, random):
    """Masks (MDM) and mini-batches are drawn per seed; a full-batch ARM has no randomness at all."""
    monkeypatch.setattr(train_module, "Transformer", _SameInit)
    run = train(_small(kind, batch_size=batch_size), seeds=(0, 1), progress=False)
    loss = run.history["loss"]
    assert np.array_equal(loss[:, 0], loss[:, 1]) != random


def test_training_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train(_small("mdm"), progress=False)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", ["ar", "mdm"])
def test_history_layout(kind):
    run = train(_small(kind, steps=12, eval_every=5), seeds=(0, 1, 2), progress=False)
    assert run.history["step"].tolist() == [0, 5, 10, 12]  # every eval_every, and the last step
    assert run.history["loss"].shape == (4, 3)
    assert np.isfinite(run.history["loss"]).all()
    assert ("infill_acc" in run.history) == (kind == "mdm")
    for name in ("a2b", "b2a"):
        assert run.history[f"{name}_acc"].shape == (4, 3) and run.history[f"{name}_p"].shape == (4, 3)
    final = run.final
    assert (final["infill"] is None) == (kind == "ar")
    assert np.array_equal(final["a2b"]["acc"], run.history["a2b_acc"][-1])
    assert run.seconds > 0 and run.seeds == (0, 1, 2) and run.model.n_members == 3


@pytest.mark.parametrize("kind", ["ar", "mdm"])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_ensemble_member_trains_like_a_solo_run(kind, batch_size):
    exp = _small(kind, batch_size=batch_size)
    ensemble = train(exp, seeds=(0, 1), progress=False)
    solo = train(exp, seeds=(0,), progress=False)
    assert ensemble.history.keys() == solo.history.keys()
    assert np.array_equal(ensemble.history["step"], solo.history["step"])
    for key in ensemble.history:
        if key != "step":
            np.testing.assert_allclose(ensemble.history[key][:, 0], solo.history[key][:, 0], atol=1e-5, rtol=0)
    # the second member is another model, not a copy of the first
    assert not np.allclose(ensemble.history["loss"][:, 0], ensemble.history["loss"][:, 1], atol=1e-3)
    solo_params = dict(solo.model.named_parameters())
    for name, p in ensemble.model.member(0).named_parameters():
        torch.testing.assert_close(p, solo_params[name], atol=1e-4, rtol=1e-4)


# --- divergence ------------------------------------------------------------------------------

def _poisoned_model_class(member: int, value: float):
    class Poisoned(Transformer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with torch.no_grad():
                self.unembed[member, :, 0] = value  # the logit of token 0 ([M]) in one member
    return Poisoned


@pytest.mark.parametrize("kind", ["ar", "mdm"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_at_start_raises(monkeypatch, kind, value):
    monkeypatch.setattr(train_module, "Transformer", _poisoned_model_class(1, value))
    with pytest.raises(TrainingDiverged, match=r"step 0\b") as info:
        train(_small(kind), seeds=(4, 9), progress=False)
    assert "9" in str(info.value)  # names the seed of the member that diverged
    assert issubclass(TrainingDiverged, RuntimeError)


@pytest.mark.parametrize("kind", ["ar", "mdm"])
def test_loss_turning_non_finite_mid_training_raises(monkeypatch, kind):
    """A weight blows up after the update of step 6: the loss of step 7 is NaN."""
    objective = "ar_loss" if kind == "ar" else "mdm_loss"
    original = getattr(train_module, objective)
    calls = {"n": 0}

    def exploding(model, *args, **kwargs):
        if calls["n"] == 7:
            with torch.no_grad():
                model.embed[0, :, 0] = math.nan
        calls["n"] += 1
        return original(model, *args, **kwargs)

    monkeypatch.setattr(train_module, objective, exploding)
    with pytest.raises(TrainingDiverged, match=r"step 7\b"):
        train(_small(kind), progress=False)
    assert calls["n"] == 8  # it stopped at once


def test_finite_huge_loss_is_not_divergence(monkeypatch):
    """The check is for NaN/inf, not for large numbers: a huge finite loss trains on."""
    monkeypatch.setattr(train_module, "Transformer", _poisoned_model_class(0, 1e6))
    run = train(_small("ar", steps=3), progress=False)
    assert np.isfinite(run.history["loss"]).all() and run.history["loss"][0, 0] > 1e3


def test_absurd_learning_rate_is_refused_before_training():
    with pytest.raises(ConfigError, match="lr"):
        _small("ar", lr=1e38)


# --- the reversal curse, end to end ----------------------------------------------------------

# Verified on revlib as of this writing: with these settings every one of seeds 0..7 reaches
# a2b accuracy 1.0; the ARM's b2a accuracy is 0 for all, the MDM's >= 0.9 for all.
E2E = dict(n_pairs=32, d_model=16, n_layers=1, n_heads=1, positional="rope", mlp=False,
           layernorm=False, lr=0.1, schedule="cosine", batch_size=None, t_min=0.05, seed=0)
SEEDS = (0, 1, 2)


def test_arm_learns_a2b_and_pushes_b2a_below_chance():
    run = train(preset("ar", **E2E, steps=100, eval_every=50), seeds=SEEDS, progress=False)
    final, chance = run.final, run.world.chance
    assert final["infill"] is None
    assert (final["a2b"]["acc"] >= 0.9).all() and (final["a2b"]["p_correct"] >= 0.9).all()
    assert (final["b2a"]["acc"] <= 1 / 32).all()  # at most one lucky pair of 32; in practice 0
    assert (final["b2a"]["p_correct"] < chance).all()  # below a uniform guess (Zhu et al. 2024)
    # training pushed it there from near chance
    assert (run.history["b2a_p"][0] > 0.5 * chance).all()
    assert (run.history["b2a_p"][-1] < run.history["b2a_p"][0]).all()


def test_mdm_learns_a2b_and_answers_b2a_it_never_saw():
    run = train(preset("mdm", **E2E, steps=300, mask_copies=4, eval_every=100), seeds=SEEDS, progress=False)
    final, chance = run.final, run.world.chance
    assert (final["a2b"]["acc"] >= 0.9).all()
    assert (final["infill"]["acc"] >= 0.5).all()
    assert (final["b2a"]["acc"] >= 0.3).all()  # chance is 1/67
    assert (final["b2a"]["p_correct"] > 10 * chance).all()
    # the reversal probe was never training text: the MDM got it through infill (chapter 1)
    b2a = run.world.probe("b2a")
    text = {tuple(r) for r in run.world.train_tokens.tolist()}
    assert all((b, r, a) not in text for (b, r, _), a in zip(b2a.tokens.tolist(), b2a.answers.tolist()))
