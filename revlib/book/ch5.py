"""Chapter 5, beyond one layer: depth, blocks, multi-token names, per-layer signatures, span
masking and the probe interface for real masked LMs."""
from __future__ import annotations

import hashlib
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import alignment, coupling
from ..cache import cached_arrays, cached_train, experiment_key
from ..config import preset
from ..sweep import sweep
from . import ch1, plot
from .registry import figure, table
from .seeds import SEEDS, WORLD_SEED
from .tables import Table, mean_sd

DEPTHS = (1, 2, 4)
BLOCKS = {"attention only": {}, "SwiGLU + RMSNorm": {"mlp": "swiglu", "norm": "rmsnorm", "bias": False, "lr": 0.03}}
POSITIONALS = ("rope", "absolute")
ENTITY_TOKENS = (1, 2, 3)
MULTI = dict(n_pairs=64, steps=400)  # multi-token names on the llada_like block (chapter 4 uses k = 2 of it)
ZHU = dict(n_pairs=200, reversed_fraction=0.7, vocab_size=800, relations="inverse", hold_out="random", eval_every=25)
# Reported by an independent run of Zhu et al.'s own code (their repository, shrunk to 2 layers,
# d 128, 400 epochs, V 800, 200 pairs, 140 both ways), not recomputed by this book.
ZHU_CODE_ARM = {"acc": "0 of 60", "p_correct": 3e-14, "chance": 1.25e-3}
LLADA_COUPLETS = {"forward": 51.8, "reversal": 45.6}  # LLaDA-8B-Instruct, poem couplets (Nie et al.)


def _cached(kind: str, exp, fn, **options) -> dict:
    source = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    return cached_arrays(f"ch5-{kind}", experiment_key(exp, SEEDS, measure=source, **options), fn)


def variant(kind: str, layers: int, block: str, positional: str):
    return ch1.experiment(kind, n_layers=layers, positional=positional, **BLOCKS[block])


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------

def depth_blocks() -> dict:
    """``{(kind, layers, block, positional): Run}``: the MDM at every depth, block and encoding;
    the ARM at 1 and 4 layers with RoPE."""
    out = {}
    for layers in DEPTHS:
        for block in BLOCKS:
            for positional in POSITIONALS:
                out["mdm", layers, block, positional] = cached_train(variant("mdm", layers, block, positional), SEEDS)
            if layers in (1, 4):
                out["ar", layers, block, "rope"] = cached_train(variant("ar", layers, block, "rope"), SEEDS)
    return out


def presets() -> dict:
    """``{(name, kind): Run}`` for the llada_like and gpt2_like blocks, MDM and ARM."""
    out = {}
    for name in ("llada_like", "gpt2_like"):
        for kind in ("mdm", "ar"):
            over = {} if kind == "mdm" else {"objective": "ar", "attention": "causal"}
            out[name, kind] = cached_train(preset(name, seed=WORLD_SEED, **over), SEEDS)
    return out


def multi_token(masking: str = "token") -> dict:
    """``{(k, kind): Run}``: k-token names on the llada_like block (64 facts, 400 steps), the MDM
    and the ARM; with ``masking="span"`` the MDM only, for k > 1 (for one-token names a span is a token)."""
    out = {}
    for k in ENTITY_TOKENS:
        if masking == "span" and k == 1:
            continue
        for kind in (("mdm",) if masking == "span" else ("mdm", "ar")):
            if kind == "ar":
                over = {"objective": "ar", "attention": "causal"}
            else:
                over = {"masking": masking} if masking != "token" else {}
            out[k, kind] = cached_train(preset("llada_like", seed=WORLD_SEED, entity_tokens=k, **MULTI, **over), SEEDS)
    return out


def zhu_exact() -> dict:
    """Zhu et al.'s split as their code runs it (each one-way pair trained in a random direction):
    ``{(block, kind): Run}`` for the one-layer toy and the gpt2_like block, and the gpt2_like MDM
    on the same split with no pair trained both ways."""
    out = {}
    for block in ("one layer", "gpt2_like"):
        for kind in ("mdm", "ar"):
            if block == "one layer":
                exp = ch1.experiment(kind, **ZHU)
            else:
                over = {} if kind == "mdm" else {"objective": "ar", "attention": "causal"}
                exp = preset("gpt2_like", seed=WORLD_SEED, **ZHU, **over)
            out[block, kind] = cached_train(exp, SEEDS)
    # the control that says why the gpt2_like MDM reverses here: the same split, no pair both ways
    exp = preset("gpt2_like", seed=WORLD_SEED, **{**ZHU, "reversed_fraction": 0.0})
    out["gpt2_like, no two-way pairs", "mdm"] = cached_train(exp, SEEDS)
    return out


def decoding(runs: dict | None = None, span: dict | None = None) -> dict:
    """Whole-name accuracy of the MDMs of :func:`multi_token` decoded one slot at a time, most
    confident first (revlib.measure.iterative_accuracy): ``{(k, masking): {probe: (K,)}}``."""
    from ..measure import iterative_accuracy

    runs = runs or multi_token()
    span = multi_token("span") if span is None else span
    out = {}
    for masking, group in (("token", runs), ("span", span)):
        for (k, kind), run in group.items():
            if kind != "mdm":
                continue

            def measure(run=run):
                return {p: iterative_accuracy(run.model, run.world.probe(p)).numpy() for p in ("a2b", "infill", "b2a")}

            out[k, masking] = _cached("decoding", run.experiment, measure)
    return out


def signature_runs(depth: dict | None = None, extra: dict | None = None) -> dict:
    """The one-token MDMs of :func:`depth_blocks` and :func:`presets`, keyed for :func:`signatures`."""
    depth = depth or depth_blocks()
    extra = presets() if extra is None else extra
    return {**depth, **{("preset",) + k: v for k, v in extra.items()}}


def signatures(runs: dict) -> dict:
    """For every MDM run: the three signatures at the end of training, per seed (K,):
    ``corr`` (route correlation of the infill and b2a scores, mean over layers and heads),
    ``dla`` (what the attention outputs add to the right b2a answer's logit, summed over layers),
    ``cosine`` (mean over facts of the same-fact cosine of the infill and b2a gradients, all
    parameters), and ``b2a`` (accuracy)."""
    out = {}
    for key, run in runs.items():
        if run.objective != "mdm" or run.world.k != 1:
            continue

        def measure(run=run):
            m, w = run.model, run.world
            scores = coupling.route_scores(m, w, "mdm")
            corr = coupling.route_corr(scores).mean(dim=(1, 2)).numpy()
            dla = coupling.direct_logit_attribution(m, w, "mdm").sum(1).numpy()
            a = alignment.alignment(m, w, "mdm", "infill", run.experiment.train)
            return {"corr": corr, "dla": dla, "cosine": a["fact"]["all"], "b2a": run.final["b2a"]["acc"]}

        out[key] = {**_cached("signatures", run.experiment, measure), "failed": np.asarray(run.failed),
                    "positional": run.experiment.model.positional}
    return out


SIGNATURES = ("corr", "dla", "cosine")


def signature_correlations(sig: dict) -> dict:
    """Pearson r between each signature and b2a accuracy over the seeds that learned their task
    (a seed that learned nothing has aligned gradients and no reversal, which says nothing about
    the mechanism): ``{signature: {"all": r, "rope": r, "absolute": r}}``, plus ``n`` (seeds used)
    and ``failed`` (seeds left out)."""
    def pooled(key, positional=None):
        keep = [v for v in sig.values() if positional in (None, v["positional"])]
        x = np.concatenate([v[key][~v["failed"]] for v in keep])
        y = np.concatenate([v["b2a"][~v["failed"]] for v in keep])
        return float(np.corrcoef(x, y)[0, 1]), x.size

    out = {key: {"all": pooled(key)[0], "rope": pooled(key, "rope")[0], "absolute": pooled(key, "absolute")[0]}
           for key in SIGNATURES}
    out["n"] = pooled("corr")[1]
    out["failed"] = int(sum(v["failed"].sum() for v in sig.values()))
    return out


def layer_signatures(run) -> dict:
    """A multi-layer MDM, per layer: route correlation per head (K, L, H), DLA (K, L), and the
    same-fact gradient cosine per layer's blocks along training (cached trace, by layer)."""
    def measure(run=run):
        m, w = run.model, run.world
        return {"corr_heads": coupling.route_corr(coupling.route_scores(m, w, "mdm")).numpy(),
                "dla": coupling.direct_logit_attribution(m, w, "mdm").numpy()}

    static = _cached("layers", run.experiment, measure)
    _, trace = alignment.alignment_trace(run.experiment, SEEDS, by_layer=True)
    return {**static, "trace": trace}


def probe_interface_demo() -> dict:
    """The text-level probes (revlib.lm_probe) on (a) revlib's own MDM, checked against
    revlib.evaluate, and (b) a tiny Hugging Face BERT built locally from a config (untrained)."""
    from .. import lm_probe

    run = ch1.runs()["mdm"]
    lm = lm_probe.revlib_lm(run.model, run.world, member=0)
    facts = lm_probe.facts_from_world(run.world)
    out = {"revlib": lm_probe.score(lm, facts), "evaluate": {p: {m: float(v[0]) for m, v in s.items()}
                                                              for p, s in run.final.items() if s}}
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
    except ImportError:  # the optional extra revlib[hf] is not installed
        out["hf"] = None
        return out
    words = ["[PAD]", "[UNK]", "[MASK]", "is", "the", "parent", "child", "of",
             "ada", "bo", "cy", "di", "eve", "fay"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, mask_token="[MASK]", unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)  # only the untrained BERT's weights; revlib never touches the global RNG
    bert = BertForMaskedLM(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=16))
    facts = [lm_probe.TextFact("ada", "is the parent of", "bo", "is the child of"),
             lm_probe.TextFact("cy", "is the parent of", "di", "is the child of"),
             lm_probe.TextFact("eve", "is the parent of", "fay", "is the child of")]
    out["hf"] = lm_probe.score(lm_probe.hf_lm(bert, tokenizer), facts)
    out["hf_chance"] = 1 / len(words)
    return out


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def _acc(run, probe) -> str:
    f = run.final.get(probe)
    if f is None:
        return "n/a"
    return mean_sd(f["acc"])


@table("ch5-depth")
def depth_table(runs: dict | None = None, extra: dict | None = None) -> Table:
    runs = runs or depth_blocks()
    extra = presets() if extra is None else extra
    rows = []
    for (kind, layers, block, positional), run in runs.items():
        rows.append([plot.LABELS[kind], str(layers), block, positional, _acc(run, "a2b"), _acc(run, "infill"),
                     _acc(run, "b2a"), f"{run.failed.sum()}"])
    for (name, kind), run in extra.items():
        m = run.experiment.model
        rows.append([plot.LABELS[kind], str(m.n_layers), name, m.positional, _acc(run, "a2b"), _acc(run, "infill"),
                     _acc(run, "b2a"), f"{run.failed.sum()}"])
    return Table(["model", "layers", "block", "positions", "a2b acc", "infill acc", "b2a acc", "failed"], rows,
                 caption="128 one-token facts, d_model 32, 8 seeds per row (mean ± sd); SwiGLU + RMSNorm and the "
                         "presets train at lr 0.03, attention-only blocks at 0.1")


@table("ch5-entity-tokens")
def multi_table(runs: dict | None = None, span: dict | None = None) -> Table:
    runs = runs or multi_token()
    span = multi_token("span") if span is None else span
    rows = []
    for (k, kind), run in runs.items():
        rows.append([str(k), plot.LABELS[kind], "token", _acc(run, "a2b"), _acc(run, "infill"), _acc(run, "b2a"),
                     f"{run.failed.sum()}"])
    for (k, kind), run in span.items():
        rows.append([str(k), plot.LABELS[kind], "span", _acc(run, "a2b"), _acc(run, "infill"), _acc(run, "b2a"),
                     f"{run.failed.sum()}"])
    return Table(["tokens per name", "model", "masking", "a2b acc", "infill acc", "b2a acc", "failed"], rows,
                 caption="the llada_like block (2 layers, 2 heads, RMSNorm, SwiGLU), 64 facts, 400 steps, 8 seeds; "
                         "accuracy of the whole name")


@table("ch5-decoding")
def decoding_table(dec: dict | None = None, runs: dict | None = None, span: dict | None = None) -> Table:
    runs = runs or multi_token()
    span = multi_token("span") if span is None else span
    dec = dec or decoding(runs, span)
    rows = []
    for (k, masking), it in dec.items():
        run = (runs if masking == "token" else span)[k, "mdm"]
        for probe in ("a2b", "infill", "b2a"):
            rows.append([str(k), masking, probe, mean_sd(run.final[probe]["acc"]), mean_sd(it[probe])])
    return Table(["tokens per name", "masking", "probe", "one pass", "one slot at a time"], rows,
                 caption="MDM (llada_like block, 64 facts), accuracy of the whole name, 8 seeds")


@table("ch5-zhu")
def zhu_table(runs: dict | None = None) -> Table:
    runs = runs or zhu_exact()
    rows = []
    for (block, kind), run in runs.items():
        f = run.final
        rows.append([block, plot.LABELS[kind], _acc(run, "a2b"), _acc(run, "b2a"), _acc(run, "swap"),
                     f"{np.mean(f['b2a']['p_correct']) / run.world.chance:.3g}"])
    rows.append(["Zhu et al.'s code (GPT-2, 2 layers)", "ARM", "1.00", ZHU_CODE_ARM["acc"], "",
                 f"{ZHU_CODE_ARM['p_correct'] / ZHU_CODE_ARM['chance']:.2g}"])
    return Table(["block", "model", "a2b acc", "b2a acc", "swap acc", "b2a p / chance"], rows,
                 caption="Zhu et al.'s split: V = 800, 200 pairs, 140 both ways, the other 60 each in a random "
                         "direction (no two-way pairs: all 200 one way); 8 seeds; b2a p / chance: the mean "
                         "probability of the right held-out answer over chance; last row reported by an "
                         "independent run of their code")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

@figure("beyond-depth")
def depth_figure(runs: dict | None = None):
    """infill (hatched) and b2a (filled) accuracy of the MDM per depth and block, (a) rotary and
    (b) learned absolute positions, one dot per seed."""
    runs = runs or depth_blocks()
    fig, axes = plot.figure(1, nrows=2, height=2.3, sharex=True)
    c = plot.COLORS["mdm"]
    groups = [(L, b) for b in BLOCKS for L in DEPTHS]
    for ax, positional, name in zip(axes[:, 0], POSITIONALS, "ab"):
        for i, (layers, block) in enumerate(groups):
            run = runs["mdm", layers, block, positional]
            plot.seed_bars(ax, i - 0.18, run.final["infill"]["acc"], c, 0.34, hatch="//", filled=False)
            plot.seed_bars(ax, i + 0.18, run.final["b2a"]["acc"], c, 0.34)
        ax.set_title(f"{positional} positions", loc="right", fontsize=9.5)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel("accuracy")
        plot.letter(ax, name)
    kinds = {"attention only": "attention\nonly", "SwiGLU + RMSNorm": "SwiGLU +\nRMSNorm"}
    labels = [f"{layers} layer{'s' if layers > 1 else ''}\n{kinds[block]}" for layers, block in groups]
    axes[1, 0].set_xticks(range(len(groups)), labels, fontsize=8)
    from matplotlib.patches import Patch
    axes[0, 0].legend(handles=[Patch(facecolor="white", edgecolor=c, hatch="//", label="infill"),
                               Patch(facecolor=c, edgecolor=c, label="b2a")],
                      loc="upper center", ncol=2, fontsize=8.5)
    return fig


@figure("beyond-multitoken")
def multi_figure(runs: dict | None = None, span: dict | None = None):
    """a2b, infill and b2a accuracy of the whole name against its length (llada_like block):
    token masking (solid) and entity-span masking (dashed), MDM; the ARM's b2a for contrast."""
    runs = runs or multi_token()
    span = multi_token("span") if span is None else span
    fig, axes = plot.figure(1, height=3.0, layout="constrained")
    ax = axes[0, 0]
    ks = list(ENTITY_TOKENS)
    for probe in ("a2b", "infill", "b2a"):
        v = np.stack([runs[k, "mdm"].final[probe]["acc"] for k in ks])
        plot.band(ax, ks, v, plot.COLORS["mdm"], plot.LINESTYLES[probe], f"MDM {probe}", marker=plot.MARKERS[probe])
    ks_span = [k for k in ks if (k, "mdm") in span]
    if ks_span:
        v = np.stack([span[k, "mdm"].final["b2a"]["acc"] for k in ks_span])
        plot.band(ax, ks_span, v, "0.3", "--", "MDM b2a, span masking", marker="D")
    v = np.stack([runs[k, "ar"].final["b2a"]["acc"] for k in ks])
    plot.band(ax, ks, v, plot.COLORS["ar"], "--", "ARM b2a", marker="^")
    ax.set_xticks(ks)
    ax.set_xlabel("tokens per name")
    ax.set_ylabel("accuracy of the whole name")
    ax.set_ylim(-0.03, 1.05)
    fig.legend(loc="outside right center", fontsize=8)
    return fig


@figure("beyond-signatures")
def signatures_figure(sig: dict | None = None):
    """Which signature predicts b2a? (a) route correlation, (b) direct logit attribution of the
    attention outputs to the right b2a answer, (c) same-fact gradient cosine, against b2a accuracy:
    one dot per seed of every one-token MDM; crosses: seeds that did not learn their task (left out
    of the correlations); titles: r over the trained seeds, all and within each encoding."""
    if sig is None:
        sig = signatures(signature_runs())
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


@figure("beyond-layers")
def layers_figure(data: dict | None = None):
    """A 4-layer MDM (SwiGLU + RMSNorm, RoPE), layers numbered from 0 at the input: (a) route
    correlation per layer (and head), (b) DLA per layer, (c) same-fact gradient cosine of every
    layer's QK and OV blocks along training."""
    if data is None:
        data = layer_signatures(depth_blocks()["mdm", 4, "SwiGLU + RMSNorm", "rope"])
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
