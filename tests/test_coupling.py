"""revlib.coupling: scores, weights and stored evidence read off the model, checked by hand."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from revlib import ModelConfig, Transformer, coupling, preset, theory, train
from revlib.cli import main
from revlib.data import IS, MASK
from revlib.model import alibi_slopes


def _model(world, attention="bidirectional", positional="rope", seeds=(0, 1), **cfg):
    fields = dict(n_layers=1, n_heads=2, d_model=16)
    fields.update(cfg)
    model = Transformer(ModelConfig(attention=attention, positional=positional, **fields), world.vocab_size, seeds)
    with torch.no_grad():  # move away from the initialisation so nothing holds by symmetry of the init
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def _hand_scores(model, q_tokens, k_tokens, q_pos, k_pos):
    """Per member, head, fact: (W_Q x_q)^T R_(k-q) (W_K x_k) / sqrt(e) (+ ALiBi), from the weights."""
    cfg, layer = model.cfg, model.layers[0]
    e = cfg.d_head
    xq, xk = model.embed[:, q_tokens], model.embed[:, k_tokens]  # (K, N, d)
    if cfg.positional == "absolute":
        xq, xk = xq + model.pos[:, q_pos][:, None], xk + model.pos[:, k_pos][:, None]
    q = torch.einsum("knd,khde->khne", xq, layer["W_Q"]).double()
    k = torch.einsum("knd,khde->khne", xk, layer["W_K"]).double()
    if cfg.positional == "rope":
        k = k @ theory.rope_matrix(e, k_pos - q_pos, cfg.rope_base).T  # R_(j-i) k, as rows
    s = (q * k).sum(-1) / math.sqrt(e)  # (K, H, N)
    if cfg.positional == "alibi":
        s = s - alibi_slopes(cfg.n_heads)[None, :, None].double() * abs(k_pos - q_pos)
    return s.float()


@pytest.mark.parametrize("positional", ["rope", "absolute", "alibi", "none"])
def test_mdm_route_scores_equal_q_R_k_by_hand(tiny_world, positional):
    model = _model(tiny_world, positional=positional, max_len=3)
    routes = coupling.route_scores(model, tiny_world)
    assert list(routes) == ["infill", "b2a"]
    n = len(tiny_world.b)
    m = torch.full((n,), MASK)
    hand_infill = _hand_scores(model, m, tiny_world.b, 0, 2)  # "[M] is b": [M] at 0 looks at b at 2
    hand_b2a = _hand_scores(model, m, tiny_world.b, 2, 0)  # "b is [M]": [M] at 2 looks at b at 0
    assert routes["infill"]["scores"].shape == (2, 1, 2, n)  # (K, L, H, N)
    torch.testing.assert_close(routes["infill"]["scores"][:, 0], hand_infill, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(routes["b2a"]["scores"][:, 0], hand_b2a, atol=1e-5, rtol=1e-5)
    if positional in ("alibi", "none"):  # equal scores: the coupling is perfect
        torch.testing.assert_close(hand_infill, hand_b2a)
        assert torch.allclose(coupling.route_corr(routes), torch.ones(2, 1, 2))
    else:
        assert not torch.allclose(hand_infill, hand_b2a, atol=1e-3)


def test_ar_routes_read_the_position_before_the_blank(tiny_world):
    model = _model(tiny_world, attention="causal")
    routes = coupling.route_scores(model, tiny_world)
    assert list(routes) == ["a2b", "b2a"]
    n = len(tiny_world.b)
    is_ = torch.full((n,), IS)
    torch.testing.assert_close(routes["a2b"]["scores"][:, 0], _hand_scores(model, is_, tiny_world.a, 1, 0),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(routes["b2a"]["scores"][:, 0], _hand_scores(model, is_, tiny_world.b, 1, 0),
                               atol=1e-5, rtol=1e-5)
    # the causal query at 1 sees two keys: 0 and itself
    w = routes["b2a"]["weights"]
    self_score = _hand_scores(model, is_, is_, 1, 1)
    torch.testing.assert_close(w[:, 0], torch.sigmoid(routes["b2a"]["scores"][:, 0] - self_score), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        coupling.token_weights(model, tiny_world)


def test_weights_are_the_softmax_and_corr_is_pearson(tiny_world):
    model = _model(tiny_world)
    routes = coupling.route_scores(model, tiny_world)
    w = coupling.token_weights(model, tiny_world)
    torch.testing.assert_close(w["infill"][..., 2], routes["infill"]["weights"])  # the b column
    torch.testing.assert_close(w["b2a"][..., 2], routes["b2a"]["weights"])
    torch.testing.assert_close(w["b2a"].sum(-1), torch.ones_like(w["b2a"][..., 0]))
    corr = coupling.route_corr(routes)
    x, y = routes["infill"]["scores"], routes["b2a"]["scores"]
    for k in range(2):
        for h in range(2):
            assert float(corr[k, 0, h]) == pytest.approx(np.corrcoef(x[k, 0, h], y[k, 0, h])[0, 1], abs=1e-5)


def test_bag_of_tokens_gives_the_models_logits(tiny_world):
    # Position-free values: the [M] output is a function of the bag and the weights only.
    model = _model(tiny_world)
    w = coupling.token_weights(model, tiny_world)
    for probe, slot in (("infill", 0), ("b2a", 2)):
        with torch.no_grad():
            logits = model(tiny_world.probe(probe).tokens)[:, :, slot]
        torch.testing.assert_close(coupling.bag_logits(model, tiny_world, w[probe][:, 0]), logits,
                                   atol=1e-4, rtol=1e-4)
    for bad in (_model(tiny_world, positional="absolute", max_len=3), _model(tiny_world, mlp=True),
                _model(tiny_world, attention="causal")):
        with pytest.raises(ValueError):
            coupling.bag_logits(bad, tiny_world, w["b2a"][:, 0])


def test_evidence_is_a_direct_logit_difference(tiny_world):
    # With W_Q = 0 and no positions, [M] attends 1/3 to each token. Then the logit of a_i at the
    # blank of "[M] is b_i" minus that of "[M] is [M]" is exactly (ev(a_i <- b_i) - ev(a_i <- [M])) / 3.
    model = _model(tiny_world, positional="none")
    with torch.no_grad():
        model.layers[0]["W_Q"].zero_()
        with_b = model(tiny_world.probe("infill").tokens)[:, :, 0]  # (K, N, V)
        blank = tiny_world.probe("infill").tokens.clone()
        blank[:, 2] = MASK
        without_b = model(blank)[:, :, 0]
    a = tiny_world.a
    idx = torch.arange(len(a))
    direct = (with_b - without_b)[:, idx, a]  # (K, N)
    ev_b = coupling.stored_evidence(model, a, tiny_world.b).sum(1)  # (K, N), summed over heads
    ev_m = coupling.stored_evidence(model, a, torch.full_like(a, MASK)).sum(1)
    torch.testing.assert_close(direct, (ev_b - ev_m) / 3, atol=1e-4, rtol=1e-4)
    assert coupling.fact_evidence(model, tiny_world)["b2a"].abs().mean() > 0.1  # not trivially zero


def test_evidence_decomposes_the_logit_of_a_trained_direction(tiny_world):
    # One layer, attention only: logit_a at the blank = u_a.E[M] + Σ_h Σ_j α_hj ev_h(a <- x_j).
    model = _model(tiny_world)
    tokens = tiny_world.probe("b2a").tokens  # "b is [M]"
    with torch.no_grad():
        logits, internals = model(tokens, return_internals=True)
    alpha = internals["patterns"][0][:, :, :, 2, :]  # (K, N, H, 3)
    a = tiny_world.a
    total = (model.embed[:, tokens[:, 2]] * model.unembed[:, :, a].transpose(1, 2)).sum(-1)  # u_a . E[M]
    for j in range(3):
        ev = coupling.stored_evidence(model, a, tokens[:, j])  # (K, H, N)
        total = total + (alpha[..., j].transpose(1, 2) * ev).sum(1)
    torch.testing.assert_close(logits[:, torch.arange(len(a)), 2, a], total.detach(), atol=1e-4, rtol=1e-4)


def test_evidence_baseline_is_the_off_diagonal_mean(tiny_world):
    model = _model(tiny_world)
    ev = coupling.fact_evidence(model, tiny_world)
    a, b = tiny_world.a, tiny_world.b
    n = len(a)
    full = torch.stack([coupling.stored_evidence(model, a, b.roll(s)).sum(1) for s in range(n)])  # (n, K, N)
    torch.testing.assert_close(ev["b2a"], full[0])
    torch.testing.assert_close(ev["baseline"], full[1:].mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ev["a2b"], coupling.stored_evidence(model, b, a).sum(1))


def test_position_logits_are_what_the_positions_add(tiny_world):
    model = _model(tiny_world, positional="absolute", max_len=3)
    with torch.no_grad():  # uniform attention, so zeroing the positions leaves the weights alone
        model.layers[0]["W_Q"].zero_()
        with_pos = {p: model(tiny_world.probe(p).tokens)[:, :, s] for p, s in (("infill", 0), ("b2a", 2))}
        parts = {p: coupling.position_logits(model, tiny_world, p) for p in with_pos}
        model.pos.zero_()
        for p, s in (("infill", 0), ("b2a", 2)):
            torch.testing.assert_close(with_pos[p] - model(tiny_world.probe(p).tokens)[:, :, s], parts[p],
                                       atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        coupling.position_logits(_model(tiny_world), tiny_world, "b2a")


def test_init_correlation_matches_the_theory(tiny_world):
    # Across facts the [M] query is one fixed vector: the correlation is the fixed-query value,
    # whose mean over initialisations is the closed form.
    from revlib import DataConfig, make_world

    world = make_world(DataConfig(n_pairs=128))
    model = Transformer(ModelConfig(d_model=32), world.vocab_size, seeds=range(48))
    corr = coupling.measure_coupling(model, world)["corr"]
    q = torch.einsum("kd,kde->ke", model.embed[:, MASK], model.layers[0]["W_Q"][:, 0])
    predicted = theory.rope_corr_fixed_query(q).numpy()
    assert np.corrcoef(corr, predicted)[0, 1] > 0.7
    assert abs(corr.mean() - theory.rope_corr(32)) < 3 * corr.std() / math.sqrt(len(corr))


def test_history_is_measured_along_an_unchanged_run():
    exp = preset("mdm", n_pairs=16, d_model=16, steps=20, eval_every=5)
    run, hist = coupling.coupling_history(exp, seeds=(0, 1))
    assert list(hist["step"]) == list(run.history["step"]) == [0, 5, 10, 15, 20]
    assert hist["corr"].shape == hist["evidence"].shape == (5, 2)
    assert hist["corr_heads"].shape == (5, 2, 1, 1)
    final = coupling.measure_coupling(run.model, run.world)
    for key in ("corr", "evidence", "weight_b2a"):
        np.testing.assert_allclose(hist[key][-1], final[key], rtol=1e-6)
    plain = train(exp, seeds=(0, 1), progress=False)  # measuring changed nothing
    for name, p in plain.model.state_dict().items():
        torch.testing.assert_close(run.model.state_dict()[name], p, rtol=0, atol=0)
    assert hist["evidence"][-1].mean() > hist["evidence"][0].mean()  # training stores evidence


# ---- the command line ------------------------------------------------------------------------

BAD = {
    "odd_head_size": ["coupling", "--d-model", "7"],
    "heads_do_not_divide": ["coupling", "--heads", "3"],
    "negative_base": ["coupling", "--base", "-5"],
    "nan_base": ["coupling", "--base", "nan"],
    "too_few_samples": ["coupling", "--samples", "2"],
    "too_many_samples": ["coupling", "--samples", "1000000000"],
    "fractional_offset": ["coupling", "--offset", "1.5"],
    "unknown_positional": ["coupling", "--positional", "sinusoidal"],
    "trained_odd_d_model": ["coupling", "--trained", "--d-model", "31"],
    "trained_zero_pairs": ["coupling", "--trained", "--pairs", "0"],
    "trained_unknown_model": ["coupling", "--trained", "--model", "gpt"],
    "unknown_flag": ["coupling", "--frobnicate"],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_cli_bad_arguments_exit_2_with_one_line(name, capsys):
    assert main(BAD[name]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("revlib: error: ") and "Traceback" not in err


def test_cli_closed_form_json(capsys):
    assert main(["coupling", "--d-model", "16", "--offset", "3", "--samples", "20000", "--seed", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analytic"] == pytest.approx(theory.rope_corr(16, 3))
    assert abs(result["monte_carlo"] - result["analytic"]) < 4 * result["stderr"]


def test_cli_trained_json(capsys):
    args = ["coupling", "--trained", "--model", "ar", "--pairs", "16", "--d-model", "16", "--steps", "30", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("corr_init", "corr_final", "evidence_init", "evidence_final"):
        assert math.isfinite(result[key])
    assert result["routes"] == ["a2b", "b2a"] and result["probes"]["infill"] is None
    assert 0.0 <= result["probes"]["b2a"]["acc"] <= 1.0


def test_cli_is_a_real_process(cli_env):
    # the process contract once (a process costs a torch import, ~4 s): status 2, one line, no traceback
    p = subprocess.run([sys.executable, "-m", "revlib", "coupling", "--d-model", "7", "--json"],
                       capture_output=True, text=True, env=cli_env, timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("revlib: error: ")


def test_cached_history_is_stored_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path))
    exp = preset("ar", n_pairs=8, d_model=8, steps=10, eval_every=5)
    first = coupling.cached_coupling_history(exp, seeds=(0,))
    assert len(list(tmp_path.glob("*.coupling.pt"))) == 1
    monkeypatch.setattr(coupling, "coupling_history", lambda *a, **k: pytest.fail("retrained"))
    second = coupling.cached_coupling_history(exp, seeds=(0,))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
