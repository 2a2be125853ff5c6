"""Chapter 3, gradient alignment: its experiments (recipes), figures and tables."""
from __future__ import annotations

import hashlib
import inspect

import numpy as np
import torch

from .. import alignment, gradients
from ..cache import cached_arrays, experiment_key
from ..data import make_world
from ..model import build_model
from . import ch1, plot
from .registry import figure, table
from .seeds import SEEDS
from .tables import Table, mean_sd

ETAS = np.logspace(-4, 1, 21)
UNEMBED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
KINDS = ("mdm", "ar")


def _cached(kind: str, exp, fn, **options) -> dict:
    """A measurement cached beside the run; the measuring function's source is part of the key
    (this module is not fingerprinted by the cache)."""
    source = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    return cached_arrays(f"ch3-{kind}", experiment_key(exp, SEEDS, measure=source, **options), fn)


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------

def traces() -> dict:
    """Chapter 1's runs trained with the alignment hook (cached): ``{kind: (run, Trace)}``."""
    return {kind: alignment.alignment_trace(ch1.experiment(kind), SEEDS) for kind in KINDS}


def identities(r: dict | None = None) -> dict:
    """:func:`revlib.alignment.ov_identity` per (kind, "init" | "trained")."""
    r = r or ch1.runs()
    return {(kind, when): alignment.ov_identity(model, r[kind].world, r[kind].objective)
            for kind in KINDS for when, model in (("init", r[kind].initial_model()), ("trained", r[kind].model))}


def cross(r: dict | None = None) -> dict:
    """Per kind: <∇l_source(i), ∇l_b2a(j)> over all parameters at initialisation, (K, N, N)."""
    r = r or ch1.runs()
    out = {}
    for kind in KINDS:
        def measure(run=r[kind]):
            init, world, objective = run.initial_model(), run.world, run.objective
            params = gradients.parameters(init, torch.float32)
            g_src = gradients.fact_gradients(init, world.probe(alignment.source_of(objective)), objective, params)
            g_b2a = gradients.fact_gradients(init, world.probe("b2a"), objective, params)
            return {"all": gradients.cross_dots(g_src, g_b2a)["all"].numpy()}
        out[kind] = _cached("cross", r[kind].experiment, measure)["all"]
    return out


def controls(r: dict | None = None) -> dict:
    """Same-fact and averaged cosines of three pairs of losses at initialisation and trained (MDM):
    ``infill`` vs ``b2a`` (the paper's pair), ``a2b`` vs ``b2a`` (the control: no shared answer,
    no shared bag) and, for the ARM, ``a2b`` vs ``b2a``: ``{(kind, source, when): alignment dict}``."""
    r = r or ch1.runs()
    out = {}
    for kind, source in (("mdm", "infill"), ("mdm", "a2b"), ("ar", "a2b")):
        run = r[kind]

        def measure(run=run, source=source):
            res = {}
            for when, model in (("init", run.initial_model()), ("trained", run.model)):
                a = alignment.alignment(model, run.world, run.objective, source, run.experiment.train)
                res[when] = {k: a[k] for k in ("mean", "fact", "fact_positive")}
            return res

        values = _cached("controls", run.experiment, measure, source=source)
        for when, v in values.items():
            out[kind, source, when] = v
    return out


def unembed_scales() -> dict:
    """The averaged and the same-fact cosine at initialisation (all parameters) as the scale of
    the unembedding's initialisation varies: ``{(kind, scale): {"mean": (K,), "fact": (K,)}}``."""
    out = {}
    for kind in KINDS:
        for scale in UNEMBED_SCALES:
            exp = ch1.experiment(kind, unembed_scale=scale)

            def measure(exp=exp):
                world = make_world(exp.data)
                model = build_model(exp, SEEDS, world.vocab_size)
                a = alignment.alignment(model, world, exp.train.objective, train_config=exp.train)
                return {"mean": a["mean"]["all"], "fact": a["fact"]["all"], "dot_same": a["dot_same"]["all"],
                        "dot": a["dot"]["all"]}

            out[kind, scale] = _cached("unembed", exp, measure)
    return out


def first_order_tests(r: dict | None = None, etas=ETAS) -> dict:
    """:func:`revlib.alignment.first_order` at initialisation, per (kind, step)."""
    r = r or ch1.runs()
    out = {}
    for kind in KINDS:
        run = r[kind]
        for step in (alignment.source_of(run.objective), "objective"):
            def measure(run=run, step=step):
                fo = alignment.first_order(run.initial_model(), run.world, run.objective, step=step, etas=etas,
                                           train_config=run.experiment.train)
                return {"eta": fo.eta, "predicted": fo.predicted, "measured": fo.measured, "dot": fo.dot,
                        "curvature": fo.curvature}

            v = _cached("first-order", run.experiment, measure, step=step)
            out[kind, step] = alignment.FirstOrder(step, v["eta"], v["predicted"], v["measured"], v["dot"], v["curvature"])
    return out


def mixture_attention(o: alignment.OVIdentity) -> tuple[np.ndarray, float]:
    """The product of the two routes' attention on b_i, (K, N), head 0, and its correlation with
    the mixture factor across facts, averaged over seeds."""
    both = o.attention["infill"][:, :, 0, 2] * o.attention["b2a"][:, :, 0, 0]  # b sits at 2 in infill, 0 in b2a
    corr = float(np.mean([np.corrcoef(both[k], o.mixture_factor[k])[0, 1] for k in range(both.shape[0])]))
    return both, corr


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

@table("ch3-controls")
def controls_table(c: dict | None = None) -> Table:
    c = c or controls()
    rows = []
    for (kind, source, when), v in c.items():
        rows.append([plot.LABELS[kind], f"{source} vs b2a", when, mean_sd(v["fact"]["all"]), mean_sd(v["fact"]["ov_product"]),
                     mean_sd(v["mean"]["all"]), mean_sd(v["fact_positive"]["all"])])
    return Table(["model", "losses", "weights", "same-fact cosine", "same-fact, OV product", "averaged-gradient cosine",
                  "facts with a positive inner product"], rows,
                 caption="All parameters unless noted; mean ± sd over 8 seeds")


@table("ch3-unembed")
def unembed_table(u: dict | None = None) -> Table:
    u = u or unembed_scales()
    rows = []
    for scale in UNEMBED_SCALES:
        rows.append([f"{scale:g}"] + [mean_sd(u[kind, scale][m]) for kind in KINDS for m in ("mean", "fact")])
    return Table(["unembedding scale", "MDM averaged", "MDM same-fact", "ARM averaged", "ARM same-fact"], rows,
                 caption="Cosine of ∇l_source and ∇l_b2a over all parameters at initialisation, 8 seeds")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

@figure("align-cross")
def cross_figure(c: dict | None = None, n_show: int = 32):
    """Same-fact against other-fact gradient inner products at initialisation, (a) MDM and (b) ARM."""
    c = c or cross()
    fig, axes = plot.figure(2, height=3.1)
    for ax, kind, name in zip(axes[0], KINDS, "ab"):
        block = c[kind][0, :n_show, :n_show]
        vmax = np.abs(block).max()
        im = ax.imshow(block, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        src = alignment.source_of("mdm" if kind == "mdm" else "ar")
        ax.set_title(plot.LABELS[kind] + r": $\langle \nabla\ell_\mathrm{" + src + r"}(i), \nabla\ell_\mathrm{b2a}(j)\rangle$",
                     fontsize=9)
        ax.set_xlabel("b2a of fact j")
        ax.set_ylabel(f"{src} of fact i")
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8)
        plot.letter(ax, name)
    return fig


@figure("align-curves")
def curves_figure(t: dict | None = None):
    """Same-fact (a-c) and averaged-gradient (d-f) cosines per block along training, MDM and ARM."""
    t = t or traces()
    fig, axes = plot.figure(3, 2, height=2.3, sharex=True, sharey=True)
    names = iter("abcdef")
    titles = {"ov_product": "OV product", "qk": r"QK ($W_Q$, $W_K$)", "all": "all parameters"}
    for row, measure in enumerate(("fact", "mean")):
        for col, block in enumerate(("ov_product", "qk", "all")):
            ax = axes[row, col]
            for kind in ("ar", "mdm"):
                run, tr = t[kind]
                plot.band(ax, tr.steps, tr[measure, block], plot.COLORS[kind], "-", plot.LABELS[kind],
                          marker="o" if kind == "mdm" else "s", markevery=3)
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_title(titles[block], fontsize=9.5)
            plot.letter(ax, next(names))
        axes[row, 0].set_ylabel({"fact": "cosine, same fact", "mean": "cosine, averaged"}[measure])
    for ax in axes[1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    return fig


@figure("align-unembed")
def unembed_figure(u: dict | None = None):
    """(a) averaged-gradient and (b) same-fact cosine at initialisation against the unembedding's scale."""
    u = u or unembed_scales()
    fig, axes = plot.figure(2, height=2.8, sharey=True)
    for ax, measure, name in zip(axes[0], ("mean", "fact"), "ab"):
        for kind in KINDS:
            v = np.stack([u[kind, s][measure] for s in UNEMBED_SCALES])  # (scales, K)
            plot.band(ax, UNEMBED_SCALES, v, plot.COLORS[kind], "-", plot.LABELS[kind], marker="o" if kind == "mdm" else "s")
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("scale of the unembedding at init")
        ax.set_title({"mean": "averaged gradients", "fact": "same fact"}[measure], fontsize=9.5)
        plot.letter(ax, name)
    axes[0, 0].set_ylabel("cosine, all parameters")
    axes[0, 0].legend(loc="lower left")
    return fig


@figure("align-first-order")
def first_order_figure(fo: dict | None = None):
    """One step at initialisation: (a) measured change of l_b2a over the first-order prediction,
    MDM stepping on l_infill; (b) the relative error of the first-order prediction."""
    fo = fo or first_order_tests()
    fig, axes = plot.figure(2, height=3.0)
    f = fo["mdm", "infill"]
    plot.band(axes[0, 0], f.eta, f.measured / f.predicted, plot.COLORS["mdm"], "-", "measured", marker="o", markevery=3)
    plot.band(axes[0, 0], f.eta, f.second_order / f.predicted, "0.2", ":", "second-order prediction", marker="x", markevery=3)
    axes[0, 0].axhline(1, color="0.2", ls="--", lw=1.2, label="first-order prediction")
    axes[0, 0].axhline(0, color="0.3", lw=0.8)
    axes[0, 0].set_xscale("log")
    axes[0, 0].set_ylim(-0.6, 1.4)
    axes[0, 0].set_xlabel(r"step size $\eta$")
    axes[0, 0].set_ylabel(r"change of $\ell_\mathrm{b2a}$ / prediction")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    for (kind, step), f in fo.items():
        plot.band(axes[0, 1], f.eta, f.relative_error, plot.COLORS[kind], "-" if step != "objective" else ":",
                  f"{plot.LABELS[kind]}, step on {step}", marker="o" if step != "objective" else "x", markevery=3)
    axes[0, 1].axhline(0.1, **plot.CHANCE_STYLE, label="10 %")
    axes[0, 1].set_xscale("log")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_xlabel(r"step size $\eta$")
    axes[0, 1].set_ylabel("relative error")
    axes[0, 1].legend(loc="upper left", fontsize=7.5)
    for ax, name in zip(axes[0], "ab"):
        plot.letter(ax, name)
    return fig


@figure("align-mixture")
def mixture_figure(ov: dict | None = None):
    """The OV mixture factor against the product of the two routes' attention on b_i, MDM,
    (a) at initialisation and (b) trained."""
    ov = ov or identities()
    fig, axes = plot.figure(2, height=2.8)
    for ax, when, name in zip(axes[0], ("init", "trained"), "ab"):
        o = ov["mdm", when]
        both, corr = mixture_attention(o)
        ax.scatter(both.ravel(), o.mixture_factor.ravel(), s=5, color=plot.COLORS["mdm"], alpha=0.5, linewidths=0)
        ax.set_xlabel(r"$\alpha_\mathrm{infill}(b)\cdot\alpha_\mathrm{b2a}(b)$")
        ax.set_ylabel("mixture factor")
        ax.set_title(f"{when}: correlation {corr:.2f}", fontsize=9.5)
        plot.letter(ax, name)
    return fig


def identities_table(ov: dict) -> Table:
    rows = [[plot.LABELS[kind], when, f"{o.relative_error.max():.1e}", f"{(o.residual_factor > 0).mean():.2f}",
             f"{(o.mixture_factor > 0).mean():.2f}", f"{(o.autograd > 0).mean():.2f}"]
            for (kind, when), o in ov.items()]
    return Table(["model", "weights", "largest rel. error", "residual > 0", "mixture > 0", "product > 0"], rows,
                 caption="The factorised OV inner product against autograd, per fact (shares over facts and 8 seeds)")


def signs_table(trace) -> Table:
    """Shares of facts with a positive inner product of their infill and b2a gradients, MDM."""
    fac = trace.values["factors"]
    rows = [["OV map, ⟨∇_W ℓ_infill, ∇_W ℓ_b2a⟩ > 0", trace["fact_positive", "ov_product"]],
            ["  residual factor > 0", fac["residual_positive"]], ["  mixture factor > 0", fac["mixture_positive"]],
            ["QK block, inner product > 0", trace["fact_positive", "qk"]],
            ["all parameters, inner product > 0", trace["fact_positive", "all"]],
            ["training objective vs b2a: cosine", trace["objective", "all"]]]
    return Table(["MDM, per fact", "at init", "lowest (any seed, any step)", "trained"],
                 [[name, f"{v[0].mean():.3f}", f"{v.min():.3f}", f"{v[-1].mean():.3f}"] for name, v in rows],
                 caption="Share of facts with a positive inner product of their infill and b2a gradients (last row: a cosine)")
