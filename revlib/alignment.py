"""Gradient alignment: do the gradients of ℓ_infill and ℓ_b2a point the same way?

Chapter 3 of the book (our formalisation). This module owns the gradients of the probe losses (per fact and averaged,
grouped by parameter block), their cosines, the first-order test of one plain gradient step,
the factorised inner product of the OV block, and the same measurements along training.

Every measurement takes an ensemble (revlib.model) and returns one value per member: arrays
whose first axis is K. Everything runs on detached copies of the parameters, so measuring never
touches the model or its ``.grad``: in float64 by default (the identity and the first-order
test), in float32 for :func:`alignment` along training (2-3x faster; the losses are written so
that float32 keeps the signs of tiny gradients, see :func:`answer_nll`).

**Losses.** ℓ_probe is the mean over facts of -log p(answer) at the probe's blank, read where
the model predicts it (revlib.measure.answer_logits: the MDM at the ``[M]`` slot, the ARM one
position earlier). The *source* loss is the one training lowers directly: ``infill`` for the
MDM, ``a2b`` for the ARM (its training target: the next token after "a_i is"). The b2a probe
only holds pairs never trained reversed; the source probe is restricted to the same pairs, so
fact i of one probe is fact i of the other.

**Per-fact gradients: vmap over members, the ensemble axis over facts.** ``torch.func.vmap``
cannot batch the model over *facts*: ``Transformer.forward`` validates token ids with
``int(tokens.min())``, a data-dependent check vmap refuses for batched tokens. The ensemble
axis gives per-fact gradients instead: expand one member's parameters to N copies along the
ensemble axis (views, no copying), give copy n the single fact n, and take ``torch.func.grad``
of the summed loss with respect to the copies: the gradient of copy n is ∇ℓ_n, because no
copy sees another's fact. ``vmap`` maps that over the K members (their parameters are
batched, the tokens are not, so the check is fine).

**The OV product.** In our model head h adds ``c_h @ W_V[h] @ W_O[h]`` to the residual stream
(row vectors; ``c_h = sum_j alpha_hj x_j`` is the attended mixture of the layer's inputs), so
the value side is the product ``M_h = W_V[h] @ W_O[h]`` (d x d), the transpose of the book's
``W = W_O W_V``. We differentiate with respect to M_h directly: substituting ``W_V := M`` and
``W_O := I`` (a value size of d instead of d/H) computes exactly the same function, and
autograd in that parametrisation gives ∇_M ℓ (key ``layers.<i>.W_OV``). The gradients of the
stored factors follow by the chain rule, ``∇_{W_V} = ∇_M W_O^T`` and ``∇_{W_O} = W_V^T ∇_M``.
For a one-layer model whose logits are ``h @ U`` (no MLP, no LayerNorm), the loss at the read
slot depends on M only through ``h_read``, so ``∇_{M_h} ℓ = c_h^T g`` with the residual
gradient ``g = ∂ℓ/∂h_read = U (p - e_answer)``, and for two losses

    <∇_M ℓ1, ∇_M ℓ2>_F  =  (g1 · g2)  *  sum_h (c1_h · c2_h)
                        =  [(p1 - e_A)^T U^T U (p2 - e_A)] * [sum_h c1_h^T c2_h],

The book's identity with its ``U U^T`` written for our (d, V) unembedding (:func:`ov_identity`).
The stored factors see these two factors through W_O and W_V:
``<∇_{W_V} ℓ1, ∇_{W_V} ℓ2> = (c1·c2) (g1^T W_O^T W_O g2)`` and
``<∇_{W_O} ℓ1, ∇_{W_O} ℓ2> = (W_V^T c1 · W_V^T c2) (g1·g2)`` per head, which is why the
``ov`` block of the parameters is close to, but not the same as, the product.

Blocks (``BLOCKS``): ``embed`` (E), ``pos`` (learned positions), ``qk`` (W_Q, W_K), ``ov``
(W_V, W_O as stored), ``mlp``, ``ln`` (LayerNorm gains and biases), ``unembed`` (U); ``all``
is every parameter, and ``ov_product`` the gradient with respect to the product M.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vmap

from .config import Experiment, TrainConfig
from .data import FactWorld, Probe, make_world
from .model import Transformer
from .objectives import ar_loss, mdm_loss
from .train import Run, train

BLOCKS = ("embed", "pos", "qk", "ov", "mlp", "ln", "unembed")
SOURCE = {"mdm": "infill", "ar": "a2b"}  # the probe loss each model's training lowers directly
DTYPE = torch.float64  # tiny models: double precision costs little and makes the tests exact
B_POSITION = {"infill": 2, "b2a": 0}  # where b_i sits in the query ("a2b" holds no b_i)
DEFAULT_ETAS = tuple(float(x) for x in np.logspace(-4, 1, 11))  # step sizes of the first-order test

Grads = dict  # parameter name -> tensor (K, ...) or, per fact, (K, N, ...)


def block_of(name: str) -> str:
    """The block of parameter ``name`` ("embed", "layers.0.W_Q", ...); ``ov_product`` for W_OV."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("embed", "pos", "unembed"):
        return leaf
    if leaf in ("W_Q", "W_K"):
        return "qk"
    if leaf in ("W_V", "W_O"):
        return "ov"
    if leaf == "W_OV":
        return "ov_product"
    if leaf in ("W_in", "b_in", "W_out", "b_out"):
        return "mlp"
    if leaf.startswith("ln"):
        return "ln"
    raise ValueError(f"no block for parameter {name!r}")


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


class _Bound:
    """The model with ``params`` in place of its own, for code that calls the model's methods
    (``model(tokens)``, ``model.residual``, ... as revlib.objectives does). ``params`` may hold
    more members than the model (copies): ``n_members`` follows the parameters."""

    def __init__(self, model: Transformer, params: dict[str, torch.Tensor]):
        self._methods = _Methods(model)
        self._params = {f"model.{n}": t for n, t in params.items()}
        self.causal = model.causal
        self.cfg = model.cfg
        self.n_members = params["embed"].shape[0]

    def __call__(self, *args, **kwargs):
        return functional_call(self._methods, self._params, ("forward", *args), kwargs)

    def __getattr__(self, name: str):  # any other method of the model, with our parameters
        if not callable(getattr(self._methods.model, name)):
            raise AttributeError(name)
        return lambda *args, **kwargs: functional_call(self._methods, self._params, (name, *args), kwargs)


# ---------------------------------------------------------------------------------------------
# the OV product parametrisation
# ---------------------------------------------------------------------------------------------

def _ov_layers(params: dict) -> list[str]:
    return sorted({n.rsplit(".", 1)[0] for n in params if n.endswith(".W_V")})


def to_product(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same function, value side as one matrix per head: W_V := M = W_V @ W_O, W_O := I.

    Shapes (..., H, d, e) and (..., H, e, d) become (..., H, d, d) each.
    """
    out = dict(params)
    for layer in _ov_layers(params):
        W_V, W_O = params[f"{layer}.W_V"], params[f"{layer}.W_O"]
        M = W_V @ W_O  # (..., H, d, d)
        out[f"{layer}.W_V"] = M
        out[f"{layer}.W_O"] = torch.eye(M.shape[-1], dtype=M.dtype).expand_as(M)
    return out


def from_product(grads: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> Grads:
    """Gradients taken in :func:`to_product`'s parametrisation -> the model's own, plus W_OV.

    ``grads`` may carry a fact axis after K that ``params`` lacks: (K, N, ...) vs (K, ...).
    """
    out = {n: t for n, t in grads.items() if not n.endswith((".W_V", ".W_O"))}
    for layer in _ov_layers(params):
        if f"{layer}.W_V" not in grads:  # the OV block was not differentiated
            continue
        g_M = grads[f"{layer}.W_V"]  # ∇_M ℓ, (K, [N,] H, d, d)
        W_V, W_O = params[f"{layer}.W_V"], params[f"{layer}.W_O"]
        if g_M.dim() > W_V.dim():  # a fact axis: broadcast the weights over it
            W_V, W_O = W_V.unsqueeze(1), W_O.unsqueeze(1)
        out[f"{layer}.W_OV"] = g_M
        out[f"{layer}.W_V"] = g_M @ W_O.transpose(-1, -2)  # (.., H, d, e)
        out[f"{layer}.W_O"] = W_V.transpose(-1, -2) @ g_M  # (.., H, e, d)
    return out


# ---------------------------------------------------------------------------------------------
# probes and losses
# ---------------------------------------------------------------------------------------------

def probe(world: FactWorld, name: str) -> Probe:
    """Probe ``name`` restricted to the pairs the b2a probe scores (never trained reversed)."""
    full = world.probe(name)
    if name == "b2a":
        return full
    keep = ~world.both
    return Probe(name, full.tokens[keep], full.position, full.answers[keep])


def answer_nll(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[answer], (...,), written so that its gradient keeps its precision.

    The usual cross entropy has gradient p - e_A, whose answer entry p_A - 1 cancels
    catastrophically once the model is sure (p_A = 1 - 1e-7 is 1 in float32). Written as
    softplus(s) with s = logsumexp_{v != A}(z_v - z_A), the same loss has gradient
    sigmoid(s) * softmax_{v != A}(z) off the answer and -sigmoid(s) on it: no cancellation, so
    the signs of tiny per-fact gradients survive float32. ``logits`` (..., V), ``answers`` (...).
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


def read_position(model: Transformer, p: Probe) -> int:
    """Where the model predicts the blank (as revlib.measure.answer_logits)."""
    read_at = p.position - 1 if model.causal else p.position
    if read_at < 0:
        raise ValueError(f"an ARM cannot answer {p.name!r}: nothing precedes the blank")
    return read_at


def fact_losses(model: Transformer, params: dict, p: Probe) -> torch.Tensor:
    """-log p(answer) per member and fact, (K, N), with ``params`` (K, ...) in the model."""
    bound = _Bound(model, params)
    h, _ = bound.residual(p.tokens)  # (K, N, T, d)
    logits = bound.unembed_logits(h[:, :, read_position(model, p)])  # (K, N, V)
    return answer_nll(logits, p.answers.expand(logits.shape[0], -1))


def probe_loss(model: Transformer, params: dict, p: Probe) -> torch.Tensor:
    """ℓ_probe per member: the mean over facts of -log p(answer), (K,)."""
    return fact_losses(model, params, p).mean(dim=1)


def objective(model: Transformer, params: dict, world: FactWorld, train_config: TrainConfig | None = None,
              mask_seed: int = 0) -> torch.Tensor:
    """The model's own training loss on its whole text, (K,): ar_loss, or mdm_loss with one fixed
    draw of masks and rates, so the same call always gives the same number. The member of seed s
    draws from a generator seeded ``mask_seed + s``: it measures the same alone or in an ensemble."""
    tc = train_config or TrainConfig(objective="ar" if model.causal else "mdm")
    bound = _Bound(model, params)
    if model.causal:
        return ar_loss(bound, world.train_tokens)
    tokens = world.train_tokens.repeat_interleave(tc.mask_copies, dim=0)  # as revlib.train does
    gens = [torch.Generator().manual_seed(mask_seed + seed) for seed in model.seeds]
    return mdm_loss(bound, tokens, gens, tc.t_min)


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------

def fact_gradients(model: Transformer, p: Probe, params: dict | None = None,
                   blocks: tuple[str, ...] | None = None) -> Grads:
    """∇ of -log p(answer) for every member and fact: name -> (K, N, ...), W_OV included.

    ``vmap`` over the members of ``grad`` over N copies of the member, one fact per copy
    (module docstring): no loop over facts or members. ``blocks`` (e.g. ``("ov_product",)``)
    restricts the result, and the work, to those blocks' parameters.
    """
    params = parameters(model) if params is None else params
    N, read_at = len(p.answers), read_position(model, p)
    tokens = p.tokens[:, None, :]  # (N, 1, T): copy n holds fact n only
    product = to_product(params)
    # In the product parametrisation "W_V" holds M, whose gradient gives both stored factors'
    # (from_product); the stand-in identity "W_O" is never differentiated.
    wanted = set(BLOCKS + ("ov_product",)) if blocks is None else set(blocks)
    diff = {n for n in product if not n.endswith(".W_O")
            and (block_of(n) in wanted or (n.endswith(".W_V") and wanted & {"ov", "ov_product"}))}

    def total(varied, fixed):  # name -> (N, ...): a pseudo-ensemble of N copies of one member
        bound = _Bound(model, {**varied, **fixed})
        h, _ = bound.residual(tokens)  # (N, 1, T, d)
        logits = bound.unembed_logits(h[:, 0, read_at])  # (N, V): only the read slot
        return answer_nll(logits, p.answers).sum()

    def one_member(varied, fixed):  # name -> (...): one member's parameters, without K
        copies = lambda d: {n: t.expand(N, *t.shape) for n, t in d.items()}  # noqa: E731 (views)
        return grad(total)(copies(varied), copies(fixed))

    varied = {n: t for n, t in product.items() if n in diff}
    fixed = {n: t for n, t in product.items() if n not in diff}
    g = from_product(vmap(one_member)(varied, fixed), params)
    return {n: t for n, t in g.items() if block_of(n) in wanted}


def loss_gradient(model: Transformer, loss_fn, params: dict | None = None) -> Grads:
    """∇ of a per-member loss ``loss_fn(params) -> (K,)``: name -> (K, ...), W_OV included.

    Members never interact, so the gradient of the sum is each member's own gradient.
    """
    params = parameters(model) if params is None else params
    g = grad(lambda q: loss_fn(q).sum())(to_product(params))
    return from_product(g, params)


def probe_gradient(model: Transformer, p: Probe, params: dict | None = None) -> Grads:
    """∇ℓ_probe (the mean over facts): name -> (K, ...)."""
    return loss_gradient(model, lambda q: probe_loss(model, q, p), params)


def objective_gradient(model: Transformer, world: FactWorld, train_config: TrainConfig | None = None,
                       mask_seed: int = 0, params: dict | None = None) -> Grads:
    """∇ of the training objective with a fixed mask draw (:func:`objective`): name -> (K, ...)."""
    return loss_gradient(model, lambda q: objective(model, q, world, train_config, mask_seed), params)


def mean_over_facts(g: Grads) -> Grads:
    """(K, N, ...) -> (K, ...): the gradient of the mean loss."""
    return {n: t.mean(dim=1) for n, t in g.items()}


ORDER = ("embed", "pos", "qk", "ov", "ov_product", "mlp", "ln", "unembed", "all")  # how results list blocks


def _grouped(g1: Grads, g2: Grads, pair) -> dict[str, torch.Tensor]:
    """sum of ``pair(g1[name], g2[name])`` over the parameters of each block, and over all of them."""
    out: dict[str, torch.Tensor] = {}
    for name in g1:
        block = block_of(name)
        d = pair(g1[name], g2[name])
        out[block] = out.get(block, 0) + d
        if block != "ov_product":  # W_OV re-expresses W_V and W_O; "all" counts each parameter once
            out["all"] = out.get("all", 0) + d
    return {b: out[b] for b in ORDER if b in out}


def block_dots(g1: Grads, g2: Grads, lead: int = 1) -> dict[str, torch.Tensor]:
    """Inner products <g1, g2> per block, with ``all`` (every parameter, W_OV excluded).

    ``lead`` leading axes are kept: 1 for (K, ...) gradients, 2 for per-fact (K, N, ...).
    """
    return _grouped(g1, g2, lambda a, b: (a * b).flatten(lead).sum(-1))


def cross_dots(g1: Grads, g2: Grads) -> dict[str, torch.Tensor]:
    """All pairs of facts: ``out[block][k, i, j] = <g1 of fact i, g2 of fact j>``, (K, N, N).

    With g1 = ∇ℓ_source and g2 = ∇ℓ_b2a, -η times row i is the first-order change of every
    fact's b2a loss after a step on fact i's source loss alone; the diagonal is the fact itself.
    """
    return _grouped(g1, g2, lambda a, b: torch.einsum("kip,kjp->kij", a.flatten(2), b.flatten(2)))


def cosines(g1: Grads, g2: Grads, lead: int = 1, dots: dict | None = None) -> dict[str, torch.Tensor]:
    """Cosine of g1 and g2 per block (see :func:`block_dots`; pass ``dots`` = block_dots(g1, g2)
    if already computed); 0 where a gradient vanishes."""
    dot = block_dots(g1, g2, lead) if dots is None else dots
    n1, n2 = block_dots(g1, g1, lead), block_dots(g2, g2, lead)
    # sqrt before the product: tiny float32 norms (a saturated softmax) must not underflow to 0
    norm = {b: n1[b].sqrt() * n2[b].sqrt() for b in dot}
    return {b: torch.where(norm[b] > 0, dot[b] / norm[b].clamp_min(torch.finfo(norm[b].dtype).tiny), 0.0)
            for b in dot}


# ---------------------------------------------------------------------------------------------
# alignment of a model: one call per training checkpoint
# ---------------------------------------------------------------------------------------------

def source_of(model: Transformer) -> str:
    return SOURCE["ar" if model.causal else "mdm"]


def alignment(model: Transformer, world: FactWorld, source: str | None = None,
              train_config: TrainConfig | None = None, mask_seed: int = 0,
              dtype: torch.dtype = torch.float32) -> dict[str, dict[str, np.ndarray]]:
    """How ∇ℓ_source and the training objective's gradient sit against ∇ℓ_b2a, by block.

    Returns ``{kind: {block: (K,)}}`` with kinds

    * ``mean``: cosine of the averaged gradients ∇ℓ_source and ∇ℓ_b2a (what a full-batch step sees);
    * ``fact``: mean over facts of the cosine of the same fact's two gradients;
    * ``fact_positive``: share of facts whose two gradients have a positive inner product;
    * ``objective``: cosine of the training objective's gradient (fixed mask draw) and ∇ℓ_b2a;
    * ``factors`` (one-layer attention-only models): the share of facts whose residual factor
      and mixture factor (:func:`ov_identity`) are positive, and their means;
    * ``dot``: the inner product <∇ℓ_source, ∇ℓ_b2a> of the averaged gradients, which sets the
      first-order change of ℓ_b2a, split as ``dot = dot_same + dot_other``: ``dot_same`` =
      (1/N²) sum_i <g_src,i, g_b2a,i> pairs each fact with itself, ``dot_other`` pairs
      different facts (what every fact's step does to every other fact's b2a loss).
    """
    source = source or source_of(model)
    params = parameters(model, dtype)
    src = fact_gradients(model, probe(world, source), params)
    b2a = fact_gradients(model, probe(world, "b2a"), params)
    src_mean, b2a_mean = mean_over_facts(src), mean_over_facts(b2a)
    obj = objective_gradient(model, world, train_config, mask_seed, params)
    fact_dot = block_dots(src, b2a, lead=2)  # {block: (K, N)}
    dot = block_dots(src_mean, b2a_mean)
    n = fact_dot["all"].shape[1]
    same = {b: d.sum(dim=1) / n**2 for b, d in fact_dot.items()}
    result = {
        "mean": cosines(src_mean, b2a_mean),
        "fact": {b: c.mean(dim=1) for b, c in cosines(src, b2a, lead=2, dots=fact_dot).items()},
        "fact_positive": {b: (d > 0).double().mean(dim=1) for b, d in fact_dot.items()},
        "objective": cosines(obj, b2a_mean),
        "dot": dot,
        "dot_same": same,
        "dot_other": {b: dot[b] - same[b] for b in dot},
    }
    if identity_applies(model):  # the two factors of the OV product's per-fact inner product
        ov = ov_identity(model, world, source, params, {source: src, "b2a": b2a})
        result["factors"] = {
            "residual_positive": torch.from_numpy(ov.residual_factor > 0).double().mean(dim=1),
            "mixture_positive": torch.from_numpy(ov.mixture_factor > 0).double().mean(dim=1),
            "residual": torch.from_numpy(ov.residual_factor).double().mean(dim=1),
            "mixture": torch.from_numpy(ov.mixture_factor).double().mean(dim=1),
        }
    return {k: {b: v.numpy() for b, v in d.items()} for k, d in result.items()}


@dataclass
class Trace:
    """:func:`alignment` along training: ``values[kind][block]`` is (n_checkpoints, K)."""

    steps: np.ndarray
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, str]) -> np.ndarray:
        kind, block = key
        return self.values[kind][block]


def train_traced(experiment: Experiment, seeds=None, progress: bool = False,
                 source: str | None = None) -> tuple[Run, Trace]:
    """Train as :func:`revlib.train.train` does and measure :func:`alignment` at every evaluation step.

    The measurement draws its masks from its own generators, so the run is identical to one
    trained without it (and to the cached run of the same experiment and seeds).
    """
    world = make_world(experiment.data)  # the world train() builds: same config, same pairs
    steps: list[int] = []
    snaps: list[dict] = []

    def callback(step: int, model: Transformer) -> None:
        steps.append(step)
        snaps.append(alignment(model, world, source, experiment.train))

    run = train(experiment, seeds, progress=progress, callback=callback)
    values = {k: {b: np.stack([s[k][b] for s in snaps]) for b in snaps[0][k]} for k in snaps[0]}
    return run, Trace(np.asarray(steps), values)


# ---------------------------------------------------------------------------------------------
# the first-order test
# ---------------------------------------------------------------------------------------------

@dataclass
class FirstOrder:
    """One plain gradient step θ - η g_step for each η: ``eta`` (n,), ``predicted`` and
    ``measured`` change of ℓ_b2a, (n, K); ``dot`` = <∇ℓ_b2a, g_step> and ``curvature`` =
    g_step^T H_b2a g_step (H_b2a the Hessian of ℓ_b2a), (K,), the second-order coefficient."""

    step: str
    eta: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    dot: np.ndarray
    curvature: np.ndarray

    @property
    def relative_error(self) -> np.ndarray:
        """``|measured - predicted| / |predicted|``, (n, K)."""
        return np.abs(self.measured - self.predicted) / np.abs(self.predicted)

    @property
    def second_order(self) -> np.ndarray:
        """-η<∇ℓ_b2a, g_step> + (η²/2) g_step^T H_b2a g_step, (n, K)."""
        return self.predicted + 0.5 * self.eta[:, None] ** 2 * self.curvature[None, :]


def first_order(model: Transformer, world: FactWorld, step: str | None = None, etas=DEFAULT_ETAS,
                train_config: TrainConfig | None = None, mask_seed: int = 0) -> FirstOrder:
    """Measured change of ℓ_b2a after one plain gradient step, against -η<∇ℓ_b2a, g_step>.

    ``step`` names the loss stepped on: a probe ("infill", "a2b"; default the model's source)
    or ``"objective"`` (the full training loss, one fixed mask draw). Float64 throughout.
    """
    step = step or source_of(model)
    params = parameters(model)
    b2a = probe(world, "b2a")
    if step == "objective":
        g_step = objective_gradient(model, world, train_config, mask_seed, params)
    else:
        g_step = probe_gradient(model, probe(world, step), params)
    g_step = {n: g_step[n] for n in params}  # the model's own parameters (no W_OV)
    b2a_loss = lambda q: probe_loss(model, q, b2a).sum()  # noqa: E731  (members are independent)
    g_b2a, hvp = jvp(grad(b2a_loss), (params,), (g_step,))  # ∇ℓ_b2a and H_b2a g_step in one pass
    dot = sum((g_b2a[n] * g_step[n]).flatten(1).sum(-1) for n in params)  # (K,)
    curvature = sum((hvp[n] * g_step[n]).flatten(1).sum(-1) for n in params)
    etas = np.sort(np.asarray(etas, dtype=float))
    with torch.no_grad():
        base = probe_loss(model, params, b2a)
        measured = [probe_loss(model, {n: t - eta * g_step[n] for n, t in params.items()}, b2a) - base
                    for eta in etas]
    return FirstOrder(step, etas, -etas[:, None] * dot.numpy()[None, :], torch.stack(measured).numpy(),
                      dot.numpy(), curvature.numpy())


# ---------------------------------------------------------------------------------------------
# the factorised OV inner product (chapter 3)
# ---------------------------------------------------------------------------------------------

@dataclass
class OVIdentity:
    """Per member and fact (K, N): the two factors of <∇_M ℓ_source, ∇_M ℓ_b2a>, their product
    and autograd's inner product; ``attention`` holds, per probe, the read slot's attention
    (K, N, H, T); ``B_POSITION`` says where a query holds b_i (the book's B)."""

    source: str
    residual_factor: np.ndarray  # (p_src - e)^T U^T U (p_b2a - e): the g1·g2 factor
    mixture_factor: np.ndarray  # sum_h c_src,h · c_b2a,h
    factorised: np.ndarray
    autograd: np.ndarray
    attention: dict[str, np.ndarray]

    @property
    def relative_error(self) -> np.ndarray:
        """Largest relative error over facts, per member, (K,)."""
        err = np.abs(self.factorised - self.autograd)
        scale = np.maximum(np.abs(self.autograd), 1e-12 * np.abs(self.autograd).max())
        return (err / scale).max(axis=1)


def _factors(model: Transformer, params: dict, p: Probe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual gradient g (K, N, d), attended mixtures c (K, N, H, d) and attention (K, N, H, T)
    at the read slot, computed from the forward pass (no autograd)."""
    read_at = read_position(model, p)
    with torch.no_grad():
        bound = _Bound(model, params)
        logits, internals = bound(p.tokens, return_internals=True)
        x = bound.embed_tokens(p.tokens)  # the layer's input (no LayerNorm here): (K, N, T, d)
        alpha = internals["patterns"][0][:, :, :, read_at, :]  # (K, N, H, T)
        c = torch.einsum("knht,kntd->knhd", alpha, x)
        delta = residual_delta(logits[:, :, read_at], p.answers.expand(logits.shape[0], -1))  # p - e: (K, N, V)
        g = torch.einsum("kdv,knv->knd", params["unembed"], delta)  # U (p - e): (K, N, d)
    return g, c, alpha


def identity_applies(model: Transformer) -> bool:
    """The factorisation needs one layer whose logits are h @ U: no MLP, no LayerNorm."""
    cfg = model.cfg
    return cfg.n_layers == 1 and not cfg.mlp and not cfg.layernorm


def ov_identity(model: Transformer, world: FactWorld, source: str | None = None, params: dict | None = None,
                autograd: dict[str, Grads] | None = None) -> OVIdentity:
    """Chapter 3's identity per fact: the factorised OV inner product against autograd's.

    Holds for one layer whose logits are h @ U (no MLP, no LayerNorm), any number of heads and
    any positional encoding; other models raise ValueError. ``autograd`` may pass the per-fact
    gradients ``{source: ..., "b2a": ...}`` already computed with the same ``params``.
    """
    if not identity_applies(model):
        cfg = model.cfg
        raise ValueError("the factorised OV inner product holds for one layer without MLP or LayerNorm; "
                         f"got n_layers={cfg.n_layers}, mlp={cfg.mlp}, layernorm={cfg.layernorm}")
    source = source or source_of(model)
    params = parameters(model) if params is None else params
    p_src, p_b2a = probe(world, source), probe(world, "b2a")
    g1, c1, a1 = _factors(model, params, p_src)
    g2, c2, a2 = _factors(model, params, p_b2a)
    residual = (g1 * g2).sum(-1)  # (K, N)
    mixture = (c1 * c2).sum(-1).sum(-1)  # over d, then heads: (K, N)
    if autograd is None:
        only = ("ov_product",)
        autograd = {source: fact_gradients(model, p_src, params, only), "b2a": fact_gradients(model, p_b2a, params, only)}
    auto = block_dots(autograd[source], autograd["b2a"], lead=2)["ov_product"]
    return OVIdentity(source, residual.numpy(), mixture.numpy(), (residual * mixture).numpy(), auto.numpy(),
                      {source: a1.numpy(), "b2a": a2.numpy()})
