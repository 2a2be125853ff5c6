"""Chapter 3, gradient alignment: the OV identity, construction against control, same-fact against
averaged cosines, along training, and the first-order test of one step."""
from __future__ import annotations

import numpy as np

from .. import alignment
from ..claims import Claim, claim_factory
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
    """Same-fact and averaged cosines of each pair of ``PAIRS`` at init and trained:
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
    C = claim_factory("ch3")
    ov, ctrl, cr, u, fo = r["identities"], r["controls"], r["cross"], r["unembed"], r["first_order"]
    tm, ta = r["traces"]["mdm"][1], r["traces"]["ar"][1]
    scales = sorted({s for _, s in u})
    fac = tm.values["factors"]
    f_mdm = fo["mdm", "infill"]

    def cos(kind, source, when, what="fact"):
        return ctrl[kind, source, when][what]["all"]

    return [
        C("identity-exact", lambda: max(o.relative_error.max() for o in ov.values())),
        C("init-residual-positive", lambda: (ov["mdm", "init"].residual_factor > 0).mean()),
        C("init-mixture-positive", lambda: (ov["mdm", "init"].mixture_factor > 0).mean()),
        C("arm-ov-coin-low", lambda: (ov["ar", "init"].autograd > 0).mean()),
        C("arm-ov-coin-high", lambda: (ov["ar", "init"].autograd > 0).mean()),
        C("construction", lambda: cos("mdm", "infill", "init").mean()),
        C("control-init", lambda: abs(cos("mdm", "a2b", "init").mean())),
        C("survives-training", lambda: cos("mdm", "infill", "trained").mean()),
        C("survives-every-seed", lambda: cos("mdm", "infill", "trained").min()),
        C("control-trained", lambda: abs(cos("mdm", "a2b", "trained").mean())),
        C("arm-trained", lambda: abs(cos("ar", "a2b", "trained").mean())),
        C("mdm-diagonal", lambda: cross_stats(cr["mdm"])["ratio"]),
        C("arm-no-diagonal", lambda: cross_stats(cr["ar"])["ratio"]),
        C("mdm-generic-share", lambda: cross_stats(cr["mdm"])["same_share"]),
        C("arm-generic-share", lambda: cross_stats(cr["ar"])["same_share"]),
        C("scale-sign-low", lambda: u["ar", scales[0]]["mean"].mean()),
        C("scale-sign-high", lambda: u["ar", scales[-1]]["mean"].mean()),
        C("scale-arm-fact", lambda: max(abs(u["ar", s]["fact"].mean()) for s in scales)),
        C("scale-mdm-fact", lambda: min(u["mdm", s]["fact"].mean() for s in scales)),
        C("trace-mdm", lambda: tm["fact", "all"].mean(axis=1).min()),
        C("trace-mdm-end", lambda: tm["fact", "all"][-1].mean()),
        C("trace-arm", lambda: np.abs(ta["fact", "all"].mean(axis=1)).max()),
        C("trace-qk", lambda: tm["fact", "qk"].mean(axis=1).min() - tm["fact", "all"].mean(axis=1).min()),
        C("trace-arm-mean-negative", lambda: ta["mean", "all"][-1].mean()),
        *[C(f"first-order-{kind}-{step}", lambda f=f: f.relative_error[0].max()) for (kind, step), f in fo.items()],
        *[C(f"first-order-sign-{kind}-{step}", lambda f=f: f.dot.min()) for (kind, step), f in fo.items()],
        C("eta-ok", lambda: eta_ok(f_mdm)),
        C("eta-ok-bounded", lambda: eta_ok(f_mdm)),
        C("eta-up", lambda: f_mdm.eta[(f_mdm.measured.mean(axis=1) > 0)].min()),
        C("residual-nearly-always", lambda: fac["residual_positive"].min()),
        C("mixture-weaker", lambda: fac["mixture_positive"].min() - fac["residual_positive"].min()),
        C("ov-mostly-positive", lambda: tm["fact_positive", "ov_product"].min()),
        C("ov-not-always", lambda: tm["fact_positive", "ov_product"].min()),
        C("ov-init-all", lambda: tm["fact_positive", "ov_product"][0].min()),
        C("qk-misaligned", lambda: tm["fact_positive", "qk"].min()),
        C("objective-negative-sometimes", lambda: (tm["objective", "all"] < 0).mean()),
        C("objective-positive-sometimes", lambda: (tm["objective", "all"] < 0).mean()),
        C("mixture-tracks-routes", lambda: alignment.mixture_attention(ov["mdm", "trained"])[1]),
    ]
