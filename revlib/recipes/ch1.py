"""Chapter 1, the reversal curse: the ARM and the MDM on one-direction facts, over settings, and on
Zhu et al.'s split."""
from __future__ import annotations

import math

import numpy as np

from ..claims import Claim, claim_factory
from ..config import Experiment, preset
from ..sweep import Sweep, sweep

KNOBS = {
    "n_pairs": 128,  # facts in the world
    "positionals": ("rope", "absolute", "alibi", "none"),  # the robustness sweep: positional encodings ...
    "pair_counts": (64, 128, 256),  # ... numbers of facts ...
    "widths": (16, 32, 64),  # ... and widths (d_model), each with the other settings at the default
}
KINDS = {"ar": "ARM", "mdm": "MDM"}
# Zhu et al.'s split: V = 800, 200 pairs, 140 of them trained both ways ("a is b", "b rev a")
ZHU = dict(n_pairs=200, reversed_fraction=0.7, vocab_size=800, relations="inverse", eval_every=10)


def base(world_seed: int, n_pairs: int = 128, **overrides) -> Experiment:
    """The chapter's one-layer toy (the ``mdm`` preset) on the world of ``world_seed``; a sweep
    over ``objective`` turns it into the ARM (``ar``, causal) and the MDM (``mdm``)."""
    return preset("mdm", seed=world_seed, n_pairs=n_pairs, **overrides)


def models(seeds, world_seed: int, n_pairs: int = 128) -> Sweep:
    """The ARM and the MDM at the default preset: one cell per ``objective``."""
    return sweep(base(world_seed, n_pairs), {"objective": list(KINDS)}, seeds)


def robustness_variants(positionals=KNOBS["positionals"], pair_counts=KNOBS["pair_counts"],
                        widths=KNOBS["widths"]) -> dict[str, dict]:
    """Named variants of the robustness sweep, one setting changed at a time."""
    return ({f"positional={p}": {"positional": p} for p in positionals}
            | {f"n_pairs={n}": {"n_pairs": n} for n in pair_counts}
            | {f"d_model={d}": {"d_model": d} for d in widths})


def robustness(seeds, world_seed: int, positionals=KNOBS["positionals"], pair_counts=KNOBS["pair_counts"],
               widths=KNOBS["widths"], n_pairs: int = 128) -> Sweep:
    """The ARM and the MDM with one setting changed at a time: cells ``(variant, objective)``."""
    return sweep(base(world_seed, n_pairs), {"objective": list(KINDS)}, seeds,
                 variants=robustness_variants(positionals, pair_counts, widths))


def zhu(seeds, world_seed: int) -> Sweep:
    """Zhu et al.'s split (V = 800, 200 pairs, 140 both ways with an inverse relation)."""
    return sweep(base(world_seed, **ZHU), {"objective": list(KINDS)}, seeds)


def compute(seeds, world_seed: int, n_pairs: int = 128, positionals=KNOBS["positionals"],
            pair_counts=KNOBS["pair_counts"], widths=KNOBS["widths"]) -> dict:
    return {"models": models(seeds, world_seed, n_pairs),
            "robustness": robustness(seeds, world_seed, positionals, pair_counts, widths, n_pairs),
            "zhu": zhu(seeds, world_seed)}


def claims(r: dict, **params) -> list[Claim]:
    C = claim_factory("ch1")
    m, rob, z = r["models"], r["robustness"], r["zhu"]
    log_v = math.log(m.run(objective="mdm").world.vocab_size)
    h = {k: m.run(objective=k).history for k in KINDS}
    hz = {k: z.run(objective=k).history for k in KINDS}
    positionals = [v for v in rob.axes["variant"] if v.startswith("positional=")]

    def widest():
        widths = [v for v in rob.axes["variant"] if v.startswith("d_model=")]
        if not widths:
            raise ValueError("the robustness sweep has no d_model variant")
        return max(widths, key=lambda v: int(v.split("=")[1]))

    def rob_b2a(stat, kind, variant):
        return getattr(rob, stat)("b2a", variant=variant, objective=kind)

    return [
        C("learn-a2b", lambda: min(m.min("a2b", objective=k) for k in KINDS)),
        C("arm-no-b2a", lambda: m.max("b2a", objective="ar")),
        C("arm-below-chance", lambda: m.min("b2a", "nll", objective="ar") / log_v),
        C("mdm-b2a", lambda: m.min("b2a", objective="mdm")),
        C("mdm-b2a-mean", lambda: m.mean("b2a", objective="mdm")),
        C("mdm-infill-b2a-loss", lambda: np.abs(m.values("b2a", "nll", objective="mdm") - m.values("infill", "nll", objective="mdm")).max()),
        C("arm-b2a-loss-rises", lambda: (h["ar"]["b2a_nll"][-1] - h["ar"]["b2a_nll"][0]).min()),
        C("mdm-b2a-loss-falls", lambda: (h["mdm"]["b2a_nll"][0] - h["mdm"]["b2a_nll"][-1]).min()),
        C("arm-no-b2a-anywhere", lambda: max(rob_b2a("max", "ar", v) for v in rob.axes["variant"])),
        C("absolute-below-rope", lambda: rob_b2a("mean", "mdm", "positional=rope") - rob_b2a("mean", "mdm", "positional=absolute")),
        C("absolute-below-infill", lambda: rob_b2a("max", "mdm", "positional=absolute")),
        C("absolute-spread", lambda: rob_b2a("max", "mdm", "positional=absolute") - rob_b2a("min", "mdm", "positional=absolute")),
        C("arm-absolute-fails-a2b", lambda: rob.failed(variant="positional=absolute", objective="ar")),
        C("mdm-b2a-settings", lambda: min(rob_b2a("mean", "mdm", v) for v in ("positional=rope", "positional=none", "n_pairs=128",
                                                              "n_pairs=256") if v in rob.axes["variant"])),
        C("widest-mdm-b2a-tracks-a2b", lambda: abs(rob.mean("a2b", variant=widest(), objective="mdm")
                                                    - rob.mean("b2a", variant=widest(), objective="mdm"))),
        C("zhu-arm-fits", lambda: hz["ar"]["loss"][-1].max()),
        C("zhu-arm-held-out-rises", lambda: (hz["ar"]["b2a_nll"][-1] - hz["ar"]["b2a_nll"][0]).min()),
        C("zhu-arm-no-b2a", lambda: z.max("b2a", objective="ar")),
        C("zhu-mdm-b2a", lambda: z.min("b2a", objective="mdm")),
        C("zhu-mdm-below-chance-loss", lambda: z.max("b2a", "nll", objective="mdm") / math.log(800)),
        C("zhu-mdm-swap", lambda: np.abs(z.values("swap", objective="mdm") - z.values("b2a", objective="mdm")).max()),
    ]
