"""The book's figures, each one function, shared by the chapters and ``python -m revlib figures``.

A figure function takes the runs it draws (as the chapter has them) or, called with no
arguments, trains or loads them through the cache exactly as the chapter does, so the
command line reproduces the book's figures. It returns the matplotlib Figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np

from . import plot
from .cache import cached_train
from .config import preset

REGISTRY: dict[str, Callable] = {}
CHAPTER1_SEEDS = range(4)


def register(name: str):
    def wrap(fn):
        REGISTRY[name] = fn
        return fn
    return wrap


def chapter1_runs(progress: bool = False) -> dict:
    """The chapter-1 models: both kinds at the default preset, four seeds each (cached)."""
    return {kind: cached_train(preset(kind), seeds=CHAPTER1_SEEDS, progress=progress) for kind in ("ar", "mdm")}


def zhu_runs(progress: bool = False) -> dict:
    """Zhu et al.'s split: V = 800, 200 pairs, 140 trained both ways; two seeds each (cached)."""
    return {
        kind: cached_train(preset(kind, n_pairs=200, both_fraction=0.7, vocab_size=800, eval_every=10),
                           seeds=range(2), progress=progress)
        for kind in ("ar", "mdm")
    }


@register("curse-probes")
def curse_probes(runs: dict | None = None):
    """Accuracy and p(right answer) per probe, ARM vs MDM (chapter 1)."""
    runs = runs or chapter1_runs()
    finals = {kind: run.final for kind, run in runs.items()}
    chance = next(iter(runs.values())).world.chance
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    plot.probe_bars(finals, chance, metric="acc", ax=axes[0])
    plot.probe_bars(finals, chance, metric="p_correct", ax=axes[1])
    axes[0].set_title("accuracy")
    axes[1].set_title("probability of the right answer (log scale)")
    fig.tight_layout()
    return fig


@register("curse-headline")
def curse_headline(runs: dict | None = None):
    """The landing page's figure: a2b and b2a accuracy, ARM vs MDM."""
    runs = runs or chapter1_runs()
    finals = {kind: run.final for kind, run in runs.items()}
    chance = next(iter(runs.values())).world.chance
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    plot.probe_bars(finals, chance, metric="acc", ax=ax, probes=("a2b", "b2a"))
    ax.set_title("Trained on 'a is b' only: who can answer 'b is ?'")
    fig.tight_layout()
    return fig


@register("curse-curves")
def curse_curves(runs: dict | None = None):
    """Probe accuracy and probability during training (chapter 1)."""
    runs = runs or chapter1_runs()
    histories = {kind: run.history for kind, run in runs.items()}
    chance = next(iter(runs.values())).world.chance
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    plot.training_curves(histories, "acc", probes=("a2b", "b2a"), ax=axes[0])
    plot.training_curves(histories, "p", probes=("a2b", "b2a"), chance=chance, ax=axes[1], log=True)
    axes[0].set_title("accuracy")
    axes[1].set_title("p(right answer), log scale")
    fig.tight_layout()
    return fig


@register("curse-zhu")
def curse_zhu(zhu: dict | None = None):
    """Training loss and held-out b2a loss on Zhu et al.'s split (chapter 1)."""
    zhu = zhu or zhu_runs()
    vocab = next(iter(zhu.values())).world.vocab_size
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, kind in zip(axes, ("ar", "mdm")):
        h = zhu[kind].history
        plot.band(ax, h["step"], h["loss"], plot.COLORS[kind], "-", "training loss")
        plot.band(ax, h["step"], h["b2a_nll"], plot.COLORS[kind], "--", "held-out b2a loss")
        ax.axhline(np.log(vocab), **plot.CHANCE_STYLE, label="chance, log V")
        ax.set_title(plot.LABELS[kind])
        ax.set_xlabel("training step")
        ax.legend()
    axes[0].set_ylabel("loss (nats)")
    fig.tight_layout()
    return fig


def save_all(out: str | Path, names: list[str] | None = None) -> list[Path]:
    """Draw every registered figure (or ``names``) and write NAME.png and NAME.svg into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot.use_style()
    written = []
    for name in names or list(REGISTRY):
        fig = REGISTRY[name]()
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
            written.append(path)
        plt.close(fig)
    return written
