"""Gradients of the probe losses, per fact and averaged, grouped by parameter block (chapters 3, 5).

Everything runs on detached copies of the parameters, so measuring never touches the model or
its ``.grad``: in float64 by default, float32 where speed matters (the losses are written so
that float32 keeps the signs of tiny gradients, see :func:`answer_nll`). Every function takes
an ensemble and returns arrays whose first axis is K.

**Losses.** l_probe is the mean over facts of -log p(whole answer entity), read where a model
of the given objective predicts it (revlib.objectives.read_positions; an ``ar`` model reads
teacher-forced, one position before each answer slot).

**Per-fact gradients: vmap over members, the ensemble axis over facts.** ``torch.func.vmap``
maps over the K members; inside, one member's parameters are expanded to N copies along the
ensemble axis (views, no copying) and copy n is given the single fact n; ``torch.func.grad`` of
the summed loss with respect to the copies then gives copy n the gradient of fact n alone,
because no copy sees another's fact.

**The OV product.** Head h adds ``c_h @ W_V[h] @ W_O[h]`` to the residual stream (row vectors;
``c_h`` the attended mixture of the layer's inputs): the value side is the product
``M_h = W_V[h] @ W_O[h]`` (d x d), the transpose of the book's W = W_O W_V (revlib.model).
Substituting ``W_V := [M_1 .. M_H]`` and ``W_O := [I; ..; I]`` (a value head size of d instead
of e) computes exactly the same function, and autograd in that parametrisation gives ∇_M l
(key ``blocks.<i>.attn.W_OV``, (.., H, d, d)). The stored factors follow by the chain rule,
``∇_{W_V} = ∇_M W_O^T`` and ``∇_{W_O} = W_V^T ∇_M`` per head.

**Blocks** (``BLOCKS``): ``embed`` (E), ``pos`` (learned positions), ``qk`` (W_Q, W_K), ``ov``
(W_V, W_O as stored), ``mlp``, ``norm`` (norm gains and biases), ``unembed`` (U); ``all`` is
every parameter, ``ov_product`` the gradient with respect to the product M. With
``by_layer=True`` the blocks inside the layers are split per layer (``L0.qk``, ``L1.ov``, ...).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from .config import ConfigError, TrainConfig
from .data import FactWorld, Probe
from .model import Transformer
from . import objectives

BLOCKS = ("embed", "pos", "qk", "ov", "mlp", "norm", "unembed")
ORDER = ("embed", "pos", "qk", "ov", "ov_product", "mlp", "norm", "unembed", "all")
DTYPE = torch.float64

Grads = dict  # parameter name -> tensor (K, ...) or, per fact, (K, N, ...)


def block_of(name: str, by_layer: bool = False) -> str:
    """The block of parameter ``name`` (``"embed"``, ``"blocks.0.attn.W_Q"``, ...)."""
    parts = name.split(".")
    leaf = parts[-1]
    if leaf in ("embed", "pos", "unembed"):
        return leaf
    if parts[0] == "norm_f":
        return "norm"
    kind = {"W_Q": "qk", "W_K": "qk", "W_V": "ov", "W_O": "ov", "W_OV": "ov_product"}.get(leaf)
    if kind is None and len(parts) > 2 and parts[2] == "mlp":
        kind = "mlp"
    if kind is None and len(parts) > 2 and parts[2].startswith("norm"):
        kind = "norm"
    if kind is None:
        raise ValueError(f"no block for parameter {name!r}")
    return f"L{parts[1]}.{kind}" if by_layer and parts[0] == "blocks" else kind


def parameters(model: Transformer, dtype: torch.dtype = DTYPE) -> dict[str, torch.Tensor]:
    """Detached copies of the model's parameters, (K, ...) each, in ``dtype``."""
    return {n: p.detach().to(dtype).clone() for n, p in model.named_parameters()}


class _Methods(torch.nn.Module):
    """Holds the model as a submodule; ``forward(method, ...)`` calls any of its methods, so that
    ``functional_call`` can run every method, not only ``forward``, with substituted parameters."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args, **kwargs):
        return getattr(self.model, method)(*args, **kwargs)


class Bound:
    """The model with ``params`` in place of its own, for code that calls the model's methods as
    revlib.objectives does. ``params`` may hold more members than the model (copies):
    ``n_members`` follows the parameters. Always the explicit attention path (``fused=False``)."""

    def __init__(self, model: Transformer, params: dict[str, torch.Tensor]):
        self._methods = _Methods(model)
        self._params = {f"model.{n}": t for n, t in params.items()}
        self.cfg = model.cfg
        self.unembed = params["unembed"]
        self.n_members = params["embed"].shape[0]

    def _call(self, method: str, *args, **kwargs):
        return functional_call(self._methods, self._params, (method, *args), kwargs)

    def residual(self, tokens, internals: bool = False, fused: bool = False, check: bool = False):
        return self._call("residual", tokens, internals=internals, fused=False, check=False)

    def unembed_logits(self, h):
        return self._call("unembed_logits", h)

    def __call__(self, tokens, internals: bool = False, fused: bool = False):
        return self._call("forward", tokens, internals=internals, fused=False)


# ---------------------------------------------------------------------------------------------
# the OV product parametrisation
# ---------------------------------------------------------------------------------------------

def _attn_prefixes(params: dict) -> list[str]:
    return sorted({n.rsplit(".", 1)[0] for n in params if n.endswith(".attn.W_V")})


def _heads(W_V: torch.Tensor, W_O: torch.Tensor, H: int):
    """W_V (.., d, H e) -> (.., H, d, e); W_O (K, H e, d) -> (K, H, e, d), broadcastable to W_V's."""
    *lead, d, He = W_V.shape
    e = He // H
    Wv = W_V.reshape(*lead, d, H, e).movedim(-2, -3)  # (.., H, d, e)
    Wo = W_O.reshape(*W_O.shape[:-2], H, e, W_O.shape[-1])  # (K, H, e, d)
    while Wo.dim() < Wv.dim():  # untied values carry a position axis after K
        Wo = Wo.unsqueeze(1)
    return Wv, Wo


def to_product(params: dict[str, torch.Tensor], n_heads: int) -> dict[str, torch.Tensor]:
    """Same function, value side as one matrix per head: W_V := [M_1 .. M_H], W_O := [I; ..; I]."""
    out = dict(params)
    for prefix in _attn_prefixes(params):
        W_V, W_O = params[f"{prefix}.W_V"], params[f"{prefix}.W_O"]
        Wv, Wo = _heads(W_V, W_O, n_heads)
        M = Wv @ Wo  # (.., H, d, d)
        d = M.shape[-1]
        out[f"{prefix}.W_V"] = M.movedim(-3, -2).reshape(*M.shape[:-3], d, n_heads * d)  # (.., d, H d)
        eye = torch.eye(d, dtype=M.dtype).repeat(n_heads, 1)  # (H d, d)
        out[f"{prefix}.W_O"] = eye.expand(W_O.shape[0], n_heads * d, d)
    return out


def from_product(grads: dict[str, torch.Tensor], params: dict[str, torch.Tensor], n_heads: int) -> Grads:
    """Gradients taken in :func:`to_product`'s parametrisation -> the model's own, plus W_OV.

    ``grads`` may carry a fact axis after K that ``params`` lacks: (K, N, ...) vs (K, ...).
    """
    out = {n: t for n, t in grads.items() if not n.endswith((".attn.W_V", ".attn.W_O"))}
    for prefix in _attn_prefixes(params):
        if f"{prefix}.W_V" not in grads:  # the value side was not differentiated
            continue
        g = grads[f"{prefix}.W_V"]  # (K, [N,] [T,] d, H d)
        W_V, W_O = params[f"{prefix}.W_V"], params[f"{prefix}.W_O"]
        Wv, Wo = _heads(W_V, W_O, n_heads)  # (K, [T,] H, d, e), (K, [1,] H, e, d)
        fact_axis = g.dim() > W_V.dim()
        if fact_axis:
            Wv, Wo = Wv.unsqueeze(1), Wo.unsqueeze(1)
        d = g.shape[-2]
        g_M = g.reshape(*g.shape[:-1], n_heads, d).movedim(-2, -3)  # (.., H, d, d)
        out[f"{prefix}.W_OV"] = g_M
        g_V = g_M @ Wo.transpose(-1, -2)  # (.., H, d, e)
        g_O = Wv.transpose(-1, -2) @ g_M  # (.., H, e, d)
        out[f"{prefix}.W_V"] = g_V.movedim(-3, -2).reshape(*g_V.shape[:-3], d, -1)
        if W_V.dim() == 4:  # untied values (K, T, d, H e): W_O is shared by every position's W_V
            g_O = g_O.sum(2 if fact_axis else 1)
        out[f"{prefix}.W_O"] = g_O.reshape(*g_O.shape[:-3], -1, d)
    return out


# ---------------------------------------------------------------------------------------------
# probes and losses
# ---------------------------------------------------------------------------------------------

def answer_nll(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[answer], (...,), written so that its gradient keeps its precision.

    The usual cross entropy has gradient p - e_A, whose answer entry p_A - 1 cancels
    catastrophically once the model is sure (p_A = 1 - 1e-7 is 1 in float32). Written as
    softplus(s) with s = logsumexp_{v != A}(z_v - z_A), the same loss has gradient
    sigmoid(s) * softmax_{v != A}(z) off the answer and -sigmoid(s) on it: no cancellation.
    """
    z_answer = logits.gather(-1, answers[..., None])  # (..., 1)
    is_answer = F.one_hot(answers, logits.shape[-1]).bool()
    others = (logits - z_answer).masked_fill(is_answer, float("-inf"))
    return F.softplus(others.logsumexp(-1))


def residual_delta(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """p - e_answer, the gradient of :func:`answer_nll` with respect to the logits, (..., V)."""
    z_answer = logits.gather(-1, answers[..., None])
    is_answer = F.one_hot(answers, logits.shape[-1]).bool()
    others = (logits - z_answer).masked_fill(is_answer, float("-inf"))
    wrong = torch.sigmoid(others.logsumexp(-1, keepdim=True))  # 1 - p_answer, computed directly
    return torch.where(is_answer, -wrong, wrong * others.softmax(-1))


def reads_of(probe: Probe, objective: str) -> list[int]:
    """Where a model of ``objective`` predicts the probe's answer; ValueError where it cannot."""
    reads = objectives.read_positions(objective, probe.slots)
    if reads is None:
        raise ValueError(f"a model trained with objective {objective!r} cannot answer {probe.name!r}: "
                         "nothing precedes the blank")
    return reads


def inputs_of(probe: Probe, objective: str) -> torch.Tensor:
    """The tokens a model of ``objective`` reads for the probe: teacher-forced for ``ar``, masked otherwise."""
    return probe.full if objective == "ar" else probe.tokens


def fact_nll(model: Transformer, params: dict, probe: Probe, objective: str) -> torch.Tensor:
    """-log p(whole answer) per member and fact, (K, N), with ``params`` (K, ...) in the model."""
    bound = Bound(model, params)
    h, _ = bound.residual(inputs_of(probe, objective))  # (K, N, T, d)
    logits = bound.unembed_logits(h[:, :, reads_of(probe, objective)])  # (K, N, k, V)
    return answer_nll(logits, probe.answers.expand(logits.shape[0], *probe.answers.shape)).sum(-1)


def probe_loss(model: Transformer, params: dict, probe: Probe, objective: str) -> torch.Tensor:
    """l_probe per member: the mean over facts of -log p(answer), (K,)."""
    return fact_nll(model, params, probe, objective).mean(dim=1)


def objective_loss(model: Transformer, params: dict, world: FactWorld, train_config: TrainConfig,
                   mask_seed: int = 0) -> torch.Tensor:
    """The training objective on the whole text with one fixed draw of masks and rates, (K,).

    The member of seed s draws from a generator seeded ``mask_seed + s``: it measures the same
    alone or in an ensemble, and the same call always gives the same number.
    """
    bound = Bound(model, params)
    gens = [torch.Generator().manual_seed(mask_seed + s) for s in model.seeds]
    batch = objectives.Batches(world.train_tokens, train_config, world.k, gens).get(0)
    return objectives.loss(bound, train_config, batch, fused=False)


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------

def fact_gradients(model: Transformer, probe: Probe, objective: str, params: dict | None = None,
                   blocks: tuple[str, ...] | None = None) -> Grads:
    """∇ of -log p(answer) for every member and fact: name -> (K, N, ...), W_OV included.

    ``vmap`` over the members of ``grad`` over N copies of the member, one fact per copy
    (module docstring). ``blocks`` (e.g. ``("ov_product",)``) restricts the result, and the
    work, to those blocks' parameters.
    """
    params = parameters(model) if params is None else params
    H = model.cfg.n_heads
    N, reads = len(probe), reads_of(probe, objective)
    tokens = inputs_of(probe, objective)[:, None, :]  # (N, 1, T): copy n holds fact n only
    product = to_product(params, H)
    # In the product parametrisation "W_V" holds M, whose gradient gives both stored factors'
    # (from_product); the stand-in identity "W_O" is never differentiated.
    wanted = set(BLOCKS + ("ov_product",)) if blocks is None else set(blocks)
    diff = {n for n in product if not n.endswith(".attn.W_O")
            and (block_of(n) in wanted or (n.endswith(".attn.W_V") and wanted & {"ov", "ov_product"}))}

    def total(varied, fixed):  # name -> (N, ...): a pseudo-ensemble of N copies of one member
        bound = Bound(model, {**varied, **fixed})
        h, _ = bound.residual(tokens)  # (N, 1, T, d)
        logits = bound.unembed_logits(h[:, 0, reads])  # (N, k, V): only the reading slots
        return answer_nll(logits, probe.answers).sum()

    def one_member(varied, fixed):  # name -> (...): one member's parameters, without K
        copies = lambda d: {n: t.expand(N, *t.shape) for n, t in d.items()}  # noqa: E731 (views)
        return grad(total)(copies(varied), copies(fixed))

    varied = {n: t for n, t in product.items() if n in diff}
    fixed = {n: t for n, t in product.items() if n not in diff}
    g = from_product(vmap(one_member)(varied, fixed), params, H)
    return {n: t for n, t in g.items() if block_of(n) in wanted}


def loss_gradient(model: Transformer, loss_fn, params: dict | None = None) -> Grads:
    """∇ of a per-member loss ``loss_fn(params) -> (K,)``: name -> (K, ...), W_OV included.

    Members never interact, so the gradient of the sum is each member's own gradient.
    """
    params = parameters(model) if params is None else params
    H = model.cfg.n_heads
    g = grad(lambda q: loss_fn(q).sum())(to_product(params, H))
    return from_product(g, params, H)


def probe_gradient(model: Transformer, probe: Probe, objective: str, params: dict | None = None) -> Grads:
    """∇l_probe (the mean over facts): name -> (K, ...)."""
    return loss_gradient(model, lambda q: probe_loss(model, q, probe, objective), params)


def objective_gradient(model: Transformer, world: FactWorld, train_config: TrainConfig, mask_seed: int = 0,
                       params: dict | None = None) -> Grads:
    """∇ of the training objective with a fixed mask draw (:func:`objective_loss`): name -> (K, ...)."""
    return loss_gradient(model, lambda q: objective_loss(model, q, world, train_config, mask_seed), params)


def mean_over_facts(g: Grads) -> Grads:
    """(K, N, ...) -> (K, ...): the gradient of the mean loss."""
    return {n: t.mean(dim=1) for n, t in g.items()}


def _grouped(g1: Grads, g2: Grads, pair, by_layer: bool = False) -> dict[str, torch.Tensor]:
    """sum of ``pair(g1[name], g2[name])`` over the parameters of each block, and over all of them."""
    out: dict[str, torch.Tensor] = {}
    for name in g1:
        block = block_of(name, by_layer)
        d = pair(g1[name], g2[name])
        out[block] = out.get(block, 0) + d
        if not block.endswith("ov_product"):  # W_OV re-expresses W_V and W_O; "all" counts each parameter once
            out["all"] = out.get("all", 0) + d
    if by_layer:
        return dict(sorted(out.items(), key=lambda kv: (kv[0] == "all", kv[0])))
    return {b: out[b] for b in ORDER if b in out}


def block_dots(g1: Grads, g2: Grads, lead: int = 1, by_layer: bool = False) -> dict[str, torch.Tensor]:
    """Inner products <g1, g2> per block, with ``all`` (every parameter, W_OV excluded).

    ``lead`` leading axes are kept: 1 for (K, ...) gradients, 2 for per-fact (K, N, ...).
    """
    return _grouped(g1, g2, lambda a, b: (a * b).flatten(lead).sum(-1), by_layer)


def cross_dots(g1: Grads, g2: Grads) -> dict[str, torch.Tensor]:
    """All pairs of facts: ``out[block][k, i, j] = <g1 of fact i, g2 of fact j>``, (K, N, N).

    With g1 = ∇l_source and g2 = ∇l_b2a, -η times row i is the first-order change of every
    fact's b2a loss after a step on fact i's source loss alone; the diagonal is the fact itself.
    """
    return _grouped(g1, g2, lambda a, b: torch.einsum("kip,kjp->kij", a.flatten(2), b.flatten(2)))


def cosines(g1: Grads, g2: Grads, lead: int = 1, dots: dict | None = None, by_layer: bool = False) -> dict[str, torch.Tensor]:
    """Cosine of g1 and g2 per block (pass ``dots`` = block_dots(g1, g2) if already computed);
    0 where a gradient vanishes."""
    dot = block_dots(g1, g2, lead, by_layer) if dots is None else dots
    n1, n2 = block_dots(g1, g1, lead, by_layer), block_dots(g2, g2, lead, by_layer)
    # sqrt before the product: tiny float32 norms (a saturated softmax) must not underflow to 0
    norm = {b: n1[b].sqrt() * n2[b].sqrt() for b in dot}
    return {b: torch.where(norm[b] > 0, dot[b] / norm[b].clamp_min(torch.finfo(norm[b].dtype).tiny), 0.0)
            for b in dot}


def check_facts(world: FactWorld, minimum: int = 2) -> None:
    n = len(world.one_way)
    if n < minimum:
        raise ConfigError(f"a gradient measurement needs at least {minimum} one-way facts; this world has {n}")


def to_numpy(d: dict) -> dict:
    return {k: to_numpy(v) if isinstance(v, dict) else v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            for k, v in d.items()}
