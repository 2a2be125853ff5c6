"""Widgets for the chapters: each retrains small models through the cache and redraws.

Dragging needs a live kernel; on the static book page the first output is drawn at build time.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from . import plot
from .cache import cached_train
from .config import ConfigError, preset


# The slider ranges stop where a retrain (ARM + MDM) would take more than ~3 s on a 2-core
# laptop; `python -m revlib bench` times the slowest corner (widget_seconds_max).
MAX_PAIRS, MAX_D_MODEL, MAX_STEPS = 128, 32, 200


def _training_controls(w) -> dict:
    """The sliders every retraining explorer shares: pairs, d_model, positional encoding, steps."""
    return dict(
        pairs=w.IntSlider(value=128, min=16, max=MAX_PAIRS, step=16, description="pairs", continuous_update=False),
        d_model=w.IntSlider(value=32, min=8, max=MAX_D_MODEL, step=8, description="d_model", continuous_update=False),
        positional=w.Dropdown(options=["rope", "absolute", "alibi", "none"], value="rope", description="positions"),
        steps=w.IntSlider(value=MAX_STEPS, min=50, max=MAX_STEPS, step=50, description="steps", continuous_update=False),
    )


def _timed(figure_fn):
    """Wrap a figure function for a widget: draw, say how long training took, report bad settings."""
    def show(**settings):
        try:
            fig = figure_fn(**settings)
            plt.show()
            print(f"trained in {fig.seconds:.1f} s" if fig.seconds else "the models came from the cache")
        except ConfigError as err:
            print(f"not a valid setting: {err}")
    return show


def curse_figure(pairs: int = 128, d_model: int = 32, positional: str = "rope", steps: int = 200, seed: int = 0):
    """Train (or load) one ARM and one MDM with these settings; bar chart of their probe accuracy."""
    finals, seconds, world = {}, 0.0, None
    for kind in ("ar", "mdm"):
        run = cached_train(preset(kind, n_pairs=pairs, d_model=d_model, positional=positional,
                                  steps=steps, seed=seed), progress=False)
        finals[kind], world = run.final, run.world
        seconds += 0.0 if run.cached else run.seconds
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    plot.probe_bars(finals, world.chance, ax=ax)
    ax.set_title(f"{pairs} pairs, d_model={d_model}, {positional}, {steps} steps")
    fig.seconds = seconds  # training time of this call (0 when both runs came from the cache)
    return fig


def curse_explorer():
    """Sliders for pairs, d_model, positional encoding and steps over :func:`curse_figure`."""
    import ipywidgets as w

    return w.interactive(_timed(curse_figure), **_training_controls(w))


def coupling_figure(d: int = 32, offset: int = 2, base: float = 10_000.0, samples: int = 20_000):
    """Chapter 2: the RoPE score correlation for head size ``d``, offset ``offset`` and ``base``.

    Left: cos(2Δθ_k) for every rotation plane k; their mean is the correlation. Right: the
    correlation against the head size at this offset and base, with its d → ∞ limit. The title
    compares the closed form with a Monte-Carlo estimate (private generator, seed 0).
    """
    from . import theory

    thetas = theory.rope_thetas(d, base)
    analytic = theory.rope_corr(d, offset, base)
    mc = theory.monte_carlo_corr("rope", d, offset, base, samples=samples, seed=0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    left.bar(range(d // 2), torch.cos(2 * offset * thetas).numpy(), color=plot.COLORS["mdm"], alpha=0.8)
    left.axhline(analytic, color="black", lw=1.2, label=f"mean = Corr = {analytic:.3f}")
    left.axhline(0.0, color="0.5", lw=0.8)
    left.set_xlabel("rotation plane k  (θ_k = base^(-2k/d))")
    left.set_ylabel("cos(2Δ θ_k)")
    left.set_ylim(-1.05, 1.05)
    left.legend(loc="lower right")
    ds = list(range(2, 257, 2))
    right.plot(ds, [theory.rope_corr(x, offset, base) for x in ds], color=plot.COLORS["mdm"], lw=1.8,
               label="closed form")
    right.axhline(theory.rope_corr_limit(offset, base), **plot.CHANCE_STYLE, label="d → ∞")
    right.errorbar([d], [mc.estimate], yerr=[2 * mc.stderr], fmt="o", color="black", ms=4,
                   label="Monte-Carlo ± 2 se")
    right.set_xscale("log", base=2)
    right.set_xlabel("head size d")
    right.set_ylabel("Corr(S_infill, S_b2a)")
    right.set_ylim(-1.05, 1.05)
    right.legend(loc="lower right")
    fig.suptitle(f"d = {d}, Δ = {offset}, base = {base:g}: closed form {analytic:.3f}, "
                 f"Monte-Carlo {mc.estimate:.3f} ± {mc.stderr:.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def coupling_explorer():
    """Sliders for head size, offset and RoPE base over :func:`coupling_figure` (no training)."""
    import ipywidgets as w

    def show(d, offset, log10_base):
        coupling_figure(d, offset, 10.0**log10_base)
        plt.show()

    controls = dict(
        d=w.IntSlider(value=32, min=2, max=128, step=2, description="head size d", continuous_update=False),
        offset=w.IntSlider(value=2, min=0, max=32, step=1, description="offset Δ", continuous_update=False),
        log10_base=w.FloatSlider(value=4.0, min=1.0, max=6.0, step=0.5, description="log10 base",
                                 continuous_update=False),
    )
    return w.interactive(show, **controls)


ALIGN_BLOCKS = ("ov_product", "ov", "qk", "embed", "unembed", "all")


def alignment_figure(pairs: int = 128, d_model: int = 32, positional: str = "rope", steps: int = 200,
                     measure: str = "fact", seed: int = 0):
    """Cosine of ∇ℓ_source and ∇ℓ_b2a by block, at initialisation and trained, ARM and MDM (chapter 3).

    ``measure`` is ``"fact"`` (mean over facts of one fact's two gradients) or ``"mean"`` (the
    averaged gradients). The runs come from (or go into) the cache; the default settings are
    chapter 1's explorer's, so the first drawing costs no training.
    """
    import numpy as np

    from . import alignment
    from .model import Transformer

    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    x = np.arange(len(ALIGN_BLOCKS))
    seconds = 0.0
    for i, kind in enumerate(("ar", "mdm")):
        run = cached_train(preset(kind, n_pairs=pairs, d_model=d_model, positional=positional, steps=steps,
                                  seed=seed), progress=False)
        seconds += 0.0 if run.cached else run.seconds
        init = Transformer(run.experiment.model, run.world.vocab_size, run.seeds)
        for j, (model, label) in enumerate(((init, "init"), (run.model, "trained"))):
            values = alignment.alignment(model, run.world, train_config=run.experiment.train)[measure]
            heights = [float(values[b][0]) for b in ALIGN_BLOCKS]
            ax.bar(x + (2 * i + j - 1.5) * 0.2, heights, 0.18, color=plot.COLORS[kind],
                   alpha=0.4 if label == "init" else 0.9, label=f"{plot.LABELS[kind]} {label}")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, ["OV product", "OV", "QK", "embed", "unembed", "all"])
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("cosine" + (" (same fact)" if measure == "fact" else " (averaged gradients)"))
    ax.legend(ncol=4, loc="lower left", fontsize=8)
    ax.set_title(f"{pairs} pairs, d_model={d_model}, {positional}, {steps} steps", fontsize=10)
    fig.seconds = seconds  # training time of this call (0 when the runs came from the cache)
    return fig


def alignment_explorer():
    """Sliders over :func:`alignment_figure`: pairs, d_model, positional encoding, steps, measure."""
    import ipywidgets as w

    controls = _training_controls(w)
    controls["measure"] = w.Dropdown(options=[("same fact", "fact"), ("averaged gradients", "mean")],
                                     value="fact", description="cosine")
    return w.interactive(_timed(alignment_figure), **controls)
