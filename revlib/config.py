"""Frozen configurations for the model, the fact world and training.

This module owns *what* an experiment is, never how it runs: no RNG is touched, nothing is
printed. Variants come from :func:`dataclasses.replace`; every invalid combination raises
:class:`ConfigError` with a message a reader can act on, so bad input never reaches torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

KINDS = ("ar", "mdm")
ATTENTIONS = ("causal", "bidirectional")
POSITIONALS = ("rope", "absolute", "alibi", "none")
SCHEDULES = ("cosine", "constant")

# A configuration whose parameters, Adam state and logits would need more than this many
# bytes is refused up front instead of failing deep inside torch with an allocation error.
MEMORY_LIMIT_BYTES = 4 * 2**30
MAX_LR = 1e3
MAX_SEED = 2**32 - 1  # seeds feed torch.Generator.manual_seed, with offsets added (revlib.train)
MAX_VOCAB = 10_000_000  # make_world draws a permutation of the vocabulary
N_SPECIAL = 3  # "[M]", "is", "rev": see revlib.data
SEQ_LEN = 3  # a fact is three tokens: entity, relation, entity


class ConfigError(ValueError):
    """An experiment that cannot be run as configured (the message says why)."""


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _seed(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer in [0, {MAX_SEED}], got {value!r}")


def _finite_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """One Transformer. The defaults are the book's formalisation: one layer, one head, attention only, RoPE."""

    n_layers: int = 1
    n_heads: int = 1
    d_model: int = 32
    attention: str = "bidirectional"  # "causal" for the ARM, "bidirectional" for the MDM
    positional: str = "rope"  # "rope" | "absolute" | "alibi" | "none"
    mlp: bool = False  # a 4x ReLU MLP after attention in every layer
    layernorm: bool = False  # pre-LN in every block and before the unembedding
    rope_base: float = 10_000.0
    max_len: int = SEQ_LEN  # only learned absolute positions care

    def __post_init__(self) -> None:
        _positive_int("n_layers", self.n_layers)
        _positive_int("n_heads", self.n_heads)
        _positive_int("d_model", self.d_model)
        _positive_int("max_len", self.max_len)
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.positional not in POSITIONALS:
            raise ConfigError(f"positional must be one of {POSITIONALS}, got {self.positional!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
        if self.positional == "rope" and self.d_head % 2:
            raise ConfigError(
                f"RoPE rotates pairs of coordinates, so the head size must be even; "
                f"d_model={self.d_model} with n_heads={self.n_heads} gives {self.d_head}"
            )
        _finite_positive("rope_base", self.rope_base)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class DataConfig:
    """A fact world of ``n_pairs`` one-token entity pairs (a_i, b_i); see :mod:`revlib.data`."""

    n_pairs: int = 128
    both_fraction: float = 0.0  # share of pairs also trained as "b_i rev a_i" (Zhu et al.'s split)
    vocab_size: int | None = None  # None: exactly the tokens used; else entities drawn from this many
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_int("n_pairs", self.n_pairs)
        if N_SPECIAL + 2 * self.n_pairs > MAX_VOCAB:
            raise ConfigError(f"n_pairs={self.n_pairs} needs a vocabulary above {MAX_VOCAB} tokens")
        if isinstance(self.both_fraction, bool) or not isinstance(self.both_fraction, (int, float)) \
                or not 0.0 <= self.both_fraction <= 1.0:
            raise ConfigError(f"both_fraction must lie in [0, 1], got {self.both_fraction!r}")
        if self.vocab_size is not None:
            _positive_int("vocab_size", self.vocab_size)
            if self.vocab_size > MAX_VOCAB:
                raise ConfigError(f"vocab_size must be at most {MAX_VOCAB}, got {self.vocab_size}")
            if self.vocab_size < N_SPECIAL + 2 * self.n_pairs:
                raise ConfigError(
                    f"vocab_size={self.vocab_size} cannot hold {self.n_pairs} pairs: it needs at "
                    f"least {N_SPECIAL + 2 * self.n_pairs} tokens (2 per pair + {N_SPECIAL} special)"
                )
        _seed("seed", self.seed)

    @property
    def vocab(self) -> int:
        """The number of tokens V, so chance is 1/V."""
        return self.vocab_size if self.vocab_size is not None else N_SPECIAL + 2 * self.n_pairs

    @property
    def n_both(self) -> int:
        return round(self.both_fraction * self.n_pairs)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. ``objective`` is the whole ARM/MDM difference (revlib.objectives)."""

    objective: str = "mdm"  # "ar": next token, causal mask; "mdm": masked diffusion
    steps: int = 300
    lr: float = 0.1  # Adam, scaled per tensor by its initial entry size (revlib.train)
    batch_size: int | None = None  # None: the whole training text every step
    mask_copies: int = 2  # MDM: independent maskings of each sequence per step (less noise)
    t_min: float = 0.05  # MDM: floor on the masking rate t, so 1/t stays bounded
    schedule: str = "cosine"  # learning rate: "cosine" decay to lr/10, or "constant"
    eval_every: int = 25  # probe metrics go into the history every this many steps
    seed: int = 0  # initialisation and training randomness (masks, batches)

    def __post_init__(self) -> None:
        if self.objective not in KINDS:
            raise ConfigError(f"objective must be one of {KINDS}, got {self.objective!r}")
        _positive_int("steps", self.steps)
        _finite_positive("lr", self.lr)
        if self.lr > MAX_LR:  # beyond this Adam's update overflows float32 inside torch
            raise ConfigError(f"lr must be at most {MAX_LR:g}, got {self.lr!r}")
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        _positive_int("mask_copies", self.mask_copies)
        _positive_int("eval_every", self.eval_every)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if isinstance(self.t_min, bool) or not isinstance(self.t_min, (int, float)) \
                or not 0.0 < self.t_min < 1.0:
            raise ConfigError(f"t_min must lie in (0, 1), got {self.t_min!r}")
        _seed("seed", self.seed)


@dataclass(frozen=True)
class Experiment:
    """Everything that determines a run: model, data and training. Hashable, so it keys the cache."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        wanted = "causal" if self.train.objective == "ar" else "bidirectional"
        if self.model.attention != wanted:
            raise ConfigError(
                f"objective {self.train.objective!r} needs {wanted} attention, "
                f"got {self.model.attention!r}"
            )
        need = estimated_bytes(self)
        if need > MEMORY_LIMIT_BYTES:
            raise ConfigError(
                f"this configuration needs about {need / 2**30:.1f} GiB (vocabulary of "
                f"{self.data.vocab} tokens x d_model {self.model.d_model}); the limit is "
                f"{MEMORY_LIMIT_BYTES / 2**30:.0f} GiB"
            )

    @property
    def kind(self) -> str:
        return self.train.objective

    def to_dict(self) -> dict:
        return asdict(self)


def estimated_bytes(exp: Experiment) -> int:
    """A generous upper estimate of the float32 memory one training member needs."""
    m, V = exp.model, exp.data.vocab
    d = m.d_model
    per_layer = 4 * d * d + (8 * d * d + 5 * d if m.mlp else 0)
    n_params = 2 * V * d + m.n_layers * per_layer + m.max_len * d
    n_seq = exp.data.n_pairs * 2  # at most: every pair in both directions
    batch = min(n_seq, exp.train.batch_size or n_seq) * exp.train.mask_copies
    activations = 4 * batch * SEQ_LEN * V  # logits, softmax, their gradients
    return 4 * (4 * n_params + activations)  # params, grads and two Adam moments


def preset(kind: str = "mdm", **overrides) -> Experiment:
    """The book's default one-layer toy for ``kind`` ("ar" or "mdm").

    ``overrides`` name fields of any of the three configs, e.g. ``preset("ar", n_pairs=64,
    d_model=16, steps=200)``; an unknown name raises :class:`ConfigError`.
    """
    if kind not in KINDS:
        raise ConfigError(f"model kind must be one of {KINDS}, got {kind!r}")
    groups = {"model": ModelConfig(), "data": DataConfig(), "train": TrainConfig(objective=kind)}
    attention = "causal" if kind == "ar" else "bidirectional"
    changes: dict[str, dict] = {"model": {"attention": attention}, "data": {}, "train": {}}
    for key, value in overrides.items():
        owner = [g for g, cfg in groups.items() if key in cfg.__dataclass_fields__]
        if not owner:
            raise ConfigError(f"unknown option {key!r}")
        for g in owner:  # "seed" names both the data seed and the training seed
            changes[g][key] = value
    return Experiment(**{g: replace(cfg, **changes[g]) for g, cfg in groups.items()})
