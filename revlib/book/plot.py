"""One look for every figure of the book.

Sizes are set for the page: the book's text column is about 720 CSS pixels wide, and figures
are drawn 6.6 inches wide at 110 dpi, so they are shown at (or near) their natural size and a
10-point label reads as about 15 pixels. The objectives always have the same colours (the ARM,
``ar``, orange; the MDM, ``mdm``, green; ``suffix`` purple); ``a2b`` is solid, ``infill``
dotted, ``b2a`` dashed, ``swap`` dash-dotted, each with its own marker. Functions take data and
an ``ax=``, draw, and return the Axes; they compute no metrics and never call ``plt.show()``.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

COLORS = {"ar": "#d95f02", "mdm": "#1b9e77", "suffix": "#7570b3"}
LABELS = {"ar": "ARM", "mdm": "MDM", "suffix": "suffix"}
LINESTYLES = {"a2b": "-", "infill": ":", "b2a": "--", "swap": "-."}
MARKERS = {"a2b": "o", "infill": "s", "b2a": "^", "swap": "x"}
PROBE_LABELS = {"a2b": "a2b (a is ?)", "infill": "infill (? is b)", "b2a": "b2a (b is ?)", "swap": "swap"}
CHANCE_STYLE = dict(color="0.35", lw=1, ls=(0, (1, 2)))
WIDTH = 6.6  # inches: the text column at 110 dpi

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "figure.figsize": (WIDTH, 3.4),
    "figure.constrained_layout.use": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.titlesize": 10.5,
    "axes.titleweight": "normal",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "font.size": 10,
    "lines.markersize": 4.5,
    "svg.hashsalt": "revlib",  # deterministic SVG ids: no random or time-stamped content
}


def use_style() -> None:
    """Apply the book's matplotlib style (call once per notebook or script)."""
    mpl.rcParams.update(STYLE)


def figure(ncols: int = 1, nrows: int = 1, height: float = 3.0, **kwargs):
    """A figure of the page's width with ``nrows`` x ``ncols`` axes (``height`` per row, inches)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, height * nrows), squeeze=False, **kwargs)
    return fig, axes


def letter(ax, text: str) -> None:
    """A panel letter ("a", "b", ...) in the top left corner, which captions refer to."""
    ax.set_title(f"({text})", loc="left", fontweight="bold", fontsize=10)


def band(ax, x, values, color, ls="-", label=None, marker=None, markevery=None):
    """Mean over seeds as a line, min-max over seeds as a shaded band. ``values`` (n, K)."""
    values = np.asarray(values, dtype=float)
    ax.plot(x, values.mean(axis=1), color=color, ls=ls, lw=1.6, label=label, marker=marker,
            markevery=markevery, markersize=4)
    if values.shape[1] > 1:
        ax.fill_between(x, values.min(axis=1), values.max(axis=1), color=color, alpha=0.15, lw=0)
    return ax


def seed_bars(ax, x, values, color, width, hatch=None, label=None, filled=True):
    """One bar at the mean over seeds, a dot per seed on it. ``values`` (K,)."""
    values = np.asarray(values, dtype=float)
    ax.bar(x, values.mean(), width, color=color if filled else "white", edgecolor=color, hatch=hatch,
           alpha=0.85, label=label, lw=1)
    jitter = np.linspace(-0.25, 0.25, values.size) * width if values.size > 1 else np.zeros(1)
    ax.scatter(x + jitter, values, s=7, color="black", zorder=3, linewidths=0)
    return ax


def probe_bars(finals: dict, chance: float, metric: str = "acc", ax=None, probes=("a2b", "infill", "b2a")):
    """Grouped bars: one group per probe, one bar per model kind (mean over seeds, a dot per seed).

    ``finals`` maps "ar"/"mdm"/... to ``Run.final``-like dicts (probe -> {metric: array (K,)}
    or None). A dotted line marks chance; a missing probe (the ARM's ``infill``) is marked
    "n/a". ``metric="nll"`` draws the loss in nats with chance at -log(chance).
    """
    ax = plt.gca() if ax is None else ax
    kinds = list(finals)
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        for j, probe in enumerate(probes):
            x = j + (i - (len(kinds) - 1) / 2) * width
            m = finals[kind].get(probe)
            if m is None:
                ax.text(x, 0.04, "n/a", ha="center", va="bottom", fontsize=8, color=COLORS.get(kind, "0.3"),
                        transform=ax.get_xaxis_transform())
                continue
            values = np.asarray(m[metric], dtype=float)
            seed_bars(ax, x, values, COLORS.get(kind, "0.3"), width * 0.9, label=LABELS.get(kind, kind) if j == 0 else None)
            text = f"{values.mean():.2f}" if metric == "acc" else f"{values.mean():.1f}"
            ax.text(x, values.mean(), text, ha="center", va="bottom", fontsize=8)
    if metric == "acc":
        ax.axhline(chance, **CHANCE_STYLE, label="chance")
        ax.set_ylim(0, 1.32)  # headroom: the legend sits above the bars and their value labels
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_ylabel("accuracy")
    else:
        ax.axhline(-np.log(chance), **CHANCE_STYLE, label=r"chance, $-\log(1/V)$")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
        ax.set_ylabel("loss of the right answer (nats)")
    ax.set_xticks(range(len(probes)), [PROBE_LABELS[p] for p in probes])
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    return ax


def training_curves(histories: dict, metric: str = "acc", probes=("a2b", "b2a"), chance: float | None = None,
                    ax=None, log: bool = False):
    """Probe ``metric`` ("acc", "p_correct", "nll") against step, per kind and probe (mean, min-max band).

    ``histories`` maps "ar"/"mdm" to ``Run.history`` dicts.
    """
    ax = plt.gca() if ax is None else ax
    for kind, h in histories.items():
        for probe in probes:
            key = f"{probe}_{metric}"
            if key in h:
                band(ax, h["step"], h[key], COLORS.get(kind, "0.3"), LINESTYLES[probe], f"{LABELS.get(kind, kind)} {probe}",
                     marker=MARKERS[probe], markevery=max(1, len(h["step"]) // 6))
    if chance is not None:
        y = chance if metric != "nll" else -np.log(chance)
        ax.axhline(y, **CHANCE_STYLE, label="chance")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel({"acc": "accuracy", "p_correct": "p(right answer)", "nll": "loss of the right answer (nats)"}[metric])
    return ax
