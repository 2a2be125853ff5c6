"""Chapter 2, weight-sharing coupling: its experiments (recipes), figures and tables."""
from __future__ import annotations

import hashlib
import inspect

import numpy as np
import torch

from .. import coupling, theory
from ..cache import cached_arrays, cached_train, experiment_key
from ..model import build_model
from ..sweep import sweep
from . import ch1, plot
from .registry import figure, table
from .seeds import SEEDS
from .tables import Table, mean_sd, spread

POSITIONALS = ("rope", "absolute", "alibi", "none")
HEADS = (1, 2, 4, 8)
BASES = (1.5, 10_000.0)


def _measured(exp, kind: str, fn) -> dict:
    """A measurement of the trained (or initial) models of ``exp``, cached beside the run.

    The measuring function's own source is part of the key: this module is not fingerprinted
    by the cache, so editing the measurement must not serve its old results.
    """
    source = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    return cached_arrays(f"ch2-{kind}", experiment_key(exp, SEEDS, measure=source), fn)


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------

def init_coupling(n_models: int = 64) -> dict:
    """``predicted`` (fixed-query value ``q^T R_2Δ q / |q|^2`` of each model's own [M] query, head 0)
    and ``measured`` (correlation across the facts) for ``n_models`` freshly initialised MDMs,
    with RoPE and with learned absolute positions."""
    exp = ch1.experiment("mdm")
    world = ch1.runs()["mdm"].world
    out = {}
    for positional in ("rope", "absolute"):
        e = exp.replace(positional=positional)
        fresh = build_model(e, range(1000, 1000 + n_models), world.vocab_size)  # seeds no run uses
        out[f"{positional}_measured"] = coupling.measure_coupling(fresh, world, "mdm")["corr"]
        if positional == "rope":
            with torch.no_grad():
                q = torch.einsum("kd,kde->ke", fresh.embed[:, 0], fresh.blocks[0].attn.W_Q)  # W_Q E[M], (K, e)
            out["rope_predicted"] = theory.rope_corr_fixed_query(q).numpy()
    return out


def histories() -> dict:
    """The chapter-1 models measured along training (cached): ``{kind: (run, history)}``."""
    return {kind: coupling.coupling_history(ch1.experiment(kind), SEEDS) for kind in ("mdm", "ar")}


def positional_ablation() -> dict:
    """The MDM with each positional encoding: ``{positional: {run, init, final, symmetry}}``.

    ``init``/``final``: revlib.coupling.measure_coupling at the initial weights and after
    training; ``symmetry``: the largest difference, per seed, between the ``infill`` logits at
    the blank of "[M] is b" and the ``b2a`` logits at the blank of "b is [M]".
    """
    out = {}
    for positional in POSITIONALS:
        exp = ch1.experiment("mdm", positional=positional)
        run = cached_train(exp, SEEDS)

        def measure(run=run):
            init, final = run.initial_model(), run.model
            with torch.no_grad():
                li = final(run.world.probe("infill").tokens)[:, :, 0]
                lb = final(run.world.probe("b2a").tokens)[:, :, 2]
            return {"init": coupling.measure_coupling(init, run.world, "mdm"),
                    "final": coupling.measure_coupling(final, run.world, "mdm"),
                    "symmetry": (li - lb).abs().amax(dim=(1, 2)).numpy()}

        out[positional] = {"run": run, **_measured(exp, "ablation", measure)}
    return out


def heads() -> dict:
    """The MDM with 1, 2, 4, 8 heads: ``{H: {run, w_infill, w_b2a, evidence, reach_infill, reach_b2a}}``.

    Per seed and head (K, H): the blank's attention weight on b in ``infill`` and in ``b2a``
    (mean over facts) and the head's stored evidence u_a^T W_h E[b]; ``reach_*`` (K,): the
    evidence that reaches the blank, Σ_h weight_h(b) evidence_h (mean over facts).
    """
    out = {}
    for H in HEADS:
        exp = ch1.experiment("mdm", n_heads=H)
        run = cached_train(exp, SEEDS)

        def measure(run=run):
            w = coupling.token_weights(run.model, run.world)
            wi, wb = w["infill"][:, 0, :, :, 2], w["b2a"][:, 0, :, :, 2]  # (K, H, N)
            idx = run.world.one_way
            ev = coupling.stored_evidence(run.model, run.world.a[idx, 0], run.world.b[idx, 0])  # (K, H, N)
            return {"w_infill": wi.mean(-1).numpy(), "w_b2a": wb.mean(-1).numpy(), "evidence": ev.mean(-1).numpy(),
                    "reach_infill": (wi * ev).sum(1).mean(-1).numpy(), "reach_b2a": (wb * ev).sum(1).mean(-1).numpy()}

        out[H] = {"run": run, **_measured(exp, "heads", measure)}
    return out


def absolute_sizes() -> dict:
    """The MDM with learned absolute positions at several sizes: ``{(axis, value): sweep Row}``."""
    base = ch1.experiment("mdm", positional="absolute")
    rows = {}
    for axis, values in (("d_model", [16, 32, 64]), ("n_pairs", [64, 128, 256])):
        for r in sweep(base, {axis: values}, SEEDS):
            rows[axis, r.values[axis]] = r
    return rows


def position_parts(run) -> dict:
    """Learned absolute positions: per query, the position part's a-minus-b logit gap and the
    accuracy with and without the position part (K,) each (revlib.coupling.position_logits)."""
    model, world = run.model, run.world
    out = {}
    for probe, slot in (("infill", 0), ("b2a", 2)):
        p = world.probe(probe)
        with torch.no_grad():
            full = model(p.tokens)[:, :, slot]  # (K, N, V)
        pos = coupling.position_logits(model, world, probe)
        a, b = world.alphabets
        answers = p.answers[:, 0]
        out[probe] = {"gap": (pos[:, :, a].mean((1, 2)) - pos[:, :, b].mean((1, 2))).numpy(),
                      "full": (full.argmax(-1) == answers).float().mean(1).numpy(),
                      "tokens": ((full - pos).argmax(-1) == answers).float().mean(1).numpy()}
    return out


def bases() -> dict:
    """Rotary bases 1.5 (anti-correlated routes at initialisation) and 10^4, trained with the
    full objective (mdm) and with ``prefix`` (only infill trained): ``{(objective, base): (run, history)}``."""
    out = {}
    for objective in ("mdm", "prefix"):
        for base in BASES:
            exp = ch1.experiment("mdm", objective=objective, rope_base=base)
            out[objective, base] = coupling.coupling_history(exp, SEEDS)
    return out


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def _size(x: float) -> str:
    """A magnitude as a reader writes it: 40, 3.2, 5e-06."""
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 0.1 else f"{x:.0e}"


@table("ch2-positional")
def positional_table(ablation: dict | None = None) -> Table:
    ablation = ablation or positional_ablation()
    rows = []
    for positional, r in ablation.items():
        f = r["run"].final
        rows.append([positional, mean_sd(r["init"]["corr"]), mean_sd(r["final"]["corr"]),
                     mean_sd(r["final"]["weight_b2a"]), mean_sd(r["final"]["evidence"], 1),
                     spread(f["infill"]["acc"]), spread(f["b2a"]["acc"]), _size(r["symmetry"].max()),
                     f"{r['run'].failed.sum()}"])
    return Table(["positions", "corr at init", "corr trained", "b2a weight on b", "evidence", "infill acc",
                  "b2a acc", "max |logit gap|", "failed"], rows,
                 caption="MDM, 128 facts, d_model 32, 8 seeds (mean ± sd [min, max]); max |logit gap|: between the "
                         "infill and b2a blanks' logits, over facts and seeds", stack_ranges=True, compact=True)


@table("ch2-heads")
def heads_table(h: dict | None = None) -> Table:
    h = h or heads()
    rows = []
    for H, r in h.items():
        f = r["run"].final
        ratio = r["reach_b2a"] / r["reach_infill"]
        rows.append([str(H), spread(f["infill"]["acc"]), spread(f["b2a"]["acc"]), mean_sd(ratio),
                     mean_sd(np.abs(r["w_infill"] - r["w_b2a"]).mean(1))])
    return Table(["heads", "infill acc", "b2a acc", "evidence reaching b2a / infill",
                  "|weight on b: infill − b2a| per head"], rows,
                 caption="MDM, RoPE, 8 seeds; evidence reaching a blank: Σ_h α_h(b) · u_a W_h E[b], mean over facts")


@table("ch2-absolute")
def absolute_table(rows: dict | None = None) -> Table:
    rows = rows or absolute_sizes()
    out = []
    for (axis, value), r in rows.items():
        p = r.summary["probes"]
        out.append([f"{axis} = {value}", f"{p['infill']['acc']['mean']:.2f}", f"{p['b2a']['acc']['mean']:.2f} ± "
                    f"{p['b2a']['acc']['sd']:.2f} [{p['b2a']['acc']['min']:.2f}, {p['b2a']['acc']['max']:.2f}]",
                    f"{r.summary['failed']} of {r.summary['n_seeds']}"])
    return Table(["setting", "infill acc", "b2a acc [min, max]", "failed"], out,
                 caption="MDM with learned absolute positions, 8 seeds per row, other settings at the default")


@table("ch2-bases")
def bases_table(b: dict | None = None) -> Table:
    b = b or bases()
    rows = []
    for (objective, base), (run, h) in b.items():
        rows.append([objective, f"{base:g}", f"{theory.rope_corr(32, 2, base):+.2f}", mean_sd(h["corr"][0]),
                     mean_sd(h["corr"][-1]), mean_sd(h["weight_b2a"][-1]), spread(run.final["b2a"]["acc"])])
    return Table(["objective", "rope base", "closed form", "corr at init", "corr trained", "b2a weight on b",
                  "b2a acc"], rows, caption="MDM, 8 seeds; prefix trains only infill (revlib.objectives)")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

@figure("coupling-init")
def init_figure(data: dict | None = None):
    """Route correlation of 64 initialised MDMs against the fixed-query prediction (chapter 2)."""
    data = data or init_coupling()
    fig, axes = plot.figure(1, height=3.2)
    ax = axes[0, 0]
    ax.scatter(data["rope_predicted"], data["rope_measured"], s=14, color=plot.COLORS["mdm"], label="one initialised MDM")
    ax.plot([-0.2, 1], [-0.2, 1], color="0.5", lw=0.8, label="measured = predicted")
    ax.axhline(theory.rope_corr(32), color="black", lw=1, ls="--", label="closed form, random q")
    ax.set_xlabel(r"predicted from its query: $q^\top R_{2\Delta}\, q / |q|^2$")
    ax.set_ylabel("measured across the facts")
    ax.legend(loc="upper left")
    return fig


@figure("coupling-training")
def training_figure(hist: dict | None = None):
    """(a) route correlation, (b) attention on the key, (c) stored evidence, (d) b2a loss along training."""
    hist = hist or histories()
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
    ax[0].axhline(theory.rope_corr(32), **plot.CHANCE_STYLE, label="closed form")
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


@figure("coupling-ablation")
def ablation_figure(ablation: dict | None = None):
    """Per positional encoding, MDM: (a) infill and b2a accuracy, (b) correlation at init and
    trained, (c) evidence, (d) the blank's weight on b (one dot per seed)."""
    ablation = ablation or positional_ablation()
    fig, axes = plot.figure(2, 2, height=2.6)
    ax = axes.ravel()
    c = plot.COLORS["mdm"]
    for i, (positional, r) in enumerate(ablation.items()):
        f = r["run"].final
        plot.seed_bars(ax[0], i - 0.18, f["infill"]["acc"], c, 0.34, hatch="//", filled=False, label="infill" if i == 0 else None)
        plot.seed_bars(ax[0], i + 0.18, f["b2a"]["acc"], c, 0.34, label="b2a" if i == 0 else None)
        plot.seed_bars(ax[1], i - 0.18, r["init"]["corr"], c, 0.34, filled=False, label="at init" if i == 0 else None)
        plot.seed_bars(ax[1], i + 0.18, r["final"]["corr"], c, 0.34, label="trained" if i == 0 else None)
        plot.seed_bars(ax[2], i, r["final"]["evidence"], c, 0.5)
        plot.seed_bars(ax[3], i - 0.18, r["final"]["weight_infill"], c, 0.34, hatch="//", filled=False,
                       label="infill" if i == 0 else None)
        plot.seed_bars(ax[3], i + 0.18, r["final"]["weight_b2a"], c, 0.34, label="b2a" if i == 0 else None)
    ax[0].set_ylabel("accuracy")
    ax[1].set_ylabel("score correlation")
    ax[2].set_ylabel(r"evidence $u_a^\top W E[b]$")
    ax[3].set_ylabel("weight on b")
    for a, name in zip(ax, "abcd"):
        a.set_xticks(range(len(ablation)), list(ablation))
        plot.letter(a, name)
    for a in (ax[0], ax[1], ax[3]):  # headroom for a legend above the bars, no ticks in it
        lo, hi = a.get_ylim()
        ticks = [t for t in a.get_yticks() if lo <= t <= hi]
        a.set_ylim(lo, hi + 0.35 * (hi - lo))
        a.set_yticks(ticks)
        a.legend(loc="upper center", ncol=2, fontsize=7.5)
    return fig


@figure("coupling-heads")
def heads_figure(h: dict | None = None):
    """(a) infill and b2a accuracy against the number of heads; (b) per head of a 4-head MDM
    (seed 0), the blank's weight on b in infill and in b2a, and the head's stored evidence."""
    h = h or heads()
    fig, axes = plot.figure(2, height=3.0)
    a, b = axes[0]
    c = plot.COLORS["mdm"]
    for i, (H, r) in enumerate(h.items()):
        f = r["run"].final
        plot.seed_bars(a, i - 0.18, f["infill"]["acc"], c, 0.34, hatch="//", filled=False, label="infill" if i == 0 else None)
        plot.seed_bars(a, i + 0.18, f["b2a"]["acc"], c, 0.34, label="b2a" if i == 0 else None)
    a.set_xticks(range(len(h)), [str(H) for H in h])
    a.set_xlabel("heads")
    a.set_ylabel("accuracy")
    a.set_ylim(0, 1.3)
    a.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    a.legend(loc="upper center", ncol=2)
    plot.letter(a, "a")
    r = h[4] if 4 in h else h[max(h)]
    x = np.arange(r["w_infill"].shape[1])
    b.bar(x - 0.2, r["w_infill"][0], 0.38, color="white", edgecolor=c, hatch="//", label="weight on b, infill")
    b.bar(x + 0.2, r["w_b2a"][0], 0.38, color=c, label="weight on b, b2a")
    b.set_ylim(0, 1.5)
    b.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    b.set_xticks(x, [f"head {i}" for i in x])
    b.set_ylabel("attention weight")
    ev = b.twinx()
    ev.plot(x, r["evidence"][0], "kD", ms=5, label="evidence")
    ev.set_ylabel(r"evidence $u_a^\top W_h E[b]$")
    ev.spines["right"].set_visible(True)
    ev.grid(False)
    lo, hi = ev.get_ylim()
    ticks = [t for t in ev.get_yticks() if lo <= t <= hi]
    ev.set_ylim(lo, hi + 0.5 * (hi - lo))
    ev.set_yticks(ticks)
    lines = b.get_legend_handles_labels()[0] + ev.get_legend_handles_labels()[0]
    b.legend(lines, [ln.get_label() for ln in lines], loc="upper center", ncol=2, fontsize=7.5)
    plot.letter(b, "b")
    return fig


@figure("coupling-bases")
def bases_figure(b: dict | None = None):
    """(a) route correlation and (b) the b2a blank's weight on b along training, for rotary bases
    10^4 and 1.5, trained with the full objective (mdm) and with prefix (only infill)."""
    b = b or bases()
    fig, axes = plot.figure(2, height=3.0)
    styles = {("mdm", 10_000.0): ("-", "o"), ("mdm", 1.5): ("--", "^"),
              ("prefix", 10_000.0): ("-", "s"), ("prefix", 1.5): ("--", "x")}
    for (objective, base), (run, h) in b.items():
        color = plot.COLORS["mdm"] if objective == "mdm" else "0.35"
        ls, marker = styles[objective, base]
        label = f"{objective}, base {base:g}"
        plot.band(axes[0, 0], h["step"], h["corr"], color, ls, label, marker=marker, markevery=2)
        plot.band(axes[0, 1], h["step"], h["weight_b2a"], color, ls, label, marker=marker, markevery=2)
    axes[0, 0].set_ylabel("score correlation, infill vs b2a")
    axes[0, 1].set_ylabel("b2a: weight on b")
    for a, name in zip(axes[0], "ab"):
        a.set_xlabel("training step")
        plot.letter(a, name)
    axes[0, 1].legend(loc="lower right", fontsize=7.5)
    return fig


# ---------------------------------------------------------------------------------------------
# the chapter's smaller tables (kept here so the notebook shows one short call per table)
# ---------------------------------------------------------------------------------------------

def bag_of_tokens(runs: dict | None = None) -> dict:
    """The one-head MDM's blank weights on [M], is, b (K, L, H, N, 3) per probe, its logits
    (K, N, V) and the bag formula's (revlib.coupling.bag_logits)."""
    runs = runs or ch1.runs()
    mdm, world = runs["mdm"].model, runs["mdm"].world
    weights = coupling.token_weights(mdm, world)
    slot = {"infill": 0, "b2a": 2}
    with torch.no_grad():
        actual = {p: mdm(world.probe(p).tokens)[:, :, s] for p, s in slot.items()}
    rebuilt = {p: coupling.bag_logits(mdm, world, weights[p][:, 0]) for p in slot}
    return {"weights": weights, "actual": actual, "rebuilt": rebuilt}


def bag_table(bag: dict) -> Table:
    rows = [[p] + [mean_sd(bag["weights"][p][:, 0, 0, :, t].mean(1), 3) for t in range(3)]
            + [f"{(bag['actual'][p] - bag['rebuilt'][p]).abs().max():.1e}"] for p in ("infill", "b2a")]
    return Table(["query"] + [f"weight on {t}" for t in coupling.BAG] + ["max |model − formula|"], rows,
                 caption="trained MDM (one head), the blank's attention, mean over facts, mean ± sd over 8 seeds")


def monte_carlo(ds=(6, 8, 16, 32, 64, 128), offsets=(1, 2, 4), samples: int = 10_000) -> list:
    """(d, offset, closed form, Monte-Carlo estimate) for every head size and offset."""
    return [(d, o, theory.rope_corr(d, o), theory.monte_carlo_corr("rope", d, o, samples=samples, seed=0))
            for d in ds for o in offsets]


def monte_carlo_table(rows: list) -> Table:
    offsets = sorted({o for _, o, _, _ in rows})
    out = []
    for d in sorted({d for d, _, _, _ in rows}):
        cells = {o: (exact, mc) for dd, o, exact, mc in rows if dd == d}
        out.append([str(d)] + [f"{cells[o][0]:.3f} | {cells[o][1].estimate:.3f} ± {cells[o][1].stderr:.3f}"
                               for o in offsets])
    return Table(["head size d"] + [f"Δ = {o}: closed form | Monte-Carlo" for o in offsets], out,
                 caption="Corr(S_infill, S_b2a) for RoPE, base 10^4; Monte-Carlo with 10 000 pairs (q, k), ± its standard error")


def position_parts_table(parts: dict, learned) -> Table:
    learned = np.asarray(learned, dtype=bool)
    rows = [[p, mean_sd(v["gap"], 1), mean_sd(v["full"]), mean_sd(v["full"][learned]), mean_sd(v["tokens"][learned])]
            for p, v in parts.items()]
    n = int(learned.sum())
    return Table(["query", "position part: a minus b (logits)", "accuracy, all seeds",
                  f"accuracy, the {n} seeds that learned infill", "the same, without the position part"],
                 rows, caption=f"MDM with learned absolute positions, 8 seeds, {n} of which learned infill")
