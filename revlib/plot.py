"""One look for every figure of the book.

The ARM and the MDM always have the same colours; ``a2b`` is solid, ``infill`` dotted and
``b2a`` dashed. Functions take data and an optional ``ax=``, draw, and return the Axes; they
compute no metrics and never call ``plt.show()``.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

COLORS = {"ar": "#d95f02", "mdm": "#1b9e77"}
LABELS = {"ar": "ARM", "mdm": "MDM"}
LINESTYLES = {"a2b": "-", "infill": ":", "b2a": "--"}
PROBE_LABELS = {"a2b": "a2b  (a is ?)", "infill": "infill  (? is b)", "b2a": "b2a  (b is ?)"}
CHANCE_STYLE = dict(color="0.35", lw=1, ls=(0, (1, 2)))

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "figure.figsize": (6.4, 3.6),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.size": 10,
    "svg.hashsalt": "revlib",  # deterministic SVG ids: no random or time-stamped content
}


def use_style() -> None:
    """Apply the book's matplotlib style (call once per notebook or script)."""
    mpl.rcParams.update(STYLE)


def _ax(ax):
    return plt.gca() if ax is None else ax


def probe_bars(finals: dict, chance: float, metric: str = "acc", ax=None, probes=("a2b", "infill", "b2a")):
    """Grouped bars: one group per probe, one bar per model kind, mean over seeds.

    ``finals`` maps "ar"/"mdm" to ``Run.final``-like dicts (probe -> {metric: array (K,)} or
    None). Dots mark the individual seeds; a dotted line marks chance. A missing probe (the
    ARM's infill) is labelled "n/a". ``metric="p_correct"`` uses a log axis.
    """
    ax = _ax(ax)
    kinds = list(finals)
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        for j, probe in enumerate(probes):
            x = j + (i - (len(kinds) - 1) / 2) * width
            m = finals[kind].get(probe)
            if m is None:
                ax.text(x, 0.5 if metric == "acc" else chance, "n/a", ha="center", va="bottom",
                        fontsize=8, color=COLORS[kind], transform=ax.get_xaxis_transform() if metric == "acc" else ax.transData)
                continue
            values = np.asarray(m[metric], dtype=float)
            ax.bar(x, values.mean(), width * 0.9, color=COLORS[kind], alpha=0.85,
                   label=LABELS[kind] if j == 0 else None)
            text = f"{values.mean():.2f}" if metric == "acc" else f"{values.mean():.1g}"
            y = values.mean() + 0.02 if metric == "acc" else values.mean() * 1.5
            ax.text(x, y, text, ha="center", va="bottom", fontsize=8)
            ax.scatter(np.full(values.shape, x), values, s=8, color="black", zorder=3, linewidths=0)
    ax.axhline(chance, **CHANCE_STYLE, label="chance 1/V")
    ax.set_xticks(range(len(probes)), [PROBE_LABELS[p] for p in probes])
    if metric == "p_correct":
        ax.set_yscale("log")
        ax.set_ylabel("p(right answer)")
    else:
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy (argmax over V)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)  # below: bars fill the top
    return ax


def band(ax, x, values, color, ls="-", label=None):
    """Mean over seeds as a line, min-max over seeds as a shaded band. ``values`` (n, K)."""
    values = np.asarray(values, dtype=float)
    ax.plot(x, values.mean(axis=1), color=color, ls=ls, lw=1.8, label=label)
    if values.shape[1] > 1:
        ax.fill_between(x, values.min(axis=1), values.max(axis=1), color=color, alpha=0.15, lw=0)
    return ax


def training_curves(histories: dict, metric: str = "acc", probes=("a2b", "b2a"), chance: float | None = None,
                    ax=None, log: bool = False):
    """Probe ``metric`` ("acc", "p", "nll") against step, per kind and probe (mean, min-max band).

    ``histories`` maps "ar"/"mdm" to ``Run.history`` dicts.
    """
    ax = _ax(ax)
    for kind, h in histories.items():
        for probe in probes:
            key = f"{probe}_{metric}"
            if key in h:
                band(ax, h["step"], h[key], COLORS[kind], LINESTYLES[probe], f"{LABELS[kind]} {probe}")
    if chance is not None:
        ax.axhline(chance, **CHANCE_STYLE, label="chance 1/V" if metric != "nll" else "-log(1/V)")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel({"acc": "accuracy", "p": "p(right answer)", "nll": "probe loss  -log p"}[metric])
    ax.legend(loc="best", ncol=2)
    return ax


def loss_curves(histories: dict, ax=None):
    """Training loss against step per kind (mean and min-max band over seeds)."""
    ax = _ax(ax)
    for kind, h in histories.items():
        band(ax, h["step"], h["loss"], COLORS[kind], "-", f"{LABELS[kind]} training loss")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.legend(loc="best")
    return ax
