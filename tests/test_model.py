"""revlib.model: the causal mask, attention internals, the ensemble axis and RoPE."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from revlib import ModelConfig, Transformer
from revlib.model import apply_rope, rope_angles

POSITIONALS = ("rope", "absolute", "alibi", "none")
VARIANTS = [  # (positional, mlp, layernorm): every encoding, with and without MLP / LayerNorm
    (pos, mlp, ln) for pos in POSITIONALS for mlp, ln in [(False, False), (True, True), (True, False), (False, True)]
]
B, T, V = 4, 6, 13


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _change(tokens: torch.Tensor, position: int) -> torch.Tensor:
    """A copy with every sequence's token at ``position`` replaced by a different token."""
    out = tokens.clone()
    out[:, position] = (out[:, position] + 1 + torch.arange(len(out)) % (V - 1)) % V
    assert (out[:, position] != tokens[:, position]).all()
    return out


@pytest.mark.parametrize("positional,mlp,layernorm", VARIANTS)
def test_causal_logits_never_see_later_tokens(make_model, positional, mlp, layernorm):
    model = make_model("causal", positional, vocab=V, n_layers=2, mlp=mlp, layernorm=layernorm, seeds=(0, 1))
    tokens = _tokens()
    with torch.no_grad():
        base = model(tokens)  # (K, B, T, V)
        for p in range(1, T):
            changed = model(_change(tokens, p))
            torch.testing.assert_close(changed[:, :, :p], base[:, :, :p], rtol=0, atol=1e-6)
            # the change is visible from position p on (the test would notice a dead model)
            assert (changed[:, :, p] - base[:, :, p]).abs().max() > 1e-4


@pytest.mark.parametrize("positional,mlp,layernorm", VARIANTS)
def test_bidirectional_logits_see_later_tokens(make_model, positional, mlp, layernorm):
    model = make_model("bidirectional", positional, vocab=V, n_layers=2, mlp=mlp, layernorm=layernorm)
    tokens = _tokens()
    with torch.no_grad():
        base = model(tokens)
        changed = model(_change(tokens, T - 1))
    # every earlier position of every sequence moves when the last token changes
    moved = (changed[:, :, : T - 1] - base[:, :, : T - 1]).abs().amax(dim=-1)  # (K, B, T-1)
    assert (moved > 1e-5).all()


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_internals_shapes_and_patterns(make_model, attention, positional):
    K, H, L = 3, 2, 2
    model = make_model(attention, positional, vocab=V, n_layers=L, n_heads=H, seeds=(0, 1, 2))
    with torch.no_grad():
        logits, internals = model(_tokens(), return_internals=True)
    assert logits.shape == (K, B, T, V)
    assert len(internals["scores"]) == L and len(internals["patterns"]) == L
    assert internals["residual"].shape == (K, B, T, model.cfg.d_model)
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    for scores, patterns in zip(internals["scores"], internals["patterns"]):
        assert scores.shape == (K, B, H, T, T)
        assert patterns.shape == (K, B, H, T, T)
        assert (patterns >= 0).all()
        torch.testing.assert_close(patterns.sum(dim=-1), torch.ones(K, B, H, T))
        if attention == "causal":
            assert (patterns[..., above] == 0).all()
            assert torch.isneginf(scores[..., above]).all()
            assert torch.isfinite(scores[..., ~above]).all()
        else:
            assert (patterns[..., above] > 0).all()
            assert torch.isfinite(scores).all()


def test_internals_residual_is_what_the_unembedding_reads(make_model):
    model = make_model("bidirectional", "rope", vocab=V, n_layers=2, mlp=True, layernorm=True, seeds=(0, 1))
    with torch.no_grad():
        logits, internals = model(_tokens(), return_internals=True)
        again = torch.einsum("kbtd,kdv->kbtv", internals["residual"], model.unembed)
    torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)


ENSEMBLE_CONFIGS = [
    dict(attention="bidirectional", positional="rope", n_layers=2, mlp=True, layernorm=True),
    dict(attention="causal", positional="absolute", n_layers=2, mlp=True, layernorm=False),
    dict(attention="causal", positional="alibi", n_layers=1, mlp=False, layernorm=True),
]


@pytest.mark.parametrize("fields", ENSEMBLE_CONFIGS)
def test_ensemble_member_equals_solo_model_of_its_seed(fields):
    cfg = ModelConfig(n_heads=2, d_model=16, max_len=T, **fields)
    ensemble = Transformer(cfg, V, seeds=(3, 5, 7))
    solo = Transformer(cfg, V, seeds=(5,))
    member = ensemble.member(1)
    assert member.n_members == 1 and member.seeds == (5,)
    solo_state, member_state = solo.state_dict(), member.state_dict()
    assert solo_state.keys() == member_state.keys()
    for name in solo_state:
        assert torch.equal(member_state[name], solo_state[name]), name
    tokens = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(member(tokens), solo(tokens), rtol=0, atol=1e-6)
        torch.testing.assert_close(ensemble(tokens)[1:2], solo(tokens), rtol=1e-5, atol=1e-5)
        # other members are other models: seed 3 is not seed 5
        assert not torch.allclose(ensemble(tokens)[0:1], solo(tokens), atol=1e-3)
    assert not torch.equal(ensemble.member(0).embed, solo.embed)


def test_member_is_a_copy_not_a_view():
    cfg = ModelConfig(d_model=8)
    ensemble = Transformer(cfg, V, seeds=(0, 1))
    member = ensemble.member(0)
    with torch.no_grad():
        member.embed.zero_()
    assert ensemble.embed[0].abs().sum() > 0


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_shared_and_per_member_token_shapes_agree(make_model, attention):
    K = 3
    model = make_model(attention, "rope", vocab=V, n_layers=2, mlp=True, seeds=(0, 1, 2))
    tokens = _tokens()
    with torch.no_grad():
        shared = model(tokens)  # (B, T): one batch for all members
        stacked = model(tokens.expand(K, B, T).clone())  # (K, B, T)
        torch.testing.assert_close(shared, stacked, rtol=0, atol=1e-6)
        # and with a different batch per member, member k sees its own batch
        per_member = torch.stack([_tokens(seed) for seed in range(K)])
        logits = model(per_member)
        for k in range(K):
            torch.testing.assert_close(logits[k : k + 1], model.member(k)(per_member[k]), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(logits[0], logits[1], atol=1e-3)


def test_bad_tokens_are_refused(make_model):
    model = make_model("bidirectional", "rope", vocab=V)
    with pytest.raises(ValueError):
        model(torch.full((2, 3), V))  # an id outside the vocabulary
    with pytest.raises(ValueError):
        model(torch.zeros(2, 3))  # float ids
    with pytest.raises(ValueError):
        model(torch.zeros(3, dtype=torch.long))  # no batch axis
    absolute = make_model("bidirectional", "absolute", vocab=V, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        absolute(torch.zeros(2, 4, dtype=torch.long))


# --- RoPE -----------------------------------------------------------------------------------

def _rope_model(**overrides) -> Transformer:
    fields = dict(n_heads=2, d_model=16, attention="bidirectional", positional="rope")
    fields.update(overrides)
    return Transformer(ModelConfig(**fields), V, seeds=(0, 1))


def test_rope_scores_depend_only_on_the_offset():
    model = _rope_model()
    layer = model.layers[0]
    L, s = 10, 3
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, L, 16, generator=gen)  # (K, B, T, d): arbitrary residual inputs
    shifted = torch.randn(2, 4, L, 16, generator=gen)
    shifted[:, :, s:] = x[:, :, : L - s]  # the same content, every position moved by s
    with torch.no_grad():
        scores = model.attention_scores(layer, x)
        scores_shifted = model.attention_scores(layer, shifted)
    torch.testing.assert_close(scores_shifted[..., s:, s:], scores[..., : L - s, : L - s], rtol=1e-4, atol=1e-4)


def test_rope_score_is_q_rotated_by_the_offset_against_k():
    """S_ij = q^T R_(j-i) k / sqrt(e) (chapter 2), and R_(+2) != R_(-2): the routes differ."""
    model = _rope_model(n_heads=1, d_model=8)
    layer = model.layers[0]
    gen = torch.Generator().manual_seed(1)
    u, v = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    q, k = u @ layer["W_Q"][0, 0].detach(), v @ layer["W_K"][0, 0].detach()  # member 0, head 0

    def expected(delta: int) -> float:
        rotated = apply_rope(k[None, :], rope_angles(8, torch.tensor([delta]), 1e4))[0]  # R_delta k
        return float(q @ rotated) / math.sqrt(8)

    for i, j in itertools.permutations(range(5), 2):
        x = torch.zeros(2, 1, 5, 8)
        x[:, 0, i], x[:, 0, j] = u, v
        with torch.no_grad():
            got = model.attention_scores(layer, x)[0, 0, 0, i, j].item()
        assert got == pytest.approx(expected(j - i), rel=1e-4, abs=1e-5), (i, j)
    # the infill and b2a routes (offset +2 and -2) are coupled but not equal under RoPE
    assert expected(2) != pytest.approx(expected(-2), rel=1e-3)


@pytest.mark.parametrize("positional", ["alibi", "none"])
def test_alibi_and_no_positions_score_both_routes_equally(positional):
    """Chapter 2: with ALiBi or no positions, S_infill = S_b2a exactly."""
    model = _rope_model(positional=positional)
    layer = model.layers[0]
    gen = torch.Generator().manual_seed(2)
    u, v, w = torch.randn(3, 16, generator=gen)
    infill = torch.stack([u, w, v])[None, None].expand(2, 1, 3, 16)  # "[M] r B": query 0, key 2
    b2a = torch.stack([v, w, u])[None, None].expand(2, 1, 3, 16)  # "B r [M]": query 2, key 0
    with torch.no_grad():
        s_infill = model.attention_scores(layer, infill)[..., 0, 2]
        s_b2a = model.attention_scores(layer, b2a)[..., 2, 0]
    torch.testing.assert_close(s_infill, s_b2a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d,corr", [(6, 0.443), (8, 0.567), (16, 0.695), (32, 0.729), (64, 0.748), (128, 0.759)])
def test_rope_route_correlation_matches_paper_table(d, corr):
    """Corr(S_infill, S_b2a) = tr(R_(+2) R_(-2)^T) / d, computed with revlib's own rotation."""
    eye = torch.eye(d)
    # apply_rope rotates each row: row i of the result is R_delta e_i, i.e. the matrix R_delta^T
    rot_plus = apply_rope(eye, rope_angles(d, torch.full((d,), 2), 1e4)).T
    rot_minus = apply_rope(eye, rope_angles(d, torch.full((d,), -2), 1e4)).T
    assert torch.trace(rot_plus @ rot_minus.T).item() / d == pytest.approx(corr, abs=5e-4)
    # and the rotation is orthogonal
    torch.testing.assert_close(rot_plus @ rot_plus.T, eye, rtol=0, atol=1e-5)
