"""Explorers for the chapters, two kinds.

* :class:`FrameExplorer` moves on the static page, with no kernel and no network: it holds one
  pre-rendered frame (a PNG at twice the page resolution) per point of a grid of settings,
  computed when the book builds from cached runs, and a few lines of JavaScript show the frame
  the sliders select. It works the same in a live notebook.
* :class:`Explorer` (ipywidgets) retrains at *any* setting in a live kernel (Binder, Colab or
  ``make lab``). Every redraw closes the figure it replaces, so a long-lived kernel does not
  accumulate figures.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import matplotlib.pyplot as plt
import torch

from ..cache import cached_train
from ..config import ConfigError, preset
from ..training import torch_threads, train
from . import plot

# Chapter 1's explorer: its slowest retrain (ARM + MDM at the largest settings) is what
# python -m revlib bench reports as explorer_retrain_s.
from ..bench import EXPLORER_MAX_D_MODEL as MAX_D_MODEL, EXPLORER_MAX_PAIRS as MAX_PAIRS, EXPLORER_MAX_STEPS as MAX_STEPS  # noqa: E402


FRAME_DPI = 2 * 110  # twice the page's resolution: sharp on high-density screens


def png_bytes(fig, colors: int = 48) -> bytes:
    """A figure as a PNG at ``FRAME_DPI``, reduced to a palette of ``colors`` colours (line art
    loses nothing visible and the file shrinks about three times)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FRAME_DPI, metadata={"Software": None})
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


class FrameExplorer:
    """Pre-rendered frames over a grid of settings, switched by sliders on the page.

    ``axes`` maps a slider's label to its values' labels, in order; ``draw(*indices)`` returns the
    figure for one point of the grid (one index per axis). Every frame is drawn once, here.
    """

    def __init__(self, name: str, axes: dict[str, list[str]], draw, alt: str, note: str = ""):
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise ValueError(f"an explorer's name is lower case letters, digits and dashes, got {name!r}")
        self.name, self.axes, self.alt, self.note = name, {k: [str(v) for v in vs] for k, vs in axes.items()}, alt, note
        self.frames = {}
        for index in itertools.product(*(range(len(v)) for v in self.axes.values())):
            fig = draw(*index)
            self.frames[",".join(map(str, index))] = base64.b64encode(png_bytes(fig)).decode()
            plt.close(fig)

    def __repr__(self) -> str:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in self.axes.items())
        return f"FrameExplorer({self.name!r}: {sizes} frames; drag the sliders in a browser)"

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames.values())

    def _repr_html_(self) -> str:
        uid = f"explorer-{self.name}"
        controls = []
        for a, (label, values) in enumerate(self.axes.items()):
            controls.append(
                f'<label class="revlib-slider"><span>{html.escape(label)}</span>'
                f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="0" data-axis="{a}" '
                f'aria-label="{html.escape(label)}"><output>{html.escape(values[0])}</output></label>')
        first = ",".join("0" for _ in self.axes)
        frames = "".join(
            f'<img data-frame="{key}" src="data:image/png;base64,{data}" alt="{html.escape(self.alt)}"'
            f'{"" if key == first else " hidden"}>' for key, data in self.frames.items())
        labels = json.dumps(list(self.axes.values()))
        script = (
            "(function () {"
            f"var root = document.getElementById('{uid}'); var labels = {labels};"
            "var inputs = root.querySelectorAll('input[data-axis]');"
            "function show() {"
            "  var key = Array.prototype.map.call(inputs, function (i) { return i.value; }).join(',');"
            "  root.querySelectorAll('img[data-frame]').forEach(function (img) { img.hidden = img.getAttribute('data-frame') !== key; });"
            "  inputs.forEach(function (i, a) { i.nextElementSibling.textContent = labels[a][+i.value]; });"
            "}"
            "inputs.forEach(function (i) { i.addEventListener('input', show); });"
            "show(); })();")
        note = f'<p class="revlib-explorer-note">{html.escape(self.note)}</p>' if self.note else ""
        return (f'<div class="revlib-explorer" id="{uid}"><div class="revlib-explorer-controls">{"".join(controls)}</div>'
                f'<div class="revlib-explorer-frames">{frames}</div>{note}<script>{script}</script></div>')


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def train_side_by_side(experiments: list, cached: bool = True) -> list:
    """Train (or, with ``cached``, load) each experiment, one single-threaded training per core.

    The ARM and the MDM of an explorer are independent, so on two or more cores they train at
    the same time, each on one torch thread; torch releases Python's lock inside its kernels and
    the backward pass, so the two overlap almost fully. Every run is exactly the run trained
    alone (its own model, generators and subnormal mode, which is per thread). One core: in turn.
    """
    fit = cached_train if cached else train
    workers = min(len(experiments), usable_cores())
    if workers < 2:
        return [fit(exp) for exp in experiments]
    # one intra-op thread for the whole pool: no training restores a larger count under another
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fit, experiments))


class Explorer:
    """Controls and an output area: on every change it says "training...", trains or loads,
    then replaces the output with the new figure and the time it took (and closes the old figure)."""

    def __init__(self, controls: dict, draw):
        import ipywidgets as w

        self.controls, self.draw = controls, draw
        self.out = w.Output()
        self.status = w.HTML()
        for c in controls.values():
            c.observe(lambda change: self.update(), names="value")
        self.widget = w.VBox([w.HBox(list(controls.values())[:3]), w.HBox(list(controls.values())[3:]),
                              self.status, self.out])
        self.update()

    def update(self) -> None:
        from IPython.display import display

        settings = {name: c.value for name, c in self.controls.items()}
        self.status.value = "<i>training…</i>"
        start = time.perf_counter()
        try:
            fig, trained = self.draw(**settings)
        except ConfigError as err:
            self.status.value = f"not a valid setting: {err}"
            return
        seconds = time.perf_counter() - start
        with self.out:
            self.out.clear_output(wait=True)
            display(fig)
        plt.close(fig)
        self.status.value = (f"trained in {seconds:.1f} s" if trained else
                             f"loaded from the cache in {seconds:.1f} s")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _sliders(w) -> dict:
    """The training sliders every retraining explorer shares: pairs, d_model, positional encoding, steps."""
    return dict(
        pairs=w.IntSlider(value=128, min=16, max=MAX_PAIRS, step=16, description="pairs", continuous_update=False),
        d_model=w.IntSlider(value=32, min=8, max=MAX_D_MODEL, step=8, description="d_model", continuous_update=False),
        positional=w.Dropdown(options=["rope", "absolute", "alibi", "none"], value="rope", description="positions"),
        steps=w.IntSlider(value=MAX_STEPS, min=50, max=MAX_STEPS, step=50, description="steps", continuous_update=False),
        seed=w.IntSlider(value=0, min=0, max=7, description="seed", continuous_update=False),
    )


def curse_figure(pairs: int = 128, d_model: int = 32, positional: str = "rope", steps: int = 300, seed: int = 0):
    """Train (or load) one ARM and one MDM with these settings; bar chart of their probe accuracy.
    Returns ``(figure, trained)``: ``trained`` is False when both runs came from the cache."""
    kinds = ("ar", "mdm")
    runs = train_side_by_side([preset(kind, n_pairs=pairs, d_model=d_model, positional=positional, steps=steps,
                                      seed=seed) for kind in kinds])
    finals = {kind: run.final for kind, run in zip(kinds, runs)}
    trained, world = any(not run.cached for run in runs), runs[0].world
    fig, axes = plot.figure(1, height=2.8)
    plot.probe_bars(finals, world.chance, ax=axes[0, 0])
    axes[0, 0].set_title(f"{pairs} pairs, d_model {d_model}, {positional}, {steps} steps, seed {seed}", fontsize=9.5)
    return fig, trained


def curse_explorer() -> Explorer:
    """Chapter 1: sliders for pairs, d_model, positional encoding, steps and seed over :func:`curse_figure`."""
    import ipywidgets as w

    return Explorer(_sliders(w), curse_figure)


def coupling_figure(d: int = 32, offset: int = 2, log10_base: float = 4.0, samples: int = 20_000):
    """Chapter 2: the RoPE score correlation for head size ``d``, offset ``offset`` and base 10^log10_base.

    (a) cos(2Δθ_k) for every rotation plane k, whose mean is the correlation; (b) the
    correlation against the head size at this offset and base, with its d → ∞ limit and a
    Monte-Carlo estimate (private generator, seed 0). Returns ``(figure, False)``.
    """
    from .. import theory

    base = 10.0 ** log10_base
    thetas = theory.rope_thetas(d, base)
    analytic = theory.rope_corr(d, offset, base)
    mc = theory.monte_carlo_corr("rope", d, offset, base, samples=samples, seed=0)
    fig, (ax) = plot.figure(2, height=2.9)
    left, right = ax[0]
    left.bar(range(d // 2), torch.cos(2 * offset * thetas).numpy(), color=plot.COLORS["mdm"], alpha=0.8)
    left.axhline(analytic, color="black", lw=1.2, label=f"mean = {analytic:.3f}")
    left.axhline(0.0, color="0.5", lw=0.8)
    left.set_xlabel(r"rotation plane $m$")
    left.set_ylabel(r"$\cos(2\Delta\theta_m)$")
    left.set_ylim(-1.05, 1.05)
    left.legend(loc="lower right")
    plot.letter(left, "a")
    ds = list(range(2, 257, 2))
    right.plot(ds, [theory.rope_corr(x, offset, base) for x in ds], color=plot.COLORS["mdm"], lw=1.6, label="closed form")
    right.axhline(theory.rope_corr_limit(offset, base), **plot.CHANCE_STYLE, label=r"$d \to \infty$")
    right.errorbar([d], [mc.estimate], yerr=[2 * mc.stderr], fmt="o", color="black", ms=4, label="Monte-Carlo ± 2 se")
    right.set_xscale("log", base=2)
    right.set_xlabel(r"head size $d$")
    right.set_ylabel(r"Corr$(S_\mathrm{infill}, S_\mathrm{b2a})$")
    right.set_ylim(-1.05, 1.05)
    right.legend(loc="lower right")
    plot.letter(right, "b")
    return fig, False


def coupling_explorer() -> Explorer:
    """Chapter 2: sliders for head size, offset and RoPE base over :func:`coupling_figure` (no training)."""
    import ipywidgets as w

    controls = dict(
        d=w.IntSlider(value=32, min=2, max=128, step=2, description="head size d", continuous_update=False),
        offset=w.IntSlider(value=2, min=0, max=32, step=1, description="offset Δ", continuous_update=False),
        log10_base=w.FloatSlider(value=4.0, min=0.0, max=6.0, step=0.25, description="log10 base",
                                 continuous_update=False),
    )
    return Explorer(controls, coupling_figure)
