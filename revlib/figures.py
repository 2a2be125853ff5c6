"""The book's figures, each one function, shared by the chapters and ``python -m revlib figures``.

A figure function takes the runs it draws (as the chapter has them) or, called with no
arguments, trains or loads them through the cache exactly as the chapter does, so the
command line reproduces the book's figures. It returns the matplotlib Figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np

import torch

from . import alignment, coupling, plot, theory
from .cache import cached_train
from .config import preset
from .model import Transformer

REGISTRY: dict[str, Callable] = {}
CHAPTER1_SEEDS = range(4)
POSITIONALS = ("rope", "absolute", "alibi", "none")


def register(name: str):
    def wrap(fn):
        REGISTRY[name] = fn
        return fn
    return wrap


def chapter1_runs(progress: bool = False) -> dict:
    """The chapter-1 models: both kinds at the default preset, four seeds each (cached)."""
    return {kind: cached_train(preset(kind), seeds=CHAPTER1_SEEDS, progress=progress) for kind in ("ar", "mdm")}


def zhu_runs(progress: bool = False) -> dict:
    """Zhu et al.'s split: V = 800, 200 pairs, 140 trained both ways; two seeds each (cached)."""
    return {
        kind: cached_train(preset(kind, n_pairs=200, both_fraction=0.7, vocab_size=800, eval_every=10),
                           seeds=range(2), progress=progress)
        for kind in ("ar", "mdm")
    }


@register("curse-probes")
def curse_probes(runs: dict | None = None):
    """Accuracy and p(right answer) per probe, ARM vs MDM (chapter 1)."""
    runs = runs or chapter1_runs()
    finals = {kind: run.final for kind, run in runs.items()}
    chance = next(iter(runs.values())).world.chance
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    plot.probe_bars(finals, chance, metric="acc", ax=axes[0])
    plot.probe_bars(finals, chance, metric="p_correct", ax=axes[1])
    axes[0].set_title("accuracy")
    axes[1].set_title("probability of the right answer (log scale)")
    fig.tight_layout()
    return fig


@register("curse-headline")
def curse_headline(runs: dict | None = None):
    """The landing page's figure: a2b and b2a accuracy, ARM vs MDM."""
    runs = runs or chapter1_runs()
    finals = {kind: run.final for kind, run in runs.items()}
    chance = next(iter(runs.values())).world.chance
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    plot.probe_bars(finals, chance, metric="acc", ax=ax, probes=("a2b", "b2a"))
    ax.set_title("Trained on 'a is b' only: who can answer 'b is ?'")
    fig.tight_layout()
    return fig


@register("curse-curves")
def curse_curves(runs: dict | None = None):
    """Probe accuracy and probability during training (chapter 1)."""
    runs = runs or chapter1_runs()
    histories = {kind: run.history for kind, run in runs.items()}
    chance = next(iter(runs.values())).world.chance
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    plot.training_curves(histories, "acc", probes=("a2b", "b2a"), ax=axes[0])
    plot.training_curves(histories, "p", probes=("a2b", "b2a"), chance=chance, ax=axes[1], log=True)
    axes[0].set_title("accuracy")
    axes[1].set_title("p(right answer), log scale")
    fig.tight_layout()
    return fig


@register("curse-zhu")
def curse_zhu(zhu: dict | None = None):
    """Training loss and held-out b2a loss on Zhu et al.'s split (chapter 1)."""
    zhu = zhu or zhu_runs()
    vocab = next(iter(zhu.values())).world.vocab_size
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, kind in zip(axes, ("ar", "mdm")):
        h = zhu[kind].history
        plot.band(ax, h["step"], h["loss"], plot.COLORS[kind], "-", "training loss")
        plot.band(ax, h["step"], h["b2a_nll"], plot.COLORS[kind], "--", "held-out b2a loss")
        ax.axhline(np.log(vocab), **plot.CHANCE_STYLE, label="chance, log V")
        ax.set_title(plot.LABELS[kind])
        ax.set_xlabel("training step")
        ax.legend()
    axes[0].set_ylabel("loss (nats)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# chapter 2: weight-sharing coupling
# ---------------------------------------------------------------------------------------------

def init_coupling(world=None, n_models: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted, measured)`` score correlation of ``n_models`` freshly initialised MDMs (chapter 2).

    ``measured`` is the correlation across the facts of each model, ``predicted`` the
    fixed-query value ``q^T R_2Δ q / |q|^2`` of its own ``[M]`` query (head 0).
    """
    world = world or chapter1_runs()["mdm"].world
    fresh = Transformer(preset("mdm").model, world.vocab_size, seeds=range(n_models))
    measured = coupling.measure_coupling(fresh, world)["corr"]
    q = torch.einsum("kd,kde->ke", fresh.embed[:, 0], fresh.layers[0]["W_Q"][:, 0])  # W_Q E[M], head 0
    return theory.rope_corr_fixed_query(q).numpy(), measured


def coupling_histories() -> dict:
    """The chapter-1 models measured along training (``coupling.cached_coupling_history``), MDM first."""
    return {kind: coupling.cached_coupling_history(preset(kind), seeds=CHAPTER1_SEEDS) for kind in ("mdm", "ar")}


def positional_ablation(world=None) -> dict:
    """The MDM with each positional encoding, four seeds: ``{positional: {run, init, final}}`` (chapter 2).

    ``init`` and ``final`` are :func:`revlib.coupling.measure_coupling` at the initial weights
    (rebuilt from the seeds) and after training.
    """
    world = world or chapter1_runs()["mdm"].world
    ablation = {}
    for positional in POSITIONALS:
        exp = preset("mdm", positional=positional)
        run = cached_train(exp, seeds=CHAPTER1_SEEDS, progress=False)
        start = Transformer(exp.model, world.vocab_size, seeds=CHAPTER1_SEEDS)  # the same initial weights
        ablation[positional] = dict(run=run, init=coupling.measure_coupling(start, world),
                                    final=coupling.measure_coupling(run.model, world))
    return ablation


@register("coupling-init")
def coupling_init(predicted=None, measured=None):
    """Score correlation of 64 initialised MDMs against the fixed-query prediction (chapter 2)."""
    if predicted is None or measured is None:
        predicted, measured = init_coupling()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.scatter(predicted, measured, s=14, color=plot.COLORS["mdm"], label="one initialised MDM")
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, label="measured = predicted")
    ax.axhline(theory.rope_corr(32), color="black", lw=1, ls="--", label="closed form (random q)")
    ax.set_xlabel("predicted from its query:  q^T R_2Δ q / |q|^2")
    ax.set_ylabel("measured across the facts")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


@register("coupling-training")
def coupling_training(history: dict | None = None, runs: dict | None = None):
    """Routing, attention weights, stored evidence and b2a probability along training (chapter 2)."""
    history = history or coupling_histories()
    runs = runs or chapter1_runs()
    world = runs["mdm"].world
    trained_route = {kind: list(coupling.ROUTES[kind])[0] for kind in history}  # "infill" (MDM), "a2b" (ARM)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.6))
    axes = axes.ravel()
    for kind, h in history.items():
        c, lab = plot.COLORS[kind], plot.LABELS[kind]
        plot.band(axes[0], h["step"], h["corr"], c, "-", f"{lab}: {trained_route[kind]} vs b2a")
        plot.band(axes[1], h["step"], h[f"weight_{trained_route[kind]}"], c, plot.LINESTYLES[trained_route[kind]],
                  f"{lab} {trained_route[kind]}")
        plot.band(axes[1], h["step"], h["weight_b2a"], c, plot.LINESTYLES["b2a"], f"{lab} b2a")
        plot.band(axes[2], h["step"], h["evidence"], c, "-", f"{lab}: u_a W E[b], own pair")
        plot.band(axes[2], h["step"], h["evidence_baseline"], c, ":", f"{lab}: u_a W E[b'], other b'")
    plot.training_curves({k: r.history for k, r in runs.items()}, "p", probes=("b2a",), chance=world.chance,
                         ax=axes[3], log=True)  # the same runs: the probe metrics recorded by train()
    axes[0].axhline(theory.rope_corr(32), **plot.CHANCE_STYLE, label="closed form, d = 32")
    axes[0].set_ylabel("score correlation across facts")
    axes[1].set_ylabel("attention weight on the key")
    axes[2].set_ylabel("stored evidence (logit)")
    axes[3].set_ylabel("b2a: p(right answer)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


@register("coupling-ablation")
def coupling_ablation(ablation: dict | None = None):
    """Accuracy, score correlation, evidence and attention per positional encoding (chapter 2)."""
    ablation = ablation or positional_ablation()
    positionals = tuple(ablation)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    axes = axes.ravel()
    x = np.arange(len(positionals))
    for i, positional in enumerate(positionals):
        r = ablation[positional]
        for ax, values, offset, kw in (
            (axes[0], r["run"].final["infill"]["acc"], -0.18, dict(color="white", edgecolor=plot.COLORS["mdm"], hatch="...")),
            (axes[0], r["run"].final["b2a"]["acc"], 0.18, dict(color=plot.COLORS["mdm"])),
            (axes[1], r["init"]["corr"], -0.18, dict(color="white", edgecolor=plot.COLORS["mdm"])),
            (axes[1], r["final"]["corr"], 0.18, dict(color=plot.COLORS["mdm"])),
            (axes[2], r["final"]["evidence"], 0.0, dict(color=plot.COLORS["mdm"])),
            (axes[3], r["final"]["weight_infill"], -0.18, dict(color="white", edgecolor=plot.COLORS["mdm"], hatch="...")),
            (axes[3], r["final"]["weight_b2a"], 0.18, dict(color=plot.COLORS["mdm"])),
        ):
            values = np.asarray(values, dtype=float)
            ax.bar(i + offset, values.mean(), 0.34, alpha=0.85, **kw)
            ax.scatter(np.full(values.shape, i + offset), values, s=8, color="black", zorder=3, linewidths=0)
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("infill (hatched) and b2a (filled)")
    axes[1].set_ylabel("score correlation")
    axes[1].set_title("at init (open) and trained (filled)")
    axes[2].set_ylabel("evidence u_a W E[b]")
    axes[2].set_title("stored evidence, trained")
    axes[3].set_ylabel("attention weight on b")
    axes[3].set_title("infill (hatched) and b2a (filled), trained")
    for ax in axes:
        ax.set_xticks(x, positionals)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# chapter 3: gradient alignment
# ---------------------------------------------------------------------------------------------

ALIGN_ETAS = np.logspace(-4, 1, 21)


def initial_models(runs: dict | None = None) -> dict:
    """The untrained starting point of each chapter-1 run, rebuilt from its seeds."""
    runs = runs or chapter1_runs()
    world = runs["mdm"].world
    return {kind: Transformer(run.experiment.model, world.vocab_size, run.seeds) for kind, run in runs.items()}


def cross_alignment(init: dict | None = None, world=None) -> dict:
    """Per kind, ``<∇ℓ_source(i), ∇ℓ_b2a(j)>`` over all parameters at initialisation, (K, N, N) (chapter 3)."""
    if init is None or world is None:
        runs = chapter1_runs()
        init, world = init or initial_models(runs), world or runs["mdm"].world
    cross = {}
    for kind in ("mdm", "ar"):
        params = alignment.parameters(init[kind], torch.float32)
        g_src = alignment.fact_gradients(init[kind], alignment.probe(world, alignment.SOURCE[kind]), params)
        g_b2a = alignment.fact_gradients(init[kind], alignment.probe(world, "b2a"), params)
        cross[kind] = alignment.cross_dots(g_src, g_b2a)["all"].numpy()
    return cross


def alignment_traces() -> dict:
    """Chapter 1's runs trained again with :func:`revlib.alignment.train_traced`: ``{kind: Trace}``."""
    return {kind: alignment.train_traced(preset(kind), seeds=CHAPTER1_SEEDS)[1] for kind in ("mdm", "ar")}


def first_order_tests(runs: dict | None = None, etas=ALIGN_ETAS) -> dict:
    """:func:`revlib.alignment.first_order` at initialisation, per (kind, step) as in chapter 3."""
    runs = runs or chapter1_runs()
    init, world = initial_models(runs), runs["mdm"].world
    return {(kind, step): alignment.first_order(init[kind], world, step=step, etas=etas,
                                                train_config=runs[kind].experiment.train)
            for kind in ("mdm", "ar") for step in (alignment.SOURCE[kind], "objective")}


def ov_identities(runs: dict | None = None) -> dict:
    """:func:`revlib.alignment.ov_identity` per (kind, "init" | "trained") (chapter 3)."""
    runs = runs or chapter1_runs()
    init, world = initial_models(runs), runs["mdm"].world
    return {(kind, when): alignment.ov_identity(model, world)
            for kind in ("mdm", "ar") for when, model in (("init", init[kind]), ("trained", runs[kind].model))}


def mixture_attention(o) -> tuple[np.ndarray, float]:
    """For one :class:`revlib.alignment.OVIdentity`: the product of the two routes' attention on b_i, (K, N), head 0,
    and its correlation with the mixture factor across facts, averaged over seeds."""
    a_infill = o.attention["infill"][:, :, 0, alignment.B_POSITION["infill"]]  # (K, N): head 0
    a_b2a = o.attention["b2a"][:, :, 0, alignment.B_POSITION["b2a"]]
    both = a_infill * a_b2a
    corr = float(np.mean([np.corrcoef(both[k], o.mixture_factor[k])[0, 1] for k in range(both.shape[0])]))
    return both, corr


@register("align-cross")
def align_cross(cross: dict | None = None, n_show: int = 32):
    """Same-fact against other-fact gradient inner products at initialisation, MDM and ARM (chapter 3)."""
    cross = cross or cross_alignment()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, kind in zip(axes, ("mdm", "ar")):
        block = cross[kind][0, :n_show, :n_show]
        vmax = np.abs(block).max()
        im = ax.imshow(block, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(plot.LABELS[kind] + r": $\langle \nabla\ell_\mathrm{" + alignment.SOURCE[kind]
                     + r"}(i), \nabla\ell_\mathrm{b2a}(j) \rangle$")
        ax.set_xlabel("b2a of fact j")
        ax.set_ylabel(f"{alignment.SOURCE[kind]} of fact i")
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


@register("align-curves")
def align_curves(traces: dict | None = None):
    """Same-fact and averaged-gradient cosines per block along training, MDM and ARM (chapter 3).

    Called with no arguments it retrains chapter 1's runs with the alignment hook (not cached).
    """
    traces = traces or alignment_traces()
    steps = traces["mdm"].steps
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.6), sharex=True, sharey=True)
    for row, measure in enumerate(("fact", "mean")):
        for col, block in enumerate(("ov_product", "qk", "all")):
            ax = axes[row, col]
            for kind in ("ar", "mdm"):
                plot.band(ax, steps, traces[kind][measure, block], plot.COLORS[kind], "-", plot.LABELS[kind])
            ax.axhline(0, color="0.3", lw=0.8)
            ax.set_title({"ov_product": "OV product M", "qk": "QK (W_Q, W_K)", "all": "all parameters"}[block])
        axes[row, 0].set_ylabel({"fact": "cosine, same fact", "mean": "cosine, averaged gradients"}[measure])
    for ax in axes[1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend(loc="lower left")
    fig.tight_layout()
    return fig


@register("align-first-order")
def align_first_order(fo: dict | None = None, etas=None):
    """One gradient step at initialisation: measured change of ℓ_b2a against the first- and
    second-order predictions, and the error of the first-order one (chapter 3)."""
    etas = ALIGN_ETAS if etas is None else etas
    fo = fo or first_order_tests(etas=etas)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    f = fo["mdm", "infill"]
    plot.band(axes[0], etas, f.measured / f.predicted, plot.COLORS["mdm"], "-", "measured")
    plot.band(axes[0], etas, f.second_order / f.predicted, "0.2", ":", "second-order prediction")
    axes[0].axhline(1, color="0.2", ls="--", lw=1.2, label="first-order prediction")
    axes[0].axhline(0, color="0.3", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].set_ylim(-0.6, 1.4)
    axes[0].set_xlabel("step size η")
    axes[0].set_ylabel("change of ℓ_b2a / first-order prediction")
    axes[0].set_title("MDM, one step on ℓ_infill")
    axes[0].legend(loc="center left")
    for (kind, step), f in fo.items():
        plot.band(axes[1], etas, f.relative_error, plot.COLORS[kind], "-" if step != "objective" else ":",
                  f"{plot.LABELS[kind]}, step on {step}")
    axes[1].axhline(0.1, **plot.CHANCE_STYLE, label="10 %")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step size η")
    axes[1].set_ylabel("|measured − predicted| / |predicted|")
    axes[1].set_title("error of the first-order prediction")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


@register("align-mixture")
def align_mixture(ov: dict | None = None):
    """The OV mixture factor against the product of the two routes' attention on b_i, MDM (chapter 3)."""
    ov = ov or ov_identities()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, when in zip(axes, ("init", "trained")):
        o = ov["mdm", when]
        both, corr = mixture_attention(o)
        ax.scatter(both.ravel(), o.mixture_factor.ravel(), s=6, color=plot.COLORS["mdm"], alpha=0.5, linewidths=0)
        ax.set_xlabel("α_infill(→b) · α_b2a(→b)")
        ax.set_ylabel("mixture factor")
        ax.set_title(f"MDM, {when}: correlation {corr:.2f}")
    fig.tight_layout()
    return fig


def save_all(out: str | Path, names: list[str] | None = None) -> list[Path]:
    """Draw every registered figure (or ``names``) and write NAME.png and NAME.svg into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot.use_style()
    written = []
    for name in names or list(REGISTRY):
        fig = REGISTRY[name]()
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
            written.append(path)
        plt.close(fig)
    return written
