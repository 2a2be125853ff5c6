"""Chapter 3, gradient alignment: its tables and figures (the experiments are revlib.recipes.ch3)."""
from __future__ import annotations

import numpy as np

from .. import alignment
from . import plot
from .registry import figure, table
from .tables import Table, mean_sd, seeds_text

KINDS = ("mdm", "ar")


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def controls_table(c: dict) -> Table:
    rows = []
    for (kind, source, when), v in c.items():
        rows.append([plot.LABELS[kind], f"{source} vs b2a", when, mean_sd(v["fact"]["all"]), mean_sd(v["fact"]["ov_product"]),
                     mean_sd(v["mean"]["all"]), mean_sd(v["fact_positive"]["all"])])
    return Table(["model", "losses", "weights", "same-fact cosine", "same-fact, OV product", "averaged-gradient cosine",
                  "facts with a positive inner product"], rows,
                 caption=f"All parameters unless noted; mean ± sd over {len(v['fact']['all'])} seeds")


def unembed_table(u: dict) -> Table:
    rows = []
    for scale in sorted({s for _, s in u}):
        rows.append([f"{scale:g}"] + [mean_sd(u[kind, scale][m]) for kind in KINDS for m in ("mean", "fact")])
    return Table(["unembedding scale", "MDM averaged", "MDM same-fact", "ARM averaged", "ARM same-fact"], rows,
                 caption="Cosine of ∇l_source and ∇l_b2a over all parameters at initialisation, "
                         f"{len(next(iter(u.values()))['mean'])} seeds")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def cross_figure(c: dict, n_show: int = 32):
    """Same-fact against other-fact gradient inner products at initialisation, (a) MDM and (b) ARM."""
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


def curves_figure(t: dict):
    """Same-fact (a-c) and averaged-gradient (d-f) cosines per block along training, MDM and ARM."""
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


def unembed_figure(u: dict):
    """(a) averaged-gradient and (b) same-fact cosine at initialisation against the unembedding's scale."""
    scales = sorted({s for _, s in u})
    fig, axes = plot.figure(2, height=2.8, sharey=True)
    for ax, measure, name in zip(axes[0], ("mean", "fact"), "ab"):
        for kind in KINDS:
            v = np.stack([u[kind, s][measure] for s in scales])  # (scales, K)
            plot.band(ax, scales, v, plot.COLORS[kind], "-", plot.LABELS[kind], marker="o" if kind == "mdm" else "s")
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("scale of the unembedding at init")
        ax.set_title({"mean": "averaged gradients", "fact": "same fact"}[measure], fontsize=9.5)
        plot.letter(ax, name)
    axes[0, 0].set_ylabel("cosine, all parameters")
    axes[0, 0].legend(loc="lower left")
    return fig


def first_order_figure(fo: dict):
    """One step at initialisation: (a) measured change of l_b2a over the first-order prediction,
    MDM stepping on l_infill; (b) the relative error of the first-order prediction."""
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


def mixture_figure(ov: dict):
    """The OV mixture factor against the product of the two routes' attention on b_i, MDM,
    (a) at initialisation and (b) trained."""
    fig, axes = plot.figure(2, height=2.8)
    for ax, when, name in zip(axes[0], ("init", "trained"), "ab"):
        o = ov["mdm", when]
        both, corr = alignment.mixture_attention(o)
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
    n = next(iter(ov.values())).autograd.shape[0]
    return Table(["model", "weights", "largest rel. error", "residual > 0", "mixture > 0", "product > 0"], rows,
                 caption=f"The factorised OV inner product against autograd, per fact (shares over facts and {n} seeds)")


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


@table("ch3-controls", "ch3")
def _controls_table(r: dict) -> Table:
    return controls_table(r["controls"])


@table("ch3-unembed", "ch3")
def _unembed_table(r: dict) -> Table:
    return unembed_table(r["unembed"])


@figure("align-cross", "ch3")
def _cross_figure(r: dict):
    return cross_figure(r["cross"])


@figure("align-curves", "ch3")
def _curves_figure(r: dict):
    return curves_figure(r["traces"])


@figure("align-unembed", "ch3")
def _unembed_figure(r: dict):
    return unembed_figure(r["unembed"])


@figure("align-first-order", "ch3")
def _first_order_figure(r: dict):
    return first_order_figure(r["first_order"])


@figure("align-mixture", "ch3")
def _mixture_figure(r: dict):
    return mixture_figure(r["identities"])


# ---------------------------------------------------------------------------------------------
# captions (the notebooks' figure metadata says the same; tests/test_notebooks.py checks it)
# ---------------------------------------------------------------------------------------------

from .nb import caption  # noqa: E402

caption("fig-align-cross",
        "Inner products of one fact's source-loss gradient (rows) with every fact's `b2a` gradient (columns), all "
        "parameters, at initialisation, the first 32 facts of the first seed. (a) the MDM (`infill`), whose "
        "diagonal stands out; (b) the ARM (`a2b`), with none. Colour scales differ between panels.",
        "Two heat maps: the MDM's has a bright diagonal (each fact with itself), the ARM's has no diagonal.")
caption("fig-align-unembed",
        "Cosine of the source-loss and `b2a` gradients over all parameters at initialisation, against the scale "
        "of the unembedding's initialisation (the book uses 1), one band over seeds: (a) averaged gradients, "
        "(b) same fact.",
        "Two panels: the averaged cosine of the ARM changes sign with the scale; the same-fact cosines stay near "
        "zero for the ARM and high for the MDM at every scale.")
caption("fig-align-curves",
        "Cosine of the source-loss gradient (MDM: `infill`; ARM: `a2b`) and the `b2a` gradient along training, "
        "for the OV product, the attention scores (QK) and all parameters. (a-c) mean over facts of the cosine of "
        "one fact's two gradients; (d-f) cosine of the averaged gradients. Lines: mean over seeds; bands: range.",
        "Six panels of curves: the MDM's same-fact cosines stay high except for the QK block; the ARM's stay at "
        "zero; the averaged cosines of both models fall after the first steps.")
caption("fig-align-first-order",
        "One plain gradient step at initialisation. (a) measured change of $\\ell_\\text{b2a}$ after a step on "
        "$\\ell_\\text{infill}$ (MDM), over the first-order prediction (dashed line at 1); dotted: the second-order "
        "prediction over the same. (b) relative error of the first-order prediction for the MDM (green) and the "
        "ARM (orange), stepping on the source loss (solid) or the full training objective (dotted).",
        "Left: the ratio of measured to predicted change stays at 1 for small steps and falls for large ones. "
        "Right: the relative error grows in proportion to the step size for every model and step.")
caption("fig-align-mixture",
        "The mixture factor of the OV inner product against the product of the attention that `infill` and "
        "`b2a` put on $b_i$, one dot per fact and seed (MDM), (a) at initialisation and (b) trained. Correlations "
        "are means over seeds, computed across facts.",
        "Two scatter plots: trained, facts whose two routes both attend to b have the largest mixture factor.")
