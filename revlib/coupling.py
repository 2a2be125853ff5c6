"""Weight-sharing coupling, measured: attention routes and stored evidence, per fact (chapters 2, 5).

**Routes.** A route is one pre-softmax score: a query position looking at a key position of a
probe's tokens. Which pair of routes to compare depends on where the model reads its answer
(revlib.objectives.read_positions), so on the objective, not on the attention mask:

=========  ===========  =========================  ===========================================
reads at   route        tokens, query -> key        what it is
=========  ===========  =========================  ===========================================
the blank  ``infill``   "[M] is b":  0 -> 2        the trained masked slot looks at b (Δ = +2)
the blank  ``b2a``      "b is [M]":  2 -> 0        the reversal slot looks at b (Δ = -2)
before it  ``a2b``      "a is":      1 -> 0        the trained reading position looks at a (Δ = -1)
before it  ``b2a``      "b is":      1 -> 0        the reversal reading position looks at b (Δ = -1)
=========  ===========  =========================  ===========================================

(positions for one-token entities; with k tokens per entity, slot j of the blank looks at
token j of b, and the routes are averaged over j). For a masked model the two routes share
the query q = W_Q E[M] and the key k = W_K E[b]; only the rotation differs, the coupling of
revlib.theory. An ``ar`` model predicts a token from the position before it, so it answers
``b2a`` at the relation, which sees b one position back; it has no ``infill`` route, and its
trained route ``a2b`` has the same query and offset but the key of a. No trained score of an
ARM ever has b as its key, because b is always last.

**Stored evidence.** With the book's W = W_O W_V (per head), u_a^T W E[b] is the logit for a
that the value path adds when the query attends fully to b: the "b => a" evidence, the same
number in ``infill`` and ``b2a``. It is computed from the weights of one layer, ignoring norms
and position parts: in a one-layer, attention-only model it is exactly the per-token term of
the logit; in deeper or normalised models it is that layer's direct path only, and
:func:`direct_logit_attribution` measures what each layer's attention output actually adds.

Everything takes an ensemble (revlib.model) and returns a leading axis K. Every measurement
needs at least three one-way facts (a correlation across fewer is undefined).
"""
from __future__ import annotations

import numpy as np
import torch

from .cache import cached, cached_trace
from .config import ConfigError, Experiment
from .data import IS, MASK, FactWorld
from .model import Transformer, ov_map
from .objectives import read_positions
from .theory import pearson, rope_corr_fixed_query

BAG = ("[M]", "is", "b")  # the three tokens of both masked queries, in the order of token_weights
MIN_FACTS = 3


def _check_world(world: FactWorld) -> None:
    n = len(world.one_way)
    if n < MIN_FACTS:
        raise ConfigError(f"measuring the coupling needs at least {MIN_FACTS} one-way facts; this world has {n} "
                          f"(n_pairs={world.config.n_pairs}, reversed_fraction={world.config.reversed_fraction:g})")


def routes(world: FactWorld, objective: str) -> dict[str, tuple[str, list[int], list[int]]]:
    """Route name -> (probe, query positions, key positions), pairs compared slot by slot.

    The first route is the trained one; the second is ``b2a``.
    """
    k = world.k
    first, second = list(world.spans[0]), list(world.spans[2])
    if objective == "ar":  # read at the position before each answer slot
        reads = read_positions("ar", second)  # k, k+1, ..: the relation and the answer's own prefix
        return {"a2b": ("a2b", reads, first), "b2a": ("b2a", reads, first)}
    return {"infill": ("infill", first, second), "b2a": ("b2a", second, first)}


def internals(model: Transformer, tokens: torch.Tensor) -> dict:
    with torch.no_grad():
        return model(tokens, internals=True)[1]


def route_scores(model: Transformer, world: FactWorld, objective: str) -> dict[str, dict[str, torch.Tensor]]:
    """Per route: ``{"scores": (K, L, H, N), "weights": (K, L, H, N)}``, averaged over the k slot pairs.

    ``scores`` are the pre-softmax scores exactly as the model computes them (including the
    1/sqrt(e) scale and any ALiBi bias), ``weights`` the attention weights after softmax.
    """
    _check_world(world)
    out = {}
    for name, (probe, qpos, kpos) in routes(world, objective).items():
        rec = internals(model, world.probe(probe).tokens if objective != "ar" else world.probe(probe).full)
        q, k = torch.tensor(qpos), torch.tensor(kpos)

        def pick(xs):  # per layer (K, N, H, T, T) -> (K, L, H, N), mean over the slot pairs
            return torch.stack([x[:, :, :, q, k].mean(-1) for x in xs], 1).transpose(-1, -2)

        out[name] = {"scores": pick(rec["scores"]), "weights": pick(rec["patterns"])}
    return out


def route_corr(scores: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """Pearson correlation across facts of the two routes' scores, (K, L, H)."""
    trained, b2a = (scores[name]["scores"] for name in scores)
    return pearson(trained, b2a)[0].float()


def token_weights(model: Transformer, world: FactWorld) -> dict[str, torch.Tensor]:
    """Masked models, one-token entities: the weights (K, L, H, N, 3) that the blank gives
    ``[M]``, ``is`` and b, for the ``infill`` and ``b2a`` queries, in the order of ``BAG``."""
    if world.k != 1:
        raise ValueError("token_weights compares the three tokens of one-token facts")
    _check_world(world)
    out = {}
    for probe, qpos, order in (("infill", 0, [0, 1, 2]), ("b2a", 2, [2, 1, 0])):
        patterns = internals(model, world.probe(probe).tokens)["patterns"]  # per layer (K, N, H, T, T)
        w = torch.stack([p[:, :, :, qpos, :] for p in patterns], 1)  # (K, L, N, H, T)
        out[probe] = w[..., order].transpose(2, 3)  # (K, L, H, N, 3)
    return out


def _is_bag_model(model: Transformer) -> bool:
    cfg = model.cfg
    return (cfg.n_layers == 1 and cfg.mlp == "none" and cfg.norm == "none" and cfg.positional != "absolute"
            and not cfg.untie_values)


def bag_logits(model: Transformer, world: FactWorld, weights: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, V) at the blank built from the bag {[M], is, b_i} and given weights.

    The one-layer, attention-only model of our formalisation with position-free values:
    logits = U ( E[M] + Σ_h Σ_t α_h(t) W_h E[t] ), t over the bag. ``weights`` is (K, H, N, 3)
    in the order of ``BAG``, e.g. ``token_weights(model, world)["b2a"][:, 0]``. The formula has
    no position in it: with the ``b2a`` weights it gives the model's ``b2a`` logits, with the
    ``infill`` weights its ``infill`` logits.
    """
    if not _is_bag_model(model) or world.k != 1:
        raise ValueError("bag_logits needs a one-layer, attention-only model without norms, absolute positions "
                         "or untied values, and one-token entities (otherwise the output also depends on where "
                         "tokens sit)")
    idx = world.one_way
    n = len(idx)
    bag = torch.stack([torch.full((n,), MASK), torch.full((n,), IS), world.b[idx, 0]], 1)  # (N, 3)
    with torch.no_grad():
        E = model.embed[:, bag]  # (K, N, 3, d)
        W = ov_map(model, 0)  # (K, H, d, d): the book's W per head
        ov = torch.einsum("khfd,kntd->khntf", W, E)  # (K, H, N, 3, d): W_h E[t]
        h = E[:, :, 0] + torch.einsum("khnt,khntf->knf", weights, ov)  # (K, N, d)
        return h @ model.unembed  # (K, N, V)


def position_logits(model: Transformer, world: FactWorld, probe: str) -> torch.Tensor:
    """Learned absolute positions: the part (K, N, V) of the blank's logits that the position vectors add.

    In a one-layer, attention-only model without norms the input at position j is
    E[x_j] + p_j and everything after the attention weights is linear, so the logits at the
    query position i split into a token part and a position part,
    U ( p_i + Σ_h Σ_j α_h,ij W_h p_j ). Subtracting it from the logits leaves what the tokens
    say. ``probe`` is ``"infill"`` (the blank at 0) or ``"b2a"`` (the blank at 2); one-token facts.
    """
    cfg = model.cfg
    if cfg.positional != "absolute" or cfg.n_layers != 1 or cfg.mlp != "none" or cfg.norm != "none" \
            or world.k != 1 or cfg.untie_values:
        raise ValueError("position_logits needs a one-layer, attention-only model with learned absolute "
                         "positions, no norms, and one-token entities (there the position part is additive)")
    qpos = {"infill": 0, "b2a": 2}[probe]
    with torch.no_grad():
        patterns = internals(model, world.probe(probe).tokens)["patterns"][0][:, :, :, qpos, :]  # (K, N, H, T)
        P = model.pos[:, : patterns.shape[-1]]  # (K, T, d)
        ov = torch.einsum("khfd,ktd->khtf", ov_map(model, 0), P)  # (K, H, T, d): W_h p_t
        h = P[:, qpos][:, None] + torch.einsum("knht,khtf->knf", patterns, ov)  # (K, N, d)
        return h @ model.unembed  # (K, N, V)


def stored_evidence(model: Transformer, answers: torch.Tensor, sources: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """u_(answer)^T W E[source] per head of ``layer``: (K, H, N) for answer and source tokens (N,)."""
    with torch.no_grad():
        W = ov_map(model, layer)  # (K, H, d, d)
        x = model.embed[:, sources]  # (K, N, d)
        u = model.unembed[:, :, answers]  # (K, d, N): the rows u_a of the book's U
        return torch.einsum("khfd,knd,kfn->khn", W, x, u)


def fact_evidence(model: Transformer, world: FactWorld, layer: int = 0) -> dict[str, torch.Tensor]:
    """Stored evidence per one-way fact, summed over the heads of ``layer``, each (K, N).

    ``b2a``: u_(a_i)^T W E[b_i], the "b => a" evidence both ``infill`` and ``b2a`` read;
    ``a2b``: u_(b_i)^T W E[a_i], the "a => b" evidence ``a2b`` reads; ``baseline``: the mean of
    u_(a_i)^T W E[b_j] over the other facts j != i, what any b adds to a_i's logit. ``b2a``
    above ``baseline`` is evidence stored for the pair, not a general preference for a-tokens.
    With k-token entities, every quantity is the mean over the k x k token pairs.
    """
    _check_world(world)
    idx = world.one_way
    a, b = world.a[idx], world.b[idx]  # (N, k)
    n, k = a.shape
    with torch.no_grad():
        W = ov_map(model, layer).sum(1)  # (K, d, d): heads add up
        Eb, Ea = model.embed[:, b], model.embed[:, a]  # (K, N, k, d)
        Ua, Ub = model.unembed[:, :, a], model.unembed[:, :, b]  # (K, d, N, k)
        WEb = torch.einsum("kfd,knmd->knmf", W, Eb)  # (K, N, k, d)
        WEa = torch.einsum("kfd,knmd->knmf", W, Ea)
        b2a = torch.einsum("knmf,kfnj->kn", WEb, Ua) / k**2
        a2b = torch.einsum("knmf,kfnj->kn", WEa, Ub) / k**2
        full = torch.einsum("kimf,kfnj->kin", WEb, Ua) / k**2  # (K, N source i, N answer n)
        off = (full.sum(1) - full.diagonal(dim1=1, dim2=2)) / max(n - 1, 1)
    return {"b2a": b2a, "a2b": a2b, "baseline": off}


def direct_logit_attribution(model: Transformer, world: FactWorld, objective: str, probe: str = "b2a") -> torch.Tensor:
    """What each layer's attention output adds to the right answer's logit, (K, L), mean over facts.

    The attention output of layer l at each reading position, passed through the final norm's
    linear part (its scale taken from the actual residual, as TransformerLens does) and read by
    the unembedding as u_answer - mean_v u_v (the logit above the average logit), averaged over
    the k answer slots and the facts. In a one-layer, attention-only model it is the stored
    evidence weighted by the route; in deeper models it says which layer carries the answer.
    """
    _check_world(world)
    p = world.probe(probe)
    reads = read_positions(objective, p.slots)
    if reads is None:
        raise ValueError(f"a model trained with objective {objective!r} does not answer {probe!r}")
    rec = internals(model, p.full if objective == "ar" else p.tokens)
    with torch.no_grad():
        stream = rec["resid_final"][:, :, reads]  # (K, N, k, d): what the final norm sees
        norm = model.norm_f
        if norm is None:
            scale, center, gain = torch.ones_like(stream[..., :1]), False, 1.0
        else:
            center = norm.kind == "layernorm"
            spread = stream.var(-1, unbiased=False, keepdim=True) if center else stream.pow(2).mean(-1, keepdim=True)
            eps = 1e-5 if center else torch.finfo(stream.dtype).eps
            scale, gain = (spread + eps).sqrt(), norm.weight[:, None, None, :]
        U = model.unembed  # (K, d, V)
        direction = U[:, :, p.answers] - U.mean(-1)[:, :, None, None]  # (K, d, N, k): u_answer - mean_v u_v
        out = []
        for attn in rec["attn_out"]:
            x = attn[:, :, reads]  # (K, N, k, d): this layer's attention output at the reading slots
            if center:
                x = x - x.mean(-1, keepdim=True)
            out.append(torch.einsum("knjd,kdnj->kn", x / scale * gain, direction).mean(-1) / len(reads))
        return torch.stack(out, 1)  # (K, L)


def measure_coupling(model: Transformer, world: FactWorld, objective: str, layer: int = 0) -> dict[str, np.ndarray]:
    """Everything chapter 2 tracks, for one model state. Arrays (K,) unless noted.

    ``corr``: route correlation across facts in ``layer``, mean over heads; ``corr_heads``
    (K, L, H) every layer and head; ``weight_<route>``: mean attention weight of the route over
    facts (``layer``, mean over heads); ``evidence``, ``evidence_a2b``, ``evidence_baseline``:
    means over facts of :func:`fact_evidence`; ``dla`` (K, L): :func:`direct_logit_attribution`
    of the ``b2a`` answer.
    """
    scores = route_scores(model, world, objective)
    corr = route_corr(scores)  # (K, L, H)
    out = {"corr": corr[:, layer].mean(-1).numpy(), "corr_heads": corr.numpy()}
    for name, r in scores.items():
        out[f"weight_{name}"] = r["weights"][:, layer].mean(dim=(1, 2)).numpy()
    ev = fact_evidence(model, world, layer)
    out["evidence"] = ev["b2a"].mean(1).numpy()
    out["evidence_a2b"] = ev["a2b"].mean(1).numpy()
    out["evidence_baseline"] = ev["baseline"].mean(1).numpy()
    out["dla"] = direct_logit_attribution(model, world, objective).numpy()
    return out


def coupling_history(experiment: Experiment, seeds=None, progress: bool = False):
    """Train ``experiment`` (one member per seed) and measure the coupling at every evaluation step.

    Returns ``(run, history)``: the run (revlib.training.Run) and ``"step"`` (n,) with every key
    of :func:`measure_coupling` stacked over steps, (n, K) or (n, K, L, H). Cached: the history
    under its own key, the run as :func:`revlib.cache.cached_train` stores it. Measuring
    neither changes the model nor draws random numbers, so the run is the unmeasured run.
    """
    def measure(step, model, world):
        return measure_coupling(model, world, experiment.train.objective)

    return cached_trace("coupling-history", experiment, seeds, measure, progress=progress)


# ---------------------------------------------------------------------------------------------
# measurements of a trained run (cached: keyed by the run's experiment and seeds)
# ---------------------------------------------------------------------------------------------

WHEN = ("init", "trained")


def model_at(run, when: str) -> Transformer:
    """The run's model at initialisation (``"init"``, rebuilt from the seeds) or after training."""
    if when not in WHEN:
        raise ConfigError(f"when must be one of {', '.join(WHEN)}; got {when!r}")
    return run.initial_model() if when == "init" else run.model


@cached
def measured(run, when: str = "trained") -> dict[str, np.ndarray]:
    """:func:`measure_coupling` of the run's model at initialisation or after training (cached)."""
    return measure_coupling(model_at(run, when), run.world, run.objective)


@cached
def ingredients(run) -> dict[str, np.ndarray]:
    """The two ingredients of ``b2a`` and the route coupling, one value per seed (K,), for a sweep:

    ``corr_init`` and ``corr``: the route correlation across facts at initialisation and trained
    (layer 0, mean over heads); ``weight_trained`` and ``weight_b2a``: the reading position's
    attention on the key in the trained route and in ``b2a`` (mean over facts); ``evidence``
    (u_a W E[b], what ``b2a`` reads), ``evidence_a2b`` (u_b W E[a]) and ``evidence_baseline``
    (u_a W E[b'] for other facts' b'), means over facts, in logits.
    """
    init, final = measured(run, "init"), measured(run, "trained")
    trained_route = "a2b" if run.objective == "ar" else "infill"
    return {"corr_init": init["corr"], "corr": final["corr"], "weight_trained": final[f"weight_{trained_route}"],
            "weight_b2a": final["weight_b2a"], "evidence": final["evidence"], "evidence_a2b": final["evidence_a2b"],
            "evidence_baseline": final["evidence_baseline"]}


@cached
def reversal_gap(run) -> dict[str, np.ndarray]:
    """Masked one-token models: the largest difference, per seed (K,), between the logits at the
    blank of "[M] is b" (``infill``) and at the blank of "b is [M]" (``b2a``), over facts and
    vocabulary. Zero up to rounding when the network is invariant to reversing the sentence
    (ALiBi, no positions: chapter 2's symmetry)."""
    if run.objective == "ar" or run.world.k != 1:
        raise ConfigError("reversal_gap compares the two blanks of a masked model on one-token facts")
    model, world = run.model, run.world
    with torch.no_grad():
        li = model(world.probe("infill").tokens)[:, :, 0]
        lb = model(world.probe("b2a").tokens)[:, :, 2]
    return {"logit_gap": (li - lb).abs().amax(dim=(1, 2)).numpy()}


@cached
def bag_of_tokens(run) -> dict:
    """The bag-of-tokens check of chapter 2 on a one-layer, attention-only masked model, head 0:
    per probe (``infill``, ``b2a``) the blank's mean weight on each of ``[M]``, ``is``, b over
    the facts (K, 3), and the largest difference between the model's logits and the bag formula
    :func:`bag_logits` (K,)."""
    model, world = run.model, run.world
    weights = token_weights(model, world)
    slot = {"infill": 0, "b2a": 2}
    out = {}
    for probe, s in slot.items():
        with torch.no_grad():
            actual = model(world.probe(probe).tokens)[:, :, s]
        rebuilt = bag_logits(model, world, weights[probe][:, 0])
        out[probe] = {"weights": weights[probe][:, 0, 0].mean(1).numpy(),
                      "max_error": (actual - rebuilt).abs().amax(dim=(1, 2)).numpy()}
    return out


@cached
def head_weights(run) -> dict[str, np.ndarray]:
    """Per seed and head (K, H) of layer 0, mean over facts: the blank's weight on b in
    ``infill`` and in ``b2a``, and the head's stored evidence u_a W_h E[b]."""
    model, world = run.model, run.world
    w = token_weights(model, world)
    wi, wb = w["infill"][:, 0, :, :, 2], w["b2a"][:, 0, :, :, 2]  # (K, H, N)
    idx = world.one_way
    ev = stored_evidence(model, world.a[idx, 0], world.b[idx, 0])  # (K, H, N)
    return {"w_infill": wi.mean(-1).numpy(), "w_b2a": wb.mean(-1).numpy(), "evidence": ev.mean(-1).numpy(),
            "reach_infill": (wi * ev).sum(1).mean(-1).numpy(), "reach_b2a": (wb * ev).sum(1).mean(-1).numpy()}


@cached
def head_reach(run) -> dict[str, np.ndarray]:
    """Per seed (K,), for a sweep over heads: the evidence that reaches the ``b2a`` blank over the
    evidence that reaches the ``infill`` blank (Σ_h α_h(b) u_a W_h E[b], mean over facts), and the
    mean over heads of ``|weight on b in infill − in b2a|``."""
    h = head_weights(run)
    return {"reach_ratio": h["reach_b2a"] / h["reach_infill"],
            "weight_gap": np.abs(h["w_infill"] - h["w_b2a"]).mean(1)}


@cached
def position_parts(run) -> dict:
    """Learned absolute positions (one layer, attention only): per query (``infill``, ``b2a``)
    and seed (K,), the position part's mean logit for a-tokens minus b-tokens (``gap``), and the
    accuracy with (``full``) and without (``tokens``) the position part (:func:`position_logits`)."""
    model, world = run.model, run.world
    out = {}
    a, b = world.alphabets
    for probe, slot in (("infill", 0), ("b2a", 2)):
        p = world.probe(probe)
        with torch.no_grad():
            full = model(p.tokens)[:, :, slot]  # (K, N, V)
        pos = position_logits(model, world, probe)
        answers = p.answers[:, 0]
        out[probe] = {"gap": (pos[:, :, a].mean((1, 2)) - pos[:, :, b].mean((1, 2))).numpy(),
                      "full": (full.argmax(-1) == answers).float().mean(1).numpy(),
                      "tokens": ((full - pos).argmax(-1) == answers).float().mean(1).numpy()}
    return out


@cached
def initial_routes(experiment: Experiment, seeds) -> dict[str, np.ndarray]:
    """Freshly initialised models of ``experiment`` (one per seed, nothing trained), on its world:
    ``measured``, the correlation across facts of the ``infill`` and ``b2a`` scores (K,), and, for
    RoPE, ``predicted``, the fixed-query value ``q^T R_2Δ q / |q|^2`` of each model's own [M] query
    (revlib.theory.rope_corr_fixed_query), head 0 of layer 0."""
    from .data import make_world
    from .model import build_model

    world = make_world(experiment.data)
    fresh = build_model(experiment, seeds, world.vocab_size)
    out = {"measured": measure_coupling(fresh, world, experiment.train.objective)["corr"]}
    if experiment.model.positional == "rope":
        e = experiment.model.d_head
        with torch.no_grad():
            q = torch.einsum("kd,kde->ke", fresh.embed[:, MASK], fresh.blocks[0].attn.W_Q[:, :, :e])  # W_Q E[M], head 0
        out["predicted"] = rope_corr_fixed_query(q, base=experiment.model.rope_base).numpy()
    return out


@cached
def layer_signatures(run) -> dict[str, np.ndarray]:
    """A masked model, per layer: the route correlation per head (K, L, H) and the direct logit
    attribution of each layer's attention output to the right ``b2a`` answer (K, L)."""
    m, w = run.model, run.world
    return {"corr_heads": route_corr(route_scores(m, w, run.objective)).numpy(),
            "dla": direct_logit_attribution(m, w, run.objective).numpy()}
