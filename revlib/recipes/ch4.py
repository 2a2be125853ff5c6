"""Chapter 4, objective or architecture: the objective x attention grid, order sensitivity with an
inverse relation, and interventions that remove one ingredient at a time."""
from __future__ import annotations

import numpy as np

from .. import coupling
from ..claims import Claim, claim_factory
from ..config import ConfigError, preset
from ..sweep import Sweep, sweep
from . import ch1

OBJECTIVES = ("ar", "suffix", "prefix", "mdm")
ATTENTIONS = ("causal", "bidirectional")
CAN_REVERSE = (("mdm", "bidirectional"), ("prefix", "bidirectional"))  # the cells the mechanism allows
# Two-token entities need more than one attention-only layer (chapter 5): the k = 2 grid uses a
# small LLaDA-style block on 64 facts.
K2 = dict(entity_tokens=2, n_pairs=64, steps=400)
INVERSE = dict(relations="inverse", reversed_fraction=0.5)

KNOBS = {
    "n_pairs": 128,
    "objectives": OBJECTIVES,
    "attentions": ATTENTIONS,
    # the inverse-relation world: "a is b" for every pair, "b rev a" for half of them; name -> overrides
    "order_variants": {
        "ARM": {"objective": "ar"}, "MDM (RoPE)": {}, "MDM, absolute": {"positional": "absolute"},
        "MDM, ALiBi": {"positional": "alibi"}, "MDM, no positions": {"positional": "none"},
        "MDM, 4 heads": {"n_heads": 4}, "MDM, 2 layers": {"n_layers": 2}, "MDM, 4 layers": {"n_layers": 4},
    },
    # name -> (overrides of the one-layer MDM, what the paper's account predicts)
    "interventions": {
        "none (the MDM)": ({}, "b2a follows infill"),
        "routes frozen at init": ({"freeze": "qk"}, "the initial routes are already coupled: b2a stays close to infill"),
        "one W_V per position": ({"untie_values": True}, "b2a loses the evidence infill stored: it falls to chance"),
        "value-side update ⊥ ∇ℓ_b2a": ({"project_out": "b2a"},
                                        "if OV alignment carries the transfer, b2a stops improving"),
        "whole update ⊥ ∇ℓ_b2a": ({"project_out": "b2a-all"},
                                   "no first-order progress on b2a at all; b2a can move only at second order"),
        "anti-correlated routes (base 1.5)": ({"rope_base": 1.5}, "if initial coupling is needed, b2a fails"),
        "base 1.5, infill only (prefix)": ({"rope_base": 1.5, "objective": "prefix"},
                                           "without a2b to route the b2a blank, b2a fails"),
    },
}


def grid(seeds, world_seed: int, k: int = 1, objectives=OBJECTIVES, attentions=ATTENTIONS, n_pairs: int = 128) -> Sweep:
    """Every objective x attention cell (``ar`` + bidirectional is refused); at ``k = 1`` the one-layer
    toy with both ingredients of ``b2a`` measured per cell (revlib.coupling.ingredients), at
    ``k = 2`` two-token facts on a ``llada_like`` block."""
    axes = {"objective": objectives, "attention": attentions}
    if k == 1:
        return sweep(ch1.base(world_seed, n_pairs), axes, seeds, skip_invalid=True, measure=[coupling.ingredients])
    if k == 2:
        return sweep(preset("llada_like", seed=world_seed, **K2), axes, seeds, skip_invalid=True)
    raise ConfigError(f"the grid is built for k = 1 or 2 tokens per entity, got {k!r}")


def order(seeds, world_seed: int, order_variants=KNOBS["order_variants"], n_pairs: int = 128) -> Sweep:
    """The inverse-relation world (``b2a`` the true converse, ``swap`` the false one), per variant."""
    return sweep(ch1.base(world_seed, n_pairs, **INVERSE), seeds=seeds, variants=order_variants)


def check_interventions(interventions) -> dict:
    """Validate ``{name: (overrides, prediction)}``; ConfigError naming the bad entry."""
    if not isinstance(interventions, dict) or not interventions:
        raise ConfigError("interventions must be a non-empty dict of name -> (overrides, prediction)")
    for name, entry in interventions.items():
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], dict)
                and isinstance(entry[1], str)):
            raise ConfigError(f"intervention {name!r} must be (overrides dict, prediction text), got {entry!r}")
    return interventions


def by_intervention(seeds, world_seed: int, interventions=KNOBS["interventions"], n_pairs: int = 128) -> Sweep:
    """The one-layer MDM with each intervention (one variant per name)."""
    variants = {name: over for name, (over, _) in check_interventions(interventions).items()}
    return sweep(ch1.base(world_seed, n_pairs), seeds=seeds, variants=variants)


def compute(seeds, world_seed: int, n_pairs: int = 128, objectives=OBJECTIVES, attentions=ATTENTIONS,
            order_variants=KNOBS["order_variants"], interventions=KNOBS["interventions"]) -> dict:
    return {"grid": grid(seeds, world_seed, 1, objectives, attentions, n_pairs),
            "grid_k2": grid(seeds, world_seed, 2, objectives, attentions),
            "order": order(seeds, world_seed, order_variants, n_pairs),
            "interventions": by_intervention(seeds, world_seed, interventions, n_pairs)}


def claims(r: dict, **params) -> list[Claim]:
    C = claim_factory("ch4")
    g, g2, o, iv = r["grid"], r["grid_k2"], r["order"], r["interventions"]
    names = list(iv.axes["variant"])

    def others(s):  # the cells the mechanism says cannot reverse
        return [c for c in s if not c.refused and (c.values["objective"], c.values["attention"]) not in CAN_REVERSE]

    def cell(s, o_, a):
        return s.cell(objective=o_, attention=a)

    def find(label_part):  # an intervention by what it changes, whatever the student named it
        for name in names:
            if label_part(params["interventions"][name][0]):
                return name
        raise ConfigError("no such intervention in these settings")

    untie = lambda: find(lambda ov: ov.get("untie_values") is True)  # noqa: E731
    frozen = lambda: find(lambda ov: ov.get("freeze") == "qk")  # noqa: E731
    proj = lambda: find(lambda ov: ov.get("project_out") == "b2a")  # noqa: E731
    proj_all = lambda: find(lambda ov: ov.get("project_out") == "b2a-all")  # noqa: E731
    base15 = lambda: find(lambda ov: ov.get("rope_base") == 1.5 and "objective" not in ov)  # noqa: E731
    prefix15 = lambda: find(lambda ov: ov.get("rope_base") == 1.5 and ov.get("objective") == "prefix")  # noqa: E731
    ing = lambda o_, a, q: cell(g, o_, a).measured[q]  # noqa: E731
    mdm_models = [v for v in o.axes["variant"] if v != "ARM"]

    return [
        C("grid-zeros", lambda: max(c.quantity("b2a").max() for c in others(g))),
        C("grid-mdm", lambda: g.min("b2a", objective="mdm", attention="bidirectional")),
        C("grid-prefix", lambda: g.min("b2a", objective="prefix", attention="bidirectional")),
        C("grid-suffix-learns", lambda: g.min("a2b", objective="suffix", attention="bidirectional")),
        C("grid-prefix-causal", lambda: g.failed(objective="prefix", attention="causal") / len(g.seeds)),
        C("grid-mdm-causal-infill", lambda: g.max("infill", objective="mdm", attention="causal")),
        C("route-arm", lambda: ing("ar", "causal", "weight_b2a").mean()),
        C("route-suffix", lambda: ing("suffix", "bidirectional", "weight_b2a").min()),
        C("no-storage", lambda: max(c.measured["evidence"].max() for c in others(g))),
        C("storage-mdm", lambda: ing("mdm", "bidirectional", "evidence").mean()
              / (10 * max(max(c.measured["evidence"].max() for c in others(g)), 1))),
        C("suffix-one-model", lambda: np.abs(ing("suffix", "causal", "evidence") - ing("suffix", "bidirectional", "evidence")).max()
              / ing("mdm", "bidirectional", "evidence").mean()),
        C("k2-zeros", lambda: max(c.quantity("b2a").max() for c in others(g2))),
        C("k2-infill", lambda: g2.min("infill", objective="mdm", attention="bidirectional")),
        C("k2-partial", lambda: g2.mean("b2a", objective="mdm", attention="bidirectional")),
        C("order-blind", lambda: max(o.mean("b2a", variant=v) - o.mean("swap", variant=v) for v in mdm_models)),
        C("order-swap", lambda: min(o.mean("swap", variant=v) for v in mdm_models)),
        C("order-arm", lambda: max(o.max("b2a", variant="ARM"), o.max("swap", variant="ARM"))),
        *[C(f"order-symmetry-{v.split(', ')[1].replace(' ', '-').lower()}",
            lambda v=v: abs(o.mean("swap", variant=v) - o.mean("infill", variant=v)))
          for v in ("MDM, ALiBi", "MDM, no positions")],
        C("frozen-routes", lambda: iv.mean("b2a", variant=frozen())),
        C("untied-collapses", lambda: iv.mean("b2a", variant=untie())),
        C("untied-below-chance", lambda: iv.mean("b2a", "nll", variant=untie()) / np.log(iv.run(variant=untie()).world.vocab_size)),
        C("projection-not-needed", lambda: iv.mean("b2a", variant=proj())),
        C("projection-all-infill", lambda: iv.mean("infill", variant=proj_all())),
        C("projection-all-b2a", lambda: iv.mean("infill", variant=proj_all()) - iv.mean("b2a", variant=proj_all())),
        C("base-reverses", lambda: iv.mean("b2a", variant=base15())),
        C("base-prefix-worse", lambda: iv.mean("b2a", variant=base15()) - iv.mean("b2a", variant=prefix15())),
    ]
