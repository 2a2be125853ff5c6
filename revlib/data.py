"""The fact world: entity pairs, the one-direction training text and the three probes.

Vocabulary (token ids): 0 ``[M]`` (mask), 1 ``is``, 2 ``rev``, then entities. A fact is
the three tokens ``a_i is b_i``. With ``both_fraction > 0`` that share of pairs is also
written the other way, ``b_i rev a_i``, with its own relation token as in Zhu et al.'s
split; the reversal probe then asks ``b_i rev [M]`` of the remaining pairs.

Probes (the book's notation page), each a batch of 3-token queries with one ``[M]`` slot:

==========  ==================  ======  ==========================
name        query               answer  trained on
==========  ==================  ======  ==========================
``a2b``     ``a_i is [M]``      b_i     both models
``infill``  ``[M] is b_i``      a_i     the MDM only
``b2a``     ``b_i r [M]``       a_i     nobody (only never-reversed pairs)
==========  ==================  ======  ==========================

In ``b2a`` the relation r is ``is``, or ``rev`` when some pairs are trained reversed.

Everything random comes from a private ``torch.Generator`` seeded by ``DataConfig.seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import DataConfig

MASK, IS, REV = 0, 1, 2
SPECIAL_NAMES = ("[M]", "is", "rev")
PROBES = ("a2b", "infill", "b2a")


@dataclass(frozen=True)
class Probe:
    """A batch of queries: ``tokens`` (N, 3) with ``[M]`` at ``position``; ``answers`` (N,)."""

    name: str
    tokens: torch.Tensor
    position: int
    answers: torch.Tensor


@dataclass(frozen=True)
class FactWorld:
    """N entity pairs and the text a model is trained on.

    ``a``, ``b``: (N,) token ids of the pairs; ``both``: (N,) bool, pairs also trained reversed;
    ``train_tokens``: (n_train, 3) the training sequences.
    """

    config: DataConfig
    a: torch.Tensor
    b: torch.Tensor
    both: torch.Tensor
    train_tokens: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return self.config.vocab

    @property
    def chance(self) -> float:
        """The probability of the right answer under a uniform guess over the vocabulary."""
        return 1.0 / self.vocab_size

    @property
    def b2a_relation(self) -> int:
        """``rev`` when some pairs are trained reversed (the model has seen that query form)."""
        return REV if self.config.n_both > 0 else IS

    def token_name(self, token: int) -> str:
        if token < len(SPECIAL_NAMES):
            return SPECIAL_NAMES[token]
        pair = (self.a == token).nonzero()
        if len(pair):
            return f"a{pair.item()}"
        pair = (self.b == token).nonzero()
        if len(pair):
            return f"b{pair.item()}"
        return f"x{token}"  # a vocabulary entry no fact uses

    def decode(self, tokens) -> str:
        return " ".join(self.token_name(int(t)) for t in tokens)

    def describe(self, n: int = 3) -> str:
        """A few training rows and one query of each probe, decoded, for reading in a notebook."""
        both = int(self.both.sum())
        lines = [
            f"{len(self.a)} pairs, vocabulary V = {self.vocab_size} tokens, chance 1/V = {self.chance:.4f}",
            f"training text: {len(self.train_tokens)} sequences"
            + (f" ({both} pairs also written reversed with 'rev')" if both else " (each fact one way only)"),
        ]
        lines += [f"  {self.decode(row)}" for row in self.train_tokens[:n]]
        lines.append("probes (query -> answer):")
        for name in PROBES:
            probe = self.probe(name)
            if len(probe.answers):
                lines.append(f"  {name:7} {self.decode(probe.tokens[0]):>14}  ->  {self.token_name(int(probe.answers[0]))}")
        return "\n".join(lines)

    def probe(self, name: str) -> Probe:
        """The queries of probe ``name`` ("a2b", "infill" or "b2a")."""
        n = len(self.a)
        mask = torch.full((n,), MASK)
        if name == "a2b":
            tokens = torch.stack([self.a, torch.full((n,), IS), mask], dim=1)
            return Probe(name, tokens, 2, self.b.clone())
        if name == "infill":
            tokens = torch.stack([mask, torch.full((n,), IS), self.b], dim=1)
            return Probe(name, tokens, 0, self.a.clone())
        if name == "b2a":
            keep = ~self.both  # score reversal only where the reverse was never trained
            m = int(keep.sum())
            tokens = torch.stack(
                [self.b[keep], torch.full((m,), self.b2a_relation), torch.full((m,), MASK)], dim=1
            )
            return Probe(name, tokens, 2, self.a[keep].clone())
        raise ValueError(f"unknown probe {name!r}; expected one of {PROBES}")


def make_world(config: DataConfig) -> FactWorld:
    """Draw the pairs and write the training text, deterministically from ``config.seed``."""
    gen = torch.Generator().manual_seed(config.seed)
    n = config.n_pairs
    n_entities = config.vocab - len(SPECIAL_NAMES)
    # Entities are a random choice of the non-special tokens; with the default vocab_size
    # that is all of them, shuffled, so a_i and b_i carry no information in their ids.
    entities = torch.randperm(n_entities, generator=gen)[: 2 * n] + len(SPECIAL_NAMES)
    a, b = entities[:n], entities[n:]
    both = torch.zeros(n, dtype=torch.bool)
    both[torch.randperm(n, generator=gen)[: config.n_both]] = True
    forward_text = torch.stack([a, torch.full((n,), IS), b], dim=1)
    reversed_text = torch.stack([b[both], torch.full((int(both.sum()),), REV), a[both]], dim=1)
    return FactWorld(config, a, b, both, torch.cat([forward_text, reversed_text]))
