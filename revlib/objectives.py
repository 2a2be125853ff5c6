"""The four training objectives and the masking process: this file is the whole difference
between an ARM and an MDM in training.

==========  ===================================================================================
``ar``      next-token cross entropy: position i predicts token i + 1 (needs causal attention)
``mdm``     masked diffusion (LLaDA / SMDM): draw t ~ U(t_min, 1) per sentence, mask each token
            with probability t, and minimise the cross entropy of the masked tokens weighted 1/t
``suffix``  the same masking process confined to the last entity of each sentence: the ARM's
            task ("a is ?" -> b) posed to an encoder, never "? is b"
``prefix``  its mirror, confined to the first entity: only "? is b" -> a is ever trained (a
            control: it trains the ``infill`` route and the "b => a" storage, not the
            ``a2b`` route whose geometry, blank at the end looking at the start, ``b2a`` shares)
==========  ===================================================================================

With ``masking="span"`` a whole entity is masked or kept together (the relation token is its
own span), as whole-entity masking in DiffER and SMDM's fine-tuning does.

Every loss returns one value per ensemble member, shape (K,); the trainer sums them, so member
k's gradient is exactly the gradient of its own loss. The masked loss unembeds each member's
masked slots in its own product, so a member's numbers do not depend on what the other members
drew (an ensemble member trains exactly like a solo run; tested).

**Where a model reads its answer** is a property of the objective, and this module owns it:
an ``ar`` model predicts the token at position i from position i - 1, a masked model at the
masked slot itself (:func:`read_positions`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import MASK


def read_positions(objective: str, slots) -> list[int] | None:
    """Positions whose output predicts the tokens in ``slots``; None where the model cannot
    answer (an ``ar`` model asked for the first token: nothing precedes it)."""
    slots = list(slots)
    if objective == "ar":
        if min(slots) == 0:
            return None
        return [s - 1 for s in slots]
    return slots


# ---------------------------------------------------------------------------------------------
# the masking process
# ---------------------------------------------------------------------------------------------

@dataclass
class MaskedBatch:
    """One step's masked sentences for K members.

    ``inputs`` (K, B, T): the sentences with ``[M]`` in the masked slots; per member k,
    ``rows[k]`` (n_k,): flat indices b * T + t of its masked slots, ``targets[k]`` (n_k,) the
    tokens there and ``weights[k]`` (n_k,) their weights 1 / (t B T).
    """

    inputs: torch.Tensor
    rows: list[torch.Tensor]
    targets: list[torch.Tensor]
    weights: list[torch.Tensor]


def draw_rates(n_steps: int, B: int, t_min: float, gen: torch.Generator) -> torch.Tensor:
    """Masking rates (n_steps, B), stratified within each step (MDLM's low-discrepancy sampler).

    Sentence i of a step draws t from its own slice [i/B, (i+1)/B) of the unit interval, the
    slices shuffled; each t is still U(t_min, 1), so the loss stays unbiased, but a step never
    misses the small rates whose 1/t weights would make the loss jump from step to step.
    """
    order = torch.rand(n_steps, B, generator=gen).argsort(dim=1)  # a random permutation per step
    jitter = torch.rand(n_steps, B, generator=gen)
    return t_min + (1 - t_min) * (order + jitter) / B


def mask_units(seq_len: int, entity_tokens: int, objective: str, masking: str) -> torch.Tensor:
    """Which *unit* each position belongs to (T,), -1 for positions never masked.

    Token masking: every position is its own unit. Span masking: the two entities and the
    relation are three units. ``suffix``: only the positions of the last entity are maskable;
    ``prefix``: only those of the first.
    """
    k = entity_tokens
    if masking == "span":
        units = torch.tensor([0] * k + [1] + [2] * k)
    else:
        units = torch.arange(seq_len)
    if objective == "suffix":
        units = torch.where(torch.arange(seq_len) >= k + 1, units, torch.tensor(-1))
    if objective == "prefix":
        units = torch.where(torch.arange(seq_len) < k, units, torch.tensor(-1))
    return units


def draw_masks(n_steps: int, B: int, units: torch.Tensor, t_min: float, gen: torch.Generator):
    """Masks (n_steps, B, T) bool and rates t (n_steps, B) from one member's generator."""
    t = draw_rates(n_steps, B, t_min, gen)
    n_units = int(units.max()) + 1
    u = torch.rand(n_steps, B, n_units, generator=gen)
    per_unit = u < t[..., None]  # (n_steps, B, n_units)
    masked = per_unit[..., units.clamp_min(0)] & (units >= 0)  # (n_steps, B, T)
    return masked, t


def masked_batch(tokens: torch.Tensor, masked: torch.Tensor, t: torch.Tensor) -> MaskedBatch:
    """Assemble a :class:`MaskedBatch` from tokens (K, B, T), masks (K, B, T) and rates (K, B)."""
    K, B, T = tokens.shape
    inputs = tokens.masked_fill(masked, MASK)
    weight = (1.0 / (t * B * T))[:, :, None].expand(K, B, T)  # (K, B, T)
    rows, targets, weights = [], [], []
    for k in range(K):
        idx = masked[k].reshape(-1).nonzero().flatten()
        rows.append(idx)
        targets.append(tokens[k].reshape(-1)[idx])
        weights.append(weight[k].reshape(-1)[idx].contiguous())
    return MaskedBatch(inputs, rows, targets, weights)


# ---------------------------------------------------------------------------------------------
# the losses
# ---------------------------------------------------------------------------------------------

def ar_loss(model, tokens: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Next-token cross entropy, mean over the predicted positions: (K, B, T) tokens -> (K,)."""
    K = model.n_members
    tokens = tokens.expand(K, *tokens.shape) if tokens.dim() == 2 else tokens
    h, _ = model.residual(tokens, fused=fused, check=False)
    logits = model.unembed_logits(h[:, :, :-1])  # (K, B, T-1, V): predictions of tokens 1..T-1
    ce = F.cross_entropy(logits.flatten(0, 2), tokens[:, :, 1:].flatten(), reduction="none")
    return ce.view(K, -1).mean(dim=1)


def masked_loss(model, batch: MaskedBatch, fused: bool = True) -> torch.Tensor:
    """Weighted cross entropy of the masked slots: sum_masked CE / (t B T) per member, (K,).

    The 1/t weight makes the mdm objective an upper bound on the negative log-likelihood
    (LLaDA, SMDM); ``t_min`` keeps the weight bounded. Unmasked slots contribute nothing, and
    only the masked slots are unembedded.
    """
    h, _ = model.residual(batch.inputs, fused=fused, check=False)  # (K, B, T, d)
    K, d = h.shape[0], h.shape[-1]
    losses = []
    for k, (hk, Uk) in enumerate(zip(h.reshape(K, -1, d).unbind(0), model.unembed.unbind(0))):
        logits = hk.index_select(0, batch.rows[k]) @ Uk  # (n_k, V): member k's masked slots only
        ce = F.cross_entropy(logits, batch.targets[k], reduction="none")
        losses.append(torch.dot(ce, batch.weights[k].to(ce.dtype)))
    return torch.stack(losses)


class Batches:
    """Every training step's input for K members, drawn ahead in chunks from each member's generator.

    ``get(step)`` returns the tokens (K, B, T) for ``ar`` or a :class:`MaskedBatch` for the
    masked objectives. Member k's draws use only ``generators[k]``, in a fixed order per chunk
    (batch indices, then rates, then masks), so they do not depend on K.
    """

    CHUNK = 64  # steps drawn at once

    def __init__(self, text: torch.Tensor, tc: TrainConfig, entity_tokens: int, generators: list[torch.Generator]):
        self.text, self.tc, self.gens = text, tc, generators
        n, T = text.shape
        self.batch = tc.batch_size if tc.batch_size is not None and tc.batch_size < n else None
        self.copies = tc.mask_copies if tc.masked else 1
        self.units = mask_units(T, entity_tokens, tc.objective, tc.masking) if tc.masked else None
        self._start, self._chunk = None, None

    def _draw(self, start: int) -> None:
        S, K = self.CHUNK, len(self.gens)
        per_member = []
        for g in self.gens:
            if self.batch is not None:
                idx = torch.randint(len(self.text), (S, self.batch), generator=g)
                tokens = self.text[idx]  # (S, batch, T): each member its own batches
            else:
                tokens = self.text.expand(S, *self.text.shape)
            if self.copies > 1:
                tokens = tokens.repeat_interleave(self.copies, dim=1)
            if self.units is None:
                per_member.append((tokens, None, None))
            else:
                masked, t = draw_masks(S, tokens.shape[1], self.units, self.tc.t_min, g)
                per_member.append((tokens, masked, t))
        self._start = start
        tokens = torch.stack([m[0] for m in per_member])  # (K, S, B, T)
        if self.units is None:
            self._chunk = list(tokens.unbind(1))  # ar: the tokens of each step
            return
        masked = torch.stack([m[1] for m in per_member])  # (K, S, B, T)
        t = torch.stack([m[2] for m in per_member])  # (K, S, B)
        K, S, B, T = tokens.shape
        inputs = tokens.masked_fill(masked, MASK).unbind(1)  # S tensors (K, B, T)
        weight = (1.0 / (t * B * T))[..., None].expand(K, S, B, T)
        per_step: list[tuple[list, list, list]] = [([], [], []) for _ in range(S)]
        for k in range(K):  # one pass per member: all its masked slots of the chunk, split by step
            flat = masked[k].reshape(S, B * T)
            step_of, row = flat.nonzero(as_tuple=True)
            counts = flat.sum(dim=1).tolist()
            for s, (r, tgt, w) in enumerate(zip(row.split(counts), tokens[k].reshape(S, B * T)[step_of, row].split(counts),
                                                weight[k].reshape(S, B * T)[step_of, row].split(counts))):
                per_step[s][0].append(r)
                per_step[s][1].append(tgt)
                per_step[s][2].append(w)
        self._chunk = [MaskedBatch(inputs[s], *per_step[s]) for s in range(S)]

    def get(self, step: int):
        if self._start is None or not self._start <= step < self._start + self.CHUNK:
            self._draw(step)
        return self._chunk[step - self._start]


def loss(model, tc: TrainConfig, batch, fused: bool = True) -> torch.Tensor:
    """The objective of ``tc`` on one step's ``batch`` (from :class:`Batches`), (K,)."""
    if tc.objective == "ar":
        return ar_loss(model, batch, fused)
    return masked_loss(model, batch, fused)
