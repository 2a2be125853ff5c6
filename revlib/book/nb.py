"""What every chapter notebook shares: its first output (where the page's numbers came from), numbers
for the prose, figures with their captions in Jupyter too, and the claims report.

**Numbers in the prose.** A markdown cell shows a number with MyST's ``{eval}`` role on a bare
variable name (``{eval}`mdm_b2a` ``). MyST-NB evaluates it when it builds the book (inline
execution) and ``jupyterlab-myst`` when the cell runs in JupyterLab; both show the variable's
``repr``, so a hidden cell right after each experiment stores the numbers as :class:`Text`,
already formatted (:func:`fmt`).

**Figures.** :func:`figure` displays a figure (PNG at twice the resolution, so it is sharp on
high-density screens) and prints its caption. The built book takes the caption and the alt text
from the cell's metadata (numbered, cross-referenced) and drops the printed copy (the cell's
``remove-stdout`` tag); in Jupyter the printed caption is what the reader sees. Captions and alt
texts live in ``CAPTIONS``, and a test checks that the notebooks' metadata says the same.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from .. import cache


class Text(str):
    """A string whose repr is itself: what ``{eval}`` shows, with no quotes."""

    def __repr__(self) -> str:
        return str(self)


def fmt(value, spec: str = ".2f") -> Text:
    """A number formatted for the prose: ``fmt(0.9712)`` -> 0.97, ``fmt(0.4, ".0%")`` -> 40%."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = np.asarray(value).item()
    if isinstance(value, (int, np.integer)) and spec in ("d", ""):
        return Text(f"{int(value)}")
    return Text(format(value, spec))


def words(text: str) -> Text:
    """Words for the prose (``{eval}`` shows them as they are)."""
    return Text(text)


# ---------------------------------------------------------------------------------------------
# figures and their captions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Caption:
    text: str  # MyST markdown, as the built book shows it
    alt: str  # what the figure shows, for readers who cannot see it


CAPTIONS: dict[str, Caption] = {}


def caption(name: str, text: str, alt: str) -> None:
    """Register the caption and alt text of figure ``name`` (``fig-...``)."""
    CAPTIONS[name] = Caption(" ".join(text.split()), " ".join(alt.split()))


def figure(fig, name: str) -> None:
    """Show ``fig`` and print its caption (the built book shows the metadata caption instead)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if name not in CAPTIONS:
        raise KeyError(f"no caption registered for {name!r}")
    display(fig)
    plt.close(fig)
    print(f"Figure ({name}). {CAPTIONS[name].text}")


# ---------------------------------------------------------------------------------------------
# the first output: where this page's numbers came from
# ---------------------------------------------------------------------------------------------

class _Provenance:
    def __init__(self):
        self.handle = None

    def html(self) -> str:
        t = cache.TALLY
        return (f"<p class='revlib-provenance'><b>Where this page's numbers came from</b> "
                f"(code version {cache.code_version()}): {html.escape(t.describe())}.</p>")

    def update(self, *_):
        if self.handle is not None:
            from IPython.display import HTML

            self.handle.update(HTML(self.html()))


_PROVENANCE = _Provenance()

# The built book renders each cell's output as the cell runs, before later cells update the first
# output, so the page's last cell repeats the final count and this script copies it to the top.
# (In JupyterLab the first output updates itself; scripts in outputs do not run there.)
_COPY_TO_TOP = ("<script>(function () { var s = document.currentScript, last = s.previousElementSibling, "
                "top = document.querySelector('.revlib-provenance'); "
                "if (top && last && top !== last) { top.innerHTML = last.innerHTML; } })();</script>")


def provenance():
    """End a page: the final count of where its numbers came from (the first output shows the same
    count: live in Jupyter, copied there by a script in the built book)."""
    from IPython.display import HTML, display

    _PROVENANCE.update()
    display(HTML(_PROVENANCE.html().replace("class='revlib-provenance'", "class='revlib-provenance-final'")
                 + _COPY_TO_TOP))


def setup(provenance: bool = True):
    """Start a chapter: the book's plot style, sharp figures, and (``provenance``) a first output
    that says, after every cell, how many results were trained or computed here, loaded from the
    local cache, or taken from a results bundle (revlib.cache.TALLY). A page that only reads stored
    claims reports says where they came from itself."""
    from IPython import get_ipython
    from IPython.display import HTML, display

    from . import plot

    plot.use_style()
    ip = get_ipython()
    if ip is not None:
        try:
            ip.run_line_magic("config", "InlineBackend.figure_formats = ['retina']")
        except Exception:  # not an inline backend (a script): nothing to configure
            pass
        for callback in list(ip.events.callbacks.get("post_run_cell", [])):
            if getattr(callback, "__self__", None) is _PROVENANCE:
                ip.events.unregister("post_run_cell", callback)
        if provenance:
            ip.events.register("post_run_cell", _PROVENANCE.update)
    cache.TALLY.reset()
    _PROVENANCE.handle = display(HTML(_PROVENANCE.html()), display_id=True) if provenance else None


def claims_report(report) -> None:
    """Show a chapter's claims report (revlib.claims.Report)."""
    from IPython.display import display

    display(report)
