"""The default toy MDM written the way a PyTorch user without revlib would write it.

Same size as revlib's default (one layer, one head, attention only, d_model 32, RoPE, 128
facts), same objective (masked diffusion: t ~ U(t_min, 1), mask with probability t, cross
entropy on masked tokens weighted by 1/t), nanoGPT-style modules, Adam and mini-batches from a
shuffled DataLoader. It trains until the a2b accuracy reaches the target, evaluating after
every epoch. `revlib bench` times it beside revlib on the same single thread (on a shared
2-core machine two threads stall unpredictably, which made an earlier comparison swing 20x).

Nothing here is handicapped on purpose: it uses fused scaled-dot-product attention and a
learning rate picked by a small sweep on the same task (3e-3 reached the target in ~5,500
steps; 1e-2 and 3e-2 had not within 120 s). It is kept readable, not tuned for speed.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def rope(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary embedding of x (B, H, T, e) by position."""
    T, e = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, e, 2, dtype=torch.float32) / e)
    angles = torch.arange(T, dtype=torch.float32)[:, None] * theta[None, :]  # (T, e/2)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=False)
        self.c_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=False)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class TinyMDM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 32, n_heads: int = 1):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        x = x + self.attn(x)
        return self.lm_head(x)


def a2b_accuracy(model: nn.Module, queries: torch.Tensor, answers: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(queries)[:, 2, :]
    return (logits.argmax(-1) == answers).float().mean().item()


def masked_loss(model: nn.Module, x: torch.Tensor, t_min: float = 0.05, mask_id: int = 0) -> torch.Tensor:
    t = t_min + (1 - t_min) * torch.rand(x.shape[0], 1)
    mask = torch.rand(x.shape) < t
    logits = model(x.masked_fill(mask, mask_id))
    ce = F.cross_entropy(logits.transpose(1, 2), x, reduction="none")  # (B, T)
    return (ce * mask / t).sum() / x.numel()


def make_step(train_tokens: torch.Tensor, vocab_size: int, lr: float = 3e-3, batch_size: int = 32, seed: int = 0):
    """One training step of the reference as a closure (for timing): batch, loss, backward, Adam."""
    torch.manual_seed(seed)
    model = TinyMDM(vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(train_tokens), batch_size=batch_size, shuffle=True)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            (x,) = next(batches)
        except StopIteration:
            batches = iter(loader)
            (x,) = next(batches)
        loss = masked_loss(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def train_reference(
    train_tokens: torch.Tensor,
    a2b_queries: torch.Tensor,
    a2b_answers: torch.Tensor,
    vocab_size: int,
    mask_id: int = 0,
    target: float = 0.95,
    lr: float = 3e-3,
    batch_size: int = 32,
    t_min: float = 0.05,
    max_steps: int = 30_000,
    seed: int = 0,
) -> dict:
    """Train until a2b accuracy >= target (or ``max_steps``); returns seconds, steps, epochs and
    the accuracy. Seeded, so the number of steps does not depend on how busy the machine is."""
    torch.manual_seed(seed)
    model = TinyMDM(vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(train_tokens), batch_size=batch_size, shuffle=True)
    start, steps, epoch, acc = time.perf_counter(), 0, 0, 0.0
    while steps < max_steps:
        epoch += 1
        for (x,) in loader:
            loss = masked_loss(model, x, t_min, mask_id)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        acc = a2b_accuracy(model, a2b_queries, a2b_answers)
        if acc >= target:
            break
    return {"seconds": time.perf_counter() - start, "steps": steps, "epochs": epoch,
            "a2b_acc": acc, "converged": acc >= target}
