"""revlib.coupling: route scores against hand computations from the weights, the token weights,
the bag-of-tokens logits, stored evidence from the OV map, and the direct logit attribution as an
exact linear decomposition of the answer's logit."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from revlib import ConfigError, DataConfig, make_world, preset
from revlib import coupling
from revlib.model import alibi_slopes, build_model, ov_map
from revlib.objectives import read_positions
from revlib.theory import rope_matrix

from conftest import tiny


def _setup(objective="mdm", positional="rope", n_heads=2, seeds=(0, 1), **kw):
    exp = preset("mdm", objective=objective, positional=positional, n_pairs=6, d_model=8, n_heads=n_heads, **kw)
    world = make_world(exp.data)
    return build_model(exp, seeds), world


def _hand_score(model, tokens, k, h, i, j):
    """q_i^T R_(j-i) k_j / sqrt(e) (+ ALiBi) for member k, head h, from the weights alone."""
    attn, cfg = model.blocks[0].attn, model.cfg
    e = cfg.d_head
    with torch.no_grad():
        xi, xj = model.embed[k, tokens[i]].double(), model.embed[k, tokens[j]].double()
        if cfg.positional == "absolute":
            xi, xj = xi + model.pos[k, i].double(), xj + model.pos[k, j].double()
        q = xi @ attn.W_Q[k, :, h * e:(h + 1) * e].double()
        key = xj @ attn.W_K[k, :, h * e:(h + 1) * e].double()
        R = rope_matrix(e, j - i, cfg.rope_base) if cfg.positional == "rope" else torch.eye(e, dtype=torch.float64)
        score = float(q @ R @ key) / math.sqrt(e)
    if cfg.positional == "alibi":
        score -= float(alibi_slopes(cfg.n_heads)[h]) * abs(j - i)
    return score


@pytest.mark.parametrize("objective", ["mdm", "suffix", "ar"])
@pytest.mark.parametrize("positional", ["rope", "alibi", "absolute", "none"])
def test_route_scores_are_q_R_k_over_sqrt_e_from_the_weights(objective, positional):
    model, world = _setup(objective, positional)
    scores = coupling.route_scores(model, world, objective)
    expected_routes = ["a2b", "b2a"] if objective == "ar" else ["infill", "b2a"]
    assert list(scores) == expected_routes
    # (query, key) positions: masked models read at the blank, ar one position before it
    where = {"infill": ("infill", 0, 2), "b2a": ("b2a", 2, 0)} if objective != "ar" else \
        {"a2b": ("a2b", 1, 0), "b2a": ("b2a", 1, 0)}
    for route, (probe, qi, kj) in where.items():
        p = world.probe(probe)
        tokens = p.full if objective == "ar" else p.tokens
        s = scores[route]["scores"]
        assert s.shape == (2, 1, 2, len(p))  # (K, L, H, N)
        for k, h, n in itertools.product(range(2), range(2), range(len(p))):
            assert float(s[k, 0, h, n]) == pytest.approx(_hand_score(model, tokens[n], k, h, qi, kj), abs=1e-5)
        w = scores[route]["weights"]
        assert ((w > 0) & (w < 1)).all()


def test_route_keys_for_an_ar_model_are_never_b_in_training():
    world = make_world(DataConfig(n_pairs=6, seed=0))
    r = coupling.routes(world, "ar")
    assert r == {"a2b": ("a2b", [1], [0]), "b2a": ("b2a", [1], [0])}
    r2 = coupling.routes(make_world(DataConfig(n_pairs=6, entity_tokens=2)), "mdm")
    assert r2 == {"infill": ("infill", [0, 1], [3, 4]), "b2a": ("b2a", [3, 4], [0, 1])}


def test_route_scores_average_the_slot_pairs_for_multi_token_entities():
    model, world = _setup(entity_tokens=2)
    scores = coupling.route_scores(model, world, "mdm")["b2a"]["scores"]
    p = world.probe("b2a")
    for n in range(len(p)):
        expected = np.mean([_hand_score(model, p.tokens[n], 0, 1, q, k) for q, k in ((3, 0), (4, 1))])
        assert float(scores[0, 0, 1, n]) == pytest.approx(expected, abs=1e-5)


def test_route_corr_is_the_pearson_correlation_across_facts():
    model, world = _setup()
    scores = coupling.route_scores(model, world, "mdm")
    corr = coupling.route_corr(scores)
    assert corr.shape == (2, 1, 2)
    x, y = scores["infill"]["scores"][1, 0, 0].double(), scores["b2a"]["scores"][1, 0, 0].double()
    assert float(corr[1, 0, 0]) == pytest.approx(float(np.corrcoef(x.numpy(), y.numpy())[0, 1]), abs=1e-5)
    # no positions: the two routes' scores are identical, so they correlate perfectly
    model, world = _setup(positional="none")
    assert torch.allclose(coupling.route_corr(coupling.route_scores(model, world, "mdm")), torch.ones(()))


@pytest.mark.parametrize("positional", ["rope", "alibi", "none"])
def test_token_weights_sum_to_one_and_bag_logits_equal_the_models(positional):
    model, world = _setup(positional=positional)
    weights = coupling.token_weights(model, world)
    assert set(weights) == {"infill", "b2a"}
    for probe, qpos in (("infill", 0), ("b2a", 2)):
        w = weights[probe]
        assert w.shape == (2, 1, 2, len(world.one_way), 3)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        bag = coupling.bag_logits(model, world, w[:, 0])
        with torch.no_grad():
            logits = model(world.probe(probe).tokens)[:, :, qpos]  # (K, N, V)
        torch.testing.assert_close(bag, logits, rtol=1e-5, atol=1e-5)
    # the weights are read in the order [M], is, b: for b2a ("b is [M]") position 2 comes first
    with torch.no_grad():
        patterns = model(world.probe("b2a").tokens, internals=True)[1]["patterns"][0]  # (K, N, H, T, T)
    torch.testing.assert_close(weights["b2a"][:, 0, :, :, 0], patterns[:, :, :, 2, 2].transpose(1, 2))
    torch.testing.assert_close(weights["b2a"][:, 0, :, :, 2], patterns[:, :, :, 2, 0].transpose(1, 2))


@pytest.mark.parametrize("extra", [dict(mlp="gelu"), dict(norm="rmsnorm"), dict(n_layers=2), dict(positional="absolute"),
                                   dict(untie_values=True)])
def test_bag_logits_refuse_models_where_positions_matter(extra):
    model, world = _setup(**extra)
    w = torch.full((2, 2, len(world.one_way), 3), 1 / 3)
    with pytest.raises(ValueError, match="bag_logits"):
        coupling.bag_logits(model, world, w)


def test_token_weights_and_bag_logits_need_one_token_entities():
    model, world = _setup(entity_tokens=2)
    with pytest.raises(ValueError, match="one-token"):
        coupling.token_weights(model, world)
    with pytest.raises(ValueError):
        coupling.bag_logits(model, world, torch.full((2, 2, 6, 3), 1 / 3))


def test_position_logits_is_the_additive_position_part():
    model, world = _setup(positional="absolute")
    for probe, qpos in (("infill", 0), ("b2a", 2)):
        p = world.probe(probe)
        with torch.no_grad():
            logits, rec = model(p.tokens, internals=True)
            alpha = rec["patterns"][0][:, :, :, qpos, :]  # (K, N, H, T)
            W = ov_map(model)  # (K, H, d, d)
            E = model.embed[:, p.tokens]  # (K, N, T, d): token parts only
            token_part = E[:, :, qpos] + torch.einsum("knht,khfd,kntd->knf", alpha, W, E)
            expected = logits[:, :, qpos] - token_part @ model.unembed
        torch.testing.assert_close(coupling.position_logits(model, world, probe), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        coupling.position_logits(*_setup(positional="rope"), "b2a")


@pytest.mark.parametrize("k_tokens", [1, 2])
def test_fact_evidence_is_u_a_W_E_b_by_hand(k_tokens):
    model, world = _setup(entity_tokens=k_tokens, n_heads=2)
    ev = coupling.fact_evidence(model, world)
    idx = world.one_way
    W = ov_map(model).detach().double()  # (K, H, d, d): the book's W per head
    E, U = model.embed.detach().double(), model.unembed.detach().double()  # U: (K, d, V), u_v = U[:, :, v]
    N = len(idx)
    for k in range(2):
        by_hand = torch.zeros(N, N, dtype=torch.float64)  # [source i, answer n]
        a2b = torch.zeros(N, dtype=torch.float64)
        for i, n in itertools.product(range(N), range(N)):
            a, b = world.a[idx[n]], world.b[idx[i]]
            by_hand[i, n] = sum(U[k, :, ta] @ (W[k, h] @ E[k, tb]) for h in range(2) for ta in a for tb in b) / k_tokens**2
        for n in range(N):
            a, b = world.a[idx[n]], world.b[idx[n]]
            a2b[n] = sum(U[k, :, tb] @ (W[k, h] @ E[k, ta]) for h in range(2) for ta in a for tb in b) / k_tokens**2
        torch.testing.assert_close(ev["b2a"][k].double(), by_hand.diagonal(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ev["a2b"][k].double(), a2b, rtol=1e-4, atol=1e-5)
        baseline = (by_hand.sum(0) - by_hand.diagonal()) / (N - 1)
        torch.testing.assert_close(ev["baseline"][k].double(), baseline, rtol=1e-4, atol=1e-5)


def test_stored_evidence_per_head():
    model, world = _setup(n_heads=2)
    a, b = world.a[:, 0], world.b[:, 0]
    per_head = coupling.stored_evidence(model, a, b)
    assert per_head.shape == (2, 2, 6)
    W, E, U = ov_map(model).detach(), model.embed.detach(), model.unembed.detach()
    torch.testing.assert_close(per_head[1, 0, 3], U[1, :, a[3]] @ W[1, 0] @ E[1, b[3]])


@pytest.mark.parametrize("fn", [
    lambda m, w: coupling.route_scores(m, w, "mdm"), lambda m, w: coupling.fact_evidence(m, w),
    lambda m, w: coupling.direct_logit_attribution(m, w, "mdm"), lambda m, w: coupling.token_weights(m, w),
    lambda m, w: coupling.measure_coupling(m, w, "mdm"),
])
def test_fewer_than_three_one_way_facts_are_refused(fn):
    exp = preset("mdm", n_pairs=4, reversed_fraction=0.5, d_model=8)
    world = make_world(exp.data)
    assert len(world.one_way) == 2
    with pytest.raises(ConfigError, match="at least 3 one-way facts"):
        fn(build_model(exp, (0,)), world)


@pytest.mark.parametrize("objective,positional,n_layers,k", [
    ("mdm", "rope", 1, 1), ("ar", "rope", 2, 1), ("mdm", "absolute", 2, 2), ("suffix", "alibi", 3, 2),
    ("ar", "none", 1, 2),
])
def test_dla_is_an_exact_decomposition_of_the_answer_logit(objective, positional, n_layers, k):
    """Without norms: sum of layers' DLA + the embedding's direct term = logit(answer) - mean logit."""
    model, world = _setup(objective, positional, n_layers=n_layers, entity_tokens=k)
    dla = coupling.direct_logit_attribution(model, world, objective)
    assert dla.shape == (2, n_layers)
    p = world.probe("b2a")
    reads = read_positions(objective, p.slots)
    with torch.no_grad():
        logits, rec = model(p.full if objective == "ar" else p.tokens, internals=True)
        lg = logits[:, :, reads]  # (K, N, k, V)
        answer = lg.gather(-1, p.answers.expand(2, *p.answers.shape)[..., None])[..., 0]
        target = (answer - lg.mean(-1)).mean(dim=(1, 2))  # (K,)
        U = model.unembed
        direction = U[:, :, p.answers] - U.mean(-1)[:, :, None, None]  # (K, d, N, k)
        embed_term = torch.einsum("knjd,kdnj->kn", rec["resid_pre"][0][:, :, reads], direction).mean(-1) / len(reads)
    torch.testing.assert_close(dla.sum(1) + embed_term, target, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("objective", ["mdm", "ar"])
def test_dla_with_a_final_norm_decomposes_the_normalised_stream(norm, objective):
    """With a final norm the DLA reads each output through the norm's linear part (its scale taken
    from the actual stream): attention + MLP + embedding terms + the norm's bias = the logit gap."""
    model, world = _setup(objective, "rope", n_layers=2, mlp="gelu", norm=norm)
    with torch.no_grad():  # make the final gain and bias non-trivial
        model.norm_f.weight.mul_(torch.linspace(0.5, 1.5, 8))
        if model.norm_f.bias is not None:
            model.norm_f.bias.add_(0.1)
    dla = coupling.direct_logit_attribution(model, world, objective)
    p = world.probe("b2a")
    reads = read_positions(objective, p.slots)
    with torch.no_grad():
        logits, rec = model(p.full if objective == "ar" else p.tokens, internals=True)
        lg = logits[:, :, reads]
        answer = lg.gather(-1, p.answers.expand(2, *p.answers.shape)[..., None])[..., 0]
        target = (answer - lg.mean(-1)).mean(dim=(1, 2))
        U = model.unembed
        direction = U[:, :, p.answers] - U.mean(-1)[:, :, None, None]
        stream = rec["resid_final"][:, :, reads]
        if norm == "layernorm":
            scale = (stream.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        else:
            scale = (stream.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps).sqrt()
        gain = model.norm_f.weight[:, None, None, :]

        def term(x):
            if norm == "layernorm":
                x = x - x.mean(-1, keepdim=True)
            return torch.einsum("knjd,kdnj->kn", x / scale * gain, direction).mean(-1) / len(reads)

        rest = term(rec["resid_pre"][0][:, :, reads]) + sum(term(m[:, :, reads]) for m in rec["mlp_out"])
        if model.norm_f.bias is not None:
            rest = rest + torch.einsum("kd,kdnj->kn", model.norm_f.bias, direction).mean(-1) / len(reads)
        manual = torch.stack([term(a[:, :, reads]) for a in rec["attn_out"]], 1)
    torch.testing.assert_close(dla, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dla.sum(1) + rest, target, rtol=1e-4, atol=1e-4)


def test_dla_refuses_a_probe_the_objective_cannot_answer():
    model, world = _setup("ar", "rope")
    with pytest.raises(ValueError, match="does not answer"):
        coupling.direct_logit_attribution(model, world, "ar", probe="infill")


def test_dla_of_a_blank_that_attends_fully_to_b_is_the_evidence_minus_the_mean_logit_part():
    """One layer, one head, no positions, built so that the b2a blank attends only to b: then its
    attention output is W E[b] and the DLA is u_a^T W E[b] - u_mean^T W E[b], averaged over facts."""
    model, world = _setup(positional="none", n_heads=1)
    b_tokens = world.alphabets[1]
    with torch.no_grad():
        model.embed[:, :, :2] = 0.0  # coordinate 0 marks b tokens, coordinate 1 the mask
        model.embed[:, b_tokens, 0] = 1.0
        model.embed[:, 0, 1] = 1.0
        attn = model.blocks[0].attn
        attn.W_Q.zero_()
        attn.W_K.zero_()
        attn.W_Q[:, 1, 0] = 100.0  # the query of [M] is 100 e_0 ...
        attn.W_K[:, 0, 0] = 1.0  # ... and only b tokens have a key along e_0
    p = world.probe("b2a")
    with torch.no_grad():
        alpha = model(p.tokens, internals=True)[1]["patterns"][0][:, :, 0, 2]  # (K, N, T): the blank's weights
    assert (alpha[..., 0] > 1 - 1e-6).all()  # the blank attends to b alone
    dla = coupling.direct_logit_attribution(model, world, "mdm")[:, 0]  # (K,)
    ev = coupling.fact_evidence(model, world)["b2a"]  # (K, N)
    with torch.no_grad():
        W, U = ov_map(model)[:, 0], model.unembed  # (K, d, d), (K, d, V)
        WEb = torch.einsum("kfd,knd->knf", W, model.embed[:, world.b[world.one_way, 0]])  # (K, N, d)
        mean_part = torch.einsum("knf,kf->kn", WEb, U.mean(-1))
    torch.testing.assert_close(dla, (ev - mean_part).mean(1), rtol=1e-5, atol=1e-5)


def test_measure_coupling_and_coupling_history(monkeypatch):
    model, world = _setup(n_heads=2)
    out = coupling.measure_coupling(model, world, "mdm")
    assert {"corr", "corr_heads", "weight_infill", "weight_b2a", "evidence", "evidence_a2b", "evidence_baseline",
            "dla"} == set(out)
    assert out["corr"].shape == (2,) and out["corr_heads"].shape == (2, 1, 2) and out["dla"].shape == (2, 1)
    assert out["corr"] == pytest.approx(out["corr_heads"][:, 0].mean(-1))
    exp = tiny(steps=8, eval_every=4, n_pairs=8)
    state = torch.get_rng_state()
    run, hist = coupling.coupling_history(exp, seeds=(0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert hist["step"].tolist() == [0, 4, 8] and hist["corr"].shape == (3, 2) and hist["corr_heads"].shape == (3, 2, 1, 1)
    final = coupling.measure_coupling(run.model, run.world, "mdm")
    for key in final:
        np.testing.assert_allclose(hist[key][-1], final[key], rtol=1e-5, atol=1e-6)
    from revlib import training

    def retrain(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train", retrain)
    again, hist2 = coupling.coupling_history(exp, seeds=(0, 1))
    assert again.cached and np.array_equal(hist2["corr"], hist["corr"])
