"""Chapter 2, weight-sharing coupling: its tables and figures (the experiments are revlib.recipes.ch2)."""
from __future__ import annotations

import numpy as np

from .. import coupling, theory
from ..sweep import Sweep
from . import plot
from .registry import figure, table
from .tables import Table, mean_sd, seeds_text, setting_text, spread


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def _size(x: float) -> str:
    """A magnitude as a reader writes it: 40, 3.2, 5e-06."""
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 0.1 else f"{x:.0e}"


def positional_table(s: Sweep) -> Table:
    rows = []
    for c in s:
        m = c.measured
        rows.append([c.values["positional"], mean_sd(m["corr_init"]), mean_sd(m["corr"]), mean_sd(m["weight_b2a"]),
                     mean_sd(m["evidence"], 1), spread(c.quantity("infill")), spread(c.quantity("b2a")),
                     _size(m["logit_gap"].max()), f"{int(c.failed.sum())}"])
    return Table(["positions", "corr at init", "corr trained", "b2a weight on b", "evidence", "infill acc",
                  "b2a acc", "max |logit gap|", "failed"], rows,
                 caption=f"MDM, {setting_text(s.base)}, {seeds_text(s.seeds)} (mean ± sd [min, max]); max |logit gap|: "
                         "between the infill and b2a blanks' logits, over facts and seeds", stack_ranges=True, compact=True)


@table("ch2-positional", "ch2")
def _positional_table(r: dict) -> Table:
    return positional_table(r["positional"])


def heads_table(s: Sweep) -> Table:
    rows = [[str(c.values["n_heads"]), spread(c.quantity("infill")), spread(c.quantity("b2a")),
             mean_sd(c.measured["reach_ratio"]), mean_sd(c.measured["weight_gap"])] for c in s]
    return Table(["heads", "infill acc", "b2a acc", "evidence reaching b2a / infill",
                  "|weight on b: infill − b2a| per head"], rows,
                 caption=f"MDM, RoPE, {seeds_text(s.seeds)}; evidence reaching a blank: Σ_h α_h(b) · u_a W_h E[b], "
                         "mean over facts")


@table("ch2-heads", "ch2")
def _heads_table(r: dict) -> Table:
    return heads_table(r["heads"])


def absolute_table(s: Sweep) -> Table:
    out = []
    for c in s:
        b = c.quantity("b2a")
        out.append([c.values["variant"].replace("=", " = "), f"{c.quantity('infill').mean():.2f}",
                    f"{b.mean():.2f} ± {np.std(b, ddof=1) if b.size > 1 else 0:.2f} [{b.min():.2f}, {b.max():.2f}]",
                    f"{int(c.failed.sum())} of {len(s.seeds)}"])
    return Table(["setting", "infill acc", "b2a acc [min, max]", "failed"], out,
                 caption=f"MDM with learned absolute positions, {seeds_text(s.seeds)} per row, other settings at "
                         f"the default ({setting_text(s.base)})")


@table("ch2-absolute", "ch2")
def _absolute_table(r: dict) -> Table:
    return absolute_table(r["absolute_sizes"])


def bases_table(b: dict) -> Table:
    rows = []
    for (objective, base), (run, h) in b.items():
        rows.append([objective, f"{base:g}", f"{theory.rope_corr(run.experiment.model.d_head, 2, base):+.2f}",
                     mean_sd(h["corr"][0]), mean_sd(h["corr"][-1]), mean_sd(h["weight_infill"][-1]),
                     mean_sd(h["weight_b2a"][-1]), spread(run.final["b2a"]["acc"])])
    seeds = next(iter(b.values()))[0].seeds
    return Table(["objective", "rope base", "closed form", "corr at init", "corr trained", "infill weight on b",
                  "b2a weight on b", "b2a acc"], rows, caption=f"MDM, {seeds_text(seeds)}; prefix trains only infill (revlib.objectives)")


@table("ch2-bases", "ch2")
def _bases_table(r: dict) -> Table:
    return bases_table(r["bases"])


def bag_table(bag: dict) -> Table:
    rows = [[p] + [mean_sd(bag[p]["weights"][:, t], 3) for t in range(3)] + [f"{bag[p]['max_error'].max():.1e}"]
            for p in ("infill", "b2a")]
    n = bag["infill"]["weights"].shape[0]
    return Table(["query"] + [f"weight on {t}" for t in coupling.BAG] + ["max |model − formula|"], rows,
                 caption=f"trained MDM (one head), the blank's attention, mean over facts, mean ± sd over {n} seeds")


def monte_carlo_table(rows: list[dict]) -> Table:
    offsets = sorted({r["offset"] for r in rows})
    out = []
    for d in sorted({r["d"] for r in rows}):
        cells = {r["offset"]: r for r in rows if r["d"] == d}
        out.append([str(d)] + [f"{cells[o]['closed_form']:.3f} | {cells[o]['estimate']:.3f} ± {cells[o]['stderr']:.3f}"
                               for o in offsets])
    return Table(["head size d"] + [f"Δ = {o}: closed form | Monte-Carlo" for o in offsets], out,
                 caption="Corr(S_infill, S_b2a) for RoPE, base 10^4; Monte-Carlo with 10 000 pairs (q, k), ± its standard error")


def position_parts_table(parts: dict, learned) -> Table:
    learned = np.asarray(learned, dtype=bool)
    rows = [[p, mean_sd(v["gap"], 1), mean_sd(v["full"]), mean_sd(v["full"][learned]) if learned.any() else "n/a",
             mean_sd(v["tokens"][learned]) if learned.any() else "n/a"] for p, v in parts.items()]
    n = int(learned.sum())
    return Table(["query", "position part: a minus b (logits)", "accuracy, all seeds",
                  f"accuracy, the {n} seeds that learned infill", "the same, without the position part"],
                 rows, caption=f"MDM with learned absolute positions, {learned.size} seeds, {n} of which learned infill")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def init_figure(data: dict, d: int = 32):
    """Route correlation of freshly initialised MDMs against the fixed-query prediction."""
    rope = data["rope"]
    fig, axes = plot.figure(1, height=3.2)
    ax = axes[0, 0]
    ax.scatter(rope["predicted"], rope["measured"], s=14, color=plot.COLORS["mdm"], label="one initialised MDM")
    ax.plot([-0.2, 1], [-0.2, 1], color="0.5", lw=0.8, label="measured = predicted")
    ax.axhline(theory.rope_corr(d), color="black", lw=1, ls="--", label="closed form, random q")
    ax.set_xlabel(r"predicted from its query: $q^\top R_{2\Delta}\, q / |q|^2$")
    ax.set_ylabel("measured across the facts")
    ax.legend(loc="upper left")
    return fig


@figure("coupling-init", "ch2")
def _init_figure(r: dict):
    return init_figure(r["initial_routes"])


def training_figure(hist: dict, d: int = 32):
    """(a) route correlation, (b) attention on the key, (c) stored evidence, (d) b2a loss along training."""
    fig, axes = plot.figure(2, 2, height=2.7)
    ax = axes.ravel()
    trained_route = {"mdm": "infill", "ar": "a2b"}
    for kind, (run, h) in hist.items():
        c, lab, tr = plot.COLORS[kind], plot.LABELS[kind], trained_route[kind]
        step, every = h["step"], max(1, len(h["step"]) // 6)
        plot.band(ax[0], step, h["corr"], c, "-", f"{lab}: {tr} vs b2a", marker="o", markevery=every)
        plot.band(ax[1], step, h[f"weight_{tr}"], c, plot.LINESTYLES[tr], f"{lab} {tr}", marker=plot.MARKERS[tr], markevery=every)
        plot.band(ax[1], step, h["weight_b2a"], c, plot.LINESTYLES["b2a"], f"{lab} b2a", marker=plot.MARKERS["b2a"], markevery=every)
        plot.band(ax[2], step, h["evidence"], c, "-", f"{lab}: own pair", marker="o", markevery=every)
        plot.band(ax[2], step, h["evidence_baseline"], c, ":", f"{lab}: other pairs' b", marker="x", markevery=every)
        plot.band(ax[3], run.history["step"], run.history["b2a_nll"], c, "--", lab, marker="^", markevery=every)
    ax[0].axhline(theory.rope_corr(d), **plot.CHANCE_STYLE, label="closed form")
    ax[3].axhline(-np.log(hist["mdm"][0].world.chance), **plot.CHANCE_STYLE, label="chance")
    ax[0].set_ylabel("score correlation")
    ax[1].set_ylabel("weight on the key")
    ax[2].set_ylabel(r"evidence $u_a^\top W E[b]$")
    ax[3].set_ylabel(r"$\ell_\mathrm{b2a}$ (nats)")
    for a, name in zip(ax, "abcd"):
        a.set_xlabel("training step")
        a.legend(loc="best", fontsize=7.5)
        plot.letter(a, name)
    return fig


@figure("coupling-training", "ch2")
def _training_figure(r: dict):
    return training_figure(r["histories"])


def ablation_figure(s: Sweep):
    """Per positional encoding, MDM: (a) infill and b2a accuracy, (b) correlation at init and
    trained, (c) evidence, (d) the blank's weight on b (one dot per seed)."""
    fig, axes = plot.figure(2, 2, height=2.6)
    ax = axes.ravel()
    c = plot.COLORS["mdm"]
    for i, cell in enumerate(s):
        m = cell.measured
        first = i == 0
        plot.seed_bars(ax[0], i - 0.18, cell.quantity("infill"), c, 0.34, hatch="//", filled=False, label="infill" if first else None)
        plot.seed_bars(ax[0], i + 0.18, cell.quantity("b2a"), c, 0.34, label="b2a" if first else None)
        plot.seed_bars(ax[1], i - 0.18, m["corr_init"], c, 0.34, filled=False, label="at init" if first else None)
        plot.seed_bars(ax[1], i + 0.18, m["corr"], c, 0.34, label="trained" if first else None)
        plot.seed_bars(ax[2], i, m["evidence"], c, 0.5)
        plot.seed_bars(ax[3], i - 0.18, m["weight_trained"], c, 0.34, hatch="//", filled=False, label="infill" if first else None)
        plot.seed_bars(ax[3], i + 0.18, m["weight_b2a"], c, 0.34, label="b2a" if first else None)
    ax[0].set_ylabel("accuracy")
    ax[1].set_ylabel("score correlation")
    ax[2].set_ylabel(r"evidence $u_a^\top W E[b]$")
    ax[3].set_ylabel("weight on b")
    names = [cell.values["positional"] for cell in s]
    for a, name in zip(ax, "abcd"):
        a.set_xticks(range(len(names)), names)
        plot.letter(a, name)
    for a in (ax[0], ax[1], ax[3]):  # headroom for a legend above the bars, no ticks in it
        lo, hi = a.get_ylim()
        ticks = [t for t in a.get_yticks() if lo <= t <= hi]
        a.set_ylim(lo, hi + 0.35 * (hi - lo))
        a.set_yticks(ticks)
        a.legend(loc="upper center", ncol=2, fontsize=7.5)
    return fig


@figure("coupling-ablation", "ch2")
def _ablation_figure(r: dict):
    return ablation_figure(r["positional"])


def heads_figure(s: Sweep, detail_heads: int = 4):
    """(a) infill and b2a accuracy against the number of heads; (b) per head of the
    ``detail_heads``-head MDM (its first seed), the blank's weight on b in infill and in b2a, and
    the head's stored evidence."""
    fig, axes = plot.figure(2, height=3.0)
    a, b = axes[0]
    c = plot.COLORS["mdm"]
    hs = [cell.values["n_heads"] for cell in s]
    for i, cell in enumerate(s):
        plot.seed_bars(a, i - 0.18, cell.quantity("infill"), c, 0.34, hatch="//", filled=False, label="infill" if i == 0 else None)
        plot.seed_bars(a, i + 0.18, cell.quantity("b2a"), c, 0.34, label="b2a" if i == 0 else None)
    a.set_xticks(range(len(hs)), [str(H) for H in hs])
    a.set_xlabel("heads")
    a.set_ylabel("accuracy")
    a.set_ylim(0, 1.3)
    a.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    a.legend(loc="upper center", ncol=2)
    plot.letter(a, "a")
    H = detail_heads if detail_heads in hs else max(hs)
    r = coupling.head_weights(s.run(n_heads=H))
    x = np.arange(r["w_infill"].shape[1])
    b.bar(x - 0.2, r["w_infill"][0], 0.38, color="white", edgecolor=c, hatch="//", label="weight on b, infill")
    b.bar(x + 0.2, r["w_b2a"][0], 0.38, color=c, label="weight on b, b2a")
    b.set_ylim(0, 1.35)
    b.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # each head's stored evidence, written under its name (one axis only: no twin scale to decode)
    b.set_xticks(x, [f"head {i}\nevidence {e:.1f}" for i, e in zip(x, r["evidence"][0])], fontsize=8)
    b.set_ylabel("attention weight on b")
    b.legend(loc="upper center", ncol=2, fontsize=7.5)
    plot.letter(b, "b")
    return fig


@figure("coupling-heads", "ch2")
def _heads_figure(r: dict):
    return heads_figure(r["heads"])


def bases_figure(b: dict):
    """Small multiples, one row per objective (the full objective mdm; prefix, only infill): (a, c)
    route correlation and (b, d) the b2a blank's weight on b along training, one line per rotary
    base, so that no two variants hide each other's bands."""
    objectives = list(dict.fromkeys(o for o, _ in b))
    bases = sorted({bb for _, bb in b}, reverse=True)
    colors = [plot.COLORS["mdm"], plot.COLORS["suffix"], "#e7298a", "#66a61e"]  # the book's palette first
    fig, axes = plot.figure(2, nrows=len(objectives), height=2.6, sharex=True)
    for row, objective in enumerate(objectives):
        for k, base in enumerate(bases):
            run, h = b[objective, base]
            color, ls = colors[k % len(colors)], ["-", "--", "-.", ":"][k % 4]
            label = f"base {base:g}"
            plot.band(axes[row, 0], h["step"], h["corr"], color, ls, label)
            plot.band(axes[row, 1], h["step"], h["weight_b2a"], color, ls, label)
        axes[row, 0].set_ylabel(f"{objective}\nscore correlation")
        axes[row, 1].set_ylabel(f"{objective}\nb2a: weight on b")
        axes[row, 0].set_ylim(-1.05, 1.05)
        axes[row, 1].set_ylim(0, 1.05)
        for col in range(2):
            plot.letter(axes[row, col], "abcdefgh"[2 * row + col])
    for a in axes[-1]:
        a.set_xlabel("training step")
    axes[0, 1].legend(loc="lower right", fontsize=7.5)
    return fig


@figure("coupling-bases", "ch2")
def _bases_figure(r: dict):
    return bases_figure(r["bases"])


# ---------------------------------------------------------------------------------------------
# captions (the notebooks' figure metadata says the same; tests/test_notebooks.py checks it)
# ---------------------------------------------------------------------------------------------

from .nb import caption  # noqa: E402

caption("fig-c2-init",
        "Correlation of $S_\\text{infill}$ and $S_\\text{b2a}$ across the facts, for freshly initialised MDMs "
        "($d = 32$, $\\Delta = 2$), against the fixed-query prediction from each model's own `[M]` query. Dashed: "
        "the closed form for random queries, the mean of the prediction.",
        "Scatter plot of measured against predicted route correlation for many initialised models; the points lie "
        "near the diagonal and scatter widely around the closed-form value.")
caption("fig-c2-training",
        "Along training, mean over seeds (bands span the seeds). (a) correlation across facts of the trained "
        "route's and the `b2a` route's scores; (b) the attention weight of each route on its key; (c) the stored "
        "evidence $u_{a_i}^\\top W E[b_i]$ for the fact's own pair (solid) and for other pairs' $b$ (dotted); "
        "(d) the loss of the right `b2a` answer.",
        "Four panels of curves over training steps: the MDM's route correlation stays high, both MDM routes come to "
        "attend to b, its stored evidence grows far above the other pairs' baseline, and its b2a loss falls; the "
        "ARM's correlation and evidence stay near zero and its b2a loss rises.")
caption("fig-c2-ablation",
        "MDM per positional encoding (bars: mean; dots: seeds). (a) `infill` (hatched) and `b2a` accuracy; "
        "(b) score correlation at initialisation (open) and trained; (c) stored evidence; (d) the blank's weight on "
        "$b$ in `infill` (hatched) and `b2a`.",
        "Four bar charts over rope, absolute, alibi and none: b2a matches infill for rope, alibi and none and falls "
        "for absolute; correlations are 1 for alibi and none.")
caption("fig-c2-heads",
        "(a) `infill` (hatched) and `b2a` accuracy against the number of heads, one dot per seed. (b) A four-head "
        "MDM (its first seed): per head, the blank's weight on $b$ in `infill` (hatched) and in `b2a`, and the "
        "head's stored evidence $u_a^\\top W_h E[b]$ in logits, mean over facts (under each head's name).",
        "Left: infill stays near 1 for 1 to 8 heads while b2a falls. Right: per head of a four-head model, the "
        "weights on b differ between the two queries, and the heads store different amounts of evidence.")
caption("fig-c2-bases",
        "Along training, top row the full objective (`mdm`), bottom row `prefix` (only `infill` trained): (a, c) "
        "score correlation of the `infill` and `b2a` routes across facts, (b, d) the `b2a` blank's weight on $b$; "
        "one line per rotary base (green solid: $10^4$, purple dashed: 1.5), mean over seeds, bands span them.",
        "Curves over training: at base 1.5 the routes start anti-correlated; with the full objective the b2a "
        "blank still comes to attend to b, with prefix alone it does not.")


def coupling_explorer(d: int = 32, offsets=(1, 2, 3, 4, 6, 8), log10_bases=(0.18, 1.0, 2.0, 3.0, 4.0, 6.0),
                      samples: int = 2_000):
    """The static explorer of the RoPE score correlation: one frame per offset and base (head size ``d``)."""
    from .explore import FrameExplorer, coupling_figure

    def draw(i, j):
        return coupling_figure(d, offsets[i], log10_bases[j], samples=samples)[0]

    return FrameExplorer("coupling", {"offset Δ": list(offsets), "rotary base": [f"{10 ** b:.3g}" for b in log10_bases]},
                         draw, alt=f"Two panels: cos(2Δθ) per rotation plane for head size {d}, and the closed-form "
                                   "correlation against the head size, for the chosen offset and base.",
                         note=f"Head size d = {d}; Monte-Carlo with {samples:,} samples per frame. Drawn when this page "
                              "was built; in a live notebook the next cell takes any head size, offset and base.")


def training_numbers(hist: dict) -> Table:
    """The routes and the storage of the ARM and the MDM at initialisation and at the end of
    training, mean over seeds (lowest seed in brackets where it matters)."""
    hm, ha = hist["mdm"][1], hist["ar"][1]

    def pair(h, key):
        return f"{h[key][0].mean():.2f}", f"{h[key][-1].mean():.2f} [{h[key][-1].min():.2f}]"

    rows = [["score correlation, trained route vs b2a", *pair(hm, "corr"), *pair(ha, "corr")],
            ["weight on the key, trained route", *pair(hm, "weight_infill"), *pair(ha, "weight_a2b")],
            ["weight on b, b2a route", *pair(hm, "weight_b2a"), *pair(ha, "weight_b2a")],
            ["evidence u_a W E[b] (b ⇒ a)", *pair(hm, "evidence"), *pair(ha, "evidence")],
            ["  the same for other pairs' b", *pair(hm, "evidence_baseline"), *pair(ha, "evidence_baseline")],
            ["evidence u_b W E[a] (a ⇒ b)", *pair(hm, "evidence_a2b"), *pair(ha, "evidence_a2b")]]
    n = hm["corr"].shape[1]
    return Table(["quantity", "MDM at init", "MDM trained [lowest seed]", "ARM at init", "ARM trained [lowest seed]"],
                 rows, caption=f"mean over {n} seeds and over facts; evidence in logits", stack_ranges=True)
