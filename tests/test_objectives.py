"""revlib.objectives: the masking process, the MDM and ARM losses and who may use which."""
from __future__ import annotations

import math

import pytest
import torch

from revlib.data import MASK
from revlib.objectives import ar_loss, mask_tokens, mdm_loss

V = 13


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _text(K: int, B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Tokens drawn from the entity range (never 0), so a 0 after masking is always [M]."""
    return torch.randint(3, V, (K, B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t_min", [0.05, 0.3])
def test_mask_fraction_follows_t(t_min):
    K, B, T = 2, 2000, 100
    tokens = _text(K, B, T)
    masked, is_masked, t = mask_tokens(tokens, t_min, _gens(0, 1))
    assert masked.shape == is_masked.shape == (K, B, T) and t.shape == (K, B)
    assert is_masked.dtype == torch.bool
    assert (t >= t_min).all() and (t < 1).all()
    frac = is_masked.float().mean(dim=-1)  # (K, B): the share of each sequence that is masked
    # per sequence, the masked share is a Binomial(T, t) / T around its own t
    sd = torch.sqrt(t * (1 - t) / T)
    assert ((frac - t).abs() <= 5 * sd + 1e-6).all()
    assert torch.corrcoef(torch.stack([frac.flatten(), t.flatten()]))[0, 1] > 0.95
    # t ~ U(t_min, 1): the mean masked share is (1 + t_min) / 2 within a few standard errors
    stderr = frac.std() / math.sqrt(frac.numel())
    assert abs(frac.mean().item() - (1 + t_min) / 2) < 4 * stderr.item()
    # and t spans its range rather than sitting at one value
    assert t.min().item() < t_min + 0.01 and t.max().item() > 0.99


def test_mask_t_is_uniform_over_its_range():
    t_min = 0.05
    _, _, t = mask_tokens(_text(1, 20_000, 1), t_min, _gens(3))
    u = (t.flatten() - t_min) / (1 - t_min)  # should be U(0, 1)
    counts = torch.histc(u, bins=10, min=0.0, max=1.0)
    expected = u.numel() / 10
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 30  # 9 degrees of freedom: p < 0.001 beyond ~27.9


def test_masked_slots_hold_mask_token_and_the_rest_is_unchanged():
    tokens = _text(3, 500, 3)
    masked, is_masked, _ = mask_tokens(tokens, 0.05, _gens(0, 1, 2))
    assert (masked[is_masked] == MASK).all()
    assert torch.equal(masked[~is_masked], tokens[~is_masked])
    assert torch.equal(masked == MASK, is_masked)  # no other slot became [M]
    assert 0 < is_masked.sum() < is_masked.numel()
    assert torch.equal(tokens, _text(3, 500, 3))  # the input is not modified in place


def test_masks_are_deterministic_given_generator_seeds():
    tokens = _text(2, 64, 3)
    a = mask_tokens(tokens, 0.05, _gens(4, 9))
    b = mask_tokens(tokens, 0.05, _gens(4, 9))
    c = mask_tokens(tokens, 0.05, _gens(4, 10))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert torch.equal(a[1][0], c[1][0]) and torch.equal(a[2][0], c[2][0])  # member 0: same seed
    assert not torch.equal(a[1][1], c[1][1])  # member 1: another seed, another mask


def test_each_member_masks_with_its_own_generator():
    """Member k's masks depend only on its own generator: the same alone or in an ensemble."""
    tokens = _text(1, 64, 3)
    _, alone, t_alone = mask_tokens(tokens, 0.05, _gens(5))
    _, together, t_together = mask_tokens(tokens.expand(3, 64, 3), 0.05, _gens(3, 5, 7))
    assert torch.equal(together[1], alone[0]) and torch.equal(t_together[1], t_alone[0])
    assert not torch.equal(together[0], together[1])


def test_ar_loss_refuses_a_bidirectional_model(make_model):
    model = make_model("bidirectional", "rope", vocab=V)
    with pytest.raises(ValueError, match="causal"):
        ar_loss(model, _text(1, 4, 3)[0])


def test_mdm_loss_refuses_a_causal_model(make_model):
    model = make_model("causal", "rope", vocab=V)
    with pytest.raises(ValueError, match="bidirectional"):
        mdm_loss(model, _text(1, 4, 3)[0], _gens(0))


@pytest.mark.parametrize("positional", ["rope", "absolute", "alibi", "none"])
def test_mdm_loss_is_finite_positive_and_per_member(make_model, positional):
    model = make_model("bidirectional", positional, vocab=V, seeds=(0, 1, 2))
    loss = mdm_loss(model, _text(1, 32, 3)[0], _gens(0, 1, 2), t_min=0.05)
    assert loss.shape == (3,)
    assert torch.isfinite(loss).all() and (loss > 0).all()
    loss.sum().backward()
    assert model.embed.grad is not None and torch.isfinite(model.embed.grad).all()


def test_mdm_loss_is_deterministic_given_generators(make_model):
    model = make_model("bidirectional", "rope", vocab=V, seeds=(0, 1))
    tokens = _text(1, 32, 3)[0]
    with torch.no_grad():
        a = mdm_loss(model, tokens, _gens(0, 1))
        b = mdm_loss(model, tokens, _gens(0, 1))
        c = mdm_loss(model, tokens, _gens(2, 3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _uniform(model):
    """Zero the unembedding: every logit is 0, the model predicts the uniform distribution."""
    with torch.no_grad():
        model.unembed.zero_()
    return model


def test_mdm_loss_of_a_uniform_model_is_log_v(make_model):
    """With the 1/t weight, E_t[(1/t) * #masked * log V] / T = log V: the loss is an NLL bound."""
    model = _uniform(make_model("bidirectional", "rope", vocab=V, seeds=(0, 1)))
    with torch.no_grad():
        loss = mdm_loss(model, _text(1, 20_000, 3)[0], _gens(0, 1), t_min=0.05)
    torch.testing.assert_close(loss, torch.full((2,), math.log(V)), rtol=0.03, atol=0)


def test_ar_loss_of_a_uniform_model_is_log_v(make_model):
    model = _uniform(make_model("causal", "rope", vocab=V, seeds=(0, 1)))
    with torch.no_grad():
        loss = ar_loss(model, _text(1, 8, 3)[0])
    torch.testing.assert_close(loss, torch.full((2,), math.log(V)))


def test_ar_loss_scores_next_tokens_only(make_model):
    """A model that puts all its mass on token i+1 at position i has (near) zero ARM loss."""
    model = make_model("causal", "none", vocab=V, n_heads=1, d_model=V)
    tokens = torch.tensor([[3, 4, 5], [6, 7, 8], [9, 10, 11]])  # every token has one successor
    lookup = torch.zeros(V, V)
    for x0, x1, x2 in tokens.tolist():
        lookup[x0, x1] = lookup[x1, x2] = 1
    with torch.no_grad():
        model.embed.copy_(torch.eye(V)[None])  # E = I: the residual at position i is e_(x_i) ...
        model.layers[0]["W_O"].zero_()  # ... plus nothing from attention
        model.unembed.copy_(50 * lookup[None])  # logits_i = 50 * [next token of x_i]
        loss = ar_loss(model, tokens)
        # the same model scored against the *current* token would be badly wrong
        assert model(tokens)[0, :, :2].argmax(-1).ne(tokens[:, :2]).all()
    assert loss.shape == (1,) and loss.item() < 1e-6


def test_mdm_loss_unembedding_only_masked_slots_equals_the_plain_formula():
    """mdm_loss unembeds only masked slots; it must equal the loss over all slots, masked-weighted."""
    import revlib
    import torch.nn.functional as F
    from revlib.objectives import mask_tokens, mdm_loss

    exp = revlib.preset("mdm", n_pairs=24, d_model=16)
    world = revlib.make_world(exp.data)
    model = revlib.Transformer(exp.model, world.vocab_size, (0, 1, 2))
    tokens = world.train_tokens.expand(3, -1, -1)
    fast = mdm_loss(model, tokens, [torch.Generator().manual_seed(s) for s in (5, 6, 7)], 0.05)
    masked, is_masked, t = mask_tokens(tokens, 0.05, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    logits = model(masked)
    ce = F.cross_entropy(logits.flatten(0, 2), tokens.flatten(), reduction="none").view(tokens.shape)
    plain = (ce * is_masked / t[:, :, None]).sum(dim=(1, 2)) / (tokens.shape[1] * tokens.shape[2])
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-6)
