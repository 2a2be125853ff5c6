"""Property-based tests (hypothesis): configuration validation over a mix of valid and invalid
values (every accepted experiment trains, every rejected one raises ConfigError and nothing else),
the masking statistics for random rates and batch sizes, and the disjointness of probes and
training text over random worlds.

The examples are derandomised (the same ones every run, no example database written into the
checkout) and few, so that this file takes a few seconds.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from revlib import ConfigError, DataConfig, Experiment, ModelConfig, TrainConfig, make_world, preset, train
from revlib import objectives as O
from revlib.config import OBJECTIVES, PRESETS

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
NAN, INF = float("nan"), float("inf")

# field -> (valid values, invalid values); sizes kept tiny so that an accepted experiment trains fast
MODEL = {
    "n_layers": ([1, 2, np.int64(2)], [0, 65, 1.0, True, "1", None]),
    "n_heads": ([1, 2, np.int32(2)], [0, 2.0, -1]),
    "d_model": ([8, np.int64(8), 16], [0, 8.0, False, 5000, "8"]),
    "attention": (["causal", "bidirectional"], ["full", None, 0]),
    "positional": (["rope", "absolute", "alibi", "none"], ["sinusoidal", ""]),
    "rope_base": ([10_000.0, 1.0, 100, np.float64(500.0), 1e12], [0.5, 1e-300, 1e300, NAN, INF, 0, -1.0, True, "1e4"]),
    "mlp": (["none", "gelu", "swiglu"], ["relu"]),
    "norm": (["none", "layernorm", "rmsnorm"], ["batchnorm"]),
    "bias": ([True, False], [1, None, "yes"]),
    "untie_values": ([False, True], [0, "no"]),
    "unembed_scale": ([1.0, 0.5, np.float32(2.0)], [0.0, -1.0, NAN, 1e4]),
    "max_len": ([None, 9, 12], [0, 4097, 7.0, -3]),
}
DATA = {
    "n_pairs": ([2, 3, 8, np.int64(6)], [1, 0, 8.0, True, 10**7]),
    "entity_tokens": ([1, 2, 3], [0, 9, 2.0]),
    "reversed_fraction": ([0.0, 0.25, 0.5, np.float64(0.3)], [-0.1, 1.5, NAN, True]),
    "hold_out": (["b2a", "random"], ["a2b"]),
    "relations": (["one", "inverse"], ["two"]),
    "vocab_size": ([None, 60, 100], [0, 2, 10**7, 60.0]),
    "seed": ([0, 1, 2**32 - 1, np.uint32(5)], [-1, 2**32, 1.5, None]),
}
TRAIN = {
    "objective": (list(OBJECTIVES), ["diffusion", None]),
    "steps": ([1, 2], [0, -1, 1.0]),
    "lr": ([0.1, 0.01, 1.0, np.float32(0.05)], [0.0, -0.1, NAN, INF, 1e4, "0.1"]),
    "schedule": (["cosine", "constant"], ["linear"]),
    "batch_size": ([None, 1, 4, 10**6], [0, 2.0, True]),
    "mask_copies": ([1, 2, 3], [0, 65, 1.5]),
    "t_min": ([0.05, 0.5, 0.99], [0.0, 1.0, NAN]),
    "masking": (["token", "span"], ["word"]),
    "freeze": (["none", "qk"], ["all"]),
    "project_out": (["none", "b2a"], ["a2b"]),
    "eval_every": ([1, 25], [0, 1.5]),
    "seed": ([0, 3, np.int64(2)], [-1, 2**32]),
}
GROUPS = {"model": MODEL, "data": DATA, "train": TRAIN}


@st.composite
def experiment_fields(draw):
    """Per group a dict of fields: a random subset set to valid values, then 0-2 set to invalid ones."""
    fields = {}
    for group, spec in GROUPS.items():
        names = draw(st.lists(st.sampled_from(sorted(spec)), unique=True, max_size=len(spec)))
        fields[group] = {name: draw(st.sampled_from(spec[name][0])) for name in names}
    n_bad = draw(st.sampled_from([0, 0, 0, 1, 2]))
    for _ in range(n_bad):
        group = draw(st.sampled_from(sorted(GROUPS)))
        name = draw(st.sampled_from(sorted(GROUPS[group])))
        fields[group][name] = draw(st.sampled_from(GROUPS[group][name][1]))
    fields["data"].setdefault("n_pairs", 4)  # keep the default world small
    fields["model"].setdefault("d_model", 8)
    fields["train"].setdefault("steps", 1)
    return fields


@settings(max_examples=40, **SETTINGS)
@given(experiment_fields())
def test_accepted_experiments_train_and_rejected_ones_raise_config_error(fields):
    try:
        exp = Experiment(ModelConfig(**fields["model"]), DataConfig(**fields["data"]), TrainConfig(**fields["train"]))
    except ConfigError:
        event("rejected")
        return  # refused, as it should be refused: with a ConfigError and nothing else
    event("accepted")
    # accepted: every field holds a normalised Python value ...
    for group in ("model", "data", "train"):
        for name, value in vars(getattr(exp, group)).items():
            assert value is None or type(value) in (int, float, str, bool), (name, value)
    # ... and it trains (one or two steps of a tiny model) without any error
    run = train(exp)
    assert np.isfinite(run.history["loss"]).all()
    assert run.history["step"][-1] == exp.train.steps


@settings(max_examples=25, **SETTINGS)
@given(experiment_fields(), st.sampled_from(sorted(PRESETS)))
def test_preset_overrides_are_validated_the_same_way(fields, name):
    """The same draws as overrides of a preset (``seed`` then names both seeds)."""
    flat = {**fields["model"], **fields["data"], **fields["train"]}
    flat.setdefault("n_layers", 1)  # keep the presets' deeper blocks small
    try:
        exp = preset(name, **flat)
    except ConfigError:
        event("rejected")
        return
    event("accepted")
    assert exp.data.seed == exp.train.seed == int(flat.get("seed", 0))
    run = train(exp.replace(steps=1))
    assert np.isfinite(run.history["loss"]).all()


@settings(max_examples=40, **SETTINGS)
@given(t_min=st.floats(0.01, 0.95), B=st.integers(1, 16), k=st.integers(1, 3),
       objective=st.sampled_from(["mdm", "suffix"]), masking=st.sampled_from(["token", "span"]),
       seed=st.integers(0, 2**32 - 1))
def test_masked_share_is_consistent_with_the_rates(t_min, B, k, objective, masking, seed):
    if masking == "span" and k == 1:
        masking = "token"
    T, n_steps = 2 * k + 1, 64
    units = O.mask_units(T, k, objective, masking)
    masked, t = O.draw_masks(n_steps, B, units, t_min, torch.Generator().manual_seed(seed))
    assert masked.shape == (n_steps, B, T) and t.shape == (n_steps, B)
    assert (t >= t_min).all() and (t < 1).all()
    strata = ((t - t_min) / (1 - t_min) * B).floor().long().clamp(max=B - 1).sort(dim=1).values
    assert torch.equal(strata, torch.arange(B).expand(n_steps, B))  # stratified in every step
    assert not masked[..., units < 0].any()  # never a position outside the maskable units
    for u in units.unique().tolist():  # a unit is masked whole or not at all
        if u >= 0:
            cols = masked[..., units == u]
            assert (cols == cols[..., :1]).all()
    # the number of masked positions: sum over sentences of t times the maskable positions,
    # with the binomial variance of whole units
    sizes = torch.bincount(units[units >= 0]).double()
    sizes = sizes[sizes > 0]
    expected = float(t.double().sum() * sizes.sum())
    variance = float((t.double() * (1 - t.double())).sum() * (sizes**2).sum())
    observed = float(masked.sum())
    assert abs(observed - expected) <= 6 * math.sqrt(variance) + 1, (observed, expected, variance)


@st.composite
def world_configs(draw):
    n = draw(st.integers(2, 40))
    k = draw(st.integers(1, 3))
    fraction = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9]))
    hold_out = draw(st.sampled_from(["b2a", "random"]))
    relations = draw(st.sampled_from(["one", "inverse"]))
    vocab = draw(st.sampled_from([None, 3 + 2 * n, 3 + 2 * n + 7, 200]))
    seed = draw(st.integers(0, 2**32 - 1))
    try:
        return DataConfig(n_pairs=n, entity_tokens=k, reversed_fraction=fraction, hold_out=hold_out,
                          relations=relations, vocab_size=vocab, seed=seed)
    except ConfigError:
        return draw(st.nothing())  # an impossible world: draw another


@settings(max_examples=40, **SETTINGS)
@given(world_configs())
def test_probes_and_training_text_are_disjoint_in_random_worlds(cfg):
    world = make_world(cfg)
    text = {tuple(r) for r in world.train_tokens.tolist()}
    assert world.train_tokens.shape == (cfg.n_pairs + cfg.n_reversed, cfg.seq_len)
    assert int(world.train_tokens.max()) < world.vocab_size and len(world.one_way) == cfg.n_one_way
    for name in world.probe_names:
        p = world.probe(name)
        full = {tuple(r) for r in p.full.tolist()}
        if name in ("b2a", "swap"):
            assert not (full & text), name  # never trained
        else:
            assert full <= text, name  # a2b and infill ask about trained sentences
        assert torch.equal(p.full[:, list(p.slots)], p.answers)
        assert (p.tokens[:, list(p.slots)] == 0).all()
    a, b = world.a, world.b
    assert len({tuple(r) for r in a.tolist()}) == cfg.n_pairs == len({tuple(r) for r in b.tolist()})
    assert not (set(world.alphabets[0].tolist()) & set(world.alphabets[1].tolist()))
