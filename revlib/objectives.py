"""The two training objectives: this file is the whole ARM/MDM difference in training.

Both return one loss per ensemble member, shape (K,); the trainer sums them, so member k's
gradient is exactly the gradient of its own loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import MASK


def _per_member(tokens: torch.Tensor, K: int) -> torch.Tensor:
    """(B, T) or (K, B, T) -> (K, B, T)."""
    return tokens.expand(K, *tokens.shape) if tokens.dim() == 2 else tokens


def ar_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy under the causal mask: position i predicts token i+1. -> (K,)"""
    if not model.causal:
        raise ValueError("ar_loss needs a model with causal attention")
    tokens = _per_member(tokens, model.n_members)  # (K, B, T)
    h, _ = model.residual(tokens)
    logits = model.unembed_logits(h[:, :, :-1])  # (K, B, T-1, V): predictions of tokens 1..T-1
    ce = F.cross_entropy(logits.flatten(0, 2), tokens[:, :, 1:].flatten(), reduction="none")
    return ce.view(tokens.shape[0], -1).mean(dim=1)


def mask_tokens(
    tokens: torch.Tensor, t_min: float, generators: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The masking process: per sequence draw t ~ U(t_min, 1), mask each token with probability t.

    ``tokens`` (K, B, T); one generator per member. Returns ``masked`` (K, B, T) with ``[M]``
    in the masked slots, ``is_masked`` (K, B, T) bool and ``t`` (K, B).

    The B rates of a batch are stratified (the low-discrepancy sampler of MDLM, Sahoo et al.
    2024): sequence i draws t from its own slice [i/B, (i+1)/B) of the unit interval, slices
    shuffled. Each t is still U(t_min, 1), so the loss is unbiased, but a batch never misses
    the small rates whose 1/t weights would otherwise make the loss jump from step to step.
    """
    K, B, T = tokens.shape
    t = torch.stack(
        [t_min + (1 - t_min) * (torch.randperm(B, generator=g) + torch.rand(B, generator=g)) / B
         for g in generators]
    )  # (K, B)
    u = torch.stack([torch.rand(B, T, generator=g) for g in generators])  # (K, B, T)
    is_masked = u < t[:, :, None]
    return tokens.masked_fill(is_masked, MASK), is_masked, t


def mdm_loss(
    model, tokens: torch.Tensor, generators: list[torch.Generator], t_min: float = 0.05
) -> torch.Tensor:
    """Masked diffusion loss (LLaDA / SMDM): E_t [ (1/t) * sum over masked slots of CE ] / T. -> (K,)

    The 1/t weight makes this an upper bound on the negative log-likelihood; ``t_min`` keeps
    the weight bounded when few tokens are masked. Unmasked slots contribute nothing.
    """
    if model.causal:
        raise ValueError("mdm_loss needs a model with bidirectional attention")
    tokens = _per_member(tokens, model.n_members)  # (K, B, T)
    K, B, T = tokens.shape
    masked, is_masked, t = mask_tokens(tokens, t_min, generators)
    h, _ = model.residual(masked)  # (K, B, T, d)
    # Unembed only the masked slots (about half): the unembedding is most of the arithmetic.
    # Members mask different slots, so each takes its n_max first slots in an order that puts
    # its masked ones first; the padding slots get weight 0.
    flat_masked = is_masked.view(K, B * T)
    n_max = max(int(flat_masked.sum(dim=1).max()), 1)
    rows = torch.argsort(~flat_masked, dim=1, stable=True)[:, :n_max]  # (K, n_max) slot ids
    h_rows = torch.gather(h.reshape(K, B * T, -1), 1, rows[:, :, None].expand(-1, -1, h.shape[-1]))
    logits = model.unembed_logits(h_rows)  # (K, n_max, V)
    targets = torch.gather(tokens.reshape(K, B * T), 1, rows)  # (K, n_max)
    weight = torch.gather(flat_masked / t.repeat_interleave(T, dim=1), 1, rows)  # 1/t, or 0 for padding
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(K, n_max)
    return (ce * weight).sum(dim=1) / (B * T)
