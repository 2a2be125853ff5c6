"""Chapter 1, the reversal curse: its tables and figures (the experiments are revlib.recipes.ch1)."""
from __future__ import annotations

import numpy as np

from ..sweep import Sweep
from . import plot
from .registry import figure, table
from .tables import Table, mean_sd, seeds_text, setting_text, spread

KINDS = ("ar", "mdm")


def finals(s: Sweep) -> dict:
    """``{kind: run.final}`` of a sweep over ``objective`` (the ARM and the MDM)."""
    return {c.values["objective"]: c.run.final for c in s}


def probe_table(s: Sweep, probes=("a2b", "infill", "b2a")) -> Table:
    """Accuracy and loss of the right answer per model and probe, mean ± sd [min, max] over seeds."""
    rows, data = [], {}
    chance = s.cells[0].run.world.chance
    for c in s:
        kind = c.values["objective"]
        for probe in probes:
            m = c.run.final.get(probe)
            if m is None:
                rows.append([plot.LABELS.get(kind, kind), probe, "n/a", "n/a", "n/a"])
                continue
            p = np.asarray(m["p_correct"], dtype=float)
            rows.append([plot.LABELS.get(kind, kind), probe, spread(m["acc"]), mean_sd(m["nll"], 2),
                         f"{p.mean() / chance:.3g}"])
            data[f"{kind}/{probe}"] = {k: np.asarray(v).tolist() for k, v in m.items()}
    return Table(["model", "probe", "accuracy [min, max]", "loss (nats)", "p / chance"], rows,
                 caption=f"{seeds_text(s.seeds)}; {setting_text(s.base)}; chance 1/V = {chance:.4f}, "
                         f"its loss {-np.log(chance):.2f} nats; p / chance: the probability the model gives "
                         f"the right answer, mean over facts and seeds, over 1/V (1: a uniform guess)", data=data)


@table("ch1-probes", "ch1")
def probes_table(r: dict) -> Table:
    return probe_table(r["models"])


def robustness_table(s: Sweep) -> Table:
    """a2b and b2a accuracy and the b2a loss for every setting of the robustness sweep, with failures."""
    out, data = [], []
    for c in s:
        kind, f = c.values["objective"], c.run.final
        out.append([plot.LABELS[kind], c.values["variant"].replace("=", " = "),
                    f"{f['a2b']['acc'].mean():.2f} [{f['a2b']['acc'].min():.2f}, {f['a2b']['acc'].max():.2f}]",
                    f"{f['b2a']['acc'].mean():.2f} [{f['b2a']['acc'].min():.2f}, {f['b2a']['acc'].max():.2f}]",
                    f"{f['b2a']['nll'].mean():.1f}", f"{int(c.failed.sum())} of {len(s.seeds)}"])
    data = s.to_json()
    return Table(["model", "setting", "a2b acc [min, max]", "b2a acc [min, max]", "b2a loss (nats)",
                  "seeds that did not learn a2b"], out,
                 caption=f"{seeds_text(s.seeds)} per row; the other settings at the default ({setting_text(s.base)}); "
                         "'did not learn' = a2b (MDM: or infill) accuracy below 0.9", data=data)


@table("ch1-robustness", "ch1")
def _robustness_table(r: dict) -> Table:
    return robustness_table(r["robustness"])


@table("ch1-zhu", "ch1")
def zhu_table(r: dict) -> Table:
    return probe_table(r["zhu"], probes=("a2b", "b2a", "swap"))


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def headline(s: Sweep):
    """The landing page's figure: a2b and b2a accuracy, ARM vs MDM, one dot per seed."""
    fig, axes = plot.figure(1, height=2.7)
    plot.probe_bars(finals(s), s.cells[0].run.world.chance, ax=axes[0, 0], probes=("a2b", "b2a"))
    axes[0, 0].set_title("Trained on 'a is b' only: who answers 'b is ?'")
    return fig


@figure("curse-headline", "ch1")
def _headline(r: dict):
    return headline(r["models"])


def probes_figure(s: Sweep):
    """(a) accuracy and (b) loss of the right answer per probe, ARM vs MDM (chapter 1)."""
    f, chance = finals(s), s.cells[0].run.world.chance
    fig, axes = plot.figure(2, height=3.1)
    plot.probe_bars(f, chance, metric="acc", ax=axes[0, 0])
    plot.probe_bars(f, chance, metric="nll", ax=axes[0, 1])
    axes[0, 1].legend().remove()
    for ax, name in zip(axes[0], "ab"):
        plot.letter(ax, name)
        ax.tick_params(axis="x", labelsize=8)
    return fig


@figure("curse-probes", "ch1")
def _probes_figure(r: dict):
    return probes_figure(r["models"])


def curves_figure(s: Sweep):
    """(a) accuracy and (b) loss of the right answer along training, a2b and b2a, ARM vs MDM."""
    histories = {c.values["objective"]: c.run.history for c in s}
    fig, axes = plot.figure(2, height=3.0)
    plot.training_curves(histories, "acc", probes=("a2b", "b2a"), ax=axes[0, 0])
    plot.training_curves(histories, "nll", probes=("a2b", "b2a"), chance=s.cells[0].run.world.chance, ax=axes[0, 1])
    axes[0, 0].legend(loc="center right", fontsize=8)
    for ax, name in zip(axes[0], "ab"):
        plot.letter(ax, name)
    return fig


@figure("curse-curves", "ch1")
def _curves_figure(r: dict):
    return curves_figure(r["models"])


def zhu_figure(s: Sweep):
    """Training loss and the held-out b2a and swap losses on Zhu et al.'s split, ARM (a) and MDM (b)."""
    log_v = np.log(s.cells[0].run.world.vocab_size)
    fig, axes = plot.figure(2, height=3.0)
    for ax, kind, name in zip(axes[0], KINDS, "ab"):
        h = s.run(objective=kind).history
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


@figure("curse-zhu", "ch1")
def _zhu_figure(r: dict):
    return zhu_figure(r["zhu"])


def robustness_figure(s: Sweep):
    """b2a accuracy of every seed of every setting of the robustness sweep, ARM and MDM."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, axes = plot.figure(1, height=3.2)
    ax = axes[0, 0]
    variants = list(s.axes["variant"])
    labels, any_failed = [], False
    for i, variant in enumerate(variants):
        axis, value = variant.split("=")
        labels.append(value if axis == "positional" else f"{axis.replace('n_', '').replace('_', ' ')}\n{value}")
        for j, kind in enumerate(KINDS):
            c = s.cell(variant=variant, objective=kind)
            acc = c.run.final["b2a"]["acc"]
            x = i + (j - 0.5) * 0.36
            plot.seed_bars(ax, x, acc, plot.COLORS[kind], 0.34)
            if acc.mean() < 0.02:  # a bar at zero cannot be seen: mark where it stands
                ax.plot([x - 0.17, x + 0.17], [0.004, 0.004], color=plot.COLORS[kind], lw=3, zorder=2)
            bad = c.failed
            if bad.any():
                any_failed = True
                ax.scatter(np.full(bad.sum(), x), acc[bad], s=30, facecolors="none", edgecolors="red", lw=1, zorder=4)
    ax.set_xticks(range(len(variants)), labels, fontsize=8)
    ax.set_ylabel("b2a accuracy")
    ax.set_ylim(0, 1.08)
    handles = [Patch(color=plot.COLORS[k], label=plot.LABELS[k]) for k in KINDS]
    if any_failed:
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="red",
                              label="seed that did not learn the trained direction"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), fontsize=8,
              frameon=False)
    return fig


@figure("curse-robustness", "ch1")
def _robustness_figure(r: dict):
    return robustness_figure(r["robustness"])


def explorer_frame(run_ar, run_mdm, step_index: int, title: str):
    """One frame of chapter 1's explorer: the ARM's and the MDM's probe accuracy at one checkpoint
    of their histories (mean over seeds, a dot per seed)."""
    f = {}
    for kind, run in (("ar", run_ar), ("mdm", run_mdm)):
        h = run.history
        f[kind] = {p: ({"acc": h[f"{p}_acc"][step_index]} if f"{p}_acc" in h else None) for p in ("a2b", "infill", "b2a")}
    fig, axes = plot.figure(1, height=2.6)
    plot.probe_bars(f, run_mdm.world.chance, ax=axes[0, 0])
    axes[0, 0].set_title(title, fontsize=9.5)
    return fig


# ---------------------------------------------------------------------------------------------
# captions (the notebooks' figure metadata says the same; tests/test_notebooks.py checks it)
# ---------------------------------------------------------------------------------------------

from .nb import caption  # noqa: E402

caption("fig-headline",
        "One-layer models trained on facts written one way only (\"a is b\"), one dot per seed. Both answer the "
        "trained direction `a2b`; only the MDM answers the reversed query `b2a`. Computed when this page was built; "
        "chapter 1 takes it apart.",
        "Bar chart: the ARM and the MDM both score near 1 on a2b; on b2a the ARM scores 0 and the MDM near 1.")
caption("fig-curse-probes",
        "Accuracy (a) and loss of the right answer (b) of the ARM and the MDM on the three probes, after training "
        "on one-direction facts. Bars: mean over seeds; dots: single seeds; dotted line: chance (for the loss, "
        "$\\log V$). The ARM has no `infill` answer.",
        "Two bar charts. Accuracy: both models near 1 on a2b, the MDM near 1 on infill and b2a, the ARM 0 on b2a. "
        "Loss: the ARM's b2a loss lies far above the chance line, the MDM's near zero.")
caption("fig-curse-curves",
        "Accuracy (a) and loss of the right answer (b) during training; solid `a2b`, dashed `b2a`; lines are means "
        "over seeds, bands span them; dotted: chance.",
        "Training curves: both models learn a2b within a few dozen steps; the MDM's b2a accuracy rises with it while "
        "the ARM's b2a loss climbs above chance.")
caption("fig-curse-robustness",
        "`b2a` accuracy of every seed (dots) in every setting of the table, mean as a bar, ARM (orange) and MDM "
        "(green); the ARM's bars stand at zero in every setting. Red circles: seeds that did not learn the trained "
        "direction (`a2b`, for the MDM also `infill`, below 0.9).",
        "Bars per setting: the ARM's b2a is zero everywhere; the MDM's is near one except with learned absolute "
        "positions, where seeds scatter well below.")
caption("fig-curse-zhu",
        "Zhu et al.'s split (V = 800, 200 pairs, 140 trained both ways), ARM (a) and MDM (b). Solid: training loss; "
        "dashed: loss of `b2a` (\"b rev [M]\") on the 60 pairs never seen reversed; dash-dotted: `swap` "
        "(\"b is [M]\"); dotted: chance, $\\log V$. Means over seeds, bands span them.",
        "Two panels of loss curves: for the ARM the training loss falls to zero while the held-out b2a loss rises "
        "above chance; for the MDM both b2a and swap losses fall.")


def explorer(robustness: Sweep, steps=(0, 50, 100, 150, 200, 250, 300)):
    """The static explorer: probe accuracy of the ARM and the MDM for each positional encoding of
    the robustness sweep (one slider) at each training step (the other), read from the runs'
    histories (nothing is trained for it)."""
    from .explore import FrameExplorer

    variants = [v for v in robustness.axes["variant"] if v.startswith("positional=")]
    history_steps = list(robustness.cell(variant=variants[0], objective="mdm").run.history["step"])
    steps = [s for s in steps if s in history_steps]

    def draw(i, j):
        v = variants[i]
        ar, mdm = robustness.run(variant=v, objective="ar"), robustness.run(variant=v, objective="mdm")
        return explorer_frame(ar, mdm, history_steps.index(steps[j]),
                              f"{v.split('=')[1]} positions, after {steps[j]} of {history_steps[-1]} steps")

    return FrameExplorer("curse", {"positions": [v.split("=")[1] for v in variants], "training step": steps}, draw,
                         alt="Bar chart of the ARM's and the MDM's a2b, infill and b2a accuracy at the chosen "
                             "positional encoding and training step.",
                         note="Each setting's figure was drawn from the trained runs when this page was built; "
                              "move the sliders. In a live notebook the next cell retrains at any setting.")
