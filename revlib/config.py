"""Frozen configurations for the model, the fact world and training, and the named presets.

This module owns *what* an experiment is, never how it runs: no RNG is touched, nothing is
printed. Variants come from :func:`dataclasses.replace` (or :func:`preset` with overrides);
every invalid value or combination raises :class:`ConfigError` naming the field, so bad input
never reaches torch.

Three choices that the first edition fused into "ar" and "mdm" are separate here:

=============  ==========================================================================
``objective``  ``ar`` (next token), ``suffix`` (masked, but only the last entity of a
               training sentence is ever masked: the ARM's task posed to an encoder),
               ``prefix`` (its mirror: only the first entity is masked, so only ``infill``
               is trained), ``mdm`` (any-order masking)
``attention``  ``causal`` or ``bidirectional`` (``ar`` needs ``causal``: with
               bidirectional attention the next token is in its own context)
positions      ``rope``, learned ``absolute``, ``alibi`` or ``none``
=============  ==========================================================================

The presets ``"ar"`` and ``"mdm"`` are the book's one-layer toy with ar + causal and
mdm + bidirectional; ``"llada_like"`` and ``"gpt2_like"`` are small versions of two real blocks.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace

OBJECTIVES = ("ar", "suffix", "prefix", "mdm")
ATTENTIONS = ("causal", "bidirectional")
POSITIONALS = ("rope", "absolute", "alibi", "none")
MLPS = ("none", "gelu", "swiglu")
NORMS = ("none", "layernorm", "rmsnorm")
SCHEDULES = ("cosine", "constant")
MASKINGS = ("token", "span")
FREEZES = ("none", "qk")
PROJECT_OUTS = ("none", "b2a", "b2a-all")
HOLD_OUTS = ("b2a", "random")
RELATIONS = ("one", "inverse")

MAX_SEED = 2**32 - 1  # seeds feed torch.Generator.manual_seed, with offsets added (revlib.training)
MAX_LR = 1e3  # beyond this Adam's update overflows float32
MAX_VOCAB = 1_000_000
MAX_ENTITY_TOKENS = 8  # a name of up to 8 tokens; sentences of up to 17
MAX_LAYERS = 64
MAX_D_MODEL = 4096
MAX_STEPS = 1_000_000
N_SPECIAL = 3  # "[M]", "is", "rev": see revlib.data
# A run whose parameters, optimiser state and saved activations would need more than this is
# refused before anything is allocated (revlib.training.check_memory counts them).
MEMORY_LIMIT_BYTES = 4 * 2**30


class ConfigError(ValueError):
    """An experiment that cannot be run as configured; the message names the field and says why."""


# ---------------------------------------------------------------------------------------------
# field checks: numpy integers and floats are accepted like Python's, bools are not numbers
# ---------------------------------------------------------------------------------------------

def as_int(name: str, value, lo: int | None = 1, hi: int | None = None) -> int:
    """``value`` as a Python int in [lo, hi], or ConfigError. numpy integers are fine; bools,
    floats (even 3.0) and strings are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def as_float(name: str, value, lo: float | None = None, hi: float | None = None,
             open_lo: bool = False, open_hi: bool = False) -> float:
    """``value`` as a finite Python float in the interval, or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if lo is not None and (value < lo or open_lo and value == lo):
        raise ConfigError(f"{name} must be {'above' if open_lo else 'at least'} {lo:g}, got {value:g}")
    if hi is not None and (value > hi or open_hi and value == hi):
        raise ConfigError(f"{name} must be {'below' if open_hi else 'at most'} {hi:g}, got {value:g}")
    return value


def as_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def as_seed(name: str, value) -> int:
    return as_int(name, value, 0, MAX_SEED)


def as_seeds(seeds) -> tuple[int, ...]:
    """A non-empty tuple of distinct seeds in [0, 2^32 - 1], or ConfigError."""
    if isinstance(seeds, (str, bytes)) or isinstance(seeds, numbers.Number):
        raise ConfigError(f"seeds must be a list of integers, got {seeds!r}")
    try:
        seeds = tuple(seeds)
    except TypeError:
        raise ConfigError(f"seeds must be a list of integers, got {seeds!r}") from None
    if not seeds:
        raise ConfigError("seeds must name at least one seed")
    seeds = tuple(as_seed("seed", s) for s in seeds)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {list(seeds)}")
    return seeds


def _normalise(obj, checks: dict) -> None:
    """Run each field's check and store the normalised value (frozen dataclass)."""
    for name, check in checks.items():
        object.__setattr__(obj, name, check(name, getattr(obj, name)))


# ---------------------------------------------------------------------------------------------
# the three configurations
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    """One Transformer (revlib.model). The defaults are the book's formalisation: one layer,
    one head, attention only, rotary positions, no normalisation."""

    n_layers: int = 1
    n_heads: int = 1
    d_model: int = 32
    attention: str = "bidirectional"  # "causal" | "bidirectional"
    positional: str = "rope"  # "rope" | "absolute" | "alibi" | "none"
    rope_base: float = 10_000.0  # θ_k = rope_base^(-2k/d_head)
    mlp: str = "none"  # "none" | "gelu" | "swiglu": an MLP after attention in every block
    d_mlp: int | None = None  # hidden width; None: 4 d_model (gelu), 8 d_model / 3 (swiglu)
    norm: str = "none"  # "none" | "layernorm" | "rmsnorm": pre-norm in every block and at the end
    bias: bool = True  # biases in the MLP and the LayerNorm (llada_like: none)
    untie_values: bool = False  # one W_V per position: "b at slot 0" and "b at slot 2" stop sharing
    unembed_scale: float = 1.0  # U starts with entries of std unembed_scale / sqrt(d_model)
    max_len: int | None = None  # sequence length the model accepts; None: the world's sentence length

    def __post_init__(self) -> None:
        _normalise(self, {
            "n_layers": lambda n, v: as_int(n, v, 1, MAX_LAYERS),
            "n_heads": lambda n, v: as_int(n, v, 1, MAX_D_MODEL),
            "d_model": lambda n, v: as_int(n, v, 1, MAX_D_MODEL),
            "attention": lambda n, v: as_choice(n, v, ATTENTIONS),
            "positional": lambda n, v: as_choice(n, v, POSITIONALS),
            "rope_base": lambda n, v: as_float(n, v, 0.0, 1e12, open_lo=True),
            "mlp": lambda n, v: as_choice(n, v, MLPS),
            "norm": lambda n, v: as_choice(n, v, NORMS),
            "unembed_scale": lambda n, v: as_float(n, v, 0.0, 1e3, open_lo=True),
        })
        for name in ("bias", "untie_values"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.d_mlp is not None:
            object.__setattr__(self, "d_mlp", as_int("d_mlp", self.d_mlp, 1, 16 * MAX_D_MODEL))
            if self.mlp == "none":
                raise ConfigError("d_mlp sets the MLP's width, but mlp is 'none'")
        if self.max_len is not None:
            object.__setattr__(self, "max_len", as_int("max_len", self.max_len, 1, 4096))
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
        if self.positional == "rope":
            if self.d_head % 2:
                raise ConfigError(f"RoPE rotates pairs of coordinates, so the head size must be even; "
                                  f"d_model={self.d_model} with n_heads={self.n_heads} gives {self.d_head}")
            # the slowest plane turns by base^(-(e-2)/e) per position; below float32's resolution
            # it never turns, and for a base below 1 the "slow" planes spin faster than the fast one
            if self.rope_base < 1.0 or self.rope_base ** (-(self.d_head - 2) / self.d_head) < 1e-30:
                raise ConfigError(f"rope_base must lie in [1, 1e12] so the rotary frequencies stay "
                                  f"representable, got {self.rope_base:g}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        if self.d_mlp is not None:
            return self.d_mlp
        return 4 * self.d_model if self.mlp == "gelu" else max(1, round(8 * self.d_model / 3))


@dataclass(frozen=True)
class DataConfig:
    """A fact world (revlib.data): ``n_pairs`` entity pairs (a_i, b_i) of ``entity_tokens``
    tokens each, written "a_i is b_i" one way only unless a share is reversed."""

    n_pairs: int = 128
    entity_tokens: int = 1  # k: every entity is k tokens from its side's alphabet
    reversed_fraction: float = 0.0  # share of pairs also trained in the other direction
    hold_out: str = "b2a"  # "b2a": one-way pairs are "a r b"; "random": each in a random direction
    relations: str = "one"  # "one": one relation "is"; "inverse": "is" and its inverse "rev"
    vocab_size: int | None = None  # None: exactly the tokens used; else V (Zhu et al.: 800)
    seed: int = 0

    def __post_init__(self) -> None:
        _normalise(self, {
            "n_pairs": lambda n, v: as_int(n, v, 2, MAX_VOCAB),
            "entity_tokens": lambda n, v: as_int(n, v, 1, MAX_ENTITY_TOKENS),
            "reversed_fraction": lambda n, v: as_float(n, v, 0.0, 1.0),
            "hold_out": lambda n, v: as_choice(n, v, HOLD_OUTS),
            "relations": lambda n, v: as_choice(n, v, RELATIONS),
            "seed": as_seed,
        })
        if self.vocab_size is not None:
            object.__setattr__(self, "vocab_size", as_int("vocab_size", self.vocab_size, 1, MAX_VOCAB))
            if self.vocab_size < self.min_vocab:
                raise ConfigError(f"vocab_size={self.vocab_size} cannot hold {self.n_pairs} pairs: it needs at "
                                  f"least {self.min_vocab} tokens (2 per pair + {N_SPECIAL} special)")
        if self.min_vocab > MAX_VOCAB:
            raise ConfigError(f"n_pairs={self.n_pairs} needs a vocabulary above {MAX_VOCAB} tokens")
        if self.n_one_way == 0:
            raise ConfigError(f"reversed_fraction={self.reversed_fraction:g} reverses all {self.n_pairs} pairs: "
                              "no pair is left one-way to test reversal on")
        if self.relations == "inverse" and self.hold_out == "b2a" and self.n_reversed == 0:
            raise ConfigError("relations='inverse' needs some pairs trained both ways (reversed_fraction > 0) "
                              "or hold_out='random': otherwise the inverse relation never appears in training")

    @property
    def min_vocab(self) -> int:
        return N_SPECIAL + 2 * self.n_pairs

    @property
    def n_vocab(self) -> int:
        """The resolved vocabulary size V (``vocab_size``, or exactly the tokens used)."""
        return self.vocab_size if self.vocab_size is not None else self.min_vocab

    @property
    def n_reversed(self) -> int:
        """Pairs trained both ways (round(reversed_fraction * n_pairs))."""
        return round(self.reversed_fraction * self.n_pairs)

    @property
    def n_one_way(self) -> int:
        """Pairs trained in one direction only: the ones every probe scores."""
        return self.n_pairs - self.n_reversed

    @property
    def seq_len(self) -> int:
        """Tokens per sentence: k + 1 + k."""
        return 2 * self.entity_tokens + 1


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (revlib.training); ``objective`` picks the loss (revlib.objectives)."""

    objective: str = "mdm"  # "ar" | "suffix" | "prefix" | "mdm"
    steps: int = 300
    lr: float = 0.1  # Adam, each tensor's step scaled by its initial entry size
    schedule: str = "cosine"  # "cosine" decay to lr/10, or "constant"
    batch_size: int | None = None  # None: the whole training text every step
    mask_copies: int = 2  # masked objectives: independent maskings of each sentence per step
    t_min: float = 0.05  # masked objectives: floor on the masking rate t, so 1/t stays bounded
    masking: str = "token"  # "token": each token masked alone; "span": whole entities together
    freeze: str = "none"  # "qk": W_Q, W_K stay at their initial values (routes never learned)
    project_out: str = "none"  # "b2a": remove the part of every OV update along ∇l_b2a; "b2a-all": of every update
    eval_every: int = 25  # probe metrics go into the history every this many steps
    seed: int = 0  # initialisation and training randomness (masks, batches)

    def __post_init__(self) -> None:
        _normalise(self, {
            "objective": lambda n, v: as_choice(n, v, OBJECTIVES),
            "steps": lambda n, v: as_int(n, v, 1, MAX_STEPS),
            "lr": lambda n, v: as_float(n, v, 0.0, MAX_LR, open_lo=True),
            "schedule": lambda n, v: as_choice(n, v, SCHEDULES),
            "mask_copies": lambda n, v: as_int(n, v, 1, 64),
            "t_min": lambda n, v: as_float(n, v, 0.0, 1.0, open_lo=True, open_hi=True),
            "masking": lambda n, v: as_choice(n, v, MASKINGS),
            "freeze": lambda n, v: as_choice(n, v, FREEZES),
            "project_out": lambda n, v: as_choice(n, v, PROJECT_OUTS),
            "eval_every": lambda n, v: as_int(n, v, 1, MAX_STEPS),
            "seed": as_seed,
        })
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", as_int("batch_size", self.batch_size, 1, 10**7))
        if self.objective == "ar" and self.masking != "token":
            raise ConfigError("masking applies to the masked objectives (suffix, prefix, mdm); the ar objective masks nothing")

    @property
    def masked(self) -> bool:
        """True for the objectives that fill masked slots (suffix, prefix, mdm)."""
        return self.objective != "ar"


@dataclass(frozen=True)
class Experiment:
    """Everything that determines a run: model, data and training. Hashable; it keys the cache."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"Experiment.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.train.objective == "ar" and self.model.attention != "causal":
            raise ConfigError("objective 'ar' needs causal attention: with bidirectional attention every "
                              "position sees the next token it is asked to predict")
        if self.model.max_len is not None and self.model.max_len < self.data.seq_len:
            raise ConfigError(f"max_len={self.model.max_len} is shorter than a sentence of "
                              f"{self.data.seq_len} tokens (entity_tokens={self.data.entity_tokens})")
        if self.train.masking == "span" and self.data.entity_tokens == 1:
            raise ConfigError("masking='span' masks whole entities; with entity_tokens=1 it is token masking")

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    @property
    def max_len(self) -> int:
        """The sequence length the model is built for."""
        return self.model.max_len or self.data.seq_len

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **overrides) -> "Experiment":
        """A copy with fields of any of the three configs replaced, by name (see :func:`preset`)."""
        return _apply(self, overrides)


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------

# A name that is not a field but is accepted by preset() and Experiment.replace: "seed" sets both
# the data seed and the training seed (the world and the weights move together).
_BOTH = ("seed",)

PRESETS: dict[str, dict[str, dict]] = {
    # the book's one-layer toy, as an ARM and as an MDM
    "ar": {"model": {"attention": "causal"}, "train": {"objective": "ar"}},
    "mdm": {"model": {"attention": "bidirectional"}, "train": {"objective": "mdm"}},
    # a small LLaDA-style block: RoPE, RMSNorm, SwiGLU, bidirectional, no biases
    "llada_like": {
        "model": {"attention": "bidirectional", "positional": "rope", "norm": "rmsnorm", "mlp": "swiglu",
                  "bias": False, "n_layers": 2, "n_heads": 2, "d_model": 32},
        "train": {"objective": "mdm", "steps": 400, "lr": 0.03},
    },
    # a small GPT-2-style block (as in the independent check of PAPER.md §6): absolute positions,
    # LayerNorm, a GELU MLP, biases
    "gpt2_like": {
        "model": {"positional": "absolute", "norm": "layernorm", "mlp": "gelu", "bias": True,
                  "n_layers": 2, "n_heads": 4, "d_model": 32},
        "train": {"objective": "mdm", "lr": 0.03},
    },
}
DEFAULT_ATTENTION = {"ar": "causal", "suffix": "bidirectional", "prefix": "bidirectional", "mdm": "bidirectional"}


def _owner(key: str) -> list[str]:
    owners = [g for g, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))
              if key in {f.name for f in fields(cls)}]
    if not owners:
        raise ConfigError(f"unknown option {key!r}")
    return owners


def _apply(exp: Experiment, overrides: dict) -> Experiment:
    changes: dict[str, dict] = {"model": {}, "data": {}, "train": {}}
    for key, value in overrides.items():
        for g in _owner(key):  # "seed" names both the data seed and the training seed
            changes[g][key] = value
    try:
        return Experiment(**{g: replace(getattr(exp, g), **changes[g]) for g in changes})
    except TypeError as err:  # dataclasses.replace on a bad keyword
        raise ConfigError(str(err)) from None


def preset(name: str = "mdm", **overrides) -> Experiment:
    """A named experiment (``PRESETS``), with ``overrides`` naming fields of any config.

    ``preset("ar", n_pairs=64, d_model=16)``; ``preset("mdm", objective="suffix")`` (the
    suffix objective with the MDM's bidirectional attention); ``seed=s`` sets both the data and
    the training seed. An ``objective`` override without an ``attention`` one takes that
    objective's usual attention (ar: causal, else bidirectional). Unknown names raise
    :class:`ConfigError`.
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    base = PRESETS[name]
    overrides = dict(overrides)
    if "objective" in overrides and "attention" not in overrides and overrides["objective"] in DEFAULT_ATTENTION:
        overrides["attention"] = DEFAULT_ATTENTION[overrides["objective"]]
    exp = Experiment(model=ModelConfig(**base.get("model", {})), data=DataConfig(**base.get("data", {})),
                     train=TrainConfig(**base.get("train", {})))
    return _apply(exp, overrides)
