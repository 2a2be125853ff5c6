"""Chapter 4, objective or architecture: the controls and interventions, their figures and tables."""
from __future__ import annotations

import numpy as np

from .. import coupling
from ..config import preset
from ..sweep import sweep
from . import ch1, plot
from .registry import figure, table
from .seeds import SEEDS, WORLD_SEED
from .tables import Table, mean_sd

OBJECTIVES = ("ar", "suffix", "prefix", "mdm")
ATTENTIONS = ("causal", "bidirectional")
PROBES = ("a2b", "infill", "b2a")
# Two-token entities need more than one attention-only layer (chapter 5): the grid at k = 2 uses
# a small LLaDA-style block, on 64 facts to stay affordable.
K2 = dict(entity_tokens=2, n_pairs=64, steps=400)
INVERSE = dict(relations="inverse", reversed_fraction=0.5)
ORDER_VARIANTS = {
    "ARM": ("ar", {}), "MDM (RoPE)": ("mdm", {}), "MDM, absolute": ("mdm", {"positional": "absolute"}),
    "MDM, ALiBi": ("mdm", {"positional": "alibi"}), "MDM, no positions": ("mdm", {"positional": "none"}),
    "MDM, 4 heads": ("mdm", {"n_heads": 4}), "MDM, 2 layers": ("mdm", {"n_layers": 2}),
    "MDM, 4 layers": ("mdm", {"n_layers": 4}),
}
INTERVENTIONS = {
    "none (the MDM)": {},
    "routes frozen at init": {"freeze": "qk"},
    "one W_V per position": {"untie_values": True},
    "value-side update ⊥ ∇ℓ_b2a": {"project_out": "b2a"},
    "whole update ⊥ ∇ℓ_b2a": {"project_out": "b2a-all"},
    "anti-correlated routes (base 1.5)": {"rope_base": 1.5},
    "base 1.5, infill only (prefix)": {"rope_base": 1.5, "objective": "prefix"},
}
PREDICTIONS = {
    "none (the MDM)": "b2a follows infill",
    "routes frozen at init": "the initial routes are already coupled: b2a stays close to infill",
    "one W_V per position": "b2a loses the evidence infill stored: it falls to chance",
    "value-side update ⊥ ∇ℓ_b2a": "if OV alignment carries the transfer, b2a stops improving",
    "whole update ⊥ ∇ℓ_b2a": "no first-order progress on b2a at all; b2a can move only at second order",
    "anti-correlated routes (base 1.5)": "if initial coupling is needed, b2a fails",
    "base 1.5, infill only (prefix)": "without a2b to route the b2a blank, b2a fails",
}


def grid_base(k: int):
    return ch1.experiment("mdm") if k == 1 else preset("llada_like", seed=WORLD_SEED, **K2)


def grid(k: int = 1) -> list:
    """Every objective x attention cell (ar + bidirectional refused) at ``k`` tokens per entity."""
    return sweep(grid_base(k), {"objective": list(OBJECTIVES), "attention": list(ATTENTIONS)}, SEEDS, skip_invalid=True)


def order() -> dict:
    """An inverse relation ("a is b", "b rev a" for half of the pairs): ``{variant: sweep Row}``."""
    out = {}
    for name, (kind, over) in ORDER_VARIANTS.items():
        out[name] = sweep(ch1.experiment(kind, **INVERSE), {k: [v] for k, v in over.items()} or {"objective": [kind]},
                          SEEDS)[0]
    return out


def interventions() -> dict:
    """The MDM with each intervention of ``INTERVENTIONS``: ``{name: sweep Row}``."""
    base = ch1.experiment("mdm")
    return {name: sweep(base, {k: [v] for k, v in over.items()} or {"objective": ["mdm"]}, SEEDS)[0]
            for name, over in INTERVENTIONS.items()}


def grid_ingredients(rows: list | None = None) -> dict:
    """Both ingredients of ``b2a``, measured on every trained cell of the grid (no training):
    ``{(objective, attention): {"route": (K,), "evidence": (K,), "evidence_a2b": (K,)}}``, where
    ``route`` is the b2a reading position's attention weight on b and ``evidence`` the stored
    u_a W E[b] (``evidence_a2b``: u_b W E[a], what a2b reads), means over facts, one layer."""
    rows = rows if rows is not None else grid(1)
    out = {}
    for r in rows:
        if r.refused:
            continue
        o, a = r.values["objective"], r.values["attention"]
        m = coupling.measure_coupling(r.run.model, r.run.world, o)
        out[o, a] = {"route": m["weight_b2a"], "evidence": m["evidence"], "evidence_a2b": m["evidence_a2b"]}
    return out


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def _cell(p: dict | None, metric: str = "acc", digits: int = 2) -> str:
    if p is None:
        return "n/a"
    return f"{p[metric]['mean']:.{digits}f} ± {p[metric]['sd']:.{digits}f}"


@table("ch4-grid")
def grid_table(rows: list | None = None, k: int = 1) -> Table:
    rows = rows if rows is not None else grid(k)
    out = []
    for r in rows:
        o, a = r.values["objective"], r.values["attention"]
        if r.refused:
            out.append([o, a, "refused", "", "", ""])
            continue
        p = r.summary["probes"]
        out.append([o, a] + [f"{_cell(p[n])} ({_cell(p[n], 'nll', 1)} nats)" if p[n] else "n/a" for n in PROBES]
                   + [f"{r.summary['failed']}"])
    return Table(["objective", "attention", "a2b acc (loss)", "infill acc (loss)", "b2a acc (loss)", "failed"], out,
                 caption=f"{'one-token facts, the one-layer toy' if k == 1 else 'two-token facts, a llada_like block, 64 facts'};"
                         " mean ± sd over 8 seeds; failed: seeds below 0.9 on what they were trained on; ar with"
                         " bidirectional attention is refused (every position would see the token it predicts)",
                 stack_ranges=True)


@table("ch4-grid-k2")
def grid_table_k2(rows: list | None = None) -> Table:
    return grid_table(rows, k=2)


@table("ch4-ingredients")
def ingredients_table(ing: dict | None = None) -> Table:
    ing = ing or grid_ingredients()
    rows = [[o, a, mean_sd(v["route"]), mean_sd(v["evidence"], 1), mean_sd(v["evidence_a2b"], 1)]
            for (o, a), v in ing.items()]
    return Table(["objective", "attention", "b2a: weight on b", "evidence b ⇒ a", "evidence a ⇒ b"], rows,
                 caption="the one-token grid's trained models, mean over facts, mean ± sd over 8 seeds; evidence: "
                         "u_a W E[b] (b2a reads it) and u_b W E[a] (a2b reads it), in logits")


@table("ch4-order")
def order_table(rows: dict | None = None) -> Table:
    rows = rows or order()
    out = []
    for name, r in rows.items():
        p = r.summary["probes"]
        out.append([name, _cell(p["a2b"]), _cell(p["b2a"]), _cell(p["swap"]),
                    f"{p['b2a']['acc']['mean'] - p['swap']['acc']['mean']:+.2f}"])
    return Table(["model", "a2b acc", "b2a: b rev [M] (true)", "swap: b is [M] (false)", "b2a − swap"], out,
                 caption="'a is b' for every pair, 'b rev a' for half of them; probes on the other half; 8 seeds")


@table("ch4-interventions")
def interventions_table(rows: dict | None = None) -> Table:
    rows = rows or interventions()
    out = []
    for name, r in rows.items():
        p = r.summary["probes"]
        out.append([name, PREDICTIONS[name], _cell(p["infill"]), _cell(p["b2a"]), f"{r.summary['failed']}"])
    return Table(["intervention", "prediction of the paper's account", "infill acc", "b2a acc", "failed"], out,
                 caption="MDM, one layer, RoPE, 8 seeds each", wrap=(1,))


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def _heat(ax, rows, title: str):
    cells = [r for r in rows]
    values = np.full((len(cells), len(PROBES)), np.nan)
    for i, r in enumerate(cells):
        if r.refused:
            continue
        for j, n in enumerate(PROBES):
            p = r.summary["probes"][n]
            if p is not None:
                values[i, j] = p["acc"]["mean"]
    im = ax.imshow(values, vmin=0, vmax=1, cmap="Greens", aspect="auto")
    for i, r in enumerate(cells):
        for j, n in enumerate(PROBES):
            if r.refused:
                text = "refused" if j == 1 else ""
            elif r.summary["probes"][n] is None:
                text = "n/a"
            else:
                p = r.summary["probes"][n]["acc"]
                text = f"{p['mean']:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if not np.isnan(values[i, j]) and values[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(PROBES)), PROBES)
    ax.set_yticks(range(len(cells)), [f"{r.values['objective']}, {r.values['attention']}" for r in cells], fontsize=9)
    ax.set_title(title, loc="right", fontsize=9)
    ax.grid(False)
    return im


@figure("controls-grid")
def grid_figure(g1: list | None = None, g2: list | None = None):
    """Accuracy of every objective x attention cell (mean over seeds), (a) one-token facts,
    (b) two-token facts."""
    g1 = g1 if g1 is not None else grid(1)
    g2 = g2 if g2 is not None else grid(2)
    fig, axes = plot.figure(2, height=3.8)
    _heat(axes[0, 0], g1, "one-token facts, one layer")
    im = _heat(axes[0, 1], g2, "two-token facts, llada_like")
    axes[0, 1].set_yticklabels([])
    fig.colorbar(im, ax=axes[0, 1], shrink=0.8, label="accuracy")
    plot.letter(axes[0, 0], "a")
    plot.letter(axes[0, 1], "b")
    return fig


def _key(ax, entries, **kwargs):
    """A legend of neutral patches: (label, hatch, filled) per entry, in no model's colour."""
    from matplotlib.patches import Patch
    handles = [Patch(facecolor="0.55" if filled else "white", edgecolor="0.3", hatch=hatch, label=label)
               for label, hatch, filled in entries]
    ax.legend(handles=handles, **kwargs)


@figure("controls-order")
def order_figure(rows: dict | None = None):
    """Per model: the true converse (b2a) against the false one (swap), one dot per seed."""
    rows = rows or order()
    fig, axes = plot.figure(1, height=3.3)
    ax = axes[0, 0]
    for i, (name, r) in enumerate(rows.items()):
        color = plot.COLORS["ar"] if name == "ARM" else plot.COLORS["mdm"]
        plot.seed_bars(ax, i - 0.18, r.run.final["b2a"]["acc"], color, 0.34)
        plot.seed_bars(ax, i + 0.18, r.run.final["swap"]["acc"], color, 0.34, hatch="//", filled=False)
    ax.set_xticks(range(len(rows)), [n.replace("MDM, ", "MDM\n").replace(" (RoPE)", "\n(RoPE)") for n in rows], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    _key(ax, [("b2a: b rev [M] (true converse)", None, True), ("swap: b is [M] (false converse)", "//", False)],
         loc="upper center", ncol=2, fontsize=8.5)
    return fig


@figure("controls-interventions")
def interventions_figure(rows: dict | None = None):
    """infill (hatched) and b2a accuracy of the MDM under each intervention, one dot per seed."""
    rows = rows or interventions()
    fig, axes = plot.figure(1, height=3.3)
    ax = axes[0, 0]
    c = plot.COLORS["mdm"]
    for i, (name, r) in enumerate(rows.items()):
        plot.seed_bars(ax, i - 0.18, r.run.final["infill"]["acc"], c, 0.34, hatch="//", filled=False)
        plot.seed_bars(ax, i + 0.18, r.run.final["b2a"]["acc"], c, 0.34)
    labels = ["none", "frozen\nroutes", "$W_V$ per\nposition", "value side\n" + r"$\perp\ \nabla\ell_\mathrm{b2a}$",
              "whole update\n" + r"$\perp\ \nabla\ell_\mathrm{b2a}$", "base 1.5", "base 1.5,\nprefix"]
    ax.set_xticks(range(len(rows)), labels[:len(rows)], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    _key(ax, [("infill (trained)", "//", False), ("b2a (never trained)", None, True)],
         loc="upper center", ncol=2, fontsize=8.5)
    return fig


# one marker and colour per intervention in the summary figure
INTERVENTION_STYLE = {
    "routes frozen at init": ("^", "#1f78b4"), "one W_V per position": ("v", "#e31a1c"),
    "value-side update ⊥ ∇ℓ_b2a": ("<", "#6a3d9a"), "whole update ⊥ ∇ℓ_b2a": (">", "#b15928"),
    "anti-correlated routes (base 1.5)": ("P", "#33a02c"), "base 1.5, infill only (prefix)": ("X", "#ff7f00"),
}


@figure("controls-summary")
def summary_figure(g1: list | None = None, o: dict | None = None, iv: dict | None = None):
    """Every model variant of the chapter: b2a against infill accuracy (mean over 8 seeds, bars:
    the seeds' range); for the inverse-relation models also swap (open diamonds)."""
    g1 = g1 if g1 is not None else grid(1)
    o = o or order()
    iv = iv or interventions()
    fig, axes = plot.figure(1, height=5.6, layout="constrained")
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, zorder=0)

    def point(run, label, color, marker, probe="b2a", filled=True, ms=6.5, zorder=3):
        f = run.final
        if f.get("infill") is None:
            return
        x, y = f["infill"]["acc"], f[probe]["acc"]
        ax.errorbar(x.mean(), y.mean(), xerr=[[x.mean() - x.min()], [x.max() - x.mean()]],
                    yerr=[[y.mean() - y.min()], [y.max() - y.mean()]], fmt=marker, color=color, ms=ms,
                    mfc=color if filled else "none", elinewidth=0.7, capsize=0, label=label, zorder=zorder)

    for name, r in o.items():  # drawn first and large, so the grid's points show inside them
        if name != "ARM":
            point(r.run, None, plot.COLORS["mdm"], "D", probe="swap", filled=False, ms=11, zorder=2)
    for r in g1:
        if not r.refused and r.run.final.get("infill") is not None:
            point(r.run, f"{r.values['objective']}, {r.values['attention']}", plot.COLORS.get(r.values["objective"], "0.4"),
                  "s" if r.values["attention"] == "causal" else "o")
    for name, r in iv.items():
        if name in INTERVENTION_STYLE:
            marker, color = INTERVENTION_STYLE[name]
            point(r.run, name, color, marker)
    ax.plot([], [], "D", color=plot.COLORS["mdm"], mfc="none", ms=9, label="inverse relation: swap (false converse)")
    ax.set_xlabel("infill accuracy (trained, or not)")
    ax.set_ylabel("b2a accuracy (open diamonds: swap)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8.5)
    return fig
