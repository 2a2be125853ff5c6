"""One Transformer, the book's one-layer model, with an ensemble axis.

Single model, the formalisation of the book (one layer, one head, attention only, RoPE)::

    h_i      = E[x_i] + sum_j alpha_ij * W_O W_V E[x_j]
    alpha_ij = softmax_j( (W_Q E[x_i])^T R_(j-i) (W_K E[x_j]) / sqrt(d) )
    logits_i = U h_i

``attention="causal"`` is the ARM, ``"bidirectional"`` the MDM; nothing else differs.
Options: more layers and heads, an MLP, pre-LayerNorm, and four positional encodings
(``rope``, learned ``absolute``, ``alibi``, ``none``).

**The ensemble axis.** Every parameter carries a leading axis K: K independently initialised
models that train side by side in the same tensor operations. On a CPU, tiny models are bound
by operator dispatch, not arithmetic, so eight seeds cost about as much as one. A single
model is K = 1. Member k is initialised from its own generator seeded with ``seeds[k]``, so a
seed gives the same weights alone or inside an ensemble.

Shapes: K members, B sequences, T positions, H heads, d = d_model, e = d_head, V vocabulary.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig


def rope_angles(d_head: int, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Angles (T, e/2): position * theta_k with theta_k = base^(-2k/e)."""
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
    return positions.float()[:, None] * theta[None, :]


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate coordinate pairs (2k, 2k+1) of x (..., T, e) by angles (T, e/2): R_pos x."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The ALiBi head slopes 2^(-8h/H), h = 1..H (Press et al.)."""
    return 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, dtype=torch.float32) / n_heads)


# For short sequences the attention products are computed by broadcasting instead of matmul:
# a batched matmul of B*H tiny (T x e) matrices pays a per-matrix overhead that, at T = 3, costs
# ~4x more than the arithmetic (measured: 230 us vs 60 us per call at B = 256).
SHORT = 16


def _pairwise(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q (..., T, e), k (..., T, e) -> (..., T, T) with entry [i, j] = q_i . k_j."""
    if q.shape[-2] <= SHORT:
        return (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1)
    return q @ k.transpose(-1, -2)


def _mix(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """pattern (..., T, T), v (..., T, e) -> (..., T, e) with row i = sum_j pattern[i, j] v_j."""
    if v.shape[-2] <= SHORT:
        return (pattern.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2)
    return pattern @ v


class Transformer(nn.Module):
    """K stacked Transformers. ``forward(tokens)`` returns logits (K, B, T, V).

    ``tokens`` is (B, T), shared by all members, or (K, B, T), one batch per member.
    With ``return_internals=True`` it also returns a dict with, per layer, the pre-softmax
    ``scores`` and the attention ``patterns``, both (K, B, H, T_query, T_key), and the
    ``residual`` stream (K, B, T, d) before the unembedding.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, seeds: list[int] | tuple[int, ...] = (0,)):
        super().__init__()
        self.cfg, self.vocab_size, self.seeds = cfg, vocab_size, tuple(seeds)
        K, d, e, H, V = len(seeds), cfg.d_model, cfg.d_head, cfg.n_heads, vocab_size
        gens = [torch.Generator().manual_seed(s) for s in seeds]

        def init(*shape: int, std: float) -> nn.Parameter:
            # each member draws from its own generator: seed s gives the same weights for any K
            p = nn.Parameter(torch.stack([torch.randn(*shape, generator=g) * std for g in gens]))
            p.init_std = std  # revlib.train scales this parameter's Adam step by it
            return p

        # Unit-variance embeddings are near-orthogonal; W_Q, W_K then give near-isotropic
        # queries and keys at initialisation, the assumption of the coupling theory (ch. 2).
        self.embed = init(V, d, std=1.0)  # E: (K, V, d)
        self.pos = init(cfg.max_len, d, std=1.0) if cfg.positional == "absolute" else None
        self.layers = nn.ModuleList()
        for _ in range(cfg.n_layers):
            layer = nn.ParameterDict(
                {
                    "W_Q": init(H, d, e, std=d**-0.5),
                    "W_K": init(H, d, e, std=d**-0.5),
                    "W_V": init(H, d, e, std=d**-0.5),
                    "W_O": init(H, e, d, std=(H * e) ** -0.5),
                }
            )
            if cfg.mlp:
                layer["W_in"] = init(d, 4 * d, std=d**-0.5)
                layer["b_in"] = nn.Parameter(torch.zeros(K, 4 * d))
                layer["W_out"] = init(4 * d, d, std=(4 * d) ** -0.5)
                layer["b_out"] = nn.Parameter(torch.zeros(K, d))
            if cfg.layernorm:
                for name in (["ln1", "ln2"] if cfg.mlp else ["ln1"]):
                    layer[name + "_w"] = nn.Parameter(torch.ones(K, d))
                    layer[name + "_b"] = nn.Parameter(torch.zeros(K, d))
            self.layers.append(layer)
        if cfg.layernorm:
            self.lnf_w = nn.Parameter(torch.ones(K, d))
            self.lnf_b = nn.Parameter(torch.zeros(K, d))
        # U ~ N(0, 1/d): initial logits of order one, so probes start near chance. A smaller U
        # (1/d) leaves the MDM on a long loss plateau before the associations are learned.
        self.unembed = init(d, V, std=d**-0.5)  # U: (K, d, V)

    @property
    def n_members(self) -> int:
        return self.embed.shape[0]

    @property
    def causal(self) -> bool:
        return self.cfg.attention == "causal"

    def _layernorm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.layer_norm(x, x.shape[-1:])
        return x * w[:, None, None, :] + b[:, None, None, :]  # per-member affine, (K, B, T, d)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """E[x]: (B, T) or (K, B, T) token ids -> (K, B, T, d)."""
        K = self.n_members
        if tokens.dim() == 2:
            h = self.embed[:, tokens]  # (K, B, T, d)
        else:
            h = self.embed[torch.arange(K)[:, None, None], tokens]  # (K, B, T, d)
        if self.pos is not None:
            T = tokens.shape[-1]
            if T > self.cfg.max_len:
                raise ValueError(f"sequence of {T} tokens exceeds max_len={self.cfg.max_len}")
            h = h + self.pos[:, None, :T, :]
        return h

    def attention_scores(self, layer: nn.ParameterDict, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores (K, B, H, T, T) of one layer for its input x (K, B, T, d)."""
        cfg, T = self.cfg, x.shape[2]
        q = torch.einsum("kbtd,khde->kbhte", x, layer["W_Q"])  # (K, B, H, T, e)
        k = torch.einsum("kbtd,khde->kbhte", x, layer["W_K"])
        if cfg.positional == "rope":
            angles = rope_angles(cfg.d_head, torch.arange(T), cfg.rope_base)
            q, k = apply_rope(q, angles), apply_rope(k, angles)  # q_i^T k_j = q^T R_(j-i) k
        scores = _pairwise(q, k) / math.sqrt(cfg.d_head)  # (K, B, H, T, T): q_i . k_j
        if cfg.positional == "alibi":
            pos = torch.arange(T)
            distance = (pos[None, :] - pos[:, None]).abs().float()  # |j - i|, (T, T)
            scores = scores - alibi_slopes(cfg.n_heads)[:, None, None] * distance
        if self.causal:
            future = torch.ones(T, T, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        return scores

    def forward(self, tokens: torch.Tensor, return_internals: bool = False):
        h, internals = self.residual(tokens)
        logits = self.unembed_logits(h)  # (K, B, T, V)
        if return_internals:
            return logits, internals
        return logits

    def residual(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The final residual stream h (K, B, T, d), after the last LayerNorm if any, and the
        internals dict (per-layer ``scores`` and ``patterns``, and ``residual`` = h).

        The objectives call this and unembed only the positions they score: the unembedding is
        most of the arithmetic of a tiny model.
        """
        if tokens.dtype != torch.long or tokens.dim() not in (2, 3):
            raise ValueError("tokens must be a long tensor of shape (B, T) or (K, B, T)")
        if tokens.dim() == 3 and tokens.shape[0] != self.n_members:
            raise ValueError(f"tokens (K, B, T) have K={tokens.shape[0]}, the model has {self.n_members} members")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        cfg = self.cfg
        h = self.embed_tokens(tokens)  # (K, B, T, d)
        internals: dict[str, list | torch.Tensor] = {"scores": [], "patterns": []}
        for layer in self.layers:
            x = self._layernorm(h, layer["ln1_w"], layer["ln1_b"]) if cfg.layernorm else h
            scores = self.attention_scores(layer, x)  # (K, B, H, T, T)
            pattern = scores.softmax(dim=-1)
            v = torch.einsum("kbtd,khde->kbhte", x, layer["W_V"])  # values carry no position
            mixed = _mix(pattern, v)  # (K, B, H, T, e): sum_j alpha_ij v_j
            h = h + torch.einsum("kbhte,khed->kbtd", mixed, layer["W_O"])
            if cfg.mlp:
                x = self._layernorm(h, layer["ln2_w"], layer["ln2_b"]) if cfg.layernorm else h
                hidden = torch.relu(
                    torch.einsum("kbtd,kdf->kbtf", x, layer["W_in"]) + layer["b_in"][:, None, None, :]
                )
                h = h + torch.einsum("kbtf,kfd->kbtd", hidden, layer["W_out"]) + layer["b_out"][:, None, None, :]
            internals["scores"].append(scores)
            internals["patterns"].append(pattern)
        if cfg.layernorm:
            h = self._layernorm(h, self.lnf_w, self.lnf_b)
        internals["residual"] = h
        return h, internals

    def unembed_logits(self, h: torch.Tensor) -> torch.Tensor:
        """logits = U h: (K, ..., d) -> (K, ..., V)."""
        K, d = h.shape[0], h.shape[-1]
        flat = h.reshape(K, -1, d)  # (K, rows, d)
        return torch.bmm(flat, self.unembed).reshape(*h.shape[:-1], -1)

    def member(self, k: int) -> "Transformer":
        """A K = 1 copy of member k (weights copied, not shared)."""
        one = Transformer(self.cfg, self.vocab_size, seeds=(self.seeds[k],))
        one.load_state_dict({n: p[k : k + 1].clone() for n, p in self.state_dict().items()})
        return one
