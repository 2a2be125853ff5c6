"""revlib.config: every field is validated with a ConfigError that names it, numpy integers count as
integers, floats and bools do not, combinations that cannot run are refused, presets are valid."""
from __future__ import annotations

import math

import numpy as np
import pytest

import revlib
from revlib import ConfigError, DataConfig, Experiment, ModelConfig, TrainConfig, preset
from revlib.config import MAX_SEED, PRESETS, as_seeds

NAN, INF = float("nan"), float("inf")

# (config class, field, a bad value). Each must raise ConfigError whose message names the field.
BAD_FIELDS = [
    (ModelConfig, "n_layers", 0), (ModelConfig, "n_layers", 65), (ModelConfig, "n_layers", 1.0),
    (ModelConfig, "n_layers", True), (ModelConfig, "n_layers", "1"), (ModelConfig, "n_layers", None),
    (ModelConfig, "n_heads", 0), (ModelConfig, "n_heads", 2.0), (ModelConfig, "n_heads", False),
    (ModelConfig, "d_model", 0), (ModelConfig, "d_model", 8.0), (ModelConfig, "d_model", True),
    (ModelConfig, "d_model", 5000),
    (ModelConfig, "attention", "full"), (ModelConfig, "attention", None),
    (ModelConfig, "positional", "sinusoidal"), (ModelConfig, "positional", 1),
    (ModelConfig, "rope_base", 0.0), (ModelConfig, "rope_base", -1.0), (ModelConfig, "rope_base", NAN),
    (ModelConfig, "rope_base", INF), (ModelConfig, "rope_base", 1e300), (ModelConfig, "rope_base", True),
    (ModelConfig, "rope_base", "1e4"),
    (ModelConfig, "mlp", "relu"), (ModelConfig, "mlp", True),
    (ModelConfig, "d_mlp", 0), (ModelConfig, "d_mlp", 4.5), (ModelConfig, "d_mlp", 10**6),
    (ModelConfig, "norm", "batchnorm"),
    (ModelConfig, "bias", 1), (ModelConfig, "bias", None), (ModelConfig, "bias", np.bool_(True)),
    (ModelConfig, "untie_values", 0),
    (ModelConfig, "unembed_scale", 0.0), (ModelConfig, "unembed_scale", -1.0), (ModelConfig, "unembed_scale", NAN),
    (ModelConfig, "unembed_scale", 1e4),
    (ModelConfig, "max_len", 0), (ModelConfig, "max_len", 4097), (ModelConfig, "max_len", 7.0),
    (DataConfig, "n_pairs", 1), (DataConfig, "n_pairs", 0), (DataConfig, "n_pairs", 8.0), (DataConfig, "n_pairs", True),
    (DataConfig, "n_pairs", 10**7),
    (DataConfig, "entity_tokens", 0), (DataConfig, "entity_tokens", 9), (DataConfig, "entity_tokens", 2.0),
    (DataConfig, "reversed_fraction", -0.1), (DataConfig, "reversed_fraction", 1.5),
    (DataConfig, "reversed_fraction", NAN), (DataConfig, "reversed_fraction", True),
    (DataConfig, "hold_out", "a2b"), (DataConfig, "relations", "two"),
    (DataConfig, "vocab_size", 0), (DataConfig, "vocab_size", 10**7), (DataConfig, "vocab_size", 100.0),
    (DataConfig, "vocab_size", 34),  # 16 pairs need 35 tokens
    (DataConfig, "seed", -1), (DataConfig, "seed", 2**32), (DataConfig, "seed", 1.5), (DataConfig, "seed", True),
    (TrainConfig, "objective", "diffusion"), (TrainConfig, "objective", None),
    (TrainConfig, "steps", 0), (TrainConfig, "steps", 10**7), (TrainConfig, "steps", 5.0),
    (TrainConfig, "lr", 0.0), (TrainConfig, "lr", -0.1), (TrainConfig, "lr", NAN), (TrainConfig, "lr", INF),
    (TrainConfig, "lr", 1e38), (TrainConfig, "lr", "0.1"),
    (TrainConfig, "schedule", "linear"),
    (TrainConfig, "batch_size", 0), (TrainConfig, "batch_size", 4.0), (TrainConfig, "batch_size", True),
    (TrainConfig, "mask_copies", 0), (TrainConfig, "mask_copies", 65), (TrainConfig, "mask_copies", 2.0),
    (TrainConfig, "t_min", 0.0), (TrainConfig, "t_min", 1.0), (TrainConfig, "t_min", NAN),
    (TrainConfig, "masking", "word"), (TrainConfig, "freeze", "all"), (TrainConfig, "project_out", "a2b"),
    (TrainConfig, "eval_every", 0), (TrainConfig, "eval_every", 1.5),
    (TrainConfig, "seed", -1), (TrainConfig, "seed", 2**32), (TrainConfig, "seed", 3.0),
]


@pytest.mark.parametrize("cls,name,value", BAD_FIELDS, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in BAD_FIELDS])
def test_every_bad_field_is_refused_with_its_name(cls, name, value):
    kwargs = {name: value}
    if cls is DataConfig and name == "vocab_size":
        kwargs["n_pairs"] = 16
    if name == "d_mlp":
        kwargs["mlp"] = "gelu"  # with an MLP, so that only the width is wrong
    with pytest.raises(ConfigError, match=name):
        cls(**kwargs)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        ModelConfig(d_model=0)


@pytest.mark.parametrize("value", [np.int64(8), np.int32(8), np.uint16(8), np.int8(8)])
def test_numpy_integers_are_accepted_like_ints(value):
    cfg = ModelConfig(d_model=value, n_heads=np.int64(2), n_layers=np.int64(2), max_len=value)
    assert cfg.d_model == 8 and type(cfg.d_model) is int
    assert type(cfg.n_heads) is int and type(cfg.n_layers) is int and type(cfg.max_len) is int
    data = DataConfig(n_pairs=value, entity_tokens=np.int64(2), vocab_size=np.int64(40), seed=np.uint32(7))
    assert data.n_pairs == 8 and type(data.n_pairs) is int and type(data.seed) is int and data.seed == 7
    train = TrainConfig(steps=value, batch_size=np.int64(4), mask_copies=np.int64(3), seed=np.int64(5))
    assert type(train.steps) is int and type(train.batch_size) is int and train.seed == 5
    # and they make a runnable, hashable experiment equal to the one built from ints
    assert Experiment(ModelConfig(d_model=value), DataConfig(n_pairs=value)) == \
        Experiment(ModelConfig(d_model=8), DataConfig(n_pairs=8))


def test_numpy_floats_are_accepted_like_floats():
    cfg = TrainConfig(lr=np.float32(0.5), t_min=np.float64(0.1))
    assert type(cfg.lr) is float and cfg.lr == 0.5
    assert type(DataConfig(n_pairs=8, reversed_fraction=np.float64(0.25)).reversed_fraction) is float


def test_integers_are_accepted_for_float_fields():
    assert ModelConfig(rope_base=100).rope_base == 100.0
    assert DataConfig(n_pairs=8, reversed_fraction=0).reversed_fraction == 0.0


def test_head_size_rules():
    with pytest.raises(ConfigError, match="n_heads=3 does not divide d_model=16"):
        ModelConfig(d_model=16, n_heads=3)
    with pytest.raises(ConfigError, match="even"):
        ModelConfig(d_model=12, n_heads=4)  # head size 3: RoPE cannot rotate it
    assert ModelConfig(d_model=12, n_heads=4, positional="alibi").d_head == 3  # other encodings can


@pytest.mark.parametrize("base", [0.5, 0.999, 1e-300, 1e13, 1e300])
def test_rope_base_below_one_or_underflowing_is_refused(base):
    with pytest.raises(ConfigError, match="rope_base"):
        ModelConfig(rope_base=base)


@pytest.mark.parametrize("base", [1.0, 2.0, 10_000.0, 1e12])
def test_rope_bases_in_range_are_accepted(base):
    assert ModelConfig(rope_base=base, d_model=64).rope_base == base


def test_d_mlp_needs_an_mlp_and_defaults_to_the_usual_widths():
    with pytest.raises(ConfigError, match="d_mlp"):
        ModelConfig(d_mlp=16)
    assert ModelConfig(mlp="gelu", d_model=12, positional="none").mlp_width == 48
    assert ModelConfig(mlp="swiglu", d_model=12, positional="none").mlp_width == 32
    assert ModelConfig(mlp="gelu", d_mlp=5).mlp_width == 5


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seeds,expected", [
    ([0], (0,)), ((3, 1, 2), (3, 1, 2)), (range(4), (0, 1, 2, 3)), ([MAX_SEED], (MAX_SEED,)),
    ([np.int64(5), np.uint32(6)], (5, 6)), (np.arange(3), (0, 1, 2)),
])
def test_as_seeds_accepts(seeds, expected):
    out = as_seeds(seeds)
    assert out == expected and all(type(s) is int for s in out)


@pytest.mark.parametrize("seeds,match", [
    ([], "at least one"), ([-1], "seed"), ([2**32], "seed"), ([1.0], "integer"), ([0.5], "integer"),
    ([True], "integer"), ([1, 1], "distinct"), (3, "list"), ("01", "list"), (None, "list"), (2.0, "list"),
])
def test_as_seeds_refuses(seeds, match):
    with pytest.raises(ConfigError, match=match):
        as_seeds(seeds)


def test_train_refuses_an_empty_or_bad_seed_list():
    exp = preset("mdm", n_pairs=8, d_model=8, steps=1)
    for seeds in ([], [-1], [2**32], [1.5], [0, 0]):
        with pytest.raises(ConfigError):
            revlib.train(exp, seeds=seeds)


def test_train_needs_an_experiment():
    with pytest.raises(ConfigError, match="Experiment"):
        revlib.train(ModelConfig())


# ---------------------------------------------------------------------------------------------
# combinations
# ---------------------------------------------------------------------------------------------

def test_ar_with_bidirectional_attention_is_refused_because_it_sees_its_answer():
    with pytest.raises(ConfigError, match="sees the next token it is asked to predict"):
        Experiment(ModelConfig(attention="bidirectional"), DataConfig(n_pairs=8), TrainConfig(objective="ar"))
    with pytest.raises(ConfigError, match="causal"):
        preset("ar", attention="bidirectional")
    with pytest.raises(ConfigError, match="causal"):
        preset("mdm", objective="ar", attention="bidirectional")


@pytest.mark.parametrize("objective", ["mdm", "suffix"])
def test_masked_objectives_run_with_either_attention(objective):
    for attention in ("causal", "bidirectional"):
        exp = preset("mdm", objective=objective, attention=attention)
        assert exp.model.attention == attention and exp.train.masked


def test_max_len_shorter_than_the_sentence_is_refused():
    with pytest.raises(ConfigError, match="max_len=4 is shorter than a sentence of 5 tokens"):
        Experiment(ModelConfig(max_len=4), DataConfig(n_pairs=8, entity_tokens=2))
    assert Experiment(ModelConfig(max_len=5), DataConfig(n_pairs=8, entity_tokens=2)).max_len == 5
    assert Experiment(ModelConfig(max_len=9), DataConfig(n_pairs=8, entity_tokens=2)).max_len == 9
    assert Experiment(ModelConfig(), DataConfig(n_pairs=8, entity_tokens=3)).max_len == 7


def test_span_masking_needs_multi_token_entities_and_a_masked_objective():
    with pytest.raises(ConfigError, match="span"):
        preset("mdm", masking="span")  # entity_tokens = 1
    assert preset("mdm", masking="span", entity_tokens=2).train.masking == "span"
    with pytest.raises(ConfigError, match="masking"):
        TrainConfig(objective="ar", masking="span")


def test_experiment_fields_must_be_the_right_configs():
    with pytest.raises(ConfigError, match="Experiment.model"):
        Experiment(model=DataConfig())
    with pytest.raises(ConfigError, match="Experiment.train"):
        Experiment(train={"steps": 3})


@pytest.mark.parametrize("fraction,n_pairs", [(1.0, 16), (0.99, 16), (0.97, 16), (0.8, 2)])
def test_reversed_fraction_that_leaves_no_one_way_pair_is_refused(fraction, n_pairs):
    with pytest.raises(ConfigError, match="reversed_fraction"):
        DataConfig(n_pairs=n_pairs, reversed_fraction=fraction)


def test_reversed_fraction_counts():
    cfg = DataConfig(n_pairs=16, reversed_fraction=0.25)
    assert (cfg.n_reversed, cfg.n_one_way) == (4, 12)
    assert DataConfig(n_pairs=16, reversed_fraction=0.95).n_one_way == 1


def test_inverse_relation_needs_the_inverse_in_training():
    with pytest.raises(ConfigError, match="relations='inverse'"):
        DataConfig(n_pairs=16, relations="inverse")  # hold_out b2a, nothing reversed: "rev" never trained
    assert DataConfig(n_pairs=16, relations="inverse", reversed_fraction=0.25).n_reversed == 4
    assert DataConfig(n_pairs=16, relations="inverse", hold_out="random").relations == "inverse"


def test_vocab_size_resolution():
    assert DataConfig(n_pairs=16).n_vocab == 35
    assert DataConfig(n_pairs=16, vocab_size=35).n_vocab == 35
    assert DataConfig(n_pairs=200, vocab_size=800).n_vocab == 800
    assert DataConfig(n_pairs=4, entity_tokens=3).seq_len == 7


# ---------------------------------------------------------------------------------------------
# presets, overrides, replace
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ar", "mdm", "llada_like", "gpt2_like"])
def test_presets_are_valid(name):
    assert name in PRESETS
    exp = preset(name)
    assert isinstance(exp, Experiment)
    assert exp == Experiment(**{g: type(getattr(exp, g))(**PRESETS[name].get(g, {}))
                                for g in ("model", "data", "train")})
    hash(exp)  # it keys the cache


def test_preset_contents():
    ar, mdm = preset("ar"), preset("mdm")
    assert (ar.train.objective, ar.model.attention) == ("ar", "causal")
    assert (mdm.train.objective, mdm.model.attention) == ("mdm", "bidirectional")
    llada = preset("llada_like")
    assert (llada.model.norm, llada.model.mlp, llada.model.bias, llada.model.attention) == \
        ("rmsnorm", "swiglu", False, "bidirectional")
    gpt2 = preset("gpt2_like")
    assert (gpt2.model.positional, gpt2.model.norm, gpt2.model.mlp) == ("absolute", "layernorm", "gelu")


def test_preset_objective_override_picks_that_objectives_attention():
    assert preset("mdm", objective="suffix").model.attention == "bidirectional"
    assert preset("mdm", objective="ar").model.attention == "causal"
    assert preset("ar", objective="mdm").model.attention == "bidirectional"
    assert preset("ar", objective="suffix", attention="causal").model.attention == "causal"


def test_preset_seed_sets_both_seeds_and_overrides_reach_every_config():
    exp = preset("mdm", seed=7, n_pairs=8, d_model=16, steps=3)
    assert (exp.data.seed, exp.train.seed) == (7, 7)
    assert (exp.data.n_pairs, exp.model.d_model, exp.train.steps) == (8, 16, 3)


@pytest.mark.parametrize("bad", [{"d_modle": 8}, {"pairs": 8}, {"mlp_hidden": 4}])
def test_unknown_options_are_refused(bad):
    with pytest.raises(ConfigError, match="unknown option"):
        preset("mdm", **bad)
    with pytest.raises(ConfigError, match="unknown option"):
        preset("mdm").replace(**bad)


@pytest.mark.parametrize("name", ["gpt", "", None, 3])
def test_unknown_presets_are_refused(name):
    with pytest.raises(ConfigError, match="preset"):
        preset(name)


def test_replace_revalidates():
    exp = preset("mdm")
    assert exp.replace(d_model=16).model.d_model == 16
    with pytest.raises(ConfigError, match="even"):
        exp.replace(d_model=7)
    with pytest.raises(ConfigError, match="causal"):
        exp.replace(objective="ar")  # replace keeps the attention: bidirectional ar is refused
    with pytest.raises(ConfigError, match="max_len"):
        exp.replace(max_len=3, entity_tokens=2)
    with pytest.raises(ConfigError, match="n_pairs"):
        exp.replace(n_pairs=1.0)
    assert exp.replace(seed=4).data.seed == 4 and exp.replace(seed=4).train.seed == 4


def test_configs_are_frozen_and_to_dict_round_trips():
    exp = preset("mdm", n_pairs=8)
    with pytest.raises(Exception):
        exp.model.d_model = 3  # frozen dataclass
    d = exp.to_dict()
    assert d["data"]["n_pairs"] == 8 and d["train"]["objective"] == "mdm"
    assert Experiment(ModelConfig(**d["model"]), DataConfig(**d["data"]), TrainConfig(**d["train"])) == exp


def test_masked_property():
    assert not TrainConfig(objective="ar").masked
    assert TrainConfig(objective="suffix").masked and TrainConfig(objective="mdm").masked
    assert math.isclose(TrainConfig().t_min, 0.05)
