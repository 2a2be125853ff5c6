"""What a trained model knows: probe accuracy and the probability of the right answer.

Every function accepts an ensemble (see revlib.model) and returns one number per member,
tensors of shape (K,). Accuracy is an argmax over the *whole* vocabulary; chance is 1/V.
"""
from __future__ import annotations

import torch

from .data import PROBES, FactWorld, Probe


def answer_logits(model, probe: Probe) -> torch.Tensor | None:
    """Logits (K, N, V) for the probe's ``[M]`` slot, or None where the model cannot answer.

    The MDM reads its prediction at the masked slot. The ARM predicts token i from position
    i-1, so it reads position ``probe.position - 1``; for ``infill`` the blank is the first
    token and nothing precedes it: the ARM has no ``infill`` answer (None), by construction.
    """
    read_at = probe.position - 1 if model.causal else probe.position
    if read_at < 0:
        return None
    with torch.no_grad():
        return model(probe.tokens)[:, :, read_at, :]


def score_logits(logits: torch.Tensor, answers: torch.Tensor) -> dict[str, torch.Tensor]:
    """Score logits (K, N, V) against answers (N,); each entry of the result is (K,).

    ``acc``: share of queries whose argmax over the whole vocabulary is the answer;
    ``p_correct``: mean probability of the answer; ``nll``: mean -log p(answer), the probe loss.
    """
    logp = logits.float().log_softmax(dim=-1)  # (K, N, V)
    logp_correct = logp[:, torch.arange(len(answers)), answers]  # (K, N)
    hit = logits.argmax(dim=-1) == answers  # (K, N)
    return {
        "acc": hit.float().mean(dim=1),
        "p_correct": logp_correct.exp().mean(dim=1),
        "nll": -logp_correct.mean(dim=1),
    }


def evaluate(model, world: FactWorld) -> dict[str, dict[str, torch.Tensor] | None]:
    """Per probe ("a2b", "infill", "b2a"): {"acc", "p_correct", "nll"}, each (K,); None for ARM infill."""
    results: dict[str, dict[str, torch.Tensor] | None] = {}
    for name in PROBES:
        probe = world.probe(name)
        if len(probe.answers) == 0:  # every pair trained both ways: nothing left to reverse
            results[name] = None
            continue
        logits = answer_logits(model, probe)
        results[name] = None if logits is None else score_logits(logits, probe.answers)
    return results
