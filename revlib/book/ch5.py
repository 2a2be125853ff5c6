"""Chapter 5, beyond one layer: its tables and figures (the experiments are revlib.recipes.ch5)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..recipes.ch5 import SIGNATURES, ZHU_CODE_ARM, signature_correlations
from ..sweep import Sweep
from . import plot
from .registry import figure, table
from .tables import Table, mean_sd, seeds_text


def _acc(values) -> str:
    return "n/a" if values is None else mean_sd(values)


def depth_table(depth: Sweep, arm: Sweep, presets: dict) -> Table:
    rows = []
    for c in depth:
        rows.append(["MDM", str(c.values["n_layers"]), c.values["variant"], c.values["positional"], _acc(c.quantity("a2b")),
                     _acc(c.quantity("infill")), _acc(c.quantity("b2a")), f"{int(c.failed.sum())}"])
    for c in arm:
        rows.append(["ARM", str(c.values["n_layers"]), c.values["variant"], c.experiment.model.positional,
                     _acc(c.quantity("a2b")), "n/a", _acc(c.quantity("b2a")), f"{int(c.failed.sum())}"])
    for name, s in presets.items():
        for c in s:
            m = c.experiment.model
            rows.append([plot.LABELS[c.values["objective"]], str(m.n_layers), name, m.positional, _acc(c.quantity("a2b")),
                         _acc(c.quantity("infill")), _acc(c.quantity("b2a")), f"{int(c.failed.sum())}"])
    b = depth.base
    return Table(["model", "layers", "block", "positions", "a2b acc", "infill acc", "b2a acc", "failed"], rows,
                 caption=f"{b.data.n_pairs} one-token facts, d_model {b.model.d_model}, {seeds_text(depth.seeds)} per row "
                         "(mean ± sd); SwiGLU + RMSNorm and the presets train at lr 0.03, attention-only blocks at 0.1")


@table("ch5-depth", "ch5")
def _depth_table(r: dict) -> Table:
    return depth_table(r["depth"], r["arm_depth"], r["presets"])


def multi_table(multi: Sweep, span: Sweep) -> Table:
    rows = []
    for masking, s in (("token", multi), ("span", span)):
        for c in s:
            kind = c.values.get("objective", "mdm")
            rows.append([str(c.values["entity_tokens"]), plot.LABELS[kind], masking, _acc(c.quantity("a2b")),
                         _acc(c.quantity("infill")), _acc(c.quantity("b2a")), f"{int(c.failed.sum())}"])
    b = multi.base
    return Table(["tokens per name", "model", "masking", "a2b acc", "infill acc", "b2a acc", "failed"], rows,
                 caption=f"the llada_like block (2 layers, 2 heads, RMSNorm, SwiGLU), {b.data.n_pairs} facts, "
                         f"{b.train.steps} steps, {seeds_text(multi.seeds)}; accuracy of the whole name")


@table("ch5-entity-tokens", "ch5")
def _multi_table(r: dict) -> Table:
    return multi_table(r["multi"], r["span"])


def decoding_table(dec: dict, multi: Sweep, span: Sweep) -> Table:
    rows = []
    for (k, masking), it in dec.items():
        s = multi if masking == "token" else span
        run = s.run(entity_tokens=k, objective="mdm") if masking == "token" else s.run(entity_tokens=k)
        for probe in ("a2b", "infill", "b2a"):
            rows.append([str(k), masking, probe, mean_sd(run.final[probe]["acc"]), mean_sd(it[probe])])
    return Table(["tokens per name", "masking", "probe", "one pass", "one slot at a time"], rows,
                 caption=f"MDM (llada_like block, {multi.base.data.n_pairs} facts), accuracy of the whole name, "
                         f"{seeds_text(multi.seeds)}")


@table("ch5-decoding", "ch5")
def _decoding_table(r: dict) -> Table:
    return decoding_table(r["decoding"], r["multi"], r["span"])


def zhu_table(zhu: dict) -> Table:
    rows = []
    for block, s in zhu.items():
        for c in s:
            f, kind = c.run.final, c.run.objective
            rows.append([block, plot.LABELS.get(kind, kind), _acc(c.quantity("a2b")), _acc(c.quantity("b2a")),
                         _acc(c.quantity("swap")), f"{np.mean(f['b2a']['p_correct']) / c.run.world.chance:.3g}"])
    rows.append(["Zhu et al.'s code (GPT-2, 2 layers)", "ARM", "1.00", ZHU_CODE_ARM["acc"], "",
                 f"{ZHU_CODE_ARM['p_correct'] / ZHU_CODE_ARM['chance']:.2g}"])
    seeds = next(iter(zhu.values())).seeds
    return Table(["block", "model", "a2b acc", "b2a acc", "swap acc", "b2a p / chance"], rows,
                 caption="Zhu et al.'s split: V = 800, 200 pairs, 140 both ways, the other 60 each in a random "
                         f"direction (no two-way pairs: all 200 one way); {seeds_text(seeds)}; b2a p / chance: the mean "
                         "probability of the right held-out answer over chance; last row reported by an "
                         "independent run of their code (not recomputed here)")


@table("ch5-zhu", "ch5")
def _zhu_table(r: dict) -> Table:
    return zhu_table(r["zhu"])


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def depth_figure(depth: Sweep):
    """infill (hatched) and b2a (filled) accuracy of the MDM per depth and block, one panel per
    positional encoding, one dot per seed."""
    positionals = depth.axes["positional"]
    fig, axes = plot.figure(1, nrows=len(positionals), height=2.3, sharex=True)
    c = plot.COLORS["mdm"]
    groups = [(L, b) for b in depth.axes["variant"] for L in depth.axes["n_layers"]]
    for ax, positional, name in zip(axes[:, 0], positionals, "abcd"):
        for i, (layers, block) in enumerate(groups):
            cell = depth.cell(variant=block, n_layers=layers, positional=positional)
            plot.seed_bars(ax, i - 0.18, cell.quantity("infill"), c, 0.34, hatch="//", filled=False)
            plot.seed_bars(ax, i + 0.18, cell.quantity("b2a"), c, 0.34)
        ax.set_title(f"{positional} positions", loc="right", fontsize=9.5)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel("accuracy")
        plot.letter(ax, name)
    labels = [f"{layers} layer{'s' if layers > 1 else ''}\n{block.replace(' + ', ' +' + chr(10)).replace('attention ', 'attention' + chr(10))}"
              for layers, block in groups]
    axes[-1, 0].set_xticks(range(len(groups)), labels, fontsize=7.5)
    from matplotlib.patches import Patch
    axes[0, 0].legend(handles=[Patch(facecolor="white", edgecolor=c, hatch="//", label="infill"),
                               Patch(facecolor=c, edgecolor=c, label="b2a")],
                      loc="upper center", ncol=2, fontsize=8.5)
    return fig


@figure("beyond-depth", "ch5")
def _depth_figure(r: dict):
    return depth_figure(r["depth"])


def multi_figure(multi: Sweep, span: Sweep):
    """a2b, infill and b2a accuracy of the whole name against its length (llada_like block):
    token masking, and b2a with entity-span masking, MDM; the ARM's b2a for contrast."""
    fig, axes = plot.figure(1, height=3.0, layout="constrained")
    ax = axes[0, 0]
    ks = list(multi.axes["entity_tokens"])
    for probe in ("a2b", "infill", "b2a"):
        v = np.stack([multi.values(probe, entity_tokens=k, objective="mdm") for k in ks])
        plot.band(ax, ks, v, plot.COLORS["mdm"], plot.LINESTYLES[probe], f"MDM {probe}", marker=plot.MARKERS[probe])
    ks_span = list(span.axes["entity_tokens"])
    if ks_span:
        v = np.stack([span.values("b2a", entity_tokens=k) for k in ks_span])
        plot.band(ax, ks_span, v, "0.3", "--", "MDM b2a, span masking", marker="D")
    v = np.stack([multi.values("b2a", entity_tokens=k, objective="ar") for k in ks])
    plot.band(ax, ks, v, plot.COLORS["ar"], "--", "ARM b2a", marker="^")
    ax.set_xticks(ks)
    ax.set_xlabel("tokens per name")
    ax.set_ylabel("accuracy of the whole name")
    ax.set_ylim(-0.03, 1.05)
    fig.legend(loc="outside right center", fontsize=8)
    return fig


@figure("beyond-multitoken", "ch5")
def _multi_figure(r: dict):
    return multi_figure(r["multi"], r["span"])


def signatures_figure(sig: dict):
    """Which signature predicts b2a? (a) route correlation, (b) direct logit attribution of the
    attention outputs to the right b2a answer, (c) same-fact gradient cosine, against b2a accuracy:
    one dot per seed of every one-token MDM; crosses: seeds that did not learn their task (left out
    of the correlations); titles: r over the trained seeds, all and within each encoding."""
    r = signature_correlations(sig)
    fig, axes = plot.figure(3, height=3.0, sharey=True)
    for ax, key, label, name in zip(axes[0], SIGNATURES,
                                    ("route correlation", "attention's logit for a (DLA)", "same-fact cosine"), "abc"):
        for v in sig.values():
            rope = v["positional"] == "rope"
            ok = ~v["failed"]
            ax.scatter(v[key][ok], v["b2a"][ok], s=9, color=plot.COLORS["mdm"] if rope else "0.45",
                       marker="o" if rope else "s", alpha=0.7, linewidths=0)
            ax.scatter(v[key][~ok], v["b2a"][~ok], s=16, color="#d62728", marker="x", linewidths=1)
        ax.set_title(f"r = {r[key]['all']:.2f}\nRoPE {r[key]['rope']:.2f}, abs. {r[key]['absolute']:.2f}",
                     fontsize=8.5, loc="right")
        ax.set_xlabel(label, fontsize=9)
        plot.letter(ax, name)
    axes[0, 0].set_ylabel("b2a accuracy")
    axes[0, 0].set_ylim(-0.05, 1.25)
    axes[0, 0].set_yticks([0, 0.25, 0.5, 0.75, 1])
    handles = [axes[0, 0].scatter([], [], color=plot.COLORS["mdm"], s=9, label="RoPE"),
               axes[0, 0].scatter([], [], color="0.45", marker="s", s=9, label="absolute"),
               axes[0, 0].scatter([], [], color="#d62728", marker="x", s=16, label="failed to train")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8.5)
    return fig


def layers_figure(data: dict):
    """A 4-layer MDM (SwiGLU + RMSNorm, RoPE), layers numbered from 0 at the input: (a) route
    correlation per layer (and head), (b) DLA per layer, (c) same-fact gradient cosine of every
    layer's QK and OV blocks along training."""
    fig, axes = plot.figure(3, height=2.7)
    corr = data["corr_heads"]  # (K, L, H)
    L, H = corr.shape[1:]
    for h in range(H):
        plot.band(axes[0, 0], np.arange(L), corr[:, :, h].T, plot.COLORS["mdm"], ["-", "--", ":", "-."][h % 4],
                  f"head {h}" if H > 1 else None, marker="o")
    axes[0, 0].set_xlabel("layer")
    axes[0, 0].set_ylabel("route correlation")
    if H > 1:
        axes[0, 0].legend(fontsize=7.5)
    dla = data["dla"]  # (K, L)
    axes[0, 1].bar(np.arange(L), dla.mean(0), 0.6, color=plot.COLORS["mdm"], alpha=0.85)
    jitter = np.linspace(-0.15, 0.15, dla.shape[0])
    for l in range(L):
        axes[0, 1].scatter(l + jitter, dla[:, l], s=7, color="black", zorder=3, linewidths=0)
    axes[0, 1].axhline(0, color="0.5", lw=0.8)
    axes[0, 1].set_xlabel("layer")
    axes[0, 1].set_ylabel("logit for a (DLA)")
    trace = data["trace"]
    shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, L))
    for l in range(L):
        for block, ls in (("qk", ":"), ("ov", "-")):
            key = f"L{l}.{block}"
            if key in trace.values["fact"]:
                plot.band(axes[0, 2], trace.steps, trace["fact", key], shades[l], ls,
                          f"layer {l} {block.upper()}" if block == "ov" else None, marker=None)
    axes[0, 2].plot([], [], color="0.4", ls=":", label="QK (dotted)")
    axes[0, 2].set_xlabel("training step")
    axes[0, 2].set_ylabel("same-fact cosine")
    axes[0, 2].legend(fontsize=7, ncol=1, loc="best")
    for ax, name in zip(axes[0], "abc"):
        plot.letter(ax, name)
    return fig


def probe_demo_table(demo: dict) -> Table:
    rows = [[p, f"{demo['revlib'][p]['acc']:.3f}", f"{demo['evaluate'][p]['acc']:.3f}",
             f"{demo['hf'][p]['nll']:.2f}" if demo["hf"] else "n/a"] for p in ("a2b", "infill", "b2a")]
    chance = f"; the untrained BERT's chance loss is {-np.log(demo['hf_chance']):.2f} nats" if demo.get("hf") else ""
    return Table(["probe", "revlib model via text (acc)", "revlib.evaluate (acc)", "tiny BERT: loss (nats)"], rows,
                 caption="chapter 1's first MDM seed through revlib.lm_probe, and a local untrained BERT" + chance)


@figure("beyond-signatures", "ch5")
def _signatures_figure(r: dict):
    return signatures_figure(r["signatures"])


@figure("beyond-layers", "ch5")
def _layers_figure(r: dict):
    return layers_figure(r["layers"])


# ---------------------------------------------------------------------------------------------
# captions (the notebooks' figure metadata says the same; tests/test_notebooks.py checks it)
# ---------------------------------------------------------------------------------------------

from .nb import caption  # noqa: E402

caption("fig-beyond-depth",
        "`infill` (hatched) and `b2a` accuracy of the MDM by depth and block, with (a) rotary and (b) learned "
        "absolute positions; one dot per seed.",
        "Bars by depth and block: with rotary positions b2a stays close to infill at every depth; with absolute "
        "positions it falls as layers are added.")
caption("fig-beyond-multitoken",
        "Accuracy of the whole name against its length, `llada_like` block (bands: the seeds' range): the MDM's "
        "`a2b`, `infill` and `b2a` with token masking, its `b2a` with entity-span masking (grey), and the ARM's "
        "`b2a`.",
        "Curves against tokens per name: a2b and infill stay high while b2a falls from near 1 at one token to near "
        "0 at three.")
caption("fig-beyond-signatures",
        "One dot per seed of every one-token MDM of this chapter (green: RoPE, grey squares: absolute; red crosses: "
        "seeds that did not learn their task), `b2a` accuracy against (a) the route correlation (mean over layers "
        "and heads), (b) the direct logit attribution of all attention outputs to the right `b2a` answer and "
        "(c) the same-fact cosine of the `infill` and `b2a` gradients, all at the end of training. Titles: the "
        "correlation over the trained seeds, all together and within each positional encoding.",
        "Three scatter plots of b2a accuracy against each signature; the direct logit attribution and the gradient "
        "cosine line up with b2a, the route correlation less so.")
caption("fig-beyond-layers",
        "A four-layer MDM (SwiGLU + RMSNorm, RoPE, one head), layers numbered from 0 at the input: (a) route "
        "correlation per layer; (b) direct logit attribution of each layer's attention to the right `b2a` answer "
        "(dots: seeds); (c) same-fact cosine of the `infill` and `b2a` gradients for each layer's OV (solid) and QK "
        "(dotted) blocks, along training.",
        "Three panels: route correlation per layer, a bar per layer of its contribution to the answer's logit, and "
        "gradient cosines per layer along training.")
