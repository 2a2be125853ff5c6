"""What a trained model knows: probe accuracy, probability and loss of the whole answer entity.

Every function takes an ensemble (revlib.model) and returns one number per member, shape (K,).

Per probe (revlib.data) and member:

``acc``
    share of queries whose *whole* answer entity is right, each slot an argmax over the whole
    vocabulary. A masked model fills every masked slot in one pass; an ``ar`` model decodes
    greedily (its greedy answer is right exactly when every slot's argmax is right given the
    right tokens before it, so one teacher-forced pass decides it).
``p_correct``
    mean over queries of the probability of the whole entity: the chain rule for an ``ar``
    model, the product of the one-pass slot probabilities for a masked model (a
    *pseudo*-likelihood: it treats the k slots as independent given the query).
``nll``
    mean over queries of -log of that probability, in nats. For one-token entities it is the
    probe's cross entropy; unlike ``p_correct`` it is not dominated by a few confident queries.

Chance is V^-k for ``p_correct`` and k log V for ``nll`` (``FactWorld.chance``).
"""
from __future__ import annotations

import numpy as np
import torch

from .cache import cached
from .data import FactWorld, Probe
from .objectives import read_positions

METRICS = ("acc", "p_correct", "nll")


def probe_logits(model, probe: Probe, objective: str, fused: bool = True) -> torch.Tensor | None:
    """Logits (K, N, k, V) with which the model predicts the k answer slots, or None where a
    model of this objective cannot answer (``ar`` asked for the first entity: ``infill``)."""
    reads = read_positions(objective, probe.slots)
    if reads is None:
        return None
    tokens = probe.full if objective == "ar" else probe.tokens  # teacher-forced / masked
    with torch.no_grad():
        h, _ = model.residual(tokens, fused=fused)
        return model.unembed_logits(h[:, :, reads])


def score_logits(logits: torch.Tensor, answers: torch.Tensor) -> dict[str, torch.Tensor]:
    """Score logits (K, N, k, V) against answers (N, k); every entry of the result is (K,)."""
    logp = logits.float().log_softmax(dim=-1)  # (K, N, k, V)
    idx = answers.expand(logp.shape[0], *answers.shape)[..., None]  # (K, N, k, 1)
    entity_logp = logp.gather(-1, idx)[..., 0].sum(-1)  # (K, N): log p of the whole entity
    hit = (logits.argmax(dim=-1) == answers).all(dim=-1)  # (K, N)
    return {"acc": hit.float().mean(dim=1), "p_correct": entity_logp.exp().mean(dim=1),
            "nll": -entity_logp.mean(dim=1)}


def evaluate(model, world: FactWorld, objective: str) -> dict[str, dict[str, torch.Tensor] | None]:
    """Per probe of the world: {"acc", "p_correct", "nll"}, each (K,); None where the model of
    this objective has no answer (``ar`` and ``infill``).

    All probes are read in one forward pass (their queries have the same length).
    """
    probes = [world.probe(name) for name in world.probe_names]
    use = [(p, read_positions(objective, p.slots)) for p in probes]
    batch = torch.cat([p.full if objective == "ar" else p.tokens for p, _ in use])  # (sum N, L)
    with torch.no_grad():
        h, _ = model.residual(batch, check=False)  # (K, sum N, L, d)
    out: dict[str, dict[str, torch.Tensor] | None] = {}
    start = 0
    for p, reads in use:
        n = len(p)
        if reads is None:
            out[p.name] = None
        else:
            with torch.no_grad():
                logits = model.unembed_logits(h[:, start:start + n][:, :, reads])  # (K, N, k, V)
            out[p.name] = score_logits(logits, p.answers)
        start += n
    return out


def trained_probes(objective: str) -> tuple[str, ...]:
    """The probes an objective trains directly: ``a2b`` and ``infill`` for ``mdm``, ``infill``
    for ``prefix``, ``a2b`` for ``ar`` and ``suffix``."""
    return {"mdm": ("a2b", "infill"), "prefix": ("infill",)}.get(objective, ("a2b",))


def failed(final: dict, objective: str, threshold: float = 0.9):
    """Members (K,) bool that did not learn what they were trained on: accuracy below
    ``threshold`` on any of :func:`trained_probes` (a seed that never learned the trained
    direction; the book reports these instead of dropping them)."""
    bad = None
    for name in trained_probes(objective):
        miss = torch.as_tensor(final[name]["acc"]) < threshold
        bad = miss if bad is None else bad | miss
    return bad.numpy()


def iterative_accuracy(model, probe: Probe) -> torch.Tensor:
    """Whole-answer accuracy (K,) of a masked model that decodes the k blanks one at a time, the
    most confident first (as LLaDA samples), instead of all in one pass.

    Each pass fills the still-masked slot whose argmax probability is highest with that argmax;
    after k passes the answer is complete. For k = 1 it is the one-pass accuracy.
    """
    from .data import MASK

    K = model.n_members
    tokens = probe.tokens.expand(K, *probe.tokens.shape).clone()  # (K, N, T): each member its own
    slots = torch.tensor(probe.slots)
    member, fact = torch.arange(K)[:, None], torch.arange(len(probe))[None]
    with torch.no_grad():
        for _ in range(len(probe.slots)):
            prob = model(tokens)[:, :, slots].softmax(-1)  # (K, N, k, V)
            confidence, choice = prob.max(-1)  # (K, N, k)
            confidence = torch.where(tokens[:, :, slots] == MASK, confidence, torch.tensor(-1.0))
            j = confidence.argmax(-1)  # (K, N): the slot to fill now
            tokens[member, fact, slots[j]] = choice.gather(-1, j[..., None])[..., 0]
    return (tokens[:, :, slots] == probe.answers).all(-1).float().mean(1)


@cached
def iterative(run) -> dict[str, np.ndarray]:
    """:func:`iterative_accuracy` of a masked run on ``a2b``, ``infill`` and ``b2a``, (K,) each (cached)."""
    if run.objective == "ar":
        raise ValueError("iterative decoding fills masked slots: an ar model has none")
    return {p: iterative_accuracy(run.model, run.world.probe(p)).numpy() for p in ("a2b", "infill", "b2a")}


@cached
def answer_slots(run, probe: str = "b2a") -> dict[str, np.ndarray]:
    """How a one-pass answer of a masked run is right or wrong, per seed (K,): ``slot``, the share
    of answer slots whose argmax is the right token; ``mirrored``, the share of queries answered
    with the right name in reversed token order (the model mirroring the trained query)."""
    p = run.world.probe(probe)
    logits = probe_logits(run.model, p, run.objective)
    if logits is None:
        raise ValueError(f"a model trained with {run.objective!r} does not answer {probe!r}")
    pred = logits.argmax(-1)  # (K, N, k)
    return {"slot": (pred == p.answers).float().mean((1, 2)).numpy(),
            "mirrored": (pred == p.answers.flip(-1)).all(-1).float().mean(1).numpy()}
