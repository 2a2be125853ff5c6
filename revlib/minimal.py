"""The book's model in one file you can read in one sitting: a Transformer, its two objectives and
its training loop, written to be shown, not to be fast.

It computes what revlib's engine (revlib.model, revlib.objectives, revlib.training) computes for
the book's toy, and the tests hold it to that: from the same initial weights and batches both give
the same losses, step by step, and trained from scratch the same probe accuracies within the
spread of seeds. The engine differs only in speed: it trains K seeds side by side on one leading
axis, rotates the weights instead of the activations, draws masks ahead, fuses Adam, and unembeds
only the slots it scores.

Shapes: B sentences, T positions, d = d_model, H heads of size e = d / H, V tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK = 0  # the mask token [M] (revlib.data)


def rope(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotate x (B, H, T, e) at position t by the angles t·θ_j, θ_j = base^(-2j/e): plane j turns
    coordinates (j, j + e/2). Then (R_i q)·(R_j k) depends on j - i only."""
    T, e = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, e, 2, dtype=torch.float64) / e)  # (e/2,)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * theta[None]  # (T, e/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : e // 2], x[..., e // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention; values carry no position."""

    def __init__(self, d: int, n_heads: int, causal: bool, positional: str,
                 rope_base: float):
        super().__init__()
        self.H, self.e, self.causal, self.positional, self.rope_base = (
            n_heads, d // n_heads, causal, positional, rope_base)
        # q = W_Q x: the heads side by side in the d outputs
        self.W_Q = nn.Linear(d, d, bias=False)
        self.W_K = nn.Linear(d, d, bias=False)
        self.W_V = nn.Linear(d, d, bias=False)
        self.W_O = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> same
        B, T, _ = x.shape
        # (B, T, d) -> (B, H, T, e): one slice of the d features per head
        heads = lambda z: z.view(B, T, self.H, self.e).transpose(1, 2)
        q, k, v = heads(self.W_Q(x)), heads(self.W_K(x)), heads(self.W_V(x))
        if self.positional == "rope":
            q, k = rope(q, self.rope_base), rope(k, self.rope_base)
        # (B, H, T, T): query i, key j
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.e)
        if self.causal:  # no key after the query
            scores = scores.masked_fill(
                torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        pattern = scores.softmax(dim=-1)
        # (B, T, H e): the heads side by side again
        mixed = (pattern @ v).transpose(1, 2).reshape(B, T, -1)
        return self.W_O(mixed)


class Transformer(nn.Module):
    """Token embeddings (+ learned positions), ``n_layers`` residual attention layers, an unembedding.

    h_i = E[x_i] (+ p_i); every layer adds Attention(h); logits_i = U h_i.
    """

    def __init__(self, vocab_size: int, d_model: int = 32, n_layers: int = 1, n_heads: int = 1, causal: bool = False,
                 positional: str = "rope", rope_base: float = 10_000.0, max_len: int = 3, unembed_scale: float = 1.0,
                 seed: int = 0):
        super().__init__()
        if positional not in ("rope", "absolute", "none"):
            raise ValueError(f"positional must be rope, absolute or none, got {positional!r}")
        self.embed = nn.Parameter(torch.empty(vocab_size, d_model))
        self.pos = nn.Parameter(torch.empty(max_len, d_model)) if positional == "absolute" else None
        self.layers = nn.ModuleList(Attention(d_model, n_heads, causal, positional, rope_base) for _ in range(n_layers))
        self.unembed = nn.Parameter(torch.empty(d_model, vocab_size))
        # Initial sizes (the engine's): unit-variance embeddings, weights of variance 1/d, U of
        # variance unembed_scale^2/d so that initial logits are of order one.
        gen = torch.Generator().manual_seed(seed)
        self.init_std = {}
        for name, p in self.named_parameters():
            std = 1.0 if name in ("embed", "pos") else (unembed_scale if name == "unembed" else 1.0) / math.sqrt(d_model)
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            self.init_std[name] = std

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        h = self.embed[tokens]
        if self.pos is not None:
            h = h + self.pos[: tokens.shape[1]]
        for layer in self.layers:
            h = h + layer(h)
        return h @ self.unembed


# ---------------------------------------------------------------------------------------------
# the two objectives
# ---------------------------------------------------------------------------------------------

def ar_loss(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy: position i predicts token i + 1."""
    logits = model(tokens)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def mask_tokens(tokens: torch.Tensor, t_min: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The masking process: each sentence draws a rate t ~ U(t_min, 1) and each token is masked
    with probability t. Returns the mask (B, T) and the rates (B,)."""
    t = t_min + (1 - t_min) * torch.rand(tokens.shape[0], generator=gen)
    return torch.rand(tokens.shape, generator=gen) < t[:, None], t


def mdm_loss(model: Transformer, tokens: torch.Tensor, mask: torch.Tensor,
             t: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the masked tokens, each weighted 1/t, over all B·T
    slots (LLaDA, SMDM)."""
    logits = model(tokens.masked_fill(mask, MASK))
    # (B, T): one loss per slot
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    return (ce * mask / t[:, None]).sum() / tokens.numel()


# ---------------------------------------------------------------------------------------------
# training and probing
# ---------------------------------------------------------------------------------------------

def train(model: Transformer, text: torch.Tensor, objective: str, steps: int = 300, lr: float = 0.1,
          mask_copies: int = 2, t_min: float = 0.05, seed: int = 0, batches=None) -> list[float]:
    """Full-batch Adam on ``text`` (n, T) with ``objective`` "ar" or "mdm"; returns the losses.

    Each tensor's learning rate is lr times its initial entry size (embeddings move as fast,
    relatively, as the weight matrices); it decays along a cosine to a tenth. The masked
    objective sees ``mask_copies`` independently masked copies of the text per step. ``batches``,
    if given, yields each step's (tokens, mask, rates) instead of drawing them (the tests feed
    the engine's).
    """
    groups = [{"params": [p], "lr": lr * model.init_std[n]} for n, p in model.named_parameters()]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.98), eps=1e-8)
    cosine = lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        if objective == "ar":
            loss = ar_loss(model, text)
        else:
            tokens, mask, t = next(batches) if batches is not None else (
                text.repeat(mask_copies, 1), *mask_tokens(text.repeat(mask_copies, 1), t_min, gen))
            loss = mdm_loss(model, tokens, mask, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model: Transformer, query: torch.Tensor, answers: torch.Tensor, slots, objective: str,
             full: torch.Tensor | None = None) -> float:
    """Share of queries whose whole answer is the argmax in every slot. A masked model reads each
    blank in place; an ``ar`` model reads the position before it, teacher-forced on ``full``."""
    slots = list(slots)
    if objective == "ar":
        logits = model(full)[:, [s - 1 for s in slots]]
    else:
        logits = model(query)[:, slots]
    return (logits.argmax(-1) == answers).all(-1).float().mean().item()


def from_engine(engine, member: int = 0) -> Transformer:
    """Member ``member`` of a revlib engine model (revlib.model.Transformer, attention only, no
    norm) as a readable :class:`Transformer` with the same weights. The engine stores x @ W
    (row vectors); ``nn.Linear`` stores W as (out, in), hence the transposes."""
    cfg = engine.cfg
    if cfg.mlp != "none" or cfg.norm != "none" or cfg.untie_values or cfg.positional == "alibi":
        raise ValueError("the readable model has attention-only layers without norms, untied values or ALiBi")
    model = Transformer(engine.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.attention == "causal",
                        cfg.positional, cfg.rope_base, engine.max_len, cfg.unembed_scale)
    with torch.no_grad():
        model.embed.copy_(engine.embed[member])
        model.unembed.copy_(engine.unembed[member])
        if model.pos is not None:
            model.pos.copy_(engine.pos[member])
        for mine, block in zip(model.layers, engine.blocks):
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(mine, name).weight.copy_(getattr(block.attn, name)[member].T)
    return model
