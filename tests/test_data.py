"""revlib.data: the fact world, its one-direction training text and the three probes."""
from __future__ import annotations

import pytest
import torch

from revlib import ConfigError, DataConfig, make_world
from revlib.data import IS, MASK, PROBES, REV

N_SPECIAL = 3


def _rows(tokens: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(row) for row in tokens.tolist()}


@pytest.mark.parametrize("both_fraction", [0.0, 0.4])
def test_probes_never_appear_in_the_training_text(both_fraction):
    world = make_world(DataConfig(n_pairs=50, both_fraction=both_fraction, seed=1))
    text = _rows(world.train_tokens)
    assert MASK not in world.train_tokens  # the mask token is never training text
    b2a = world.probe("b2a")
    assert len(b2a.answers) > 0
    for (b, rel, _), a in zip(b2a.tokens.tolist(), b2a.answers.tolist()):
        assert (b, rel, a) not in text  # the filled-in reversal query was never trained ...
        assert (b, IS, a) not in text and (b, REV, a) not in text  # ... under either relation
    for name in PROBES:
        probe = world.probe(name)
        assert (probe.tokens[:, probe.position] == MASK).all()
        others = [p for p in range(3) if p != probe.position]
        assert (probe.tokens[:, others] != MASK).all()  # exactly one blank per query
    # the a2b probe, filled in, *is* training text: the facts the models learn
    a2b = world.probe("a2b")
    filled = a2b.tokens.clone()
    filled[:, a2b.position] = a2b.answers
    assert _rows(filled) <= text
    infill = world.probe("infill")
    filled = infill.tokens.clone()
    filled[:, infill.position] = infill.answers
    assert _rows(filled) <= text


def test_probe_answers_are_the_pairs():
    world = make_world(DataConfig(n_pairs=20, seed=2))
    a2b, infill, b2a = (world.probe(name) for name in PROBES)
    assert torch.equal(a2b.tokens[:, 0], world.a) and torch.equal(a2b.answers, world.b)
    assert (a2b.tokens[:, 1] == IS).all() and a2b.position == 2
    assert torch.equal(infill.tokens[:, 2], world.b) and torch.equal(infill.answers, world.a)
    assert (infill.tokens[:, 1] == IS).all() and infill.position == 0
    assert torch.equal(b2a.tokens[:, 0], world.b) and torch.equal(b2a.answers, world.a)
    assert (b2a.tokens[:, 1] == IS).all() and b2a.position == 2  # nothing reversed: relation "is"
    assert world.b2a_relation == IS
    with pytest.raises(ValueError, match="probe"):
        world.probe("b2b")


def test_both_fraction_splits_the_pairs():
    world = make_world(DataConfig(n_pairs=200, both_fraction=0.7, seed=0))
    assert world.both.dtype == torch.bool and int(world.both.sum()) == 140
    text = _rows(world.train_tokens)
    assert len(world.train_tokens) == 200 + 140
    for a, b, both in zip(world.a.tolist(), world.b.tolist(), world.both.tolist()):
        assert (a, IS, b) in text
        assert ((b, REV, a) in text) == both  # reversed text exactly for the "both" pairs
    b2a = world.probe("b2a")
    assert len(b2a.answers) == 60
    assert set(b2a.answers.tolist()) == set(world.a[~world.both].tolist())
    assert set(b2a.tokens[:, 0].tolist()) == set(world.b[~world.both].tolist())
    assert (b2a.tokens[:, 1] == REV).all() and world.b2a_relation == REV
    # a2b and infill still cover every pair
    assert len(world.probe("a2b").answers) == 200 and len(world.probe("infill").answers) == 200


def test_all_pairs_reversed_leaves_no_reversal_probe():
    world = make_world(DataConfig(n_pairs=10, both_fraction=1.0))
    assert bool(world.both.all()) and len(world.probe("b2a").answers) == 0


@pytest.mark.parametrize("vocab_size", [None, 500])
def test_entity_ids_unique_disjoint_and_in_range(vocab_size):
    world = make_world(DataConfig(n_pairs=64, vocab_size=vocab_size, seed=3))
    entities = torch.cat([world.a, world.b])
    assert len(set(entities.tolist())) == 128  # unique, and no a_i equals any b_j
    assert set(world.a.tolist()).isdisjoint(world.b.tolist())
    assert entities.min() >= N_SPECIAL and entities.max() < world.vocab_size
    assert world.train_tokens.min() >= 0 and world.train_tokens.max() < world.vocab_size


def test_default_vocabulary_is_exactly_the_tokens_used():
    world = make_world(DataConfig(n_pairs=16))
    assert world.vocab_size == 3 + 32 and world.chance == pytest.approx(1 / 35)
    assert sorted(torch.cat([world.a, world.b]).tolist()) == list(range(3, 35))


def test_vocab_size_option():
    worlds = [make_world(DataConfig(n_pairs=16, vocab_size=100, seed=s)) for s in range(5)]
    for world in worlds:
        assert world.vocab_size == 100 and world.chance == pytest.approx(0.01)
        assert torch.cat([world.a, world.b]).max() < 100
    # entities really are drawn from the wider vocabulary, not just its first 32 ids
    assert max(int(torch.cat([w.a, w.b]).max()) for w in worlds) >= 3 + 32
    with pytest.raises(ConfigError, match="vocab_size"):
        DataConfig(n_pairs=16, vocab_size=34)  # needs 3 + 2 * 16 = 35
    DataConfig(n_pairs=16, vocab_size=35)  # exactly enough is fine


def test_same_seed_same_world_different_seed_different_world():
    cfg = DataConfig(n_pairs=40, both_fraction=0.5, seed=7)
    w1, w2 = make_world(cfg), make_world(cfg)
    for field in ("a", "b", "both", "train_tokens"):
        assert torch.equal(getattr(w1, field), getattr(w2, field)), field
    w3 = make_world(DataConfig(n_pairs=40, both_fraction=0.5, seed=8))
    assert not torch.equal(w1.a, w3.a)
    assert not torch.equal(w1.both, w3.both)


def test_world_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_world(DataConfig(n_pairs=30, both_fraction=0.5))
    assert torch.equal(torch.rand(3), expected)


def test_decode_names_tokens():
    world = make_world(DataConfig(n_pairs=4))
    a0, b0 = int(world.a[0]), int(world.b[0])
    assert world.decode([a0, IS, b0]) == "a0 is b0"
    assert world.decode(world.probe("infill").tokens[0]) == "[M] is b0"
