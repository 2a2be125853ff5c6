"""Chapter 1, the reversal curse: its experiments (recipes), figures and tables.

Every recipe returns what the chapter shows and trains through the cache; the notebook, the CLI
(``python -m revlib figures`` / ``tables``) and the landing page call the same functions.
"""
from __future__ import annotations

import numpy as np

from ..cache import cached_train
from ..config import preset
from ..sweep import sweep
from . import plot
from .registry import figure, table
from .seeds import SEEDS, WORLD_SEED
from .tables import Table, mean_sd, spread

KINDS = ("ar", "mdm")
POSITIONALS = ("rope", "absolute", "alibi", "none")
ZHU = dict(n_pairs=200, reversed_fraction=0.7, vocab_size=800, relations="inverse", eval_every=10)


def experiment(kind: str, **overrides):
    """The chapter's experiment for ``kind`` ("ar" or "mdm") on the book's world."""
    return preset(kind, seed=WORLD_SEED, **overrides)


def runs(**overrides) -> dict:
    """The chapter-1 models: the ARM and the MDM at the default preset, eight seeds each (cached)."""
    return {kind: cached_train(experiment(kind, **overrides), SEEDS) for kind in KINDS}


def zhu_runs() -> dict:
    """Zhu et al.'s split: V = 800, 200 pairs, 140 trained both ways ("a is b" and "b rev a"), eight seeds."""
    return {kind: cached_train(experiment(kind, **ZHU), SEEDS) for kind in KINDS}


def robustness() -> dict:
    """The curse across positional encodings and sizes: ``{(kind, axis, value): sweep Row}``."""
    rows = {}
    for kind in KINDS:
        base = experiment(kind)
        for axis, values in (("positional", POSITIONALS), ("n_pairs", (64, 128, 256)), ("d_model", (16, 32, 64))):
            for r in sweep(base, {axis: list(values)}, SEEDS):
                rows[kind, axis, r.values[axis]] = r
    return rows


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def probe_table(finals: dict, chance: float, probes=("a2b", "infill", "b2a")) -> Table:
    """Accuracy and loss of the right answer per model and probe, mean ± sd [min, max] over seeds."""
    rows, data = [], {}
    for kind, final in finals.items():
        for probe in probes:
            m = final.get(probe)
            if m is None:
                rows.append([plot.LABELS.get(kind, kind), probe, "n/a", "n/a", "n/a"])
                continue
            p = np.asarray(m["p_correct"], dtype=float)
            rows.append([plot.LABELS.get(kind, kind), probe, spread(m["acc"]), mean_sd(m["nll"], 2),
                         f"{p.mean() / chance:.3g}"])
            data[f"{kind}/{probe}"] = {k: np.asarray(v).tolist() for k, v in m.items()}
    return Table(["model", "probe", "accuracy [min, max]", "loss (nats)", "p / chance"], rows,
                 caption=f"{len(next(iter(finals.values()))['a2b']['acc'])} seeds; chance 1/V = {chance:.4f}, "
                         f"its loss {-np.log(chance):.2f} nats", data=data)


@table("ch1-probes")
def probes_table(r: dict | None = None) -> Table:
    r = r or runs()
    return probe_table({k: v.final for k, v in r.items()}, r["mdm"].world.chance)


@table("ch1-robustness")
def robustness_table(rows: dict | None = None) -> Table:
    """a2b and b2a accuracy and the b2a loss for every setting of :func:`robustness`, with failures."""
    rows = rows or robustness()
    out, data = [], []
    for (kind, axis, value), r in rows.items():
        p = r.summary["probes"]
        out.append([plot.LABELS[kind], f"{axis} = {value}", f"{p['a2b']['acc']['mean']:.2f} [{p['a2b']['acc']['min']:.2f}, "
                    f"{p['a2b']['acc']['max']:.2f}]", f"{p['b2a']['acc']['mean']:.2f} [{p['b2a']['acc']['min']:.2f}, "
                    f"{p['b2a']['acc']['max']:.2f}]", f"{p['b2a']['nll']['mean']:.1f}",
                    f"{r.summary['failed']} of {r.summary['n_seeds']}"])
        data.append({"kind": kind, axis: value, **r.to_json()})
    return Table(["model", "setting", "a2b acc [min, max]", "b2a acc [min, max]", "b2a loss (nats)",
                  "seeds that did not learn a2b"], out,
                 caption="8 seeds per row; the other settings at the default (RoPE, 128 pairs, d_model 32, "
                         "300 steps); 'did not learn' = a2b (MDM: or infill) accuracy below 0.9", data=data)


@table("ch1-zhu")
def zhu_table(z: dict | None = None) -> Table:
    z = z or zhu_runs()
    return probe_table({k: v.final for k, v in z.items()}, z["mdm"].world.chance, probes=("a2b", "b2a", "swap"))


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

@figure("curse-headline")
def headline(r: dict | None = None):
    """The landing page's figure: a2b and b2a accuracy, ARM vs MDM, one dot per seed."""
    r = r or runs()
    fig, axes = plot.figure(1, height=2.7)
    plot.probe_bars({k: v.final for k, v in r.items()}, r["mdm"].world.chance, ax=axes[0, 0], probes=("a2b", "b2a"))
    axes[0, 0].set_title("Trained on 'a is b' only: who answers 'b is ?'")
    return fig


@figure("curse-probes")
def probes_figure(r: dict | None = None):
    """(a) accuracy and (b) loss of the right answer per probe, ARM vs MDM (chapter 1)."""
    r = r or runs()
    finals, chance = {k: v.final for k, v in r.items()}, r["mdm"].world.chance
    fig, axes = plot.figure(2, height=3.1)
    plot.probe_bars(finals, chance, metric="acc", ax=axes[0, 0])
    plot.probe_bars(finals, chance, metric="nll", ax=axes[0, 1])
    axes[0, 1].legend().remove()
    for ax, name in zip(axes[0], "ab"):
        plot.letter(ax, name)
        ax.tick_params(axis="x", labelsize=8)
    return fig


@figure("curse-curves")
def curves_figure(r: dict | None = None):
    """(a) accuracy and (b) loss of the right answer along training, a2b and b2a, ARM vs MDM."""
    r = r or runs()
    histories, chance = {k: v.history for k, v in r.items()}, r["mdm"].world.chance
    fig, axes = plot.figure(2, height=3.0)
    plot.training_curves(histories, "acc", probes=("a2b", "b2a"), ax=axes[0, 0])
    plot.training_curves(histories, "nll", probes=("a2b", "b2a"), chance=chance, ax=axes[0, 1])
    axes[0, 0].legend(loc="center right", fontsize=8)
    for ax, name in zip(axes[0], "ab"):
        plot.letter(ax, name)
    return fig


@figure("curse-zhu")
def zhu_figure(z: dict | None = None):
    """Training loss and the held-out b2a and swap losses on Zhu et al.'s split, ARM (a) and MDM (b)."""
    z = z or zhu_runs()
    log_v = np.log(z["mdm"].world.vocab_size)
    fig, axes = plot.figure(2, height=3.0)
    for ax, kind, name in zip(axes[0], KINDS, "ab"):
        h = z[kind].history
        c = plot.COLORS[kind]
        plot.band(ax, h["step"], h["loss"], c, "-", "training loss", marker="o", markevery=5)
        plot.band(ax, h["step"], h["b2a_nll"], c, "--", "b2a: b rev [M]", marker="^", markevery=5)
        plot.band(ax, h["step"], h["swap_nll"], "0.4", "-.", "swap: b is [M]", marker="x", markevery=5)
        ax.axhline(log_v, **plot.CHANCE_STYLE, label=r"chance, $\log V$")
        ax.set_xlabel("training step")
        ax.set_title(plot.LABELS[kind])
        plot.letter(ax, name)
    axes[0, 0].set_ylabel("loss (nats)")
    axes[0, 1].legend(loc="upper right", fontsize=8)
    return fig


@figure("curse-robustness")
def robustness_figure(rows: dict | None = None):
    """b2a accuracy of every seed of every setting of :func:`robustness`, ARM (orange) and MDM (green)."""
    rows = rows or robustness()
    fig, axes = plot.figure(1, height=3.0)
    ax = axes[0, 0]
    labels = []
    settings = [(axis, value) for (kind, axis, value) in rows if kind == "mdm"]
    for i, (axis, value) in enumerate(settings):
        labels.append(f"{value}" if axis == "positional" else f"{axis.replace('n_', '').replace('_', ' ')}\n{value}")
        for j, kind in enumerate(KINDS):
            run = rows[kind, axis, value].run
            acc = run.final["b2a"]["acc"]
            x = i + (j - 0.5) * 0.36
            plot.seed_bars(ax, x, acc, plot.COLORS[kind], 0.34, label=plot.LABELS[kind] if i == 0 else None)
            bad = run.failed
            if bad.any():
                ax.scatter(np.full(bad.sum(), x), acc[bad], s=30, facecolors="none", edgecolors="red", lw=1,
                           zorder=4, label="did not learn a2b" if i == 0 and j == 0 else None)
    ax.set_xticks(range(len(settings)), labels, fontsize=8)
    ax.set_ylabel("b2a accuracy")
    ax.set_ylim(0, 1.08)
    ax.legend(loc="center right", fontsize=8)
    return fig
