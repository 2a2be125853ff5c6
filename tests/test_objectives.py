"""revlib.objectives: where each objective reads its answer, the masking process (rates, masks,
spans, suffixes, copies, determinism per member) and the losses of a uniform model."""
from __future__ import annotations

import math

import pytest
import torch

from revlib import TrainConfig, make_world, DataConfig
from revlib import objectives as O
from revlib.data import MASK

from conftest import tiny_model


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_read_positions():
    assert O.read_positions("ar", [2]) == [1]
    assert O.read_positions("ar", [3, 4]) == [2, 3]
    assert O.read_positions("ar", [0]) is None  # nothing precedes the first token
    assert O.read_positions("ar", range(0, 2)) is None
    for objective in ("mdm", "suffix"):
        assert O.read_positions(objective, [0, 1]) == [0, 1]
        assert O.read_positions(objective, (2,)) == [2]


# ---------------------------------------------------------------------------------------------
# rates and masks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("B,t_min", [(1, 0.05), (4, 0.05), (16, 0.3)])
def test_rates_are_stratified_within_each_step(B, t_min):
    t = O.draw_rates(200, B, t_min, _gen(0))
    assert t.shape == (200, B)
    assert (t >= t_min).all() and (t < 1).all()
    stratum = ((t - t_min) / (1 - t_min) * B).floor().long().sort(dim=1).values
    assert torch.equal(stratum, torch.arange(B).expand(200, B))  # one rate in every slice


@pytest.mark.parametrize("B,t_min", [(1, 0.05), (4, 0.2)])
def test_rates_are_uniform_over_t_min_to_one(B, t_min):
    t = O.draw_rates(4000, B, t_min, _gen(1))[:, 0]  # any one sentence's rate, over steps
    n = t.numel()
    u = (t - t_min) / (1 - t_min)  # U(0, 1) if the claim holds
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 0.01
    counts = torch.histc(u, bins=10, min=0, max=1)
    expected, sd = n / 10, math.sqrt(n * 0.1 * 0.9)
    assert ((counts - expected).abs() < 5 * sd).all(), counts


def test_mask_fraction_follows_t():
    T = 40
    units = torch.arange(T)
    masked, t = O.draw_masks(300, 8, units, 0.05, _gen(2))
    assert masked.shape == (300, 8, T) and t.shape == (300, 8)
    frac = masked.float().mean(-1)  # (steps, B)
    # per sentence the masked count is Binomial(T, t): the residual has mean 0, sd sqrt(t(1-t)/T)
    resid = (frac - t) / (t * (1 - t) / T).sqrt()
    assert abs(float(resid.mean())) < 5 / math.sqrt(resid.numel())
    assert 0.8 < float(resid.std()) < 1.2
    for lo in (0.05, 0.3, 0.6, 0.9):  # and in every band of rates
        band = (t >= lo) & (t < lo + 0.1)
        assert abs(float(frac[band].mean() - t[band].mean())) < 0.02


def test_mask_units():
    assert O.mask_units(3, 1, "mdm", "token").tolist() == [0, 1, 2]
    assert O.mask_units(5, 2, "mdm", "span").tolist() == [0, 0, 1, 2, 2]
    assert O.mask_units(5, 2, "suffix", "token").tolist() == [-1, -1, -1, 3, 4]
    assert O.mask_units(7, 3, "suffix", "span").tolist() == [-1, -1, -1, -1, 2, 2, 2]
    assert O.mask_units(3, 1, "suffix", "token").tolist() == [-1, -1, 2]


@pytest.mark.parametrize("k", [2, 3])
def test_span_masking_masks_whole_entities_together(k):
    units = O.mask_units(2 * k + 1, k, "mdm", "span")
    masked, t = O.draw_masks(200, 16, units, 0.05, _gen(3))
    first, rel, second = masked[..., :k], masked[..., k], masked[..., k + 1:]
    assert (first == first[..., :1]).all() and (second == second[..., :1]).all()
    # the three units are masked independently: every combination occurs
    combos = {tuple(x) for x in torch.stack([first[..., 0], rel, second[..., 0]], -1).reshape(-1, 3).tolist()}
    assert len(combos) == 8


@pytest.mark.parametrize("masking,k", [("token", 1), ("token", 2), ("span", 2)])
def test_suffix_masks_only_the_last_entity(masking, k):
    units = O.mask_units(2 * k + 1, k, "suffix", masking)
    masked, _ = O.draw_masks(200, 16, units, 0.05, _gen(4))
    assert not masked[..., :k + 1].any()
    assert masked[..., k + 1:].any(dim=(0, 1)).all()  # every slot of the last entity gets masked


def test_masks_are_deterministic_given_the_generator():
    units = torch.arange(5)
    m1, t1 = O.draw_masks(10, 4, units, 0.05, _gen(9))
    m2, t2 = O.draw_masks(10, 4, units, 0.05, _gen(9))
    m3, _ = O.draw_masks(10, 4, units, 0.05, _gen(10))
    assert torch.equal(m1, m2) and torch.equal(t1, t2) and not torch.equal(m1, m3)


def _assert_same_masked_batch(b1, k1, b2, k2):
    assert torch.equal(b1.inputs[k1], b2.inputs[k2])
    assert torch.equal(b1.rows[k1], b2.rows[k2])
    assert torch.equal(b1.targets[k1], b2.targets[k2])
    assert torch.equal(b1.weights[k1], b2.weights[k2])


@pytest.mark.parametrize("objective,batch_size", [("mdm", None), ("mdm", 5), ("suffix", None)])
def test_batches_are_per_member_and_do_not_depend_on_the_ensemble(objective, batch_size):
    world = make_world(DataConfig(n_pairs=16, seed=0))
    tc = TrainConfig(objective=objective, batch_size=batch_size)
    ensemble = O.Batches(world.train_tokens, tc, 1, [_gen(1), _gen(2), _gen(3)])
    solo = O.Batches(world.train_tokens, tc, 1, [_gen(2)])
    for step in (0, 1, 63, 64, 65, 130):  # across the chunks drawn ahead
        e, s = ensemble.get(step), solo.get(step)
        _assert_same_masked_batch(e, 1, s, 0)
    assert not torch.equal(ensemble.get(0).inputs[0], ensemble.get(0).inputs[1])


def test_ar_batches_are_per_member_too():
    world = make_world(DataConfig(n_pairs=16, seed=0))
    tc = TrainConfig(objective="ar", batch_size=4)
    ensemble = O.Batches(world.train_tokens, tc, 1, [_gen(1), _gen(2)])
    solo = O.Batches(world.train_tokens, tc, 1, [_gen(2)])
    for step in (0, 5, 70):
        assert torch.equal(ensemble.get(step)[1], solo.get(step)[0])
    full = O.Batches(world.train_tokens, TrainConfig(objective="ar"), 1, [_gen(1)]).get(0)
    assert torch.equal(full[0], world.train_tokens)  # no batch size: the whole text, unmasked


def test_mask_copies_mask_each_sentence_independently():
    world = make_world(DataConfig(n_pairs=16, seed=0))
    n = len(world.train_tokens)
    for copies in (1, 3):
        tc = TrainConfig(objective="mdm", mask_copies=copies)
        batch = O.Batches(world.train_tokens, tc, 1, [_gen(5)]).get(0)
        inputs = batch.inputs[0]
        assert inputs.shape == (copies * n, 3)
        tokens = world.train_tokens.repeat_interleave(copies, dim=0)
        unmasked = inputs != MASK
        assert torch.equal(inputs[unmasked], tokens[unmasked])  # copy c of sentence i is sentence i
        assert torch.equal(batch.targets[0], tokens.reshape(-1)[batch.rows[0]])
    masks = (inputs == MASK).view(n, 3, 3)  # (sentence, copy, position)
    assert (masks[:, 0] != masks[:, 1]).any() and (masks[:, 1] != masks[:, 2]).any()
    ar = O.Batches(world.train_tokens, TrainConfig(objective="ar", mask_copies=3), 1, [_gen(5)]).get(0)
    assert ar.shape == (1, n, 3)  # copies only concern the masked objectives


def test_masked_batch_weights_are_one_over_t_B_T():
    tokens = torch.tensor([[[3, 1, 4], [5, 1, 6]]])  # (K=1, B=2, T=3)
    masked = torch.tensor([[[True, False, True], [False, False, True]]])
    t = torch.tensor([[0.5, 0.25]])
    batch = O.masked_batch(tokens, masked, t)
    assert batch.inputs.tolist() == [[[MASK, 1, MASK], [5, 1, MASK]]]
    assert batch.rows[0].tolist() == [0, 2, 5] and batch.targets[0].tolist() == [3, 4, 6]
    torch.testing.assert_close(batch.weights[0], torch.tensor([1 / 3, 1 / 3, 2 / 3]))


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

def _uniform_model(attention="causal", seeds=(0, 1), vocab=35, d_model=8):
    model = tiny_model(attention, "rope", vocab=vocab, seeds=seeds, d_model=d_model, n_heads=1, max_len=3)
    with torch.no_grad():
        model.unembed.zero_()  # every logit 0: the uniform distribution over V
    return model


def test_ar_loss_of_a_uniform_model_is_log_V(tiny_world):
    model = _uniform_model()
    loss = O.ar_loss(model, tiny_world.train_tokens)
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, torch.full((2,), math.log(35)))


@pytest.mark.parametrize("objective", ["mdm", "suffix"])
def test_masked_loss_of_a_uniform_model_is_log_V_per_unit_weight(tiny_world, objective):
    model = _uniform_model("bidirectional")
    tc = TrainConfig(objective=objective)
    batches = O.Batches(tiny_world.train_tokens, tc, 1, [_gen(0), _gen(1)])
    total, n = torch.zeros(2, dtype=torch.float64), 200
    for step in range(n):
        batch = batches.get(step)
        loss = O.loss(model, tc, batch)
        weight = torch.stack([w.sum() for w in batch.weights])
        torch.testing.assert_close(loss, math.log(35) * weight)  # each masked slot costs log V
        total += weight.double()
    # the 1/t weights make the expected weight of a step the share of maskable slots: the loss
    # of a uniform model is log V (mdm) in expectation, and log V times 1/3 for suffix
    share = 1.0 if objective == "mdm" else 1 / 3
    assert abs(float(total.mean()) / n - share) < 0.05 * share


def test_losses_are_per_member_and_members_do_not_interact(tiny_world):
    model = tiny_model("bidirectional", "rope", vocab=35, seeds=(4, 5), d_model=8, n_heads=1, max_len=3)
    tc = TrainConfig(objective="mdm")
    batch = O.Batches(tiny_world.train_tokens, tc, 1, [_gen(0), _gen(1)]).get(0)
    solo_batch = O.Batches(tiny_world.train_tokens, tc, 1, [_gen(1)]).get(0)
    both = O.loss(model, tc, batch)
    alone = O.loss(model.member(1), tc, solo_batch)
    assert torch.equal(both[1], alone[0])
    causal = tiny_model("causal", "rope", vocab=35, seeds=(4, 5), d_model=8, n_heads=1, max_len=3)
    ar = O.loss(causal, TrainConfig(objective="ar"), tiny_world.train_tokens.expand(2, -1, -1))
    assert torch.equal(ar[1], O.ar_loss(causal.member(1), tiny_world.train_tokens)[0])


def test_ar_loss_is_next_token_cross_entropy(tiny_world):
    model = tiny_model("causal", "rope", vocab=35, seeds=(0,), d_model=8, n_heads=1, max_len=3)
    tokens = tiny_world.train_tokens
    logits = model(tokens)[0]  # (B, T, V)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 35), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(O.ar_loss(model, tokens)[0], expected)
