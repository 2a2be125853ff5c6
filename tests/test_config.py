"""revlib.config: every impossible experiment is refused with a ConfigError that says why."""
from __future__ import annotations

import dataclasses
import math

import pytest

from revlib import ConfigError, DataConfig, Experiment, ModelConfig, TrainConfig, preset


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_defaults_are_valid_and_match_the_paper():
    m = ModelConfig()
    assert (m.n_layers, m.n_heads, m.positional, m.mlp) == (1, 1, "rope", False)
    assert preset("ar").model.attention == "causal" and preset("ar").kind == "ar"
    assert preset("mdm").model.attention == "bidirectional" and preset("mdm").kind == "mdm"


def test_odd_head_size_with_rope():
    with pytest.raises(ConfigError, match="even"):
        ModelConfig(d_model=31)
    with pytest.raises(ConfigError, match="even"):
        ModelConfig(d_model=30, n_heads=2)  # head size 15
    with pytest.raises(ConfigError, match="even"):
        preset("mdm", d_model=31)
    # only RoPE rotates pairs: an odd width is fine for the other encodings
    for positional in ("absolute", "alibi", "none"):
        assert ModelConfig(d_model=31, positional=positional).d_head == 31


def test_heads_must_divide_d_model():
    with pytest.raises(ConfigError, match="divide"):
        ModelConfig(n_heads=3, d_model=32)
    with pytest.raises(ConfigError, match="divide"):
        preset("ar", n_heads=3, d_model=32)
    assert ModelConfig(n_heads=4, d_model=32).d_head == 8


SIZE_FIELDS = [
    (ModelConfig, "n_layers"), (ModelConfig, "n_heads"), (ModelConfig, "d_model"),
    (ModelConfig, "max_len"), (DataConfig, "n_pairs"), (DataConfig, "vocab_size"),
    (TrainConfig, "steps"), (TrainConfig, "batch_size"), (TrainConfig, "mask_copies"),
    (TrainConfig, "eval_every"),
]
OPTIONAL = {"vocab_size", "batch_size"}  # None means "automatic" for these two


@pytest.mark.parametrize(
    "cls,field,value",
    [
        (cls, field, value)
        for cls, field in SIZE_FIELDS
        for value in (0, -1, 2.0, True, "8", None)
        if not (value is None and field in OPTIONAL)
    ],
)
def test_sizes_must_be_positive_integers(cls, field, value):
    with pytest.raises(ConfigError, match=field):
        cls(**{field: value})


def test_optional_sizes_accept_none():
    assert DataConfig(vocab_size=None).vocab == 3 + 2 * 128
    assert TrainConfig(batch_size=None).batch_size is None


@pytest.mark.parametrize("lr", [math.nan, math.inf, -math.inf, 0.0, -0.01, "0.01", None, True])
def test_learning_rate_must_be_finite_and_positive(lr):
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=lr)
    with pytest.raises(ConfigError, match="lr"):
        preset("ar", lr=lr)


def test_learning_rate_accepts_numbers():
    assert TrainConfig(lr=1).lr == 1 and TrainConfig(lr=1e-4).lr == 1e-4


@pytest.mark.parametrize("lr", [1e38, 1e300])
def test_learning_rate_beyond_what_adam_survives(lr):
    """Adam divides lr by 1 - beta1: a finite but huge lr overflows float32 inside torch."""
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=lr)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan, math.inf, "0.5", True])
def test_both_fraction_outside_unit_interval(fraction):
    with pytest.raises(ConfigError, match="both_fraction"):
        DataConfig(both_fraction=fraction)


@pytest.mark.parametrize("fraction,n_both", [(0, 0), (0.0, 0), (0.7, 140), (1, 200), (1.0, 200)])
def test_both_fraction_inside_unit_interval(fraction, n_both):
    assert DataConfig(n_pairs=200, both_fraction=fraction).n_both == n_both


@pytest.mark.parametrize("t_min", [0.0, 1.0, -0.5, math.nan])
def test_t_min_inside_open_unit_interval(t_min):
    with pytest.raises(ConfigError, match="t_min"):
        TrainConfig(t_min=t_min)


@pytest.mark.parametrize("overrides", [{"n_pairs": 10**8}, {"n_pairs": 10**6, "d_model": 8}, {"vocab_size": 10**9}])
def test_vocabulary_too_large_for_memory(overrides):
    # refused either by the vocabulary cap (DataConfig) or by the memory estimate (Experiment)
    with pytest.raises(ConfigError, match="GiB|vocab"):
        preset("mdm", **overrides)
    with pytest.raises(ConfigError, match="GiB|vocab"):
        preset("ar", **overrides)


def test_a_reasonable_large_world_is_accepted():
    exp = preset("mdm", n_pairs=512, d_model=64, mask_copies=4)
    assert exp.data.vocab == 3 + 2 * 512


@pytest.mark.parametrize("option", ["frobnicate", "pairs", "learning_rate", "objective_name"])
def test_unknown_preset_option(option):
    with pytest.raises(ConfigError, match=option):
        preset("ar", **{option: 1})


@pytest.mark.parametrize("kind", ["gpt", "AR", "", None])
def test_unknown_model_kind(kind):
    with pytest.raises(ConfigError, match="kind"):
        preset(kind)


@pytest.mark.parametrize("field,value", [("positional", "sinusoidal"), ("attention", "sliding"), ("positional", "RoPE")])
def test_unknown_choices(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{field: value})
    with pytest.raises(ConfigError, match=field):
        preset("mdm", **{field: value})


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_objective_attention_mismatch(objective):
    wrong = "bidirectional" if objective == "ar" else "causal"
    with pytest.raises(ConfigError, match="attention"):
        Experiment(model=ModelConfig(attention=wrong), train=TrainConfig(objective=objective))
    with pytest.raises(ConfigError, match="attention"):
        preset(objective, attention=wrong)
    with pytest.raises(ConfigError, match="objective"):
        TrainConfig(objective="diffusion")


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_seeds_must_be_integers(seed):
    with pytest.raises(ConfigError, match="seed"):
        DataConfig(seed=seed)
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig(seed=seed)


def test_preset_routes_overrides_to_their_config():
    exp = preset("ar", n_pairs=64, d_model=16, steps=200, lr=0.01, positional="alibi", seed=3)
    assert exp.data.n_pairs == 64 and exp.model.d_model == 16 and exp.model.positional == "alibi"
    assert exp.train.steps == 200 and exp.train.lr == 0.01 and exp.train.objective == "ar"
    assert exp.data.seed == 3 and exp.train.seed == 3  # "seed" names both


def test_configs_are_frozen_and_hashable():
    exp = preset("mdm", n_pairs=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.model.d_model = 8  # type: ignore[misc]
    assert hash(exp) == hash(preset("mdm", n_pairs=16))
    assert exp == preset("mdm", n_pairs=16) and exp != preset("mdm", n_pairs=17)
    assert exp.to_dict()["data"]["n_pairs"] == 16


def test_replace_revalidates():
    with pytest.raises(ConfigError):
        dataclasses.replace(ModelConfig(), n_heads=3)
