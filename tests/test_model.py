"""revlib.model: the causal mask, attention internals, the two attention paths, RoPE against an
independent rotation matrix, ALiBi, the ensemble axis, token checks and the OV map."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from revlib import ModelConfig, Transformer, build_model, preset
from revlib.model import alibi_slopes, attention_bias, ov_map, rope_frequencies
from revlib.theory import rope_matrix

POSITIONALS = ("rope", "absolute", "alibi", "none")
BLOCKS = [(mlp, norm) for mlp in ("none", "gelu", "swiglu") for norm in ("none", "layernorm", "rmsnorm")]
B, T, V = 4, 6, 13


def _tokens(seed: int = 0, shape=(B, T)) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def _change(tokens: torch.Tensor, position: int) -> torch.Tensor:
    """A copy with every sequence's token at ``position`` replaced by a different token."""
    out = tokens.clone()
    out[:, position] = (out[:, position] + 1 + torch.arange(len(out)) % (V - 1)) % V
    assert (out[:, position] != tokens[:, position]).all()
    return out


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("mlp,norm", BLOCKS)
def test_causal_logits_never_see_later_tokens(make_model, positional, mlp, norm):
    model = make_model("causal", positional, vocab=V, n_layers=2, mlp=mlp, norm=norm, seeds=(0, 1))
    tokens = _tokens()
    with torch.no_grad():
        base = model(tokens)  # (K, B, T, V)
        for p in range(1, T):
            changed = model(_change(tokens, p))
            torch.testing.assert_close(changed[:, :, :p], base[:, :, :p], rtol=0, atol=1e-6)
            assert (changed[:, :, p:] - base[:, :, p:]).abs().max() > 1e-4  # the change does arrive


def test_causal_mask_with_untied_values(make_model):
    model = make_model("causal", "rope", vocab=V, untie_values=True, seeds=(0, 1))
    tokens = _tokens()
    with torch.no_grad():
        base, changed = model(tokens), model(_change(tokens, 3))
    torch.testing.assert_close(changed[:, :, :3], base[:, :, :3], rtol=0, atol=1e-6)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("mlp,norm", [("none", "none"), ("swiglu", "rmsnorm")])
def test_bidirectional_logits_see_every_token(make_model, positional, mlp, norm):
    model = make_model("bidirectional", positional, vocab=V, mlp=mlp, norm=norm)
    tokens = _tokens()
    with torch.no_grad():
        base = model(tokens)
        for p in range(T):
            changed = model(_change(tokens, p))
            others = [i for i in range(T) if i != p]
            assert ((changed - base)[:, :, others].abs().amax(dim=(0, 1, 3)) > 1e-5).all(), p


@pytest.mark.parametrize("mlp,norm", [("none", "none"), ("gelu", "layernorm"), ("swiglu", "rmsnorm")])
def test_internals_shapes_per_layer(make_model, mlp, norm):
    L, H, d, K = 3, 2, 16, 2
    model = make_model("causal", "rope", vocab=V, n_layers=L, mlp=mlp, norm=norm, seeds=(0, 1))
    tokens = _tokens()
    logits, rec = model(tokens, internals=True)
    assert logits.shape == (K, B, T, V)
    expected_keys = {"scores", "patterns", "resid_pre", "attn_out", "resid_final", "residual"}
    if mlp != "none":
        expected_keys.add("mlp_out")
    assert set(rec) == expected_keys
    for key in ("scores", "patterns"):
        assert len(rec[key]) == L and all(x.shape == (K, B, H, T, T) for x in rec[key])
    for key in ("resid_pre", "attn_out") + (("mlp_out",) if mlp != "none" else ()):
        assert len(rec[key]) == L and all(x.shape == (K, B, T, d) for x in rec[key])
    assert rec["resid_final"].shape == rec["residual"].shape == (K, B, T, d)
    # the records are consistent with each other
    for layer in range(L):
        torch.testing.assert_close(rec["patterns"][layer], rec["scores"][layer].softmax(-1))
        assert torch.allclose(rec["patterns"][layer].sum(-1), torch.ones(()))
        after = rec["resid_pre"][layer] + rec["attn_out"][layer] + (rec["mlp_out"][layer] if mlp != "none" else 0)
        nxt = rec["resid_pre"][layer + 1] if layer + 1 < L else rec["resid_final"]
        torch.testing.assert_close(after, nxt)
    assert (rec["patterns"][0][..., 0, 1:] == 0).all()  # causal: position 0 sees only itself
    torch.testing.assert_close(model.unembed_logits(rec["residual"]), logits)
    if norm == "none":
        assert torch.equal(rec["residual"], rec["resid_final"])
    else:
        assert not torch.allclose(rec["residual"], rec["resid_final"])


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("mlp,norm", [("none", "none"), ("gelu", "layernorm"), ("swiglu", "rmsnorm")])
def test_fused_and_explicit_attention_agree(make_model, positional, attention, mlp, norm):
    model = make_model(attention, positional, vocab=V, n_layers=2, mlp=mlp, norm=norm, seeds=(0, 1, 2))
    tokens = _tokens(1)
    with torch.no_grad():
        fused = model(tokens, fused=True)
        explicit = model(tokens, fused=False)
        internal, _ = model(tokens, internals=True)
    scale = max(1.0, float(fused.abs().max()))
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5 * scale)
    assert torch.equal(internal, explicit)  # internals use the explicit path


def test_fused_and_explicit_agree_with_per_member_tokens_and_untied_values(make_model):
    model = make_model("bidirectional", "rope", vocab=V, untie_values=True, seeds=(0, 1))
    tokens = _tokens(2, shape=(2, B, T))  # (K, B, T): each member its own batch
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, fused=False), model(tokens, fused=True), rtol=0, atol=1e-5)
        # member k's output on its own tokens is its output on those tokens alone
        for k in range(2):
            torch.testing.assert_close(model(tokens)[k], model.member(k)(tokens[k])[0], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# RoPE and ALiBi
# ---------------------------------------------------------------------------------------------

def _hand_rotation(e: int, offset: int, base: float) -> torch.Tensor:
    """R_offset built from scratch: plane j rotates coordinates (j, j + e/2) by offset * base^(-2j/e)."""
    R = torch.zeros(e, e, dtype=torch.float64)
    half = e // 2
    for j in range(half):
        angle = offset * base ** (-2 * j / e)
        c, s = math.cos(angle), math.sin(angle)
        R[j, j], R[j, j + half], R[j + half, j], R[j + half, j + half] = c, -s, s, c
    return R


@pytest.mark.parametrize("e,offset,base", [(4, 1, 10_000.0), (8, -3, 10_000.0), (16, 5, 100.0), (2, 2, 1.0)])
def test_rope_matrix_is_the_hand_built_rotation(e, offset, base):
    R = rope_matrix(e, offset, base)
    torch.testing.assert_close(R, _hand_rotation(e, offset, base), rtol=0, atol=1e-12)
    torch.testing.assert_close(R.T @ R, torch.eye(e, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(rope_matrix(e, 2, base) @ rope_matrix(e, 3, base), rope_matrix(e, 5, base))


@pytest.mark.parametrize("n_heads,d_model", [(1, 8), (2, 16), (4, 16)])
def test_rope_scores_are_q_R_k_and_depend_only_on_the_offset(make_model, n_heads, d_model):
    model = make_model("bidirectional", "rope", vocab=V, n_heads=n_heads, d_model=d_model, seeds=(0, 1))
    tokens = _tokens(3)
    with torch.no_grad():
        _, rec = model(tokens, internals=True)
    scores = rec["scores"][0]  # (K, B, H, T, T)
    attn, e = model.blocks[0].attn, d_model // n_heads
    for k, b, h in itertools.product(range(2), range(B), range(n_heads)):
        x = model.embed[k, tokens[b]].detach().double()  # (T, d)
        q = x @ attn.W_Q[k, :, h * e:(h + 1) * e].detach().double()  # (T, e): unrotated
        key = x @ attn.W_K[k, :, h * e:(h + 1) * e].detach().double()
        for i, j in itertools.product(range(T), range(T)):
            expected = q[i] @ rope_matrix(e, j - i, model.cfg.rope_base) @ key[j] / math.sqrt(e)
            assert abs(float(scores[k, b, h, i, j]) - float(expected)) < 1e-5, (k, b, h, i, j)
    # the same two tokens at shifted positions give the same score
    same = torch.full((1, T), 5)
    same[0, ::2] = 7
    s = model(same, internals=True)[1]["scores"][0][0, 0].detach()  # (H, T, T)
    for i, j in itertools.product(range(T - 2), range(T - 2)):
        torch.testing.assert_close(s[:, i, j], s[:, i + 2, j + 2], rtol=0, atol=1e-5)


def test_rope_frequencies():
    torch.testing.assert_close(rope_frequencies(8, 10_000.0),
                               torch.tensor([10_000.0 ** (-2 * j / 8) for j in range(4)], dtype=torch.float64))


def test_alibi_slopes():
    assert alibi_slopes(1).tolist() == [0.5]  # one head: 1/2, not 2^-8
    assert alibi_slopes(2).tolist() == [0.5, 0.25]
    assert alibi_slopes(8).tolist() == [2.0 ** -h for h in range(1, 9)]
    torch.testing.assert_close(alibi_slopes(16), torch.tensor([2.0 ** (-h / 2) for h in range(1, 17)]))


def test_alibi_bias_in_the_scores(make_model):
    model = make_model("bidirectional", "alibi", vocab=V, n_heads=1, d_model=8)
    same = torch.full((1, T), 4)  # every query and key identical: the scores differ by the bias only
    s = model(same, internals=True)[1]["scores"][0][0, 0, 0].detach()  # (T, T)
    for i, j in itertools.product(range(T), range(T)):
        assert float(s[i, j] - s[i, i]) == pytest.approx(-0.5 * abs(j - i), abs=1e-5)
    cfg = ModelConfig(attention="causal", positional="alibi", n_heads=2, d_model=8)
    bias = attention_bias(cfg, 4)
    assert bias.shape == (2, 4, 4) and bias[1, 3, 0] == -0.25 * 3 and bias[0, 0, 1] == float("-inf")
    assert attention_bias(ModelConfig(attention="bidirectional", positional="rope"), 4) is None


@pytest.mark.parametrize("positional,invariant", [("alibi", True), ("none", True), ("rope", False), ("absolute", False)])
def test_one_layer_reversal_invariance(positional, invariant):
    cfg = ModelConfig(attention="bidirectional", positional=positional, n_heads=2, d_model=16)
    model = Transformer(cfg, V, seeds=(0, 1), max_len=3)
    x = _tokens(4, shape=(8, 3))
    with torch.no_grad():
        forward, backward = model(x), model(x.flip(-1))
    err = (forward - backward.flip(-2)).abs().max()
    if invariant:
        assert err < 1e-5
    else:
        assert err > 1e-2


# ---------------------------------------------------------------------------------------------
# the ensemble axis
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("mlp,norm,untie", [("none", "none", False), ("gelu", "layernorm", True), ("swiglu", "rmsnorm", False)])
def test_ensemble_member_equals_a_solo_model_of_its_seed(positional, mlp, norm, untie):
    cfg = ModelConfig(attention="causal", positional=positional, mlp=mlp, norm=norm, untie_values=untie,
                      n_layers=2, n_heads=2, d_model=16)
    ensemble = Transformer(cfg, V, seeds=(3, 5, 7), max_len=T)
    tokens = _tokens()
    with torch.no_grad():
        out = ensemble(tokens)
        for k, seed in enumerate((3, 5, 7)):
            solo = Transformer(cfg, V, seeds=(seed,), max_len=T)
            for (name, p), (_, q) in zip(ensemble.named_parameters(), solo.named_parameters()):
                assert torch.equal(p[k], q[0]), name
            assert torch.equal(out[k], solo(tokens)[0])
    assert not torch.equal(out[0], out[1])


def test_member_and_select_copy(make_model):
    model = make_model("causal", "rope", vocab=V, seeds=(3, 5, 7))
    one = model.member(1)
    assert one.seeds == (5,) and one.n_members == 1
    picked = model.select([2, 0])
    assert picked.seeds == (7, 3)
    tokens = _tokens()
    with torch.no_grad():
        full = model(tokens)
        assert torch.equal(one(tokens)[0], full[1])
        assert torch.equal(picked(tokens), full[[2, 0]])
        one.embed.add_(1.0)  # the copy owns its weights
        picked.unembed.zero_()
    assert torch.equal(model(tokens), full)
    assert one.embed.data_ptr() != model.embed.data_ptr()


@pytest.mark.parametrize("bad", [
    torch.zeros(2, 3),  # float
    torch.zeros(2, 3, dtype=torch.int32),
    torch.zeros(3, dtype=torch.long),  # one dimension
    torch.zeros(1, 2, 3, 4, dtype=torch.long),
    torch.full((2, 3), -1),
    torch.full((2, 3), V),
    torch.zeros(2, 9, dtype=torch.long),  # longer than max_len = 8
    torch.zeros(3, 2, 3, dtype=torch.long),  # K = 3 for a model of 2 members
])
def test_bad_tokens_are_refused(make_model, bad):
    model = make_model("causal", "rope", vocab=V, seeds=(0, 1))
    with pytest.raises(ValueError):
        model(bad)
    with pytest.raises(ValueError):
        model.check_tokens(bad)


def test_ov_map_is_the_transpose_of_W_V_W_O_per_head(make_model):
    model = make_model("bidirectional", "rope", vocab=V, n_heads=4, d_model=16, seeds=(0, 1))
    attn, e = model.blocks[0].attn, 4
    W = ov_map(model)
    assert W.shape == (2, 4, 16, 16)
    for k, h in itertools.product(range(2), range(4)):
        expected = (attn.W_V[k][:, h * e:(h + 1) * e] @ attn.W_O[k][h * e:(h + 1) * e]).T
        torch.testing.assert_close(W[k, h], expected, rtol=0, atol=1e-6)
    # column convention: head h's value path adds W_h x for an input column x
    x = torch.randn(16, generator=torch.Generator().manual_seed(0))
    head = (x @ attn.W_V[0][:, :e]) @ attn.W_O[0][:e]
    torch.testing.assert_close(W[0, 0] @ x, head, rtol=0, atol=1e-5)


def test_ov_map_with_untied_values_is_position_zeros(make_model):
    model = make_model("bidirectional", "rope", vocab=V, n_heads=1, d_model=8, untie_values=True)
    attn = model.blocks[0].attn
    assert attn.W_V.shape == (1, 8, 8, 8)  # (K, T, d, e)
    assert not torch.equal(attn.W_V[0, 0], attn.W_V[0, 1])
    torch.testing.assert_close(ov_map(model)[0, 0], (attn.W_V[0, 0] @ attn.W_O[0]).T)


def test_build_model_sizes():
    exp = preset("mdm", n_pairs=8, d_model=8, entity_tokens=2, vocab_size=40)
    model = build_model(exp, seeds=(0, 1, 2))
    assert model.n_members == 3 and model.vocab_size == 40 and model.max_len == 5
    assert model.embed.shape == (3, 40, 8) and model.unembed.shape == (3, 8, 40)
    assert build_model(exp.replace(max_len=9), (0,)).max_len == 9
    assert build_model(exp, (0,), vocab_size=50).vocab_size == 50
