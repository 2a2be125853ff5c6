"""Chapter 3, gradient alignment: the OV identity, construction against control, same-fact against
averaged cosines, along training, and the first-order test of one step."""
from __future__ import annotations

import numpy as np

from .. import alignment
from ..claims import Claim
from ..sweep import Sweep
from . import ch1

KNOBS = {
    "n_pairs": 128,
    "unembed_scales": (0.25, 0.5, 1.0, 2.0, 4.0),  # initial scale of the unembedding (the book: 1)
    "etas": tuple(float(x) for x in np.logspace(-4, 1, 21)),  # step sizes of the first-order test
}
KINDS = ("mdm", "ar")
# (model, source loss) pairs compared with b2a: the paper's pair, the control, the ARM's pair
PAIRS = (("mdm", "infill"), ("mdm", "a2b"), ("ar", "a2b"))


def traces(seeds, world_seed: int, n_pairs: int = 128) -> dict:
    """Chapter 1's runs trained with the alignment measurement hook: ``{kind: (run, Trace)}``."""
    m = ch1.models(seeds, world_seed, n_pairs)
    return {kind: alignment.alignment_trace(m.cell(objective=kind).experiment, seeds) for kind in KINDS}


def identities(models: Sweep) -> dict:
    """The OV identity per ``(kind, when)``, ``when`` in ("init", "trained")."""
    return {(kind, when): alignment.identity(models.run(objective=kind), when) for kind in KINDS for when in ("init", "trained")}


def controls(models: Sweep) -> dict:
    """Same-fact and averaged cosines of each pair of :data:`PAIRS` at init and trained:
    ``{(kind, source, when): {"mean", "fact", "fact_positive"}}``."""
    return {(kind, source, when): alignment.pair_alignment(models.run(objective=kind), when, source)
            for kind, source in PAIRS for when in ("init", "trained")}


def cross(models: Sweep) -> dict:
    """``{kind: (K, N, N)}``: every fact's source gradient against every fact's b2a gradient at init."""
    return {kind: alignment.cross_at_init(models.run(objective=kind)) for kind in KINDS}


def by_unembed_scale(seeds, world_seed: int, unembed_scales=KNOBS["unembed_scales"], n_pairs: int = 128) -> dict:
    """Cosines at initialisation as the unembedding's initial scale varies: ``{(kind, scale): {...}}``."""
    m = ch1.base(world_seed, n_pairs)
    out = {}
    for kind in KINDS:
        exp = m.replace(objective=kind, attention="causal" if kind == "ar" else "bidirectional")
        for scale in unembed_scales:
            out[kind, scale] = alignment.initial_alignment(exp.replace(unembed_scale=scale), seeds)
    return out


def first_order_tests(models: Sweep, etas=KNOBS["etas"]) -> dict:
    """One plain step at initialisation on the source loss and on the training objective:
    ``{(kind, step): revlib.alignment.FirstOrder}``."""
    out = {}
    for kind in KINDS:
        run = models.run(objective=kind)
        for step in (alignment.source_of(run.objective), "objective"):
            out[kind, step] = alignment.first_order_at_init(run, step, tuple(etas))
    return out


def compute(seeds, world_seed: int, n_pairs: int = 128, unembed_scales=KNOBS["unembed_scales"],
            etas=KNOBS["etas"]) -> dict:
    models = ch1.models(seeds, world_seed, n_pairs)
    return {"models": models, "identities": identities(models), "controls": controls(models), "cross": cross(models),
            "unembed": by_unembed_scale(seeds, world_seed, unembed_scales, n_pairs),
            "traces": traces(seeds, world_seed, n_pairs), "first_order": first_order_tests(models, etas)}


def eta_ok(f: alignment.FirstOrder, tolerance: float = 0.1) -> float:
    """The largest step size up to which the first-order prediction is within ``tolerance`` for every seed."""
    ok = (f.relative_error <= tolerance).all(axis=1)
    return float(f.eta[-1] if ok.all() else (f.eta[:np.argmin(ok)].max() if ok[0] else 0.0))


def cross_stats(c: np.ndarray) -> dict:
    """Same-fact (diagonal) against other-fact inner products of a (K, N, N) array: the ratio of the
    means and the share of the summed inner product that the diagonal carries."""
    eye = np.eye(c.shape[1], dtype=bool)
    return {"ratio": c[:, eye].mean() / c[:, ~eye].mean(),
            "same_share": float((c[:, eye].sum(axis=1) / c.sum(axis=(1, 2))).mean())}


def claims(r: dict, **params) -> list[Claim]:
    ov, ctrl, cr, u, fo = r["identities"], r["controls"], r["cross"], r["unembed"], r["first_order"]
    tm, ta = r["traces"]["mdm"][1], r["traces"]["ar"][1]
    scales = sorted({s for _, s in u})
    fac = tm.values["factors"]
    f_mdm = fo["mdm", "infill"]

    def cos(kind, source, when, what="fact"):
        return ctrl[kind, source, when][what]["all"]

    return [
        Claim("identity-exact", "the factorised OV inner product equals autograd's", "largest relative error",
              lambda: max(o.relative_error.max() for o in ov.values()), "<", 1e-6),
        Claim("init-residual-positive", "at initialisation the MDM's residual factor is positive for every fact",
              "share of facts", lambda: (ov["mdm", "init"].residual_factor > 0).mean(), ">=", 1.0),
        Claim("init-mixture-positive", "and its mixture factor too", "share of facts",
              lambda: (ov["mdm", "init"].mixture_factor > 0).mean(), ">=", 1.0),
        Claim("arm-ov-coin-low", "the ARM's OV sign at initialisation is a coin flip (not always positive)",
              "share of facts with a positive ARM OV product", lambda: (ov["ar", "init"].autograd > 0).mean(), "<", 0.8),
        Claim("arm-ov-coin-high", "(nor always negative)", "share of facts with a positive ARM OV product",
              lambda: (ov["ar", "init"].autograd > 0).mean(), ">", 0.3),
        Claim("construction", "at initialisation infill and b2a are aligned by construction", "mean same-fact cosine, MDM",
              lambda: cos("mdm", "infill", "init").mean(), ">", 0.8),
        Claim("control-init", "the control pair (a2b vs b2a) is not", "|mean same-fact cosine|, control",
              lambda: abs(cos("mdm", "a2b", "init").mean()), "<", 0.15),
        Claim("survives-training", "the MDM keeps the alignment through training", "mean same-fact cosine, trained MDM",
              lambda: cos("mdm", "infill", "trained").mean(), ">", 0.8),
        Claim("survives-every-seed", "in every seed", "lowest same-fact cosine, trained MDM",
              lambda: cos("mdm", "infill", "trained").min(), ">", 0.7),
        Claim("control-trained", "the control stays unaligned", "|mean same-fact cosine|, trained control",
              lambda: abs(cos("mdm", "a2b", "trained").mean()), "<", 0.2),
        Claim("arm-trained", "the ARM's same-fact cosine is zero", "|mean same-fact cosine|, trained ARM",
              lambda: abs(cos("ar", "a2b", "trained").mean()), "<", 0.05),
        Claim("mdm-diagonal", "the MDM's same-fact inner product dominates other-fact pairs",
              "same-fact / other-fact inner product, MDM", lambda: cross_stats(cr["mdm"])["ratio"], ">", 20.0),
        Claim("arm-no-diagonal", "the ARM has no diagonal", "same-fact / other-fact inner product, ARM",
              lambda: cross_stats(cr["ar"])["ratio"], "<", 3.0),
        Claim("mdm-generic-share", "other-fact pairs carry much of the MDM's averaged inner product",
              "same-fact share, MDM", lambda: cross_stats(cr["mdm"])["same_share"], "<", 0.6),
        Claim("arm-generic-share", "and nearly all of the ARM's", "same-fact share, ARM",
              lambda: cross_stats(cr["ar"])["same_share"], "<", 0.05),
        Claim("scale-sign-low", "the ARM's averaged cosine is negative at unembedding scale 1/4",
              "mean ARM averaged cosine, smallest scale", lambda: u["ar", scales[0]]["mean"].mean(), "<", 0.0),
        Claim("scale-sign-high", "and above 0.5 at scale 4", "mean ARM averaged cosine, largest scale",
              lambda: u["ar", scales[-1]]["mean"].mean(), ">", 0.5),
        Claim("scale-arm-fact", "the ARM's same-fact cosine stays near zero at every scale",
              "largest |mean ARM same-fact cosine|", lambda: max(abs(u["ar", s]["fact"].mean()) for s in scales), "<", 0.15),
        Claim("scale-mdm-fact", "the MDM's same-fact cosine stays high at every scale",
              "lowest mean MDM same-fact cosine", lambda: min(u["mdm", s]["fact"].mean() for s in scales), ">", 0.8),
        Claim("trace-mdm", "along training the MDM's same-fact cosine stays high", "lowest seed-mean over checkpoints",
              lambda: tm["fact", "all"].mean(axis=1).min(), ">", 0.6),
        Claim("trace-mdm-end", "and ends higher", "final seed-mean", lambda: tm["fact", "all"][-1].mean(), ">", 0.85),
        Claim("trace-arm", "the ARM's stays at zero", "largest |seed-mean| over checkpoints",
              lambda: np.abs(ta["fact", "all"].mean(axis=1)).max(), "<", 0.05),
        Claim("trace-qk", "the QK block is the one whose alignment does not hold",
              "lowest QK minus lowest all-parameter same-fact cosine (seed means)",
              lambda: tm["fact", "qk"].mean(axis=1).min() - tm["fact", "all"].mean(axis=1).min(), "<", 0.0),
        Claim("trace-arm-mean-negative", "the ARM's averaged cosine ends negative", "final ARM averaged cosine",
              lambda: ta["mean", "all"][-1].mean(), "<", 0.0),
        *[Claim(f"first-order-{kind}-{step}", f"small steps obey the first-order prediction ({kind}, step on {step})",
                "relative error at the smallest step", lambda f=f: f.relative_error[0].max(), "<", 1e-2)
          for (kind, step), f in fo.items()],
        *[Claim(f"first-order-sign-{kind}-{step}", f"and the step lowers l_b2a ({kind}, step on {step})",
                "smallest <g_b2a, g_step> over seeds", lambda f=f: f.dot.min(), ">", 0.0)
          for (kind, step), f in fo.items()],
        Claim("eta-ok", "the prediction holds to 10 % up to a moderate step", "largest such step size",
              lambda: eta_ok(f_mdm), ">=", 1e-3),
        Claim("eta-ok-bounded", "but not beyond a few tenths", "largest such step size", lambda: eta_ok(f_mdm), "<=", 0.2),
        Claim("eta-up", "a large enough infill step raises l_b2a", "smallest step size that raises it",
              lambda: f_mdm.eta[(f_mdm.measured.mean(axis=1) > 0)].min(), "<=", 10.0),
        Claim("residual-nearly-always", "the residual factor nearly always stayed positive",
              "lowest share of facts, any seed and step", lambda: fac["residual_positive"].min(), ">", 0.95),
        Claim("mixture-weaker", "the mixture factor is the weaker of the two",
              "lowest mixture share minus lowest residual share",
              lambda: fac["mixture_positive"].min() - fac["residual_positive"].min(), "<", 0.0),
        Claim("ov-mostly-positive", "the OV product stayed positive for most facts", "lowest share, any seed and step",
              lambda: tm["fact_positive", "ov_product"].min(), ">", 0.5),
        Claim("ov-not-always", "but not for all", "lowest share, any seed and step",
              lambda: tm["fact_positive", "ov_product"].min(), "<", 1.0),
        Claim("ov-init-all", "at initialisation for every fact of every seed", "lowest share at initialisation",
              lambda: tm["fact_positive", "ov_product"][0].min(), ">=", 1.0),
        Claim("qk-misaligned", "the QK block is often misaligned", "lowest QK share, any seed and step",
              lambda: tm["fact_positive", "qk"].min(), "<", 0.5),
        Claim("objective-negative-sometimes", "the full objective's gradient is sometimes against b2a",
              "share of checkpoints and seeds with a negative cosine", lambda: (tm["objective", "all"] < 0).mean(), ">", 0.1),
        Claim("objective-positive-sometimes", "but not always", "share of checkpoints and seeds with a negative cosine",
              lambda: (tm["objective", "all"] < 0).mean(), "<", 0.9),
        Claim("mixture-tracks-routes", "trained, the mixture factor tracks the overlap of the two routes",
              "correlation across facts, mean over seeds", lambda: alignment.mixture_attention(ov["mdm", "trained"])[1],
              ">", 0.3),
    ]
