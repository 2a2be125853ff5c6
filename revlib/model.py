"""One Transformer, the book's one-layer model and its deeper relatives, with an ensemble axis.

The book's formalisation (one layer, one head, attention only, RoPE) in column-vector notation::

    h_i      = E[x_i] + sum_j alpha_ij * W_O W_V E[x_j]
    alpha_ij = softmax_j( (W_Q E[x_i])^T R_(j-i) (W_K E[x_j]) / sqrt(e) )
    logits_i = U h_i

**The code stores the transposes.** PyTorch multiplies row vectors from the left, so the code
holds ``W_Q``, ``W_K``, ``W_V`` as (d, e) and ``W_O`` as (e, d) matrices with
``q = x @ W_Q`` and ``out = mix @ W_O``, and ``unembed`` as (d, V) with ``logits = h @ unembed``.
The book's OV map W = W_O W_V (d x d, column vectors) is therefore ``(W_V @ W_O).T`` in code
(:func:`ov_map`), and the book's U (V x d) is ``unembed.T``. Everything else follows.

``attention="causal"`` masks the future; ``"bidirectional"`` does not. Beyond the toy: several
layers and heads, an MLP (GELU or SwiGLU), pre-normalisation (LayerNorm or RMSNorm), four
positional encodings (``rope``, learned ``absolute``, ``alibi``, ``none``) and, as an
intervention, one value matrix per position (``untie_values``).

**The ensemble axis.** Every parameter has a leading axis K: K independently initialised
models that train side by side in the same tensor operations. Read every class below as one
model; the K axis is carried through by batched matrix products (``bmm``) and broadcasting and
appears in the shape comments only. On a CPU, tiny models cost per operation, not per number,
so eight seeds cost far less than eight runs. Member k is initialised from its own generator
seeded with ``seeds[k]``, in a fixed order, so a seed gives the same weights alone or inside an
ensemble, and trains the same way (tested).

Shapes: K members, B sequences, T positions, H heads, d = d_model, e = d_head, f = MLP width,
V vocabulary. Attention internals use TransformerLens's axis order
(member, batch, head, query, key).

**Two attention paths, one function.** Training calls PyTorch's fused
``scaled_dot_product_attention`` (``fused=True``); ``internals=True`` and the gradient analyses
(``torch.func``) use the explicit softmax(q k^T / sqrt(e) + bias) v (``fused=False``). They
compute the same function and agree to float32 rounding (tested).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

# ---------------------------------------------------------------------------------------------
# positions
# ---------------------------------------------------------------------------------------------


def rope_frequencies(d_head: int, base: float) -> torch.Tensor:
    """θ_j = base^(-2j/e), j = 0 .. e/2 - 1, shape (e/2,)."""
    return base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)


def rope_rotations(d_head: int, n_positions: int, base: float) -> torch.Tensor:
    """R_t (T, e, e): the rotation of RoPE at each position t, in the half-split layout.

    Plane j rotates coordinates (j, j + e/2) by the angle t θ_j (the layout of GPT-NeoX and
    LLaMA): (R_t x)_j = x_j cos - x_(j+e/2) sin, (R_t x)_(j+e/2) = x_(j+e/2) cos + x_j sin. Then
    (R_i q)^T (R_j k) = q^T R_(j-i) k: a score depends on the offset j - i only.
    """
    half = d_head // 2
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * rope_frequencies(d_head, base)[None]  # (T, e/2)
    c, s = angles.cos(), angles.sin()
    R = torch.zeros(n_positions, d_head, d_head, dtype=torch.float64)
    j = torch.arange(half)
    R[:, j, j], R[:, j, j + half] = c, -s
    R[:, j + half, j], R[:, j + half, j + half] = s, c
    return R.float()


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate rows x (..., T, e) at ``positions`` (T,) by R_t, as the model does."""
    e = x.shape[-1]
    angles = positions.double()[:, None] * rope_frequencies(e, base)[None]  # (T, e/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : e // 2], x[..., e // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi slopes (H,): 2^(-8h / max(H, 8)), h = 1..H.

    Press et al. use 2^(-8h/H); for fewer than 8 heads we take the first H slopes of the 8-head
    set (1/2, 1/4, ...), so that one head gets slope 1/2 and not 2^-8 (which is no position at all).
    """
    h = torch.arange(1, n_heads + 1, dtype=torch.float32)
    return 2.0 ** (-8.0 * h / max(n_heads, 8))


def attention_bias(cfg: ModelConfig, n_positions: int) -> torch.Tensor | None:
    """Additive bias (H, T_query, T_key) on the scores: -inf above the diagonal for causal
    attention, ``-slope |j - i|`` for ALiBi; None when there is neither."""
    T = n_positions
    bias = torch.zeros(cfg.n_heads, T, T)
    if cfg.positional == "alibi":
        pos = torch.arange(T)
        bias = bias - alibi_slopes(cfg.n_heads)[:, None, None] * (pos[None, :] - pos[:, None]).abs().float()
    if cfg.attention == "causal":
        bias = bias.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    if cfg.positional != "alibi" and cfg.attention != "causal":
        return None
    return bias


# ---------------------------------------------------------------------------------------------
# the building blocks: one model each, K members side by side
# ---------------------------------------------------------------------------------------------


class _Init:
    """Draws every parameter of every member from that member's own generator, in call order."""

    def __init__(self, seeds: tuple[int, ...]):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]

    def normal(self, *shape: int, std: float) -> nn.Parameter:
        p = nn.Parameter(torch.stack([torch.randn(*shape, generator=g) * std for g in self.gens]))
        p.init_std = std  # revlib.training scales this parameter's Adam step by it
        return p

    def const(self, *shape: int, value: float) -> nn.Parameter:
        p = nn.Parameter(torch.full((len(self.gens), *shape), float(value)))
        p.init_std = 1.0
        return p


class Norm(nn.Module):
    """Pre-normalisation: LayerNorm (x - mean) / std * w + b, or RMSNorm x / rms * w."""

    def __init__(self, kind: str, d: int, bias: bool, init: _Init):
        super().__init__()
        self.kind = kind
        self.weight = init.const(d, value=1.0)  # (K, d)
        self.bias = init.const(d, value=0.0) if bias and kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, T, d) -> (K, B, T, d)
        d = x.shape[-1]
        x = F.layer_norm(x, (d,)) if self.kind == "layernorm" else F.rms_norm(x, (d,))
        w = self.weight[:, None, None, :]  # per-member gain, (K, 1, 1, d)
        return x * w if self.bias is None else torch.addcmul(self.bias[:, None, None, :], x, w)


class Attention(nn.Module):
    """Multi-head self-attention of one layer, values without position.

    For one member and one head, with x_i the layer's input at position i (column vectors)::

        q_i = R_i W_Q^T x_i,   k_j = R_j W_K^T x_j,   v_j = W_V^T x_j
        alpha_ij = softmax_j( q_i . k_j / sqrt(e) + bias_ij )
        out_i = W_O^T sum_j alpha_ij v_j                (summed over heads)

    R is the rotation of RoPE (identity otherwise); ``bias`` holds ALiBi and the causal mask.
    With ``untie_values`` each position has its own W_V (a (T, d, e) stack).
    """

    def __init__(self, cfg: ModelConfig, max_len: int, init: _Init):
        super().__init__()
        d, He = cfg.d_model, cfg.n_heads * cfg.d_head
        self.n_heads, self.d_head, self.positional = cfg.n_heads, cfg.d_head, cfg.positional
        self.W_Q = init.normal(d, He, std=d**-0.5)  # (K, d, H e): heads side by side in the columns
        self.W_K = init.normal(d, He, std=d**-0.5)
        self.W_V = init.normal(max_len, d, He, std=d**-0.5) if cfg.untie_values else init.normal(d, He, std=d**-0.5)
        self.W_O = init.normal(He, d, std=He**-0.5)  # (K, H e, d)
        if cfg.positional == "rope":
            # R_t^T (T, e, e), contiguous: a weight column block times it is the rotated block
            self.register_buffer("rope_t", rope_rotations(cfg.d_head, max_len, cfg.rope_base).transpose(1, 2).contiguous(),
                                 persistent=False)
        bias = attention_bias(cfg, max_len)
        self.register_buffer("bias", bias, persistent=False)  # (H, T, T) or None

    @property
    def untied(self) -> bool:
        return self.W_V.dim() == 4

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (rotated) and v, each (K, B, H, T, e), from the layer input x (K, B, T, d).

        RoPE is applied to the *weights*: the rotated query at position t is x_t W_Q R_t^T (rows),
        so with position-dependent weights W_t = [W_Q R_t^T | W_K R_t^T | W_V] one batched
        product over (member, position) computes q, k and v, and no activation is ever rotated.
        The value head size is read from W_V: revlib.gradients substitutes W_V := W_V W_O per
        head (value size d) to differentiate with respect to the OV product itself.
        """
        K, B, T, d = x.shape
        H, e = self.n_heads, self.d_head
        W_V = self.W_V[:, :T] if self.untied else self.W_V  # (K, T, d, H e_v) or (K, d, H e_v)
        He, Hv = H * e, W_V.shape[-1]
        if self.positional == "rope" or self.untied:  # one set of weights per position
            W_QK = torch.cat([self.W_Q, self.W_K], -1)  # (K, d, 2 H e)
            if self.positional == "rope":  # every head's columns times R_t^T: (K, T, d, 2 H e)
                W_QK = (W_QK.view(K, 1, 2 * d * H, e) @ self.rope_t[:T].to(W_QK.dtype)).view(K, T, d, 2 * He)
            else:
                W_QK = W_QK[:, None].expand(K, T, d, 2 * He)
            W_V = W_V if self.untied else W_V[:, None].expand(K, T, d, Hv)
            W = torch.cat([W_QK, W_V], -1).reshape(K * T, d, 2 * He + Hv)  # (K T, d, .)
            x_t = x.transpose(1, 2).reshape(K * T, B, d)  # (K T, B, d): positions outer
            out = torch.bmm(x_t, W).view(K, T, B, -1)
            q, k, v = out.split([He, He, Hv], dim=-1)  # (K, T, B, .) each
            heads = lambda z: z.reshape(K, T, B, H, -1).permute(0, 2, 3, 1, 4)  # noqa: E731  (K, B, H, T, .)
        else:  # shared weights: one product for all positions
            out = torch.bmm(x.reshape(K, B * T, d), torch.cat([self.W_Q, self.W_K, W_V], -1)).view(K, B, T, -1)
            q, k, v = out.split([He, He, Hv], dim=-1)  # (K, B, T, .) each
            heads = lambda z: z.reshape(K, B, T, H, -1).transpose(2, 3)  # noqa: E731  (K, B, H, T, .)
        return heads(q), heads(k), heads(v)

    def forward(self, x: torch.Tensor, fused: bool = True, record: dict | None = None) -> torch.Tensor:
        """The block's output (K, B, T, d) for its input x (K, B, T, d), to be added to the residual.

        ``record``, if given, receives this layer's ``scores`` and ``patterns`` (K, B, H, T, T)
        (explicit path only).
        """
        K, B, T, _ = x.shape
        H, e = self.n_heads, self.d_head
        q, k, v = self.project(x)  # (K, B, H, T, e); v may have its own size
        bias = None if self.bias is None else self.bias[:, :T, :T]  # (H, T, T)
        if fused and record is None:
            fold = lambda z: z.reshape(K * B, H, T, z.shape[-1])  # noqa: E731  (K B, H, T, .): members side by side
            mixed = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=bias).view(K, B, H, T, -1)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(e)  # (K, B, H, T, T): q_i . k_j
            if bias is not None:
                scores = scores + bias
            pattern = scores.softmax(dim=-1)
            mixed = pattern @ v  # (K, B, H, T, e): sum_j alpha_ij v_j
            if record is not None:
                record["scores"], record["patterns"] = scores, pattern
        mixed = mixed.transpose(2, 3).reshape(K, B * T, -1)  # heads back side by side: (K, B T, H e_v)
        return torch.bmm(mixed, self.W_O).view(K, B, T, -1)


class MLP(nn.Module):
    """GELU: W_out^T gelu(W_in^T x + b_in) + b_out.  SwiGLU: W_down^T (silu(W_gate^T x) * W_up^T x)."""

    def __init__(self, cfg: ModelConfig, init: _Init):
        super().__init__()
        d, f = cfg.d_model, cfg.mlp_width
        self.kind = cfg.mlp
        if self.kind == "gelu":
            self.W_in = init.normal(d, f, std=d**-0.5)  # (K, d, f)
            self.b_in = init.const(f, value=0.0) if cfg.bias else None
            self.W_out = init.normal(f, d, std=f**-0.5)  # (K, f, d)
            self.b_out = init.const(d, value=0.0) if cfg.bias else None
        else:
            self.W_gate = init.normal(d, f, std=d**-0.5)
            self.W_up = init.normal(d, f, std=d**-0.5)
            self.W_down = init.normal(f, d, std=f**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, T, d) -> (K, B, T, d)
        K, B, T, d = x.shape
        flat = x.reshape(K, B * T, d)
        if self.kind == "gelu":
            pre = torch.bmm(flat, self.W_in) if self.b_in is None else torch.baddbmm(self.b_in[:, None], flat, self.W_in)
            hidden = F.gelu(pre)  # (K, B T, f)
            out = torch.bmm(hidden, self.W_out) if self.b_out is None else torch.baddbmm(self.b_out[:, None], hidden, self.W_out)
        else:
            gate, up = torch.bmm(flat, torch.cat([self.W_gate, self.W_up], -1)).chunk(2, dim=-1)  # (K, B T, f) each
            out = torch.bmm(F.silu(gate) * up, self.W_down)
        return out.view(K, B, T, d)


class Block(nn.Module):
    """One layer: h = h + Attention(norm(h)); then, with an MLP, h = h + MLP(norm(h))."""

    def __init__(self, cfg: ModelConfig, max_len: int, init: _Init):
        super().__init__()
        d = cfg.d_model
        self.norm1 = Norm(cfg.norm, d, cfg.bias, init) if cfg.norm != "none" else None
        self.attn = Attention(cfg, max_len, init)
        self.norm2 = Norm(cfg.norm, d, cfg.bias, init) if cfg.norm != "none" and cfg.mlp != "none" else None
        self.mlp = MLP(cfg, init) if cfg.mlp != "none" else None

    def forward(self, h: torch.Tensor, fused: bool = True, record: dict | None = None) -> torch.Tensor:
        x = h if self.norm1 is None else self.norm1(h)
        attn_out = self.attn(x, fused, record)
        h = h + attn_out
        if record is not None:
            record["attn_out"] = attn_out
        if self.mlp is not None:
            mlp_out = self.mlp(h if self.norm2 is None else self.norm2(h))
            h = h + mlp_out
            if record is not None:
                record["mlp_out"] = mlp_out
        return h


class Transformer(nn.Module):
    """K stacked Transformers (one per seed). ``model(tokens)`` returns logits (K, B, T, V).

    ``tokens`` is (B, T), shared by all members, or (K, B, T), one batch per member; at most
    ``max_len`` positions. ``model(tokens, internals=True)`` also returns a dict with, per layer,
    ``scores`` and ``patterns`` (K, B, H, T_query, T_key) (pre-softmax scores include the
    1/sqrt(e) scale and any bias), ``resid_pre`` (K, B, T, d) (the stream entering the layer),
    ``attn_out`` and, with an MLP, ``mlp_out`` (K, B, T, d) (what the layer adds); and
    ``resid_final`` and ``residual`` (K, B, T, d), the stream before and after the final norm
    (the unembedding reads ``residual``).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, seeds=(0,), max_len: int = 3):
        super().__init__()
        seeds = tuple(int(s) for s in seeds)
        self.cfg, self.vocab_size, self.seeds, self.max_len = cfg, int(vocab_size), seeds, int(max_len)
        init = _Init(seeds)
        d, V = cfg.d_model, self.vocab_size
        # Unit-variance embeddings are near-orthogonal; W_Q, W_K then give near-isotropic
        # queries and keys at initialisation, the assumption of the coupling theory (ch. 2).
        self.embed = init.normal(V, d, std=1.0)  # E: (K, V, d), row x is E[x]
        self.pos = init.normal(self.max_len, d, std=1.0) if cfg.positional == "absolute" else None  # (K, T, d)
        self.blocks = nn.ModuleList([Block(cfg, self.max_len, init) for _ in range(cfg.n_layers)])
        self.norm_f = Norm(cfg.norm, d, cfg.bias, init) if cfg.norm != "none" else None
        # U ~ N(0, unembed_scale^2 / d): initial logits of order one, so probes start near chance.
        self.unembed = init.normal(d, V, std=cfg.unembed_scale * d**-0.5)  # (K, d, V): the book's U^T

    # -- helpers -------------------------------------------------------------------------------

    @property
    def n_members(self) -> int:
        return self.embed.shape[0]

    @property
    def causal(self) -> bool:
        return self.cfg.attention == "causal"

    def check_tokens(self, tokens: torch.Tensor) -> None:
        """ValueError with a plain message for token batches the model cannot read."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tokens.dim() not in (2, 3):
            raise ValueError("tokens must be a long tensor of shape (B, T) or (K, B, T)")
        if tokens.dim() == 3 and tokens.shape[0] != self.n_members:
            raise ValueError(f"tokens (K, B, T) have K={tokens.shape[0]}, the model has {self.n_members} members")
        if tokens.shape[-1] > self.max_len:
            raise ValueError(f"a sequence of {tokens.shape[-1]} tokens exceeds max_len={self.max_len}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")

    def embed_tokens(self, tokens: torch.Tensor, fused: bool = True) -> torch.Tensor:
        """E[x] (+ the position vectors): (B, T) or (K, B, T) token ids -> (K, B, T, d)."""
        K, V = self.embed.shape[0], self.embed.shape[1]
        if tokens.dim() == 2:
            h = self.embed[:, tokens]  # (K, B, T, d): the same tokens for every member
        elif fused:  # member k reads its own tokens: offset the ids into one (K V, d) table
            offsets = (torch.arange(K) * V).view(K, 1, 1)
            h = F.embedding(tokens + offsets, self.embed.reshape(K * V, -1))
        else:  # the same by indexing, which torch.func's transforms handle everywhere
            h = self.embed[torch.arange(K)[:, None, None], tokens]
        if self.pos is not None:
            h = h + self.pos[:, None, : tokens.shape[-1]]
        return h

    # -- the forward pass -----------------------------------------------------------------------

    def residual(self, tokens: torch.Tensor, internals: bool = False, fused: bool = True,
                 check: bool = True) -> tuple[torch.Tensor, dict | None]:
        """The stream the unembedding reads, h (K, B, T, d), and the internals dict (or None).

        The objectives call this and unembed only the positions they score (most of the
        arithmetic of a tiny model is the unembedding); ``check=False`` skips the token checks.
        """
        if check:
            self.check_tokens(tokens)
        h = self.embed_tokens(tokens, fused)  # (K, B, T, d)
        layers: list[dict] | None = [] if internals else None
        for block in self.blocks:
            record = {"resid_pre": h} if internals else None
            h = block(h, fused=fused and not internals, record=record)
            if internals:
                layers.append(record)
        stream = h
        if self.norm_f is not None:
            h = self.norm_f(h)
        if not internals:
            return h, None
        out = {key: [layer[key] for layer in layers] for key in layers[0]}
        out["resid_final"], out["residual"] = stream, h
        return h, out

    def unembed_logits(self, h: torch.Tensor) -> torch.Tensor:
        """logits = h @ unembed: (K, ..., d) -> (K, ..., V)."""
        K, d = h.shape[0], h.shape[-1]
        return torch.bmm(h.reshape(K, -1, d), self.unembed).view(*h.shape[:-1], -1)

    def forward(self, tokens: torch.Tensor, internals: bool = False, fused: bool = True):
        h, record = self.residual(tokens, internals=internals, fused=fused)
        logits = self.unembed_logits(h)  # (K, B, T, V)
        return (logits, record) if internals else logits

    # -- members ---------------------------------------------------------------------------------

    def member(self, k: int) -> "Transformer":
        """A K = 1 copy of member k (weights copied, not shared)."""
        return self.select([k])

    def select(self, members) -> "Transformer":
        """A copy holding only the given members (in that order)."""
        members = list(members)
        out = Transformer(self.cfg, self.vocab_size, seeds=[self.seeds[k] for k in members], max_len=self.max_len)
        out.load_state_dict({n: p[members].clone() for n, p in self.state_dict().items()})
        return out


def build_model(experiment, seeds, vocab_size: int | None = None) -> Transformer:
    """The model of ``experiment`` with one member per seed (what revlib.training trains)."""
    V = experiment.data.n_vocab if vocab_size is None else vocab_size
    return Transformer(experiment.model, V, seeds, max_len=experiment.max_len)


def ov_map(model: Transformer, layer: int = 0) -> torch.Tensor:
    """The book's OV map W = W_O W_V of each head, (K, H, d, d), from the code's transposes.

    Head h's value path adds W_h x (column vectors) = x @ W_V[:, h] @ W_O[h] (rows), so
    W_h = (W_V[:, h] @ W_O[h])^T. With untied values, the map of position 0.
    """
    attn = model.blocks[layer].attn
    H, e = attn.n_heads, attn.d_head
    W_V = attn.W_V[:, 0] if attn.untied else attn.W_V  # (K, d, H e)
    K, d, _ = W_V.shape
    W_V = W_V.view(K, d, H, e).permute(0, 2, 1, 3)  # (K, H, d, e)
    W_O = attn.W_O.view(K, H, e, d)  # (K, H, e, d)
    return (W_V @ W_O).transpose(-1, -2)  # (K, H, d, d): the book's W per head
