"""Gradient alignment: do the gradients of l_source and l_b2a point the same way? (chapter 3)

This module owns what chapter 3 measures, built on revlib.gradients: the cosines of two probe
losses' gradients per block (per fact and averaged), along training; the first-order test of
one plain gradient step; and the factorised inner product of the OV block.

**Source losses.** The source loss is the probe loss that training lowers directly: ``infill``
for the ``mdm`` objective, ``a2b`` for ``ar`` (its training target: the next token after
"a is") and for ``suffix``. The *control* is the MDM's own ``a2b`` loss against its ``b2a``
loss: two queries that share neither their answer nor their bag of tokens, so nothing in the
construction makes their gradients agree (chapter 3 explains why ``infill`` and ``b2a`` are
aligned at initialisation partly by construction).

**The OV identity** (our formalisation, column vectors as in the book). For a one-layer model
whose logits are U h (no MLP, no norm) and one-token answers, the loss at the read slot
depends on the head's OV map W_h only through h_read, so ∇_{W_h} l = g c_h^T with the residual
gradient g = U^T (p - e_A) and the attended mixture c_h = Σ_j α_hj E[x_j]. For two losses

    <∇_W l1, ∇_W l2>_F = [(p1 - e_A)^T U U^T (p2 - e_A)] * [Σ_h c1_h^T c2_h],

the residual factor times the mixture factor (:func:`ov_identity`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import grad, jvp

from .cache import cached, cached_trace, storable
from .config import Experiment, TrainConfig
from .data import FactWorld
from .model import Transformer
from .gradients import (block_dots, check_facts, cosines, fact_gradients, mean_over_facts, objective_gradient,
                        parameters, probe_gradient, probe_loss, residual_delta, Bound, inputs_of, reads_of)

SOURCE = {"mdm": "infill", "prefix": "infill", "ar": "a2b", "suffix": "a2b"}  # the probe loss each objective lowers directly
DEFAULT_ETAS = tuple(float(x) for x in np.logspace(-4, 1, 11))  # step sizes of the first-order test


def source_of(objective: str) -> str:
    return SOURCE[objective]


def alignment(model: Transformer, world: FactWorld, objective: str, source: str | None = None,
              train_config: TrainConfig | None = None, mask_seed: int = 0, dtype: torch.dtype = torch.float32,
              by_layer: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """How ∇l_source and the training objective's gradient sit against ∇l_b2a, by block.

    Returns ``{kind: {block: (K,)}}`` with kinds

    * ``mean``: cosine of the averaged gradients ∇l_source and ∇l_b2a (what a full-batch step sees);
    * ``fact``: mean over facts of the cosine of the same fact's two gradients;
    * ``fact_positive``: share of facts whose two gradients have a positive inner product;
    * ``objective``: cosine of the training objective's gradient (fixed mask draw) and ∇l_b2a;
    * ``dot``: <∇l_source, ∇l_b2a> of the averaged gradients, which sets the first-order change
      of l_b2a, split as ``dot = dot_same + dot_other``: ``dot_same`` = (1/N²) Σ_i <g_src,i, g_b2a,i>
      pairs each fact with itself, ``dot_other`` pairs different facts;
    * ``factors`` (where :func:`identity_applies`): the share of facts whose residual and
      mixture factors are positive, and their means.

    ``by_layer=True`` splits the blocks inside the layers per layer (``L0.qk``, ...).
    """
    check_facts(world)
    source = source or source_of(objective)
    train_config = train_config or TrainConfig(objective=objective)
    params = parameters(model, dtype)
    p_src, p_b2a = world.probe(source), world.probe("b2a")
    src = fact_gradients(model, p_src, objective, params)
    b2a = fact_gradients(model, p_b2a, objective, params)
    src_mean, b2a_mean = mean_over_facts(src), mean_over_facts(b2a)
    obj = objective_gradient(model, world, train_config, mask_seed, params)
    fact_dot = block_dots(src, b2a, lead=2, by_layer=by_layer)  # {block: (K, N)}
    dot = block_dots(src_mean, b2a_mean, by_layer=by_layer)
    n = fact_dot["all"].shape[1]
    same = {b: d.sum(dim=1) / n**2 for b, d in fact_dot.items()}
    result = {
        "mean": cosines(src_mean, b2a_mean, by_layer=by_layer),
        "fact": {b: c.mean(dim=1) for b, c in cosines(src, b2a, lead=2, dots=fact_dot, by_layer=by_layer).items()},
        "fact_positive": {b: (d > 0).double().mean(dim=1) for b, d in fact_dot.items()},
        "objective": cosines(obj, b2a_mean, by_layer=by_layer),
        "dot": dot,
        "dot_same": same,
        "dot_other": {b: dot[b] - same[b] for b in dot},
    }
    if identity_applies(model, world):
        ov = ov_identity(model, world, objective, source, params, {source: src, "b2a": b2a})
        result["factors"] = {
            "residual_positive": torch.from_numpy(ov.residual_factor > 0).double().mean(dim=1),
            "mixture_positive": torch.from_numpy(ov.mixture_factor > 0).double().mean(dim=1),
            "residual": torch.from_numpy(ov.residual_factor).double().mean(dim=1),
            "mixture": torch.from_numpy(ov.mixture_factor).double().mean(dim=1),
        }
    return {k: {b: v.detach().numpy() for b, v in d.items()} for k, d in result.items()}


@storable
@dataclass
class Trace:
    """:func:`alignment` along training: ``values[kind][block]`` is (n_checkpoints, K)."""

    steps: np.ndarray
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, str]) -> np.ndarray:
        kind, block = key
        return self.values[kind][block]


def alignment_trace(experiment: Experiment, seeds=None, source: str | None = None, progress: bool = False,
                    by_layer: bool = False):
    """Train ``experiment`` and measure :func:`alignment` at every evaluation step: ``(run, Trace)``.

    Cached (revlib.cache.cached_trace): the measurement draws its masks from its own generators,
    so the run is identical to the unmeasured one, and stored as ``cached_train`` stores it.
    """
    objective = experiment.train.objective

    def measure(step, model, world):
        return alignment(model, world, objective, source, experiment.train, by_layer=by_layer)

    run, trace = cached_trace("alignment-trace", experiment, seeds, measure, progress=progress,
                              options={"source": source or source_of(objective), "by_layer": by_layer})
    steps = trace.pop("step")
    return run, Trace(steps, trace)


# ---------------------------------------------------------------------------------------------
# the first-order test
# ---------------------------------------------------------------------------------------------

@storable
@dataclass
class FirstOrder:
    """One plain gradient step θ - η g_step for each η: ``eta`` (n,), ``predicted`` and
    ``measured`` change of l_b2a, (n, K); ``dot`` = <∇l_b2a, g_step> and ``curvature`` =
    g_step^T H_b2a g_step (H_b2a the Hessian of l_b2a), (K,), the second-order coefficient."""

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
        """-η<∇l_b2a, g_step> + (η²/2) g_step^T H_b2a g_step, (n, K)."""
        return self.predicted + 0.5 * self.eta[:, None] ** 2 * self.curvature[None, :]


def first_order(model: Transformer, world: FactWorld, objective: str, step: str | None = None,
                etas=DEFAULT_ETAS, train_config: TrainConfig | None = None, mask_seed: int = 0) -> FirstOrder:
    """Measured change of l_b2a after one plain gradient step, against -η<∇l_b2a, g_step>.

    ``step`` names the loss stepped on: a probe ("infill", "a2b"; default the objective's
    source) or ``"objective"`` (the full training loss, one fixed mask draw). Float64 throughout.
    """
    from .config import ConfigError

    check_facts(world)
    etas = np.sort(np.asarray(list(etas), dtype=float))
    if etas.size == 0:
        raise ConfigError("first_order needs at least one step size in etas")
    if not np.isfinite(etas).all() or (etas <= 0).any():
        raise ConfigError(f"step sizes must be finite and positive, got {etas.tolist()}")
    step = step or source_of(objective)
    train_config = train_config or TrainConfig(objective=objective)
    params = parameters(model)
    b2a = world.probe("b2a")
    if step == "objective":
        g_step = objective_gradient(model, world, train_config, mask_seed, params)
    else:
        g_step = probe_gradient(model, world.probe(step), objective, params)
    g_step = {n: g_step[n] for n in params}  # the model's own parameters (no W_OV)
    b2a_loss = lambda q: probe_loss(model, q, b2a, objective).sum()  # noqa: E731  (members are independent)
    g_b2a, hvp = jvp(grad(b2a_loss), (params,), (g_step,))  # ∇l_b2a and H_b2a g_step in one pass
    dot = sum((g_b2a[n] * g_step[n]).flatten(1).sum(-1) for n in params)  # (K,)
    curvature = sum((hvp[n] * g_step[n]).flatten(1).sum(-1) for n in params)
    with torch.no_grad():
        base = probe_loss(model, params, b2a, objective)
        measured = [probe_loss(model, {n: t - eta * g_step[n] for n, t in params.items()}, b2a, objective) - base
                    for eta in etas]
    measured = torch.stack(measured).numpy()
    predicted = -etas[:, None] * dot.numpy()[None, :]
    if not (np.isfinite(measured).all() and np.isfinite(predicted).all()):
        raise ConfigError(f"a gradient step of size up to {etas.max():g} overflows the b2a loss; use smaller etas")
    return FirstOrder(step, etas, predicted, measured, dot.numpy(), curvature.numpy())


# ---------------------------------------------------------------------------------------------
# the factorised OV inner product
# ---------------------------------------------------------------------------------------------

@storable
@dataclass
class OVIdentity:
    """Per member and fact (K, N): the two factors of <∇_W l_source, ∇_W l_b2a>, their product and
    autograd's inner product; ``attention`` holds, per probe, the read slot's attention (K, N, H, T)."""

    source: str
    residual_factor: np.ndarray  # (p_src - e)^T U U^T (p_b2a - e)
    mixture_factor: np.ndarray  # Σ_h c_src,h . c_b2a,h
    factorised: np.ndarray
    autograd: np.ndarray
    attention: dict[str, np.ndarray]

    @property
    def relative_error(self) -> np.ndarray:
        """Largest relative error over facts, per member, (K,)."""
        err = np.abs(self.factorised - self.autograd)
        scale = np.maximum(np.abs(self.autograd), 1e-12 * np.abs(self.autograd).max())
        return (err / scale).max(axis=1)


def identity_applies(model: Transformer, world: FactWorld) -> bool:
    """The factorisation needs one layer whose logits are U h (no MLP, no norm), values shared by
    all positions, and one-token answers."""
    cfg = model.cfg
    return cfg.n_layers == 1 and cfg.mlp == "none" and cfg.norm == "none" and not cfg.untie_values and world.k == 1


def _factors(model: Transformer, params: dict, probe, objective: str):
    """Residual gradient g (K, N, d), attended mixtures c (K, N, H, d) and attention (K, N, H, T)
    at the read slot, from the forward pass (no autograd)."""
    read_at = reads_of(probe, objective)[0]
    tokens = inputs_of(probe, objective)
    with torch.no_grad():
        bound = Bound(model, params)
        logits, rec = bound(tokens, internals=True)
        x = rec["resid_pre"][0]  # the layer's input (no norm here): (K, N, T, d)
        alpha = rec["patterns"][0][:, :, :, read_at, :]  # (K, N, H, T)
        c = torch.einsum("knht,kntd->knhd", alpha, x)
        answers = probe.answers[:, 0]
        delta = residual_delta(logits[:, :, read_at], answers.expand(logits.shape[0], -1))  # p - e: (K, N, V)
        g = torch.einsum("kdv,knv->knd", params["unembed"], delta)  # U^T (p - e): (K, N, d)
    return g, c, alpha


def ov_identity(model: Transformer, world: FactWorld, objective: str, source: str | None = None,
                params: dict | None = None, autograd: dict | None = None) -> OVIdentity:
    """Chapter 3's identity per fact: the factorised OV inner product against autograd's.

    Holds where :func:`identity_applies` (any number of heads, any positional encoding); other
    models raise ValueError. ``autograd`` may pass the per-fact gradients
    ``{source: ..., "b2a": ...}`` already computed with the same ``params``.
    """
    if not identity_applies(model, world):
        cfg = model.cfg
        raise ValueError("the factorised OV inner product holds for one layer without MLP or norm, shared values "
                         f"and one-token answers; got n_layers={cfg.n_layers}, mlp={cfg.mlp!r}, norm={cfg.norm!r}, "
                         f"untie_values={cfg.untie_values}, entity_tokens={world.k}")
    check_facts(world)
    source = source or source_of(objective)
    params = parameters(model) if params is None else params
    p_src, p_b2a = world.probe(source), world.probe("b2a")
    g1, c1, a1 = _factors(model, params, p_src, objective)
    g2, c2, a2 = _factors(model, params, p_b2a, objective)
    residual = (g1 * g2).sum(-1)  # (K, N)
    mixture = (c1 * c2).sum(-1).sum(-1)  # over d, then heads: (K, N)
    if autograd is None:
        only = ("ov_product",)
        autograd = {source: fact_gradients(model, p_src, objective, params, only),
                    "b2a": fact_gradients(model, p_b2a, objective, params, only)}
    auto = block_dots({n: t for n, t in autograd[source].items() if n.endswith("W_OV")},
                      {n: t for n, t in autograd["b2a"].items() if n.endswith("W_OV")}, lead=2)["ov_product"]
    return OVIdentity(source, residual.numpy(), mixture.numpy(), (residual * mixture).numpy(), auto.numpy(),
                      {source: a1.numpy(), "b2a": a2.numpy()})


# ---------------------------------------------------------------------------------------------
# measurements of a trained run (cached: keyed by the run's experiment and seeds and every argument)
# ---------------------------------------------------------------------------------------------

def _model_at(run, when: str) -> Transformer:
    from .coupling import model_at

    return model_at(run, when)


@cached
def identity(run, when: str = "trained") -> OVIdentity:
    """:func:`ov_identity` of the run's model at initialisation or trained, its own source loss."""
    return ov_identity(_model_at(run, when), run.world, run.objective)


@cached
def pair_alignment(run, when: str = "trained", source: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """:func:`alignment` of ``source`` (default: the run's source loss) and ``b2a``, at
    initialisation or trained: the ``mean``, ``fact`` and ``fact_positive`` entries, by block."""
    a = alignment(_model_at(run, when), run.world, run.objective, source, run.experiment.train)
    return {k: a[k] for k in ("mean", "fact", "fact_positive")}


@cached
def initial_alignment(experiment: Experiment, seeds) -> dict[str, np.ndarray]:
    """:func:`alignment` of freshly initialised models of ``experiment`` (one per seed, nothing
    trained), all parameters, (K,) each: ``mean`` and ``fact`` cosines, ``dot`` and ``dot_same``."""
    from .data import make_world
    from .model import build_model

    world = make_world(experiment.data)
    model = build_model(experiment, seeds, world.vocab_size)
    a = alignment(model, world, experiment.train.objective, train_config=experiment.train)
    return {k: a[k]["all"] for k in ("mean", "fact", "dot", "dot_same")}


@cached
def cross_at_init(run) -> np.ndarray:
    """<∇l_source(i), ∇l_b2a(j)> over all parameters at initialisation, for every pair of facts
    (i, j): (K, N, N). The diagonal pairs each fact with itself."""
    init, world, objective = run.initial_model(), run.world, run.objective
    params = parameters(init, torch.float32)
    g_src = fact_gradients(init, world.probe(source_of(objective)), objective, params)
    g_b2a = fact_gradients(init, world.probe("b2a"), objective, params)
    from .gradients import cross_dots

    return cross_dots(g_src, g_b2a)["all"].numpy()


@cached
def first_order_at_init(run, step: str | None = None, etas=DEFAULT_ETAS) -> FirstOrder:
    """:func:`first_order` at the run's initial weights, stepping on ``step`` (default: the
    source loss; ``"objective"``: the training loss with one fixed mask draw)."""
    return first_order(run.initial_model(), run.world, run.objective, step=step, etas=etas,
                       train_config=run.experiment.train)


def mixture_attention(o: OVIdentity) -> tuple[np.ndarray, float]:
    """The product of the two routes' attention on b_i, (K, N), head 0, and its correlation with
    the mixture factor across facts, averaged over seeds."""
    both = o.attention["infill"][:, :, 0, 2] * o.attention["b2a"][:, :, 0, 0]  # b sits at 2 in infill, 0 in b2a
    corr = float(np.mean([np.corrcoef(both[k], o.mixture_factor[k])[0, 1] for k in range(both.shape[0])]))
    return both, corr


@cached
def signatures(run) -> dict[str, np.ndarray]:
    """The three signatures of the mechanism at the end of training, per seed (K,), for a masked
    model on one-token facts: ``corr`` (route correlation of the ``infill`` and ``b2a`` scores, mean
    over layers and heads), ``dla`` (what the attention outputs add to the right ``b2a`` answer's
    logit, summed over layers), ``cosine`` (mean over facts of the same-fact cosine of the
    ``infill`` and ``b2a`` gradients, all parameters)."""
    from .coupling import direct_logit_attribution, route_corr, route_scores

    m, w = run.model, run.world
    corr = route_corr(route_scores(m, w, run.objective)).mean(dim=(1, 2)).numpy()
    dla = direct_logit_attribution(m, w, run.objective).sum(1).numpy()
    a = alignment(m, w, run.objective, "infill", run.experiment.train)
    return {"corr": corr, "dla": dla, "cosine": a["fact"]["all"]}
