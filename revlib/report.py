"""Small tables of results for notebooks (HTML) and terminals (text). No computation here."""
from __future__ import annotations

import html

import numpy as np

from .data import PROBES
from .plot import LABELS


class Table:
    """Rows of strings with a header; renders as HTML in Jupyter and as aligned text elsewhere."""

    def __init__(self, header: list[str], rows: list[list[str]], caption: str = ""):
        self.header, self.rows, self.caption = header, rows, caption

    def __str__(self) -> str:
        cols = list(zip(self.header, *self.rows))
        widths = [max(len(c) for c in col) for col in cols]
        fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
        lines = ([self.caption] if self.caption else []) + [fmt(self.header)] + [fmt(r) for r in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows
        )
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f'<table class="revlib-table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def mean_sd(values, digits: int = 2, sci: bool = False) -> str:
    """'0.97 ± 0.01' over seeds (just the value for one seed)."""
    v = np.asarray(values, dtype=float)
    f = (lambda x: f"{x:.{digits}g}") if sci else (lambda x: f"{x:.{digits}f}")
    return f(v.mean()) if v.size == 1 else f"{f(v.mean())} ± {f(v.std(ddof=1))}"


def probe_table(finals: dict, chance: float, probes=PROBES) -> Table:
    """Accuracy and p(right answer) per model kind and probe, mean ± sd over seeds."""
    rows = []
    for kind, final in finals.items():
        for probe in probes:
            m = final.get(probe)
            if m is None:
                rows.append([LABELS.get(kind, kind), probe, "n/a", "n/a", "n/a"])
                continue
            p = np.asarray(m["p_correct"], dtype=float)
            rows.append([LABELS.get(kind, kind), probe, mean_sd(m["acc"]), mean_sd(p, 2, sci=True),
                         f"{p.mean() / chance:.3g}"])
    return Table(["model", "probe", "accuracy", "p(right)", "p / chance"], rows,
                 caption=f"chance 1/V = {chance:.4f}")


def glue(name: str, value) -> None:
    """``myst_nb.glue`` for a number, converted to a plain Python value so ``{glue:text}`` can format it."""
    from myst_nb import glue as _glue

    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    _glue(name, value, display=False)
