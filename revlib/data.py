"""The fact world: entity pairs, the training text and the probes.

**Vocabulary** (token ids): 0 ``[M]`` (the mask), 1 ``is``, 2 ``rev``, then the entity
tokens. Each side has its own alphabet of ``n_pairs`` tokens, a random choice of the
non-special ids (so an id says nothing about its partner); an entity is ``k = entity_tokens``
tokens from its side's alphabet, distinct entities distinct tuples. With k = 1 every alphabet
token is one entity; with k > 1 entities share tokens, as multi-token names do.

**Sentences** are ``x_1..x_k r y_1..y_k``. Every pair is trained in one sentence, "a is b" by
default. ``reversed_fraction`` of the pairs are also trained the other way; with
``relations="one"`` that is "b is a" (a symmetric relation), with ``relations="inverse"`` it
is "b rev a", where ``rev`` is the inverse relation (think "a parent-of b", "b child-of a"; Zhu
et al.'s split). ``hold_out="random"`` trains each one-way pair in a random direction, "a is b"
or its converse, as Zhu et al.'s code does.

**Probes** ask about the one-way pairs only (the pairs whose reverse was never trained), in
terms of each pair's trained sentence "x r y", r' the converse relation (``rev`` for ``is``
and back under ``relations="inverse"``, ``is`` itself under ``"one"``):

==========  ======================  ======  ===========================================
name        query                   answer  what it asks
==========  ======================  ======  ===========================================
``a2b``     ``x r [M]..[M]``        y       the trained direction (both models train it)
``infill``  ``[M]..[M] r y``        x       the trained sentence's first entity (MDM)
``b2a``     ``y r' [M]..[M]``       x       the reversal: the true converse, never trained
``swap``    ``y r [M]..[M]``        x       ``inverse`` only: the *false* converse, which
                                            an order-aware model should not assert
==========  ======================  ======  ===========================================

With the default ``hold_out="b2a"`` x is a and y is b, so ``b2a`` is "b is [M]" -> a (or
"b rev [M]" -> a under ``inverse``). Under ``hold_out="random"`` the names keep their roles:
``a2b`` is the trained direction of each pair and ``b2a`` its untrained converse, whichever
entity comes first.

Everything random comes from one private ``torch.Generator`` seeded by ``DataConfig.seed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .config import ConfigError, DataConfig

MASK, IS, REV = 0, 1, 2
SPECIAL_NAMES = ("[M]", "is", "rev")
PROBES = ("a2b", "infill", "b2a", "swap")


@dataclass(frozen=True)
class Probe:
    """A batch of N queries about N one-way pairs.

    ``tokens`` (N, L): the query, ``[M]`` in the answer slots; ``full`` (N, L): the same
    sentence with the answer filled in (an ARM reads it teacher-forced); ``slots``: the k answer
    positions; ``answers`` (N, k): the answer entity; ``pairs`` (N,): the pair indices.
    """

    name: str
    tokens: torch.Tensor
    full: torch.Tensor
    slots: tuple[int, ...]
    answers: torch.Tensor
    pairs: torch.Tensor

    def __len__(self) -> int:
        return len(self.answers)


@dataclass(frozen=True, eq=False)
class FactWorld:
    """N entity pairs and the text a model is trained on.

    ``a``, ``b``: (N, k) token ids of the entities; ``reversed``: (N,) bool, pairs trained both
    ways; ``forward``: (N,) bool, pairs whose trained sentence is "a r b" (False: its converse);
    ``train_tokens``: (n_train, L) the training sentences, L = 2k + 1.
    """

    config: DataConfig
    a: torch.Tensor
    b: torch.Tensor
    reversed: torch.Tensor
    forward: torch.Tensor
    train_tokens: torch.Tensor
    alphabets: tuple[torch.Tensor, torch.Tensor]  # the a-side and b-side token ids, (n_pairs,) each

    # -- sizes and the shape of a sentence ------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """V: the number of tokens the model can output."""
        return self.config.n_vocab

    @property
    def k(self) -> int:
        """Tokens per entity."""
        return self.config.entity_tokens

    @property
    def seq_len(self) -> int:
        return 2 * self.k + 1

    @property
    def spans(self) -> tuple[range, range, range]:
        """Positions of the first entity, the relation and the second entity of a sentence."""
        k = self.k
        return range(0, k), range(k, k + 1), range(k + 1, 2 * k + 1)

    @property
    def chance(self) -> float:
        """Probability of the whole right entity under a uniform guess per slot: V^(-k)."""
        return float(self.vocab_size) ** (-self.k)

    @property
    def one_way(self) -> torch.Tensor:
        """Indices (N_probe,) of the pairs trained in one direction only: what the probes score."""
        return (~self.reversed).nonzero().flatten()

    @property
    def probe_names(self) -> tuple[str, ...]:
        """The probes this world defines: ``swap`` only with an inverse relation."""
        return PROBES if self.config.relations == "inverse" else PROBES[:3]

    # -- probes ---------------------------------------------------------------------------------

    def converse_relation(self, relation: torch.Tensor) -> torch.Tensor:
        """r' for each r: ``is`` <-> ``rev`` with an inverse relation, ``is`` itself otherwise."""
        if self.config.relations == "one":
            return relation
        return torch.where(relation == IS, torch.full_like(relation, REV), torch.full_like(relation, IS))

    @cached_property
    def _trained(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (N, k), r (N,), y (N, k)): the trained sentence of every pair."""
        fwd = self.forward[:, None]
        x = torch.where(fwd, self.a, self.b)
        y = torch.where(fwd, self.b, self.a)
        r = torch.where(self.forward, IS, REV if self.config.relations == "inverse" else IS)
        return x, r, y

    def probe(self, name: str) -> Probe:
        """The queries of probe ``name`` (see the module docstring) on the one-way pairs."""
        if name not in self.probe_names:
            if name == "swap":
                raise ValueError("the swap probe needs relations='inverse': with one relation 'y r [M]' "
                                 "is the b2a query itself")
            raise ValueError(f"unknown probe {name!r}; expected one of {', '.join(self.probe_names)}")
        return self._probes[name]

    @cached_property
    def _probes(self) -> dict[str, Probe]:
        idx = self.one_way
        x, r, y = (t[idx] for t in self._trained)
        n, k = len(idx), self.k
        mask = torch.full((n, k), MASK)
        first, second = list(self.spans[0]), list(self.spans[2])

        def sentence(left, rel, right):
            return torch.cat([left, rel[:, None], right], dim=1)  # (N, L)

        conv = self.converse_relation(r)
        spec = {  # name: (left, relation, right, answer side)
            "a2b": (x, r, y, "right"),
            "infill": (x, r, y, "left"),
            "b2a": (y, conv, x, "right"),
            "swap": (y, r, x, "right"),
        }
        out = {}
        for name in self.probe_names:
            left, rel, right, side = spec[name]
            full = sentence(left, rel, right)
            if side == "right":
                out[name] = Probe(name, sentence(left, rel, mask), full, tuple(second), right.clone(), idx)
            else:
                out[name] = Probe(name, sentence(mask, rel, right), full, tuple(first), left.clone(), idx)
        return out

    # -- reading --------------------------------------------------------------------------------

    def token_name(self, token: int) -> str:
        if token < len(SPECIAL_NAMES):
            return SPECIAL_NAMES[token]
        for side, alphabet in zip("ab", self.alphabets):
            hit = (alphabet == token).nonzero()
            if len(hit):
                return f"{side}{hit.item()}"
        return f"x{token}"  # a vocabulary entry no entity uses

    def decode(self, tokens) -> str:
        return " ".join(self.token_name(int(t)) for t in tokens)

    def entity_name(self, tokens) -> str:
        return "·".join(self.token_name(int(t)) for t in tokens)

    def describe(self, n: int = 3) -> str:
        """A few training sentences and one query of each probe, decoded, for reading in a notebook."""
        cfg = self.config
        lines = [
            f"{cfg.n_pairs} pairs, entities of {self.k} token{'s' if self.k > 1 else ''}, "
            f"vocabulary V = {self.vocab_size}, chance V^-{self.k} = {self.chance:.3g}",
            f"training text: {len(self.train_tokens)} sentences; {int(self.reversed.sum())} pairs trained both ways, "
            f"{len(self.one_way)} one way"
            + (" (each in a random direction)" if cfg.hold_out == "random" else ""),
        ]
        lines += [f"  {self.decode(row)}" for row in self.train_tokens[:n]]
        lines.append("probes on the one-way pairs (query -> answer):")
        for name in self.probe_names:
            p = self.probe(name)
            lines.append(f"  {name:7} {self.decode(p.tokens[0]):>{8 * self.k + 12}}  ->  {self.entity_name(p.answers[0])}")
        return "\n".join(lines)


def _distinct_tuples(alphabet: torch.Tensor, n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct k-tuples (n, k) of tokens from ``alphabet``; k = 1: a random order of it."""
    m = len(alphabet)
    if k == 1:
        return alphabet[torch.randperm(m, generator=gen)[:n]][:, None]
    # draw tuples in batches and keep the first occurrence of each, until there are n of them;
    # with m >= n the space m^k >= n^2 is large, so this ends after a batch or two
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < n:
        draw = torch.randint(m, (2 * n, k), generator=gen)
        for row in draw.tolist():
            seen.setdefault(tuple(row), None)
            if len(seen) == n:
                break
    return alphabet[torch.tensor(list(seen))]


def make_world(config: DataConfig) -> FactWorld:
    """Draw the pairs and write the training text, deterministically from ``config.seed``."""
    if not isinstance(config, DataConfig):
        raise ConfigError(f"make_world needs a DataConfig, got {type(config).__name__}")
    gen = torch.Generator().manual_seed(config.seed)
    n, k = config.n_pairs, config.entity_tokens
    n_entities = config.n_vocab - len(SPECIAL_NAMES)
    # two alphabets of n tokens each: a random choice of the non-special tokens
    chosen = torch.randperm(n_entities, generator=gen)[: 2 * n] + len(SPECIAL_NAMES)
    alphabets = (chosen[:n], chosen[n:])
    a = _distinct_tuples(alphabets[0], n, k, gen)
    b = _distinct_tuples(alphabets[1], n, k, gen)
    reversed_ = torch.zeros(n, dtype=torch.bool)
    reversed_[torch.randperm(n, generator=gen)[: config.n_reversed]] = True
    if config.hold_out == "random":  # each one-way pair trained in a random direction
        forward = (torch.rand(n, generator=gen) < 0.5) | reversed_
    else:
        forward = torch.ones(n, dtype=torch.bool)
    world = FactWorld(config, a, b, reversed_, forward, torch.empty(0, 2 * k + 1, dtype=torch.long), alphabets)
    x, r, y = world._trained
    trained = torch.cat([x, r[:, None], y], dim=1)  # (N, L): every pair's trained sentence
    conv = world.converse_relation(r)
    converse = torch.cat([y, conv[:, None], x], dim=1)[reversed_]  # the reversed share, other way round
    object.__setattr__(world, "train_tokens", torch.cat([trained, converse]))
    return world
