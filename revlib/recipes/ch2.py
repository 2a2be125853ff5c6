"""Chapter 2, weight-sharing coupling: the bag of tokens, the route correlation in closed form and
measured, stored evidence, positional encodings, heads and rotary bases."""
from __future__ import annotations

import numpy as np

from .. import coupling, theory
from ..claims import Claim
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
        Claim("bag-formula", "the bag formula reproduces the one-head MDM's logits at both blanks",
              "largest |model − formula| logit", lambda: max(bag[p]["max_error"].max() for p in bag), "<", 1e-3),
        Claim("bag-weight-on-b", "both trained blanks put nearly all their weight on b, in every seed",
              "lowest mean weight on b of either blank", lambda: min(bag[p]["weights"][:, 2].min() for p in bag), ">", 0.8),
        Claim("monte-carlo", "every Monte-Carlo estimate agrees with the closed form",
              "largest |estimate − closed form| in standard errors",
              lambda: max(abs(x["estimate"] - x["closed_form"]) / x["stderr"] for x in mc), "<", 4.0),
        Claim("closed-form-bound", "the closed form exceeds 0.4 for every even head size from 6 to 2048",
              "smallest closed-form correlation, d = 6..2048", lambda: min(theory.rope_corr(x) for x in range(6, 2049, 2)),
              ">", 0.4),
        Claim("closed-form-d4", "but not for d = 4", "closed-form correlation at d = 4", lambda: theory.rope_corr(4), "<", 0.4),
        Claim("init-mean", "the correlation at initialisation averages to the closed form",
              "|mean − closed form| in standard errors",
              lambda: abs(rope.mean() - theory.rope_corr(d)) / (rope.std(ddof=1) / np.sqrt(rope.size)), "<", 3.0),
        Claim("init-predicted", "each model's fixed-query prediction tracks its measured correlation",
              "correlation of predicted and measured over models",
              lambda: np.corrcoef(init["rope"]["predicted"], rope)[0, 1], ">", 0.7),
        Claim("init-scatter-low", "single initialised models scatter widely: some below 0.5",
              "lowest correlation of one model", lambda: rope.min(), "<", 0.5),
        Claim("init-scatter-high", "... and some above 0.85", "highest correlation of one model", lambda: rope.max(), ">", 0.85),
        Claim("init-absolute", "with learned absolute positions the correlation at initialisation is about a half",
              "|mean − 0.5|", lambda: abs(init["absolute"]["measured"].mean() - 0.5), "<", 0.1),
        Claim("mdm-routes-reach-b", "both MDM blanks end up attending to b, in every seed",
              "lowest final weight on b of either MDM blank",
              lambda: min(hm["weight_infill"][-1].min(), hm["weight_b2a"][-1].min()), ">", 0.8),
        Claim("mdm-corr", "the MDM's routes stay correlated", "mean final MDM route correlation",
              lambda: hm["corr"][-1].mean(), ">", 0.5),
        Claim("arm-corr", "the ARM's two routes are never strongly correlated", "largest |ARM route correlation|",
              lambda: np.abs(ha["corr"]).max(), "<", 0.4),
        Claim("arm-route-finds-b", "the ARM's b2a route finds b too", "mean final ARM weight on b",
              lambda: ha["weight_b2a"][-1].mean(), ">", 0.8),
        Claim("mdm-stores", "the MDM stores the pair's evidence, far above other facts' b, in every seed",
              "smallest (evidence − baseline) over seeds, logits",
              lambda: (hm["evidence"][-1] - hm["evidence_baseline"][-1]).min(), ">", 10.0),
        Claim("arm-stores-nothing", "the ARM stores no b ⇒ a evidence", "largest |ARM evidence| (logits)",
              lambda: np.abs(ha["evidence"][-1]).max(), "<", 1.5),
        Claim("arm-stores-a2b", "it stores a ⇒ b instead, in every seed", "lowest ARM a ⇒ b evidence (logits)",
              lambda: ha["evidence_a2b"][-1].min(), ">", 15.0),
        *[Claim(f"symmetry-{p}", f"with {p} positions the two blanks' logits are equal (a symmetry)",
                "largest |infill − b2a| blank logit", lambda p=p: pos.max("logit_gap", positional=p), "<", 1e-3)
          for p in ("alibi", "none") if p in pos.axes["positional"]],
        *[Claim(f"symmetry-{p}-corr", f"with {p} positions the route correlation is 1 at init and trained",
                "largest |corr − 1|", lambda p=p: max(np.abs(pos.values(q, positional=p) - 1).max()
                                                      for q in ("corr_init", "corr")), "<", 1e-5)
          for p in ("alibi", "none") if p in pos.axes["positional"]],
        *[Claim(f"symmetry-{p}-acc", f"with {p} positions b2a equals infill in every seed",
                "largest |b2a − infill| accuracy", lambda p=p: np.abs(pos.values("b2a", positional=p)
                                                                    - pos.values("infill", positional=p)).max(), "<", 1e-9)
          for p in ("alibi", "none") if p in pos.axes["positional"]],
        Claim("rope-different-inputs", "with RoPE the two queries are different inputs",
              "smallest largest-logit-gap over seeds", lambda: pos.min("logit_gap", positional="rope"), ">", 1.0),
        Claim("rope-b2a", "with RoPE the MDM answers b2a in every seed", "lowest b2a accuracy, RoPE",
              lambda: pos.min("b2a", positional="rope"), ">=", 0.9),
        Claim("absolute-not-full", "with learned absolute positions no seed answers b2a fully",
              "highest b2a accuracy, absolute", lambda: pos.max("b2a", positional="absolute"), "<", 0.95),
        Claim("absolute-spread", "with learned absolute positions the seeds disagree widely",
              "max − min b2a accuracy, absolute",
              lambda: pos.max("b2a", positional="absolute") - pos.min("b2a", positional="absolute"), ">", 0.3, guard=False),
        Claim("absolute-every-size", "at every size, learned absolute positions keep b2a well below",
              "highest mean b2a accuracy over the sizes", lambda: max(sizes.mean("b2a", variant=v) for v in sizes.axes["variant"]),
              "<", 0.8),
        Claim("position-prior-infill", "the position part favours a-tokens at the infill blank, in every seed",
              "smallest a − b gap (logits), infill blank", lambda: parts["infill"]["gap"].min(), ">", 1.0),
        Claim("position-prior-b2a", "and b-tokens at the b2a blank, in every seed",
              "smallest b − a gap (logits), b2a blank", lambda: -parts["b2a"]["gap"].max(), ">", 2.0),
        Claim("position-part-costs-b2a", "removing the position part raises b2a in the seeds that learned infill",
              "b2a accuracy without minus with the position part",
              lambda: parts["b2a"]["tokens"][learned_abs()].mean() - parts["b2a"]["full"][learned_abs()].mean(), ">", 0.2),
        Claim("heads-infill", "infill stays perfect at every number of heads", "lowest infill accuracy over heads and seeds",
              lambda: min(hd.min("infill", n_heads=H) for H in hd.axes["n_heads"]), ">", 0.95),
        Claim("heads-b2a-falls-4", "b2a falls from one head to four", "mean b2a, 1 head minus 4 heads",
              lambda: heads_b2a(1) - heads_b2a(4), ">", 0.1),
        Claim("heads-b2a-falls-8", "and from four heads to eight", "mean b2a, 4 heads minus 8 heads",
              lambda: heads_b2a(4) - heads_b2a(8), ">", 0.1),
        Claim("heads-reach", "less of the evidence reaches the b2a blank with eight heads than with one",
              "reach ratio, 1 head minus 8 heads",
              lambda: hd.mean("reach_ratio", n_heads=1) - hd.mean("reach_ratio", n_heads=8), ">", 0.0),
        Claim("base-anticorrelated", "at rotary base 1.5 the closed form is strongly negative",
              "closed-form correlation, base 1.5", lambda: theory.rope_corr(d, 2, 1.5), "<", -0.5),
        Claim("base-init-negative", "and every seed's routes start anti-correlated", "highest initial correlation, base 1.5",
              lambda: base_of("mdm", 1.5)[1]["corr"][0].max(), "<", 0.0),
        Claim("base-mdm-reverses", "the full objective still reverses at base 1.5", "mean b2a, mdm at base 1.5",
              lambda: base_of("mdm", 1.5)[0].final["b2a"]["acc"].mean(), ">", 0.85),
        Claim("base-prefix-falls", "infill alone reverses far less at base 1.5", "mean b2a, mdm minus prefix at base 1.5",
              lambda: base_of("mdm", 1.5)[0].final["b2a"]["acc"].mean() - base_of("prefix", 1.5)[0].final["b2a"]["acc"].mean(),
              ">", 0.2),
        Claim("prefix-usual-base", "at the usual base infill alone is enough", "mean b2a, prefix at base 10^4",
              lambda: base_of("prefix", 10_000.0)[0].final["b2a"]["acc"].mean(), ">", 0.95),
    ]
