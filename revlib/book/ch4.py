"""Chapter 4, objective or architecture: its tables and figures (the experiments are revlib.recipes.ch4)."""
from __future__ import annotations

import textwrap

import numpy as np

from ..sweep import Sweep
from . import plot
from .registry import figure, table
from .tables import Table, mean_sd, seeds_text, setting_text

PROBES = ("a2b", "infill", "b2a")


def _cell(values, digits: int = 2) -> str:
    if values is None:
        return "n/a"
    v = np.asarray(values, dtype=float)
    return mean_sd(v, digits)


def grid_table(s: Sweep, k: int = 1) -> Table:
    out = []
    for c in s:
        o, a = c.values["objective"], c.values["attention"]
        if c.refused:
            out.append([o, a, "refused", "", "", ""])
            continue
        cells = []
        for n in PROBES:
            acc, nll = c.quantity(n), c.quantity(n, "nll")
            cells.append("n/a" if acc is None else f"{_cell(acc)} ({_cell(nll, 1)} nats)")
        out.append([o, a] + cells + [f"{int(c.failed.sum())}"])
    what = "one-token facts, the one-layer toy" if k == 1 else f"two-token facts, a llada_like block ({setting_text(s.base)})"
    return Table(["objective", "attention", "a2b acc (loss)", "infill acc (loss)", "b2a acc (loss)", "failed"], out,
                 caption=f"{what}; mean ± sd over {seeds_text(s.seeds)}; failed: seeds below 0.9 on what they were "
                         "trained on; ar with bidirectional attention is refused (every position would see the token "
                         "it predicts)", stack_ranges=True)


@table("ch4-grid", "ch4")
def _grid_table(r: dict) -> Table:
    return grid_table(r["grid"], 1)


@table("ch4-grid-k2", "ch4")
def _grid_table_k2(r: dict) -> Table:
    return grid_table(r["grid_k2"], 2)


def ingredients_table(s: Sweep) -> Table:
    rows = [[c.values["objective"], c.values["attention"], mean_sd(c.measured["weight_b2a"]),
             mean_sd(c.measured["evidence"], 1), mean_sd(c.measured["evidence_a2b"], 1)] for c in s if not c.refused]
    return Table(["objective", "attention", "b2a: weight on b", "evidence b ⇒ a", "evidence a ⇒ b"], rows,
                 caption=f"the one-token grid's trained models, mean over facts, mean ± sd over {seeds_text(s.seeds)}; "
                         "evidence: u_a W E[b] (b2a reads it) and u_b W E[a] (a2b reads it), in logits")


@table("ch4-ingredients", "ch4")
def _ingredients_table(r: dict) -> Table:
    return ingredients_table(r["grid"])


def order_table(s: Sweep) -> Table:
    out = []
    for c in s:
        b, w = c.quantity("b2a"), c.quantity("swap")
        out.append([c.values["variant"], _cell(c.quantity("a2b")), _cell(b), _cell(w), f"{b.mean() - w.mean():+.2f}"])
    return Table(["model", "a2b acc", "b2a: b rev [M] (true)", "swap: b is [M] (false)", "b2a − swap"], out,
                 caption=f"'a is b' for every pair, 'b rev a' for half of them; probes on the other half; {seeds_text(s.seeds)}")


@table("ch4-order", "ch4")
def _order_table(r: dict) -> Table:
    return order_table(r["order"])


def interventions_table(s: Sweep, interventions: dict) -> Table:
    """One row per intervention with the account's prediction; ``interventions`` maps each name to
    (overrides, prediction), as revlib.recipes.ch4 takes it."""
    out = []
    for c in s:
        name = c.values["variant"]
        prediction = interventions.get(name, (None, "(no prediction given)"))[1]
        out.append([name, prediction, _cell(c.quantity("infill")), _cell(c.quantity("b2a")), f"{int(c.failed.sum())}"])
    return Table(["intervention", "prediction of the paper's account", "infill acc", "b2a acc", "failed"], out,
                 caption=f"MDM, {setting_text(s.base)}, {seeds_text(s.seeds)} each", wrap=(1,))


@table("ch4-interventions", "ch4")
def _interventions_table(r: dict) -> Table:
    from ..recipes.ch4 import KNOBS

    return interventions_table(r["interventions"], KNOBS["interventions"])


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def _heat(ax, s: Sweep, title: str):
    cells = list(s)
    values = np.full((len(cells), len(PROBES)), np.nan)
    for i, c in enumerate(cells):
        if c.refused:
            continue
        for j, n in enumerate(PROBES):
            v = c.quantity(n)
            if v is not None:
                values[i, j] = v.mean()
    im = ax.imshow(values, vmin=0, vmax=1, cmap="Greens", aspect="auto")
    for i, c in enumerate(cells):
        for j, n in enumerate(PROBES):
            if c.refused:
                text = "refused" if j == 1 else ""
            elif np.isnan(values[i, j]):
                text = "n/a"
            else:
                text = f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if not np.isnan(values[i, j]) and values[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(PROBES)), PROBES)
    ax.set_yticks(range(len(cells)), [f"{c.values['objective']}, {c.values['attention']}" for c in cells], fontsize=9)
    ax.set_title(title, loc="right", fontsize=9)
    ax.grid(False)
    return im


def grid_figure(g1: Sweep, g2: Sweep):
    """Accuracy of every objective x attention cell (mean over seeds), (a) one-token facts,
    (b) two-token facts."""
    fig, axes = plot.figure(2, height=3.8)
    _heat(axes[0, 0], g1, "one-token facts, one layer")
    im = _heat(axes[0, 1], g2, "two-token facts, llada_like")
    axes[0, 1].set_yticklabels([])
    fig.colorbar(im, ax=axes[0, 1], shrink=0.8, label="accuracy")
    plot.letter(axes[0, 0], "a")
    plot.letter(axes[0, 1], "b")
    return fig


@figure("controls-grid", "ch4")
def _grid_figure(r: dict):
    return grid_figure(r["grid"], r["grid_k2"])


def _key(ax, entries, **kwargs):
    """A legend of neutral patches: (label, hatch, filled) per entry, in no model's colour."""
    from matplotlib.patches import Patch
    handles = [Patch(facecolor="0.55" if filled else "white", edgecolor="0.3", hatch=hatch, label=label)
               for label, hatch, filled in entries]
    ax.legend(handles=handles, **kwargs)


def _wrap(label: str, width: int = 13) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def order_figure(s: Sweep):
    """Per model: the true converse (b2a) against the false one (swap), one dot per seed."""
    fig, axes = plot.figure(1, height=3.3)
    ax = axes[0, 0]
    for i, c in enumerate(s):
        color = plot.COLORS["ar"] if c.run.objective == "ar" else plot.COLORS["mdm"]
        plot.seed_bars(ax, i - 0.18, c.quantity("b2a"), color, 0.34)
        plot.seed_bars(ax, i + 0.18, c.quantity("swap"), color, 0.34, hatch="//", filled=False)
    ax.set_xticks(range(len(s)), [_wrap(c.values["variant"], 10) for c in s], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    _key(ax, [("b2a: b rev [M] (true converse)", None, True), ("swap: b is [M] (false converse)", "//", False)],
         loc="upper center", ncol=2, fontsize=8.5)
    return fig


@figure("controls-order", "ch4")
def _order_figure(r: dict):
    return order_figure(r["order"])


def interventions_figure(s: Sweep):
    """infill (hatched) and b2a accuracy of the MDM under each intervention, one dot per seed."""
    fig, axes = plot.figure(1, height=3.3)
    ax = axes[0, 0]
    c = plot.COLORS["mdm"]
    for i, cell in enumerate(s):
        plot.seed_bars(ax, i - 0.18, cell.quantity("infill"), c, 0.34, hatch="//", filled=False)
        plot.seed_bars(ax, i + 0.18, cell.quantity("b2a"), c, 0.34)
    ax.set_xticks(range(len(s)), [_wrap(cell.values["variant"]) for cell in s], fontsize=7.5)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    _key(ax, [("infill (trained)", "//", False), ("b2a (never trained)", None, True)],
         loc="upper center", ncol=2, fontsize=8.5)
    return fig


@figure("controls-interventions", "ch4")
def _interventions_figure(r: dict):
    return interventions_figure(r["interventions"])


def _dot_rows(ax, rows, title: str, second: str = "b2a"):
    """One row per model variant: infill (open circle) and ``second`` (filled) accuracy, mean over
    seeds with the seeds' range as a line; rows never overlap, so no variant hides another."""
    for i, (label, color, infill, other) in enumerate(rows):
        y = len(rows) - 1 - i
        for values, dy, filled in ((infill, 0.14, False), (other, -0.14, True)):
            if values is None:
                continue
            v = np.asarray(values, dtype=float)
            ax.plot([v.min(), v.max()], [y + dy, y + dy], color=color, lw=1.2, alpha=0.7)
            ax.plot([v.mean()], [y + dy], "o", color=color, mfc=color if filled else "white", ms=6, mew=1.3)
    ax.set_yticks(range(len(rows)), [label for label, *_ in rows][::-1], fontsize=8)
    ax.set_xlim(-0.04, 1.04)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_title(title, loc="right", fontsize=9)
    ax.grid(axis="y", visible=False)


def summary_figure(g1: Sweep, o: Sweep, iv: Sweep):
    """Every model variant of the chapter as small multiples: (a) the objective x attention grid and
    (b) the interventions, infill (open) and b2a (filled) accuracy; (c) the inverse-relation
    models, b2a (true converse, filled) against swap (false converse, open). Dots: mean over seeds;
    lines: the seeds' range."""
    fig, axes = plot.figure(1, nrows=3, height=2.0, gridspec_kw={"height_ratios": [len(g1) - 1, len(iv), len(o)]})
    grid_rows = [(f"{c.values['objective']}, {c.values['attention']}", plot.COLORS.get(c.values["objective"], "0.4"),
                  c.quantity("infill"), c.quantity("b2a")) for c in g1 if not c.refused]
    _dot_rows(axes[0, 0], grid_rows, "objective × attention (one-token facts)")
    iv_rows = [(_wrap(c.values["variant"], 34).replace("\n", " "), plot.COLORS["mdm"], c.quantity("infill"),
                c.quantity("b2a")) for c in iv]
    _dot_rows(axes[1, 0], iv_rows, "interventions on the one-layer MDM")
    order_rows = [(c.values["variant"], plot.COLORS["ar" if c.run.objective == "ar" else "mdm"], c.quantity("swap"),
                   c.quantity("b2a")) for c in o]
    _dot_rows(axes[2, 0], order_rows, "inverse relation: swap (open) against b2a (filled)")
    axes[2, 0].set_xlabel("accuracy")
    for ax, name in zip(axes[:, 0], "abc"):
        plot.letter(ax, name)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker="o", ls="", color="0.3", mfc="white", label="infill (c: swap)"),
               Line2D([], [], marker="o", ls="", color="0.3", label="b2a")]
    axes[0, 0].legend(handles=handles, loc="lower right", fontsize=8, ncol=2)
    return fig


@figure("controls-summary", "ch4")
def _summary_figure(r: dict):
    return summary_figure(r["grid"], r["order"], r["interventions"])


# ---------------------------------------------------------------------------------------------
# captions (the notebooks' figure metadata says the same; tests/test_notebooks.py checks it)
# ---------------------------------------------------------------------------------------------

from .nb import caption  # noqa: E402

caption("fig-controls-grid",
        "Accuracy (mean over seeds; the tables give the spread) of every objective × attention cell on the three "
        "probes: (a) one-token facts, the one-layer toy; (b) two-token facts, the `llada_like` block (two layers, "
        "RMSNorm, SwiGLU). `ar` + bidirectional is refused.",
        "Two heat maps of accuracy by objective, attention and probe: only mdm and prefix with bidirectional "
        "attention are dark in the b2a column.")
caption("fig-controls-order",
        "The true converse (`b2a`, filled) against the false one (`swap`, hatched) on held-out pairs, per model, "
        "one dot per seed.",
        "Bars per model: every MDM variant answers swap about as well as b2a; the ARM answers neither.")
caption("fig-controls-interventions",
        "`infill` (hatched) and `b2a` (filled) accuracy of the one-layer MDM under each intervention, one dot per "
        "seed.",
        "Bars per intervention: untied values drop b2a to zero while infill stays; frozen routes and the value-side "
        "projection keep b2a high.")
caption("fig-controls-summary",
        "Every model variant of this chapter, one row each, so that none hides another: (a) the objective × "
        "attention grid and (b) the interventions, `infill` (open) and `b2a` (filled) accuracy; (c) the "
        "inverse-relation models, `swap` (the false converse, open) and `b2a` (filled). Dots: mean over seeds; "
        "lines: the seeds' range.",
        "Three panels of dot rows. In (a) only mdm and prefix with bidirectional attention have b2a near infill; in "
        "(b) only untied values drop b2a to zero; in (c) swap sits next to b2a for every MDM.")
