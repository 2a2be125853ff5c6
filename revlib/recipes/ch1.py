"""Chapter 1, the reversal curse: the ARM and the MDM on one-direction facts, over settings, and on
Zhu et al.'s split."""
from __future__ import annotations

import math

import numpy as np

from ..claims import Claim
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
    m, rob, z = r["models"], r["robustness"], r["zhu"]
    log_v = math.log(m.run(objective="mdm").world.vocab_size)
    h = {k: m.run(objective=k).history for k in KINDS}
    hz = {k: z.run(objective=k).history for k in KINDS}
    positionals = [v for v in rob.axes["variant"] if v.startswith("positional=")]

    def rob_b2a(stat, kind, variant):
        return getattr(rob, stat)("b2a", variant=variant, objective=kind)

    return [
        Claim("learn-a2b", "both models learn the trained direction in every seed", "lowest a2b accuracy of either model",
              lambda: min(m.min("a2b", objective=k) for k in KINDS), ">=", 0.95),
        Claim("arm-no-b2a", "the ARM answers b2a in no seed", "highest ARM b2a accuracy",
              lambda: m.max("b2a", objective="ar"), "<", 0.05),
        Claim("arm-below-chance", "the ARM's loss on the right b2a answer is far above chance",
              "lowest ARM b2a loss, in units of log V", lambda: m.min("b2a", "nll", objective="ar") / log_v, ">", 2.0),
        Claim("mdm-b2a", "the MDM answers b2a in every seed", "lowest MDM b2a accuracy",
              lambda: m.min("b2a", objective="mdm"), ">=", 0.8),
        Claim("mdm-b2a-mean", "the MDM answers b2a nearly perfectly on average", "mean MDM b2a accuracy",
              lambda: m.mean("b2a", objective="mdm"), ">=", 0.95),
        Claim("mdm-infill-b2a-loss", "the MDM's infill and b2a losses nearly agree in every seed",
              "largest |b2a loss − infill loss| (nats)",
              lambda: np.abs(m.values("b2a", "nll", objective="mdm") - m.values("infill", "nll", objective="mdm")).max(),
              "<", 0.5),
        Claim("arm-b2a-loss-rises", "the ARM's b2a loss rises during training in every seed",
              "smallest rise of the ARM's b2a loss (nats)", lambda: (h["ar"]["b2a_nll"][-1] - h["ar"]["b2a_nll"][0]).min(),
              ">", 0.0),
        Claim("mdm-b2a-loss-falls", "the MDM's b2a loss falls during training in every seed",
              "smallest fall of the MDM's b2a loss (nats)", lambda: (h["mdm"]["b2a_nll"][0] - h["mdm"]["b2a_nll"][-1]).min(),
              ">", 0.0),
        Claim("arm-no-b2a-anywhere", "no setting and no seed lets the ARM answer b2a",
              "highest ARM b2a accuracy over every setting",
              lambda: max(rob_b2a("max", "ar", v) for v in rob.axes["variant"]), "<", 0.05),
        Claim("absolute-below-rope", "with learned absolute positions the MDM's b2a stays far below RoPE's",
              "mean MDM b2a accuracy, RoPE minus absolute",
              lambda: rob_b2a("mean", "mdm", "positional=rope") - rob_b2a("mean", "mdm", "positional=absolute"), ">", 0.2),
        Claim("absolute-below-infill", "with learned absolute positions no seed of the MDM answers b2a fully",
              "highest MDM b2a accuracy with absolute positions",
              lambda: rob_b2a("max", "mdm", "positional=absolute"), "<", 0.95),
        Claim("absolute-spread", "with learned absolute positions the seeds disagree widely on b2a",
              "max − min of MDM b2a accuracy over seeds, absolute positions",
              lambda: rob_b2a("max", "mdm", "positional=absolute") - rob_b2a("min", "mdm", "positional=absolute"),
              ">", 0.3, guard=False),
        Claim("arm-absolute-fails-a2b", "with learned absolute positions some ARM seeds do not learn a2b in 300 steps",
              "ARM seeds below 0.9 on a2b, absolute positions",
              lambda: rob.failed(variant="positional=absolute", objective="ar"), ">=", 1, guard=False),
        Claim("mdm-b2a-settings", "the MDM answers b2a at RoPE, no positions, 128 and 256 facts",
              "lowest mean MDM b2a accuracy over those settings",
              lambda: min(rob_b2a("mean", "mdm", v) for v in ("positional=rope", "positional=none", "n_pairs=128",
                                                              "n_pairs=256") if v in rob.axes["variant"]), ">", 0.9),
        Claim("zhu-arm-fits", "on Zhu et al.'s split the ARM fits its training text in every seed",
              "highest final ARM training loss (nats)", lambda: hz["ar"]["loss"][-1].max(), "<", 0.01),
        Claim("zhu-arm-held-out-rises", "while its held-out b2a loss rises in every seed",
              "smallest rise of the ARM's held-out b2a loss (nats)",
              lambda: (hz["ar"]["b2a_nll"][-1] - hz["ar"]["b2a_nll"][0]).min(), ">", 0.0),
        Claim("zhu-arm-no-b2a", "and answers no held-out b2a query", "highest held-out ARM b2a accuracy",
              lambda: z.max("b2a", objective="ar"), "<", 0.05),
        Claim("zhu-mdm-b2a", "the MDM answers the held-out b2a queries in every seed", "lowest MDM b2a accuracy",
              lambda: z.min("b2a", objective="mdm"), ">", 0.8),
        Claim("zhu-mdm-below-chance-loss", "the MDM's held-out b2a loss ends below chance in every seed",
              "highest MDM b2a loss over log V", lambda: z.max("b2a", "nll", objective="mdm") / math.log(800), "<", 1.0),
        Claim("zhu-mdm-swap", "the MDM answers the false converse (swap) about as well as b2a, in every seed",
              "largest |swap − b2a| accuracy over seeds",
              lambda: np.abs(z.values("swap", objective="mdm") - z.values("b2a", objective="mdm")).max(), "<", 0.2),
    ]
