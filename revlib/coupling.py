"""Weight-sharing coupling, measured: attention routes and stored evidence, per fact (chapter 2).

Chapter 2's coupling and stored evidence in numbers read off a model's internals.

**Routes.** A route is one pre-softmax score: a query position looking at a key position of a
probe's tokens. Which pair of routes to compare depends on what the causal mask leaves:

=====  ===========  ======================  ===========================================
kind   route        tokens, query -> key     what it is
=====  ===========  ======================  ===========================================
mdm    ``infill``   "[M] is b":  0 -> 2      the trained masked slot looks at b (Δ = +2)
mdm    ``b2a``      "b is [M]":  2 -> 0      the reversal slot looks at b (Δ = -2)
ar     ``a2b``      "a is":      1 -> 0      the trained reading position looks at a (Δ = -1)
ar     ``b2a``      "b is":      1 -> 0      the reversal reading position looks at b (Δ = -1)
=====  ===========  ======================  ===========================================

In the MDM the two routes share the query q = W_Q E[M] and the key k = W_K E[b]; only the
rotation differs, which is the coupling of :mod:`revlib.theory`. The ARM predicts a token from
the position before it, so it answers ``b2a`` at "is" (position 1), which sees b at offset -1;
the ``infill`` route does not exist for it (the blank at position 0 sees only itself, and the
ARM has no ``infill`` answer). Its own trained route is ``a2b``: the same query "is" at the
same offset, but on the key of a, not b. No trained score of the ARM ever has b as its key,
because b is always the last token: any correlation of its two routes comes from W_K mapping
different tokens alike, not from a shared query-key pair.

**Stored evidence.** With W = W_O W_V (per head), u_a^T W E[b] is the logit for a that the
value path adds when the query attends fully to b: the "b => a" evidence, the same number in
``infill`` and ``b2a``. It is computed from the weights of one layer (default: the first) and
ignores LayerNorm and position parts: in a one-layer, attention-only model it is exactly the
per-token term of the logit; in deeper or normalised models it is the direct path of that
layer only (a proxy).

Everything takes an ensemble (revlib.model) and returns a leading axis K.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .cache import cache_dir, cache_key, save_atomic
from .config import Experiment
from .data import FactWorld, make_world
from .theory import pearson
from .train import Run, train

# kind -> route name -> (probe providing the tokens, query position, key position)
ROUTES = {
    "mdm": {"infill": ("infill", 0, 2), "b2a": ("b2a", 2, 0)},
    "ar": {"a2b": ("a2b", 1, 0), "b2a": ("b2a", 1, 0)},
}
BAG = ("[M]", "is", "b")  # the three tokens of both MDM queries, in the order of token_weights


def _kind(model) -> str:
    return "ar" if model.causal else "mdm"


def _tokens(world: FactWorld, probe: str) -> torch.Tensor:
    """Probe tokens (N, 3) restricted to the facts that ``b2a`` scores (never trained reversed)."""
    tokens = world.probe(probe).tokens
    return tokens if probe == "b2a" else tokens[~world.both]


def _internals(model, tokens: torch.Tensor) -> dict:
    with torch.no_grad():
        return model(tokens, return_internals=True)[1]


def route_scores(model, world: FactWorld) -> dict[str, dict[str, torch.Tensor]]:
    """Per route (see ``ROUTES``): ``{"scores": (K, L, H, N), "weights": (K, L, H, N)}``.

    ``scores`` are the pre-softmax scores exactly as the model computes them (including the
    1/sqrt(d_head) scale and any ALiBi bias), ``weights`` the attention weights after softmax.
    N counts the facts that ``b2a`` scores. The first route is the trained one.
    """
    out = {}
    for name, (probe, qpos, kpos) in ROUTES[_kind(model)].items():
        internals = _internals(model, _tokens(world, probe))
        # per layer (K, N, H, T, T) -> (K, N, H) -> stacked (K, L, H, N)
        pick = lambda xs: torch.stack([x[:, :, :, qpos, kpos] for x in xs], 1).transpose(-1, -2)  # noqa: E731
        out[name] = {"scores": pick(internals["scores"]), "weights": pick(internals["patterns"])}
    return out


def route_corr(routes: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """Pearson correlation across facts of the two routes' scores, (K, L, H)."""
    trained, b2a = (routes[name]["scores"] for name in routes)
    return pearson(trained, b2a)[0].float()


def token_weights(model, world: FactWorld) -> dict[str, torch.Tensor]:
    """MDM only: the weights (K, L, H, N, 3) that the [M] query gives ``[M]``, ``is`` and b.

    ``infill`` holds the tokens in the order [M], is, b and ``b2a`` in the order b, is, [M]; both
    are returned in the order of ``BAG``, so the two can be compared token by token.
    """
    if model.causal:
        raise ValueError("token_weights compares the two MDM queries; the ARM has no infill query")
    out = {}
    for probe, qpos, order in (("infill", 0, [0, 1, 2]), ("b2a", 2, [2, 1, 0])):
        patterns = _internals(model, _tokens(world, probe))["patterns"]  # per layer (K, N, H, T, T)
        w = torch.stack([p[:, :, :, qpos, :] for p in patterns], 1)  # (K, L, N, H, T)
        out[probe] = w[..., order].transpose(2, 3)  # (K, L, H, N, 3)
    return out


def bag_logits(model, world: FactWorld, weights: torch.Tensor) -> torch.Tensor:
    """Logits (K, N, V) at the [M] slot built from the bag {[M], is, b_i} and given weights.

    The one-layer, attention-only model of our formalisation with position-free values:
    logits = U^T ( E[M] + Σ_h Σ_t α_h(t) W_O W_V E[t] ), t over the bag. ``weights`` is
    (K, H, N, 3) in the order of ``BAG``, e.g. ``token_weights(model, world)["b2a"][:, 0]``.
    The formula has no position in it: with the ``b2a`` weights it gives the model's ``b2a``
    logits, with the ``infill`` weights its ``infill`` logits.
    """
    cfg = model.cfg
    if model.causal or cfg.n_layers != 1 or cfg.mlp or cfg.layernorm or cfg.positional == "absolute":
        raise ValueError("bag_logits needs a one-layer, attention-only MDM without LayerNorm or "
                         "absolute positions (otherwise the output also depends on where tokens sit)")
    keep = ~world.both
    n = int(keep.sum())
    bag = torch.stack([torch.zeros(n, dtype=torch.long), torch.full((n,), 1), world.b[keep]], 1)  # (N, 3)
    with torch.no_grad():
        E = model.embed[:, bag]  # (K, N, 3, d)
        layer = model.layers[0]
        ov = torch.einsum("kntd,khde,khef->khntf", E, layer["W_V"], layer["W_O"])  # (K, H, N, 3, d)
        h = E[:, :, 0] + torch.einsum("khnt,khntf->knf", weights, ov)  # (K, N, d)
        return h @ model.unembed  # (K, N, V)


def position_logits(model, world: FactWorld, probe: str) -> torch.Tensor:
    """Learned absolute positions: the part (K, N, V) of the [M]-slot logits that the position vectors add.

    In a one-layer, attention-only model without LayerNorm the input at position j is
    E[x_j] + p_j and everything after the attention weights is linear, so the logits at the
    query position i split into a token part and a position part,
    U^T ( p_i + Σ_h Σ_j α_h,ij W_O W_V p_j ). The position part is the same for every fact
    except through the weights α; subtracting it from the logits leaves what the tokens say.
    ``probe`` is ``"infill"`` (the slot at 0) or ``"b2a"`` (the slot at 2); MDM only.
    """
    cfg = model.cfg
    if model.causal or cfg.positional != "absolute" or cfg.n_layers != 1 or cfg.mlp or cfg.layernorm:
        raise ValueError("position_logits needs a one-layer, attention-only MDM with learned absolute "
                         "positions and no LayerNorm (there the position part is additive)")
    qpos = {"infill": 0, "b2a": 2}[probe]
    with torch.no_grad():
        patterns = _internals(model, _tokens(world, probe))["patterns"][0][:, :, :, qpos, :]  # (K, N, H, T)
        P = model.pos[:, : patterns.shape[-1]]  # (K, T, d)
        L = model.layers[0]
        ov = torch.einsum("ktd,khde,khef->khtf", P, L["W_V"], L["W_O"])  # (K, H, T, d)
        h = P[:, qpos][:, None] + torch.einsum("knht,khtf->knf", patterns, ov)  # (K, N, d)
        return h @ model.unembed  # (K, N, V)


def stored_evidence(model, answers: torch.Tensor, sources: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """u_(answer)^T W_O W_V E[source] per head of ``layer``: (K, H, N) for answers, sources (N,)."""
    with torch.no_grad():
        L = model.layers[layer]
        x = model.embed[:, sources]  # (K, N, d)
        ov = torch.einsum("knd,khde,khef->khnf", x, L["W_V"], L["W_O"])  # (K, H, N, d)
        u = model.unembed[:, :, answers]  # (K, d, N)
        return torch.einsum("khnf,kfn->khn", ov, u)


def fact_evidence(model, world: FactWorld, layer: int = 0) -> dict[str, torch.Tensor]:
    """Stored evidence per fact, summed over the heads of ``layer``, each (K, N).

    ``b2a``: u_(a_i)^T W E[b_i], the "b => a" evidence both ``infill`` and ``b2a`` read.
    ``a2b``: u_(b_i)^T W E[a_i], the "a => b" evidence ``a2b`` reads.
    ``baseline``: the mean of u_(a_i)^T W E[b_j] over the other facts j != i: what any b adds
    to a_i's logit. ``b2a`` above ``baseline`` is evidence stored for the pair, not a general
    preference for a-tokens.
    """
    keep = ~world.both
    a, b = world.a[keep], world.b[keep]
    n = len(a)
    out = {
        "b2a": stored_evidence(model, a, b, layer).sum(1),
        "a2b": stored_evidence(model, b, a, layer).sum(1),
    }
    with torch.no_grad():
        L = model.layers[layer]
        ov = torch.einsum("knd,khde,khef->knf", model.embed[:, b], L["W_V"], L["W_O"])  # (K, N, d)
        full = ov @ model.unembed[:, :, a]  # (K, N_source j, N_answer i)
        off = (full.sum(1) - full.diagonal(dim1=1, dim2=2)) / max(n - 1, 1)  # (K, N)
    out["baseline"] = off
    return out


def measure_coupling(model, world: FactWorld, layer: int = 0) -> dict[str, np.ndarray]:
    """Everything chapter 2 tracks, for one model state. Arrays (K,) unless noted.

    ``corr``: route correlation across facts in ``layer``, mean over heads; ``corr_heads``
    (K, L, H) every layer and head; ``weight_<route>``: mean attention weight of the route over
    facts (``layer``, mean over heads); ``evidence``, ``evidence_a2b``, ``evidence_baseline``:
    means over facts of :func:`fact_evidence`.
    """
    routes = route_scores(model, world)
    corr = route_corr(routes)  # (K, L, H)
    out = {"corr": corr[:, layer].mean(-1).numpy(), "corr_heads": corr.numpy()}
    for name, r in routes.items():
        out[f"weight_{name}"] = r["weights"][:, layer].mean(dim=(1, 2)).numpy()
    ev = fact_evidence(model, world, layer)
    out["evidence"] = ev["b2a"].mean(1).numpy()
    out["evidence_a2b"] = ev["a2b"].mean(1).numpy()
    out["evidence_baseline"] = ev["baseline"].mean(1).numpy()
    return out


def coupling_history(experiment: Experiment, seeds=None, progress: bool = False,
                     layer: int = 0) -> tuple[Run, dict[str, np.ndarray]]:
    """Train ``experiment`` (one member per seed) and measure the coupling at every eval step.

    Returns the :class:`~revlib.train.Run` and a history: ``"step"`` (n,) and every key of
    :func:`measure_coupling` stacked over steps, (n, K) or (n, K, L, H). Not cached: the
    measurements hook into training through ``train``'s callback, and the run is cheap.
    Measuring neither changes the model nor draws random numbers, so the run is identical to
    an unmeasured one with the same experiment and seeds.
    """
    steps, rows = [], []

    def record(step: int, model) -> None:
        steps.append(step)
        rows.append(measure_coupling(model, world, layer))

    world = make_world(experiment.data)  # a pure function of the data config: train()'s world
    run = train(experiment, seeds, progress=progress, callback=record)
    history = {"step": np.asarray(steps)}
    for key in rows[0]:
        history[key] = np.stack([r[key] for r in rows])
    return run, history


def cached_coupling_history(experiment: Experiment, seeds=None, progress: bool = False) -> dict[str, np.ndarray]:
    """The history of :func:`coupling_history` (not the run), stored next to revlib's run cache.

    Keyed like :func:`revlib.cache.cached_train` (experiment, seeds, torch, revlib's source),
    in a file of its own, ``<key>.coupling.pt``: a rerun of a chapter skips the training.
    The trained model itself is not stored here; ``cached_train`` with the same arguments
    gives it (training is deterministic, so it is the same model).
    """
    seeds = (experiment.train.seed,) if seeds is None else tuple(seeds)
    folder = cache_dir()
    if folder is None:
        return coupling_history(experiment, seeds, progress)[1]
    key = cache_key(experiment, seeds)
    path = folder / f"{key}.coupling.pt"
    if path.exists():
        try:
            payload = torch.load(path, weights_only=True)
            if payload.get("key") == key:
                return {k: v.numpy() for k, v in payload["history"].items()}
        except Exception as err:  # corrupt or foreign: recompute and overwrite
            warnings.warn(f"revlib cache: recomputing unreadable entry {path.name} ({type(err).__name__})")
    history = coupling_history(experiment, seeds, progress)[1]
    payload = {"key": key, "history": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in history.items()}}
    try:
        save_atomic(path, payload)
    except OSError as err:  # a read-only or full disk must not lose the result
        warnings.warn(f"revlib cache: could not write {path}: {err}")
    return history
