"""Widgets for the chapters: each retrains small models through the cache and redraws.

Dragging needs a live kernel; on the static book page the first output is drawn at build time.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from . import plot
from .cache import cached_train
from .config import ConfigError, preset


def curse_figure(pairs: int = 128, d_model: int = 32, positional: str = "rope", steps: int = 300, seed: int = 0):
    """Train (or load) one ARM and one MDM with these settings; bar chart of their probe accuracy."""
    finals, seconds, world = {}, 0.0, None
    for kind in ("ar", "mdm"):
        run = cached_train(preset(kind, n_pairs=pairs, d_model=d_model, positional=positional,
                                  steps=steps, seed=seed), progress=False)
        finals[kind], world = run.final, run.world
        seconds += 0.0 if run.cached else run.seconds
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    plot.probe_bars(finals, world.chance, ax=ax)
    ax.set_title(f"{pairs} pairs, d_model={d_model}, {positional}, {steps} steps"
                 + (f"  (trained in {seconds:.1f} s)" if seconds else "  (from the cache)"))
    return fig


def curse_explorer():
    """Sliders for pairs, d_model, positional encoding and steps over :func:`curse_figure`."""
    import ipywidgets as w

    def show(pairs, d_model, positional, steps):
        try:
            curse_figure(pairs, d_model, positional, steps)
            plt.show()
        except ConfigError as err:
            print(f"not a valid setting: {err}")

    controls = dict(
        pairs=w.IntSlider(value=128, min=16, max=256, step=16, description="pairs", continuous_update=False),
        d_model=w.IntSlider(value=32, min=8, max=64, step=8, description="d_model", continuous_update=False),
        positional=w.Dropdown(options=["rope", "absolute", "alibi", "none"], value="rope", description="positions"),
        steps=w.IntSlider(value=300, min=50, max=600, step=50, description="steps", continuous_update=False),
    )
    return w.interactive(show, **controls)
