"""Chapter 2, weight-sharing coupling: the bag of tokens, the route correlation in closed form and
measured, stored evidence, positional encodings, heads and rotary bases."""
from __future__ import annotations

import numpy as np

from .. import coupling, theory
from ..claims import Claim, claim_factory
from ..config import ConfigError
from ..sweep import Sweep, sweep
from . import ch1

KNOBS = {
    "n_pairs": 128,
    "positionals": ("rope", "absolute", "alibi", "none"),  # the positional-encoding sweep
    "heads": (1, 2, 4, 8),  # the heads sweep
    "bases": (1.5, 10_000.0),  # rotary bases: 1.5 anti-correlates the routes at initialisation
    "absolute_widths": (16, 32, 64),  # learned absolute positions at several sizes ...
    "absolute_pair_counts": (64, 128, 256),  # ... and numbers of facts
    "init_models": 64,  # freshly initialised models for the route correlation at initialisation
}
MC_DIMS, MC_OFFSETS, MC_SAMPLES = (6, 8, 16, 32, 64, 128), (1, 2, 4), 10_000


def monte_carlo(ds=MC_DIMS, offsets=MC_OFFSETS, samples: int = MC_SAMPLES, seed: int = 0) -> list[dict]:
    """The closed form of Corr(S_infill, S_b2a) (RoPE, base 10^4) against a Monte-Carlo estimate
    that computes the scores as the model does, for every head size and offset."""
    rows = []
    for d in ds:
        for o in offsets:
            mc = theory.monte_carlo_corr("rope", d, o, samples=samples, seed=seed)
            rows.append({"d": d, "offset": o, "closed_form": theory.rope_corr(d, o), "estimate": mc.estimate,
                         "stderr": mc.stderr})
    return rows


def init_seeds(world_seed: int, init_models: int = 64) -> range:
    """Seeds of the freshly initialised models: a block of its own for every world seed."""
    if not isinstance(init_models, int) or init_models < 3:
        raise ConfigError(f"init_models must be an integer of at least 3, got {init_models!r}")
    start = 1000 + init_models * world_seed
    return range(start, start + init_models)


def initial_routes(world_seed: int, n_pairs: int = 128, init_models: int = 64) -> dict:
    """Route correlation across facts of freshly initialised MDMs, RoPE and learned absolute
    positions: ``{positional: {"measured": (M,), "predicted": (M,) (RoPE only)}}``."""
    return {p: coupling.initial_routes(ch1.base(world_seed, n_pairs, positional=p), init_seeds(world_seed, init_models))
            for p in ("rope", "absolute")}


def histories(seeds, world_seed: int, n_pairs: int = 128) -> dict:
    """The chapter-1 ARM and MDM measured along training: ``{kind: (run, history)}``."""
    m = ch1.base(world_seed, n_pairs)
    return {kind: coupling.coupling_history(m.replace(objective=kind, attention="causal" if kind == "ar" else "bidirectional"),
                                            seeds) for kind in ch1.KINDS}


def by_positional(seeds, world_seed: int, positionals=KNOBS["positionals"], n_pairs: int = 128) -> Sweep:
    """The MDM with each positional encoding, with its routes, storage and reversal gap."""
    return sweep(ch1.base(world_seed, n_pairs), {"positional": positionals}, seeds,
                 measure=[coupling.ingredients, coupling.reversal_gap])


def absolute_sizes(seeds, world_seed: int, absolute_widths=KNOBS["absolute_widths"],
                   absolute_pair_counts=KNOBS["absolute_pair_counts"], n_pairs: int = 128) -> Sweep:
    """The MDM with learned absolute positions at several widths and numbers of facts."""
    variants = ({f"d_model={d}": {"d_model": d} for d in absolute_widths}
                | {f"n_pairs={n}": {"n_pairs": n} for n in absolute_pair_counts})
    return sweep(ch1.base(world_seed, n_pairs, positional="absolute"), seeds=seeds, variants=variants)


def by_heads(seeds, world_seed: int, heads=KNOBS["heads"], n_pairs: int = 128) -> Sweep:
    """The MDM with several numbers of heads, with how much stored evidence reaches each blank."""
    return sweep(ch1.base(world_seed, n_pairs), {"n_heads": heads}, seeds, measure=[coupling.head_reach])


def by_base(seeds, world_seed: int, bases=KNOBS["bases"], n_pairs: int = 128) -> dict:
    """The MDM (``mdm``) and the same trained on ``infill`` alone (``prefix``) at each rotary base,
    measured along training: ``{(objective, base): (run, history)}``."""
    return {(objective, b): coupling.coupling_history(ch1.base(world_seed, n_pairs, objective=objective, rope_base=b), seeds)
            for objective in ("mdm", "prefix") for b in bases}


def compute(seeds, world_seed: int, n_pairs: int = 128, positionals=KNOBS["positionals"], heads=KNOBS["heads"],
            bases=KNOBS["bases"], absolute_widths=KNOBS["absolute_widths"],
            absolute_pair_counts=KNOBS["absolute_pair_counts"], init_models: int = 64) -> dict:
    models = ch1.models(seeds, world_seed, n_pairs)
    pos = by_positional(seeds, world_seed, positionals, n_pairs)
    out = {"models": models, "bag": coupling.bag_of_tokens(models.run(objective="mdm")),
           "monte_carlo": monte_carlo(), "initial_routes": initial_routes(world_seed, n_pairs, init_models),
           "histories": histories(seeds, world_seed, n_pairs), "positional": pos,
           "absolute_sizes": absolute_sizes(seeds, world_seed, absolute_widths, absolute_pair_counts, n_pairs),
           "heads": by_heads(seeds, world_seed, heads, n_pairs), "bases": by_base(seeds, world_seed, bases, n_pairs)}
    if "absolute" in positionals:
        out["position_parts"] = coupling.position_parts(pos.run(positional="absolute"))
    return out


def claims(r: dict, **params) -> list[Claim]:
    C = claim_factory("ch2")
    bag, mc, init = r["bag"], r["monte_carlo"], r["initial_routes"]
    hm, ha = r["histories"]["mdm"][1], r["histories"]["ar"][1]
    pos, sizes, hd, parts = r["positional"], r["absolute_sizes"], r["heads"], r.get("position_parts")
    bb = r["bases"]
    d = pos.base.model.d_model
    rope = init["rope"]["measured"]

    def heads_b2a(H):
        return hd.mean("b2a", n_heads=H)

    def learned_abs():
        return pos.values("infill", positional="absolute") > 0.9

    def base_of(objective, b):
        run, h = bb[objective, b]
        return run, h

    return [
        C("bag-formula", lambda: max(bag[p]["max_error"].max() for p in bag)),
        C("bag-weight-on-b", lambda: min(bag[p]["weights"][:, 2].min() for p in bag)),
        C("monte-carlo", lambda: max(abs(x["estimate"] - x["closed_form"]) / x["stderr"] for x in mc)),
        C("closed-form-bound", lambda: min(theory.rope_corr(x) for x in range(6, 2049, 2))),
        C("closed-form-d4", lambda: theory.rope_corr(4)),
        C("init-mean", lambda: abs(rope.mean() - theory.rope_corr(d)) / (rope.std(ddof=1) / np.sqrt(rope.size))),
        C("init-predicted", lambda: np.corrcoef(init["rope"]["predicted"], rope)[0, 1]),
        C("init-scatter-low", lambda: rope.min()),
        C("init-scatter-high", lambda: rope.max()),
        C("init-absolute", lambda: abs(init["absolute"]["measured"].mean() - 0.5)),
        C("mdm-routes-reach-b", lambda: min(hm["weight_infill"][-1].min(), hm["weight_b2a"][-1].min())),
        C("mdm-corr", lambda: hm["corr"][-1].mean()),
        C("arm-corr", lambda: np.abs(ha["corr"]).max()),
        C("arm-route-finds-b", lambda: ha["weight_b2a"][-1].mean()),
        C("mdm-stores", lambda: (hm["evidence"][-1] - hm["evidence_baseline"][-1]).min()),
        C("arm-stores-nothing", lambda: np.abs(ha["evidence"][-1]).max()),
        C("arm-stores-a2b", lambda: ha["evidence_a2b"][-1].min()),
        C("mdm-stores-both-ways", lambda: abs(hm["evidence_a2b"][-1].mean() - hm["evidence"][-1].mean())
          / hm["evidence"][-1].mean()),
        *[C(f"symmetry-{p}", lambda p=p: pos.max("logit_gap", positional=p)) for p in ("alibi", "none")],
        *[C(f"symmetry-{p}-corr", lambda p=p: max(np.abs(pos.values(q, positional=p) - 1).max() for q in ("corr_init", "corr")))
          for p in ("alibi", "none")],
        *[C(f"symmetry-{p}-acc", lambda p=p: np.abs(pos.values("b2a", positional=p) - pos.values("infill", positional=p)).max())
          for p in ("alibi", "none")],
        C("rope-different-inputs", lambda: pos.min("logit_gap", positional="rope")),
        C("rope-b2a", lambda: pos.min("b2a", positional="rope")),
        C("absolute-not-full", lambda: pos.max("b2a", positional="absolute")),
        C("absolute-spread", lambda: pos.max("b2a", positional="absolute") - pos.min("b2a", positional="absolute")),
        C("absolute-every-size", lambda: max(sizes.mean("b2a", variant=v) for v in sizes.axes["variant"])),
        C("position-prior-infill", lambda: parts["infill"]["gap"].min()),
        C("position-prior-b2a", lambda: -parts["b2a"]["gap"].max()),
        C("position-part-costs-b2a", lambda: parts["b2a"]["tokens"][learned_abs()].mean() - parts["b2a"]["full"][learned_abs()].mean()),
        C("heads-infill", lambda: min(hd.min("infill", n_heads=H) for H in hd.axes["n_heads"])),
        C("heads-b2a-falls-4", lambda: heads_b2a(1) - heads_b2a(4)),
        C("heads-b2a-falls-8", lambda: heads_b2a(4) - heads_b2a(8)),
        C("heads-reach", lambda: hd.mean("reach_ratio", n_heads=1) - hd.mean("reach_ratio", n_heads=8)),
        C("base-anticorrelated", lambda: theory.rope_corr(d, 2, 1.5)),
        C("base-init-negative", lambda: base_of("mdm", 1.5)[1]["corr"][0].max()),
        C("base-mdm-reverses", lambda: base_of("mdm", 1.5)[0].final["b2a"]["acc"].mean()),
        C("base-prefix-falls", lambda: base_of("mdm", 1.5)[0].final["b2a"]["acc"].mean() - base_of("prefix", 1.5)[0].final["b2a"]["acc"].mean()),
        C("prefix-usual-base", lambda: base_of("prefix", 10_000.0)[0].final["b2a"]["acc"].mean()),
    ]
