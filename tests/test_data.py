"""revlib.data: the fact world. Probes ask about pairs whose reverse was never trained; their answers
are the pairs; the world is a pure function of its config and never touches the global RNG."""
from __future__ import annotations

import itertools

import pytest
import torch

from revlib import ConfigError, DataConfig, make_world
from revlib.data import IS, MASK, PROBES, REV, SPECIAL_NAMES

WORLDS = [  # (n_pairs, entity_tokens, reversed_fraction, hold_out, relations): all valid
    (n, k, rf, ho, rel)
    for n, k, rf, ho, rel in itertools.product([5, 16], [1, 2, 3], [0.0, 0.5], ["b2a", "random"], ["one", "inverse"])
    if not (rel == "inverse" and ho == "b2a" and rf == 0.0)
]


def _world(n, k, rf, ho, rel, seed=0, **kw):
    return make_world(DataConfig(n_pairs=n, entity_tokens=k, reversed_fraction=rf, hold_out=ho, relations=rel,
                                 seed=seed, **kw))


def _rows(t: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r) for r in t.tolist()}


@pytest.mark.parametrize("n,k,rf,ho,rel", WORLDS)
def test_probes_never_appear_in_the_training_text(n, k, rf, ho, rel):
    world = _world(n, k, rf, ho, rel)
    text = _rows(world.train_tokens)
    for name in ("b2a", "swap") if rel == "inverse" else ("b2a",):
        probe = world.probe(name)
        assert not (_rows(probe.full) & text), f"{name} sentence was trained"
        assert not (_rows(probe.tokens) & text)
    # the trained probes are trained: a2b's and infill's full sentences are training sentences
    for name in ("a2b", "infill"):
        assert _rows(world.probe(name).full) <= text


@pytest.mark.parametrize("n,k,rf,ho,rel", WORLDS)
def test_probe_answers_are_the_pairs(n, k, rf, ho, rel):
    world = _world(n, k, rf, ho, rel)
    one_way = (~world.reversed).nonzero().flatten()
    for name in world.probe_names:
        p = world.probe(name)
        assert torch.equal(p.pairs, one_way) and len(p) == len(one_way)
        for i, pair in enumerate(p.pairs.tolist()):
            a, b, fwd = world.a[pair], world.b[pair], bool(world.forward[pair])
            x, y = (a, b) if fwd else (b, a)  # the trained sentence is "x r y"
            expected = {"a2b": y, "infill": x, "b2a": x, "swap": x}[name]
            assert torch.equal(p.answers[i], expected), (name, pair)
            assert torch.equal(p.full[i, list(p.slots)], p.answers[i])
            assert (p.tokens[i, list(p.slots)] == MASK).all()
            others = [j for j in range(world.seq_len) if j not in p.slots]
            assert torch.equal(p.tokens[i, others], p.full[i, others])
            assert (p.full[i] != MASK).all()


def test_probe_sentences_in_the_default_world():
    world = make_world(DataConfig(n_pairs=6, seed=3))
    a, b = world.a[:, 0], world.b[:, 0]
    assert torch.equal(world.train_tokens, torch.stack([a, torch.full_like(a, IS), b], 1))
    assert torch.equal(world.probe("a2b").tokens, torch.stack([a, torch.full_like(a, IS), torch.zeros_like(a)], 1))
    assert torch.equal(world.probe("infill").tokens, torch.stack([torch.zeros_like(a), torch.full_like(a, IS), b], 1))
    assert torch.equal(world.probe("b2a").tokens, torch.stack([b, torch.full_like(a, IS), torch.zeros_like(a)], 1))
    assert world.probe("b2a").slots == (2,) and world.probe("infill").slots == (0,)
    assert world.probe_names == ("a2b", "infill", "b2a")


def test_inverse_relation_sentences():
    world = make_world(DataConfig(n_pairs=8, relations="inverse", reversed_fraction=0.5, seed=1))
    rev = world.reversed
    trained = _rows(world.train_tokens)
    for i in range(8):
        a, b = int(world.a[i, 0]), int(world.b[i, 0])
        assert (a, IS, b) in trained
        assert ((b, REV, a) in trained) == bool(rev[i])
        assert (b, IS, a) not in trained  # the false converse is never trained
    b2a, swap = world.probe("b2a"), world.probe("swap")
    assert (b2a.tokens[:, 1] == REV).all() and (swap.tokens[:, 1] == IS).all()
    assert world.probe_names == PROBES


def test_swap_only_exists_with_an_inverse_relation():
    with pytest.raises(ValueError, match="swap"):
        make_world(DataConfig(n_pairs=8)).probe("swap")
    assert "swap" not in make_world(DataConfig(n_pairs=8, hold_out="random")).probe_names
    assert "swap" in make_world(DataConfig(n_pairs=8, hold_out="random", relations="inverse")).probe_names
    with pytest.raises(ValueError, match="unknown probe"):
        make_world(DataConfig(n_pairs=8)).probe("a2a")


@pytest.mark.parametrize("relations", ["one", "inverse"])
def test_hold_out_random_a2b_is_the_trained_direction_and_b2a_its_converse(relations):
    world = make_world(DataConfig(n_pairs=32, hold_out="random", relations=relations, seed=2))
    fwd = world.forward
    assert 0 < int(fwd.sum()) < 32  # both directions occur
    text = _rows(world.train_tokens)
    a2b, b2a = world.probe("a2b"), world.probe("b2a")
    for i, pair in enumerate(a2b.pairs.tolist()):
        a, b = int(world.a[pair, 0]), int(world.b[pair, 0])
        trained_relation = IS if fwd[pair] or relations == "one" else REV
        trained = (a, IS, b) if fwd[pair] else (b, trained_relation, a)
        assert trained in text
        assert tuple(a2b.full[i].tolist()) == trained  # a2b: the trained sentence
        converse = (trained[2], IS if trained[1] == REV or relations == "one" else REV, trained[0])
        assert tuple(b2a.full[i].tolist()) == converse  # b2a: its converse
        assert converse not in text


@pytest.mark.parametrize("k", [1, 2, 3])
def test_entities_are_distinct_tuples_from_disjoint_alphabets(k):
    world = make_world(DataConfig(n_pairs=16, entity_tokens=k, seed=5))
    for side, alphabet in zip((world.a, world.b), world.alphabets):
        assert side.shape == (16, k)
        assert len(_rows(side)) == 16  # distinct entities
        assert set(side.flatten().tolist()) <= set(alphabet.tolist())
    a_set, b_set = set(world.alphabets[0].tolist()), set(world.alphabets[1].tolist())
    assert len(a_set) == len(b_set) == 16 and not (a_set & b_set)
    assert min(a_set | b_set) >= len(SPECIAL_NAMES)


def test_vocab_size_option():
    world = make_world(DataConfig(n_pairs=16, vocab_size=100, seed=0))
    assert world.vocab_size == 100
    used = set(world.alphabets[0].tolist()) | set(world.alphabets[1].tolist())
    assert len(used) == 32 and max(used) < 100 and min(used) >= 3
    assert max(used) > 35  # the alphabets are drawn from the whole vocabulary, not its start
    assert world.train_tokens.max() < 100
    assert world.token_name(int(world.alphabets[0][4])) == "a4"
    unused = next(t for t in range(3, 100) if t not in used)
    assert world.token_name(unused) == f"x{unused}"
    assert make_world(DataConfig(n_pairs=16)).vocab_size == 35


def test_world_is_deterministic_from_its_seed():
    cfg = DataConfig(n_pairs=16, entity_tokens=2, reversed_fraction=0.25, hold_out="random", seed=11)
    w1, w2 = make_world(cfg), make_world(cfg)
    for name in ("a", "b", "reversed", "forward", "train_tokens"):
        assert torch.equal(getattr(w1, name), getattr(w2, name)), name
    other = make_world(DataConfig(n_pairs=16, entity_tokens=2, reversed_fraction=0.25, hold_out="random", seed=12))
    assert not torch.equal(w1.a, other.a)


def test_world_never_touches_the_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    world = make_world(DataConfig(n_pairs=16, entity_tokens=2, reversed_fraction=0.5, hold_out="random", seed=4))
    for name in world.probe_names:
        world.probe(name)
    world.describe()
    assert torch.equal(torch.get_rng_state(), state)


def test_training_text_size_and_reversed_share():
    world = make_world(DataConfig(n_pairs=16, reversed_fraction=0.25, seed=0))
    assert int(world.reversed.sum()) == 4
    assert world.train_tokens.shape == (20, 3)  # 16 pairs one way + 4 the other way
    assert len(world.one_way) == 12
    text = _rows(world.train_tokens)
    for i in range(16):
        a, b = int(world.a[i, 0]), int(world.b[i, 0])
        assert ((b, IS, a) in text) == bool(world.reversed[i])


def test_world_properties_and_reading():
    world = make_world(DataConfig(n_pairs=8, entity_tokens=2, seed=0))
    assert (world.k, world.seq_len, world.vocab_size) == (2, 5, 19)
    assert world.spans == (range(0, 2), range(2, 3), range(3, 5))
    assert world.chance == pytest.approx(19.0 ** -2)
    assert world.decode([0, 1, 2]) == "[M] is rev"
    text = world.describe(n=2)
    assert "8 pairs" in text and "b2a" in text
    with pytest.raises(ConfigError):
        make_world({"n_pairs": 8})
