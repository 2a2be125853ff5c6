"""revlib.alignment: the factorised OV inner product against autograd (to 1e-9, at initialisation
and after training, masked and ar), the first-order test converging as the step shrinks, the
alignment summary, and that tracing alignment along training leaves the run bit for bit intact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from revlib import ConfigError, DataConfig, make_world, preset, train
from revlib import alignment as A
from revlib import gradients as G
from revlib.model import build_model

from conftest import assert_same_history, assert_same_weights, tiny


def _trained(objective="mdm", seeds=(0, 1), **kw):
    return train(tiny(objective=objective, n_pairs=8, steps=30, eval_every=10, **kw), seeds=seeds)


@pytest.mark.parametrize("objective,extra", [("mdm", {}), ("ar", {}), ("suffix", {"n_heads": 2}),
                                             ("mdm", {"positional": "alibi", "n_heads": 2}),
                                             ("ar", {"positional": "absolute", "n_heads": 4, "d_model": 16})])
def test_ov_identity_matches_autograd_at_init_and_after_training(objective, extra):
    run = _trained(objective, **extra)
    for model in (run.initial_model(), run.model):
        ov = A.ov_identity(model, run.world, objective)
        n = len(run.world.one_way)
        assert ov.factorised.shape == ov.autograd.shape == (2, n)
        assert (ov.relative_error < 1e-9).all(), ov.relative_error
        np.testing.assert_allclose(ov.factorised, ov.residual_factor * ov.mixture_factor)
        assert set(ov.attention) == {A.source_of(objective), "b2a"}
    # the check is not vacuous: the inner products are of order one and vary over facts
    assert np.abs(ov.autograd).max() > 1e-3 and np.ptp(ov.autograd) > 0


def test_ov_identity_factors_by_hand():
    model = build_model(preset("mdm", n_pairs=6, d_model=8), (0,))
    world = make_world(DataConfig(n_pairs=6))
    ov = A.ov_identity(model, world, "mdm")
    p_src, p_b2a = world.probe("infill"), world.probe("b2a")
    with torch.no_grad():
        E, U = model.embed[0].double(), model.unembed[0].double()
        for n in range(6):
            res, mix = [], []
            for p, read in ((p_src, 0), (p_b2a, 2)):
                logits, rec = model(p.tokens[n:n + 1], internals=True)
                prob = logits[0, 0, read].double().softmax(-1)
                delta = prob - torch.nn.functional.one_hot(p.answers[n, 0], prob.numel()).double()
                res.append(U @ delta)  # U^T (p - e_A) in the book's notation
                alpha = rec["patterns"][0][0, 0, 0, read].double()  # (T,)
                mix.append(alpha @ E[p.tokens[n]])
            assert ov.residual_factor[0, n] == pytest.approx(float(res[0] @ res[1]), rel=1e-5, abs=1e-9)
            assert ov.mixture_factor[0, n] == pytest.approx(float(mix[0] @ mix[1]), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("extra", [dict(mlp="gelu"), dict(norm="layernorm"), dict(norm="rmsnorm"), dict(n_layers=2),
                                   dict(entity_tokens=2), dict(untie_values=True)])
def test_ov_identity_refuses_models_it_does_not_hold_for(extra):
    exp = preset("mdm", n_pairs=6, d_model=8, **extra)
    model, world = build_model(exp, (0,)), make_world(exp.data)
    assert not A.identity_applies(model, world)
    with pytest.raises(ValueError, match="holds for one layer"):
        A.ov_identity(model, world, "mdm")
    assert "factors" not in A.alignment(model, world, "mdm")


@pytest.mark.parametrize("objective,step", [("mdm", None), ("ar", None), ("mdm", "a2b"), ("mdm", "objective"),
                                            ("ar", "objective")])
def test_first_order_converges_as_eta_shrinks(objective, step):
    run = _trained(objective)
    fo = A.first_order(run.initial_model(), run.world, objective, step=step, etas=[1e-1, 1e-2, 1e-3, 1e-4])
    assert fo.step == (step or A.source_of(objective))
    assert fo.eta.tolist() == [1e-4, 1e-3, 1e-2, 1e-1]  # sorted
    assert fo.measured.shape == fo.predicted.shape == (4, 2)
    err = fo.relative_error  # (n, K)
    assert (err[0] < 1e-2).all()  # the smallest step: the first-order prediction holds
    assert (np.diff(err, axis=0) > 0).all()  # and it improves as eta shrinks ...
    ratio = err[1:] / err[:-1]
    assert ((ratio > 3) & (ratio < 30)).all()  # ... linearly in eta (the error is O(eta^2))
    second = np.abs(fo.second_order - fo.measured) / np.abs(fo.predicted)
    assert (second < err).all()  # the curvature term accounts for most of the rest
    np.testing.assert_allclose(fo.predicted, -fo.eta[:, None] * fo.dot[None])


def test_first_order_refuses_bad_step_sizes():
    run = _trained()
    model = run.initial_model()
    with pytest.raises(ConfigError, match="at least one step size"):
        A.first_order(model, run.world, "mdm", etas=[])
    for bad in ([0.0], [-1e-3], [float("nan")], [float("inf")]):
        with pytest.raises(ConfigError, match="finite and positive"):
            A.first_order(model, run.world, "mdm", etas=bad)
    with pytest.raises(ConfigError, match="overflows"):
        A.first_order(model, run.world, "mdm", etas=[1e300])


def test_alignment_summary_is_consistent():
    run = _trained(n_heads=2)
    al = A.alignment(run.model, run.world, "mdm")
    assert set(al) == {"mean", "fact", "fact_positive", "objective", "dot", "dot_same", "dot_other", "factors"}
    blocks = set(al["mean"])
    assert {"embed", "qk", "ov", "ov_product", "unembed", "all"} == blocks
    for kind in ("mean", "fact", "objective"):
        for v in al[kind].values():
            assert v.shape == (2,) and (np.abs(v) <= 1 + 1e-6).all()
    for b in blocks:
        np.testing.assert_allclose(al["dot_same"][b] + al["dot_other"][b], al["dot"][b], rtol=1e-5, atol=1e-7)
        assert ((al["fact_positive"][b] >= 0) & (al["fact_positive"][b] <= 1)).all()
    # the mean cosine is the cosine of the averaged gradients, computed directly
    params = G.parameters(run.model)
    g1 = G.probe_gradient(run.model, run.world.probe("infill"), "mdm", params)
    g2 = G.probe_gradient(run.model, run.world.probe("b2a"), "mdm", params)
    cos = G.cosines(g1, g2)
    for b in blocks:
        np.testing.assert_allclose(al["mean"][b], cos[b].numpy(), rtol=1e-4, atol=1e-5)
    by_layer = A.alignment(run.model, run.world, "mdm", by_layer=True)
    assert "L0.qk" in by_layer["mean"] and list(by_layer["mean"])[-1] == "all"


def test_measuring_never_changes_the_model():
    run = _trained()
    model = run.model
    before = {n: t.clone() for n, t in model.state_dict().items()}
    state = torch.get_rng_state()
    A.alignment(model, run.world, "mdm")
    A.first_order(model, run.world, "mdm", etas=[1e-3])
    A.ov_identity(model, run.world, "mdm")
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("objective", ["mdm", "ar"])
def test_alignment_trace_run_equals_the_plain_run_bit_for_bit(objective):
    exp = tiny(objective=objective, n_pairs=8, steps=12, eval_every=4, batch_size=6)
    run, trace = A.alignment_trace(exp, seeds=(0, 1))
    plain = train(exp, seeds=(0, 1))
    assert_same_weights(run.model, plain.model)
    assert_same_history(run.history, plain.history)
    assert trace.steps.tolist() == [0, 4, 8, 12]
    assert trace["mean", "all"].shape == (4, 2)
    final = A.alignment(plain.model, plain.world, objective, train_config=exp.train)
    np.testing.assert_allclose(trace["mean", "ov"][-1], final["mean"]["ov"], rtol=1e-5, atol=1e-6)
    again, trace2 = A.alignment_trace(exp, seeds=(0, 1))  # cached
    assert again.cached and np.array_equal(trace2["fact", "qk"], trace["fact", "qk"])


def test_source_losses():
    assert A.source_of("mdm") == "infill" and A.source_of("ar") == "a2b" and A.source_of("suffix") == "a2b"
    with pytest.raises(ConfigError):
        A.alignment(*_facts_too_few(), "mdm")


def _facts_too_few():
    exp = preset("mdm", n_pairs=4, reversed_fraction=0.75, d_model=8)
    return build_model(exp, (0,)), make_world(exp.data)
