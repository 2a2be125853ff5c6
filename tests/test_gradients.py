"""revlib.gradients: per-fact gradients against an explicit loop over facts with plain autograd,
the OV product parametrisation and its chain rule back to the stored factors, the numerically
careful loss, block bookkeeping, and that measuring never changes the model."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from revlib import ConfigError, DataConfig, make_world, preset
from revlib import gradients as G
from revlib.model import build_model, ov_map
from revlib.objectives import read_positions


def _setup(objective="mdm", seeds=(0, 1), n_pairs=5, **kw):
    exp = preset("mdm", objective=objective, n_pairs=n_pairs, d_model=8, **kw)
    return build_model(exp, seeds), make_world(exp.data), exp


def _explicit_fact_gradients(model, probe, objective):
    """name -> (K, N, ...): for each fact alone, plain autograd on a float64 copy of the model."""
    m = copy.deepcopy(model).double()
    reads = read_positions(objective, probe.slots)
    tokens = probe.full if objective == "ar" else probe.tokens
    names = [n for n, _ in m.named_parameters()]
    out = {n: [] for n in names}
    for i in range(len(probe)):
        logits = m(tokens[i:i + 1])[:, 0, reads]  # (K, k, V)
        logp = logits.log_softmax(-1).gather(-1, probe.answers[i].expand(logits.shape[0], -1)[..., None])
        grads = torch.autograd.grad(-logp.sum(), list(m.parameters()), allow_unused=True)
        for n, p, g in zip(names, m.parameters(), grads):
            out[n].append(torch.zeros_like(p) if g is None else g)
    return {n: torch.stack(v, 1) for n, v in out.items()}


CASES = [
    ("mdm", {}), ("ar", {}), ("suffix", {"positional": "absolute"}),
    ("mdm", {"n_heads": 2, "untie_values": True}), ("ar", {"n_heads": 2, "untie_values": True}),
    ("mdm", {"n_heads": 2, "entity_tokens": 2, "mlp": "gelu", "norm": "layernorm", "n_layers": 2}),
    ("ar", {"n_heads": 4, "mlp": "swiglu", "norm": "rmsnorm", "n_layers": 2, "positional": "alibi"}),
]


@pytest.mark.parametrize("objective,extra", CASES)
def test_fact_gradients_equal_an_explicit_loop_over_facts(objective, extra):
    model, world, _ = _setup(objective, **extra)
    for name in ("b2a", "a2b") + (("infill",) if objective != "ar" else ()):
        probe = world.probe(name)
        got = G.fact_gradients(model, probe, objective)
        expected = _explicit_fact_gradients(model, probe, objective)
        # W_V and W_O here come through the product parametrisation and the chain rule
        assert set(expected) <= set(got)
        for n, g in expected.items():
            assert got[n].shape == g.shape, n
            torch.testing.assert_close(got[n], g, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name} {n}: {m}")


@pytest.mark.parametrize("n_heads,untie", [(1, False), (2, False), (4, False), (2, True)])
def test_the_product_parametrisation_computes_the_same_function(n_heads, untie):
    model, world, _ = _setup(n_heads=n_heads, untie_values=untie)
    params = G.parameters(model)
    product = G.to_product(params, n_heads)
    tokens = world.probe("b2a").tokens
    plain = G.Bound(model, params)(tokens)
    via_product = G.Bound(model, product)(tokens)
    torch.testing.assert_close(via_product, plain, rtol=1e-12, atol=1e-12)
    # and its W_V holds the per-head products M_h = W_V[h] W_O[h], the book's W transposed

    d = 8
    M = product["blocks.0.attn.W_V"]
    M0 = M[:, 0] if untie else M
    for h in range(n_heads):
        torch.testing.assert_close(M0[..., h * d:(h + 1) * d].float(), ov_map(model)[:, h].transpose(-1, -2),
                                   rtol=1e-5, atol=1e-6)
    assert torch.equal(product["blocks.0.attn.W_O"][0], torch.eye(d, dtype=torch.float64).repeat(n_heads, 1))


@pytest.mark.parametrize("n_heads,untie", [(1, False), (2, False), (2, True)])
def test_chain_rule_from_the_product_matches_direct_autograd_on_the_factors(n_heads, untie):
    model, world, _ = _setup(n_heads=n_heads, untie_values=untie)
    params = G.parameters(model)
    probe = world.probe("b2a")

    def loss(q):
        return G.probe_loss(model, q, probe, "mdm").sum()

    direct = torch.func.grad(loss)(params)  # autograd on W_V, W_O themselves
    via = G.probe_gradient(model, probe, "mdm", params)  # through M = W_V W_O
    for n in direct:
        torch.testing.assert_close(via[n], direct[n], rtol=1e-10, atol=1e-13, msg=lambda m: f"{n}: {m}")
    g_M = via["blocks.0.attn.W_OV"]
    lead = (2, 3) if untie else (2,)  # untied: one W_V per position of the 3-token sentence
    assert g_M.shape == (*lead, n_heads, 8, 8)
    # by hand: grad_W_V[h] = grad_M[h] W_O[h]^T and grad_W_O[h] = sum_positions W_V[h]^T grad_M[h]
    e = 8 // n_heads
    W_V, W_O = params["blocks.0.attn.W_V"], params["blocks.0.attn.W_O"]
    for h in range(n_heads):
        sl = slice(h * e, (h + 1) * e)
        W_O_h = W_O[:, sl, :]  # (K, e, d)
        if untie:
            W_O_h = W_O_h[:, None]  # shared by every position's W_V
        gv = g_M[..., h, :, :] @ W_O_h.transpose(-1, -2)  # (K, [T,] d, e)
        torch.testing.assert_close(gv, direct["blocks.0.attn.W_V"][..., sl], rtol=1e-10, atol=1e-13)
        go = W_V[..., sl].transpose(-1, -2) @ g_M[..., h, :, :]  # (K, [T,] e, d)
        if untie:
            go = go.sum(1)
        torch.testing.assert_close(go, direct["blocks.0.attn.W_O"][:, sl, :], rtol=1e-10, atol=1e-13)


def test_mean_of_fact_gradients_is_the_probe_gradient():
    model, world, _ = _setup(n_heads=2)
    probe = world.probe("infill")
    mean = G.mean_over_facts(G.fact_gradients(model, probe, "mdm"))
    full = G.probe_gradient(model, probe, "mdm")
    assert set(mean) == set(full)
    for n in full:
        torch.testing.assert_close(mean[n], full[n], rtol=1e-10, atol=1e-13)


def test_fact_gradients_restricted_to_blocks():
    model, world, _ = _setup()
    probe = world.probe("b2a")
    only = G.fact_gradients(model, probe, "mdm", blocks=("ov_product",))
    assert set(only) == {"blocks.0.attn.W_OV"}
    full = G.fact_gradients(model, probe, "mdm")
    torch.testing.assert_close(only["blocks.0.attn.W_OV"], full["blocks.0.attn.W_OV"])
    qk = G.fact_gradients(model, probe, "mdm", blocks=("qk",))
    assert set(qk) == {"blocks.0.attn.W_Q", "blocks.0.attn.W_K"}


def test_objective_gradient_in_float64_and_float32():
    """The training objective with a fixed mask draw differentiates in either precision."""
    model, world, exp = _setup(n_heads=2)
    for objective in ("mdm", "suffix", "ar"):
        tc = exp.train.__class__(objective=objective)
        g64 = G.objective_gradient(model, world, tc, mask_seed=3, params=G.parameters(model, torch.float64))
        g32 = G.objective_gradient(model, world, tc, mask_seed=3, params=G.parameters(model, torch.float32))
        for n in g64:
            assert g64[n].dtype == torch.float64 and g32[n].dtype == torch.float32
            torch.testing.assert_close(g32[n].double(), g64[n], rtol=1e-3, atol=1e-5)
        l1 = G.objective_loss(model, G.parameters(model), world, tc, mask_seed=3)
        l2 = G.objective_loss(model, G.parameters(model), world, tc, mask_seed=3)
        assert torch.equal(l1, l2)
        solo = G.objective_loss(model.member(1), G.parameters(model.member(1)), world, tc, mask_seed=3)
        assert torch.equal(l1[1], solo[0])  # a member measures the same alone


def test_answer_nll_equals_cross_entropy_and_keeps_tiny_gradients():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    answers = torch.tensor([0, 3, 6, 2, 2])
    torch.testing.assert_close(G.answer_nll(logits, answers), F.cross_entropy(logits, answers, reduction="none"))
    (grad,) = torch.autograd.grad(G.answer_nll(logits, answers).sum(), logits)
    torch.testing.assert_close(G.residual_delta(logits.detach(), answers), grad)
    torch.testing.assert_close(grad, logits.softmax(-1) - F.one_hot(answers, 7))
    # a confident float32 model: p_answer = 1 - 1e-9, which float32's softmax rounds to 1
    sure = torch.tensor([[30.0, 9.3, 0.0]], requires_grad=True)
    (g32,) = torch.autograd.grad(G.answer_nll(sure, torch.tensor([0])).sum(), sure)
    assert g32[0, 0] < 0 and (g32[0, 1:] > 0).all()  # signs survive
    exact = torch.tensor([[30.0, 9.3, 0.0]], dtype=torch.float64).softmax(-1) - torch.tensor([[1.0, 0, 0]])
    torch.testing.assert_close(g32.double(), exact, rtol=1e-4, atol=0)


def test_block_of_and_block_dots():
    assert G.block_of("embed") == "embed" and G.block_of("unembed") == "unembed" and G.block_of("pos") == "pos"
    assert G.block_of("blocks.1.attn.W_Q") == "qk" and G.block_of("blocks.1.attn.W_Q", by_layer=True) == "L1.qk"
    assert G.block_of("blocks.0.attn.W_OV") == "ov_product" and G.block_of("blocks.0.attn.W_O") == "ov"
    assert G.block_of("blocks.0.mlp.W_in") == "mlp" and G.block_of("blocks.0.norm2.weight") == "norm"
    assert G.block_of("norm_f.weight") == "norm"
    with pytest.raises(ValueError):
        G.block_of("blocks.0.other.x")
    g1 = {"embed": torch.ones(2, 3), "blocks.0.attn.W_Q": torch.ones(2, 2), "blocks.0.attn.W_OV": torch.ones(2, 4)}
    g2 = {"embed": 2 * torch.ones(2, 3), "blocks.0.attn.W_Q": -torch.ones(2, 2), "blocks.0.attn.W_OV": torch.ones(2, 4)}
    dots = G.block_dots(g1, g2)
    assert list(dots) == ["embed", "qk", "ov_product", "all"]
    assert dots["embed"].tolist() == [6.0, 6.0] and dots["qk"].tolist() == [-2.0, -2.0]
    assert dots["all"].tolist() == [4.0, 4.0]  # W_OV re-expresses W_V, W_O: not counted twice
    cos = G.cosines(g1, g2)
    assert cos["embed"].tolist() == pytest.approx([1.0, 1.0]) and cos["qk"].tolist() == pytest.approx([-1.0, -1.0])
    zero = G.cosines({"embed": torch.zeros(1, 3)}, {"embed": torch.ones(1, 3)})
    assert zero["embed"].tolist() == [0.0]
    cross = G.cross_dots({"embed": torch.arange(6.0).view(1, 2, 3)}, {"embed": torch.ones(1, 2, 3)})
    assert cross["embed"].tolist() == [[[3.0, 3.0], [12.0, 12.0]]]


def test_measuring_never_changes_the_model():
    model, world, exp = _setup(n_heads=2)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    G.fact_gradients(model, world.probe("b2a"), "mdm")
    G.probe_gradient(model, world.probe("infill"), "mdm")
    G.objective_gradient(model, world, exp.train)
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n
    assert all(p.grad is None for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_reads_of_refuses_what_an_ar_model_cannot_answer():
    world = make_world(DataConfig(n_pairs=4))
    with pytest.raises(ValueError, match="infill"):
        G.reads_of(world.probe("infill"), "ar")
    assert G.reads_of(world.probe("b2a"), "ar") == [1]
    assert torch.equal(G.inputs_of(world.probe("b2a"), "ar"), world.probe("b2a").full)
    G.check_facts(world)
    with pytest.raises(ConfigError, match="one-way facts"):
        G.check_facts(make_world(DataConfig(n_pairs=4, reversed_fraction=0.75)))
