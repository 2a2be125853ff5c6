"""revlib.alignment: per-fact gradients, the factorised OV inner product, the first-order test, the CLI.

Everything here is checked against an independent computation: per-fact gradients against a
loop of ``torch.autograd.grad`` on the model itself, the factorised inner product against
autograd's, the first-order prediction against the measured change of the loss.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from revlib import DataConfig, ModelConfig, Transformer, make_world, preset, train
from revlib import alignment as al
from revlib.cli import main


def _model(attention="bidirectional", positional="rope", seeds=(0, 1), vocab=35, **overrides):
    fields = dict(n_layers=1, n_heads=1, d_model=8)
    fields.update(overrides)
    return Transformer(ModelConfig(attention=attention, positional=positional, **fields), vocab, seeds)


@pytest.fixture
def world():
    return make_world(DataConfig(n_pairs=16, seed=0))  # V = 35


def _trained(kind: str, steps: int = 40, **overrides):
    """A briefly trained two-member ensemble, so the checks do not only see initial weights."""
    fields = dict(n_pairs=16, d_model=8, steps=steps, lr=0.05, eval_every=steps)
    fields.update(overrides)
    return train(preset(kind, **fields), seeds=(0, 1), progress=False)


# --------------------------------------------------------------------------------------------
# per-fact gradients
# --------------------------------------------------------------------------------------------

def _loop_gradients(model: Transformer, p) -> dict[str, torch.Tensor]:
    """The explicit loop: for every member and fact, autograd on the model itself (float64)."""
    twin = copy.deepcopy(model).double()
    read_at = al.read_position(model, p)
    out = {n: torch.zeros(model.n_members, len(p.answers), *t.shape[1:], dtype=torch.float64)
           for n, t in twin.named_parameters()}
    names = [n for n, _ in twin.named_parameters()]
    for i in range(len(p.answers)):
        logits = twin(p.tokens[i : i + 1])[:, 0, read_at]  # (K, V): every member on fact i
        for k in range(model.n_members):
            loss = F.cross_entropy(logits[k : k + 1], p.answers[i : i + 1])
            grads = torch.autograd.grad(loss, list(twin.parameters()), retain_graph=True, allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    out[n][k, i] = g[k]
    return out


VARIANTS = [  # (attention, positional, overrides)
    ("bidirectional", "rope", {}),
    ("causal", "rope", {}),
    ("bidirectional", "absolute", {"n_heads": 2}),
    ("bidirectional", "alibi", {"mlp": True, "layernorm": True}),
    ("causal", "none", {"n_layers": 2, "n_heads": 2, "mlp": True}),
]


@pytest.mark.parametrize("attention,positional,overrides", VARIANTS)
def test_fact_gradients_match_an_explicit_loop(world, attention, positional, overrides):
    model = _model(attention, positional, vocab=world.vocab_size, **overrides)
    probe = al.probe(world, "b2a")
    fast = al.fact_gradients(model, probe)
    slow = _loop_gradients(model, probe)
    assert set(slow) <= set(fast)
    for name, expected in slow.items():
        assert fast[name].shape == expected.shape, name
        torch.testing.assert_close(fast[name], expected, rtol=1e-9, atol=1e-12, msg=name)


def test_product_gradient_maps_back_to_the_stored_factors(world):
    """W_OV is the gradient w.r.t. M = W_V W_O: the chain rule gives back both factors' gradients."""
    model = _model(n_heads=2, d_model=8, vocab=world.vocab_size)
    g = al.fact_gradients(model, al.probe(world, "infill"))
    W_V, W_O = (model.layers[0][n].detach().double().unsqueeze(1) for n in ("W_V", "W_O"))
    g_M = g["layers.0.W_OV"]
    assert g_M.shape == (2, 16, 2, 8, 8)  # (K, N, H, d, d)
    torch.testing.assert_close(g["layers.0.W_V"], g_M @ W_O.transpose(-1, -2))
    torch.testing.assert_close(g["layers.0.W_O"], W_V.transpose(-1, -2) @ g_M)


def test_restricting_blocks_gives_the_same_gradients(world):
    model = _model(vocab=world.vocab_size, n_heads=2, mlp=True)
    p = al.probe(world, "infill")
    full = al.fact_gradients(model, p)
    for blocks in [("ov_product",), ("ov",), ("qk", "mlp"), ("embed", "unembed")]:
        part = al.fact_gradients(model, p, blocks=blocks)
        assert part and {al.block_of(n) for n in part} == set(blocks)
        for name, g in part.items():
            torch.testing.assert_close(g, full[name], rtol=1e-12, atol=1e-14, msg=name)


def test_mean_of_fact_gradients_is_the_gradient_of_the_mean_loss(world):
    model = _model(vocab=world.vocab_size)
    p = al.probe(world, "infill")
    mean = al.mean_over_facts(al.fact_gradients(model, p))
    direct = al.probe_gradient(model, p)
    for name in direct:
        torch.testing.assert_close(mean[name], direct[name], rtol=1e-10, atol=1e-13, msg=name)


def test_measuring_leaves_the_model_alone(world):
    model = _model(vocab=world.vocab_size)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    al.alignment(model, world)
    al.first_order(model, world, etas=[0.1])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n


def test_members_are_measured_separately(world):
    """Member 1 of an ensemble measures exactly as the same seed alone."""
    both = al.alignment(_model(seeds=(0, 1), vocab=world.vocab_size), world, dtype=torch.float64)
    alone = al.alignment(_model(seeds=(1,), vocab=world.vocab_size), world, dtype=torch.float64)
    for kind in both:
        for block, values in both[kind].items():
            assert values.shape == (2,)
            np.testing.assert_allclose(values[1], alone[kind][block][0], rtol=1e-9, atol=1e-12)


def test_blocks_partition_the_parameters(world):
    model = _model(vocab=world.vocab_size, mlp=True, layernorm=True, positional="absolute")
    g = al.probe_gradient(model, al.probe(world, "b2a"))
    dots = al.block_dots(g, g)
    assert set(dots) == {"embed", "pos", "qk", "ov", "ov_product", "mlp", "ln", "unembed", "all"}
    parts = sum(v for b, v in dots.items() if b not in ("all", "ov_product"))
    torch.testing.assert_close(parts, dots["all"])
    with pytest.raises(ValueError):
        al.block_of("layers.0.W_X")


def test_cross_dots_diagonal_is_the_same_fact_inner_product(world):
    model = _model(vocab=world.vocab_size)
    g1 = al.fact_gradients(model, al.probe(world, "infill"))
    g2 = al.fact_gradients(model, al.probe(world, "b2a"))
    cross, same = al.cross_dots(g1, g2), al.block_dots(g1, g2, lead=2)
    for block in same:
        torch.testing.assert_close(torch.diagonal(cross[block], dim1=1, dim2=2), same[block])


def test_probes_pair_the_same_facts_when_some_are_trained_both_ways():
    world = make_world(DataConfig(n_pairs=16, both_fraction=0.25))
    src, b2a = al.probe(world, "infill"), al.probe(world, "b2a")
    assert len(src.answers) == len(b2a.answers) == 12
    assert torch.equal(src.answers, b2a.answers)  # fact i answers a_i in both probes
    assert torch.equal(src.tokens[:, 2], b2a.tokens[:, 0])  # ... and holds the same b_i


def test_arm_cannot_step_on_infill(world):
    with pytest.raises(ValueError, match="infill"):
        al.first_order(_model("causal", vocab=world.vocab_size), world, step="infill")


# --------------------------------------------------------------------------------------------
# the factorised OV inner product (chapter 3)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mdm", "ar"])
@pytest.mark.parametrize("positional,heads", [("rope", 1), ("rope", 2), ("alibi", 1), ("absolute", 2), ("none", 1)])
def test_identity_matches_autograd_at_initialisation(world, kind, positional, heads):
    attention = "causal" if kind == "ar" else "bidirectional"
    model = _model(attention, positional, vocab=world.vocab_size, n_heads=heads)
    ov = al.ov_identity(model, world)
    assert ov.factorised.shape == ov.autograd.shape == (2, 16)
    assert (ov.relative_error < 1e-5).all(), ov.relative_error
    assert np.abs(ov.autograd).min() > 0  # a comparison against zeros would prove nothing


@pytest.mark.parametrize("kind", ["mdm", "ar"])
def test_identity_matches_autograd_after_training(kind):
    run = _trained(kind)
    ov = al.ov_identity(run.model, run.world)
    assert (ov.relative_error < 1e-5).all(), ov.relative_error


def test_identity_is_a_real_check(world):
    """A wrong factor (the residual gradient without U) breaks the agreement."""
    model = _model(vocab=world.vocab_size)
    ov = al.ov_identity(model, world)
    wrong = ov.residual_factor * 1.01 * ov.mixture_factor
    assert (np.abs(wrong - ov.autograd) / np.abs(ov.autograd)).max() > 1e-3


@pytest.mark.parametrize("overrides", [{"mlp": True}, {"layernorm": True}, {"n_layers": 2}])
def test_identity_refuses_models_it_does_not_hold_for(world, overrides):
    with pytest.raises(ValueError, match="one layer"):
        al.ov_identity(_model(vocab=world.vocab_size, **overrides), world)


def test_mdm_factors_are_positive_at_initialisation():
    """Our formalisation's claim at a near-uniform start: both factors positive for every fact."""
    world = make_world(DataConfig(n_pairs=32))
    model = Transformer(ModelConfig(d_model=32), world.vocab_size, seeds=(0, 1, 2))
    ov = al.ov_identity(model, world)
    assert (ov.residual_factor > 0).all() and (ov.mixture_factor > 0).all()


# --------------------------------------------------------------------------------------------
# the first-order test
# --------------------------------------------------------------------------------------------

ETAS = [1e-1, 1e-2, 1e-3, 1e-4]


@pytest.mark.parametrize("kind,step", [("mdm", "infill"), ("mdm", "objective"), ("ar", "a2b"), ("ar", "objective")])
def test_first_order_prediction_converges_as_eta_shrinks(world, kind, step):
    attention = "causal" if kind == "ar" else "bidirectional"
    model = _model(attention, vocab=world.vocab_size, d_model=16)
    fo = al.first_order(model, world, step=step, etas=ETAS)
    assert list(fo.eta) == sorted(ETAS)  # ascending
    assert fo.predicted.shape == fo.measured.shape == (4, 2)
    err = fo.relative_error  # (n_eta, K), eta ascending
    assert (np.diff(err, axis=0) > 0).all(), err  # the error grows with eta ...
    assert (err[0] < 1e-2).all(), err  # ... and is small at the smallest step
    # second order: the error shrinks about in proportion to eta
    ratio = err[1:] / err[:-1]  # ten times the step, about ten times the error
    assert ((ratio > 3) & (ratio < 30)).all(), ratio


def test_objective_step_is_deterministic(world):
    model = _model(vocab=world.vocab_size)
    a = al.objective_gradient(model, world, mask_seed=3)
    b = al.objective_gradient(model, world, mask_seed=3)
    c = al.objective_gradient(model, world, mask_seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)  # the mask draw matters


# --------------------------------------------------------------------------------------------
# along training
# --------------------------------------------------------------------------------------------

def test_traced_training_is_the_plain_run():
    exp = preset("mdm", n_pairs=16, d_model=8, steps=20, lr=0.05, eval_every=10)
    run, trace = al.train_traced(exp, seeds=(0, 1))
    plain = train(exp, seeds=(0, 1), progress=False)
    for p1, p2 in zip(run.model.parameters(), plain.model.parameters()):
        assert torch.equal(p1, p2)  # the measurement hook did not change training
    assert list(trace.steps) == list(run.history["step"]) == [0, 10, 20]
    assert trace["fact", "all"].shape == (3, 2)
    assert set(trace.values) >= {"mean", "fact", "fact_positive", "objective", "dot", "dot_same", "dot_other", "factors"}
    for block in trace.values["dot"]:
        np.testing.assert_allclose(trace["dot_same", block] + trace["dot_other", block], trace["dot", block],
                                   rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------

BAD = {
    "unknown_model": ["align", "--model", "gpt"],
    "zero_pairs": ["align", "--pairs", "0"],
    "zero_eta": ["align", "--eta", "0"],
    "negative_eta": ["align", "--eta", "0.1", "-1"],
    "nan_eta": ["align", "--eta", "nan"],
    "arm_infill_step": ["align", "--model", "ar", "--step", "infill"],
    "nothing_to_reverse": ["align", "--both-fraction", "1"],
    "odd_d_model": ["align", "--d-model", "31"],
    "unknown_step": ["align", "--step", "b2a"],
    "unknown_flag": ["align", "--frobnicate"],
    "non_integer_seed": ["align", "--seed", "x"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_align_bad_input_is_one_line_and_status_2(capsys, case):
    code = main(BAD[case])
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("revlib: error:"), err
    assert "Traceback" not in err


def test_align_prints_one_json_object(capsys):
    code = main(["align", "--model", "mdm", "--pairs", "16", "--d-model", "8", "--steps", "30", "--seed", "2",
                 "--eta", "0.01", "0.001", "0.1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["model"] == "mdm" and result["seed"] == 2 and result["source"] == "infill"
    for key in ("cosine_init", "cosine_final"):
        assert {"ov", "all", "qk", "embed", "unembed", "ov_product"} <= set(result[key])
        assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in result[key].values())
    fo = result["first_order"]
    assert fo["eta"] == [0.001, 0.01, 0.1]  # ascending whatever the order given
    assert len(fo["predicted"]) == len(fo["measured"]) == 3
    assert 0 <= result["identity_error"] < 1e-5


def test_align_identity_error_is_null_where_the_identity_does_not_hold(capsys):
    code = main(["align", "--model", "ar", "--pairs", "8", "--d-model", "8", "--steps", "5", "--mlp", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["identity_error"] is None and result["source"] == "a2b"
    assert "mlp" in result["cosine_init"]
