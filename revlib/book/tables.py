"""Small tables of results for notebooks (HTML), terminals (text) and ``--json``. No computation here."""
from __future__ import annotations

import html
import re

import numpy as np


class Table:
    """Rows of strings with a header; renders as HTML in Jupyter and as aligned text elsewhere.

    ``data`` optionally keeps the raw numbers behind the rows, for ``python -m revlib tables --json``.
    """

    def __init__(self, header: list[str], rows: list[list[str]], caption: str = "", data=None,
                 wrap: tuple[int, ...] = (), stack_ranges: bool = False, compact: bool = False):
        self.header, self.rows, self.caption, self.data = header, rows, caption, data
        self.wrap = set(wrap)  # columns of prose that may wrap; numbers stay on one line
        self.stack_ranges = stack_ranges  # in HTML, put a cell's trailing "[min, max]" or "(...)" on a second line
        self.compact = compact  # in HTML, a smaller type for a table with many columns

    def __str__(self) -> str:
        cols = list(zip(self.header, *self.rows))
        widths = [max(len(c) for c in col) for col in cols]
        fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
        lines = ([self.caption] if self.caption else []) + [fmt(self.header)] + [fmt(r) for r in self.rows]
        return "\n".join(lines)

    __repr__ = __str__  # a terminal, Colab's text view and nbval see the rows, not an address

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(self._td(j, c) for j, c in enumerate(row)) + "</tr>" for row in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        kind = "revlib-table compact" if self.compact else "revlib-table"
        return f'<table class="{kind}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _td(self, column: int, text: str) -> str:
        if column in self.wrap:
            return f'<td class="wrap">{html.escape(text)}</td>'
        m = re.fullmatch(r"(.+?) (\[[^\]]+\]|\([^)]+\))", text) if self.stack_ranges else None
        if m:
            return f'<td>{html.escape(m[1])}<br><span class="range">{html.escape(m[2])}</span></td>'
        return f"<td>{html.escape(text)}</td>"

    def to_json(self) -> dict:
        out = {"caption": self.caption, "header": self.header, "rows": self.rows}
        if self.data is not None:
            out["data"] = _plain(self.data)
        return out


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def mean_sd(values, digits: int = 2, sci: bool = False) -> str:
    """'0.97 ± 0.01' over seeds (just the value for one seed)."""
    v = np.asarray(values, dtype=float)
    f = (lambda x: f"{x:.{digits}g}") if sci else (lambda x: f"{x:.{digits}f}")
    return f(v.mean()) if v.size == 1 else f"{f(v.mean())} ± {f(v.std(ddof=1))}"


def spread(values, digits: int = 2) -> str:
    """'0.97 ± 0.01 [0.95, 0.99]': mean ± sd over seeds with the range."""
    v = np.asarray(values, dtype=float)
    return f"{mean_sd(v, digits)} [{v.min():.{digits}f}, {v.max():.{digits}f}]"


def glue(name: str, value, display: bool = False) -> None:
    """``myst_nb.glue`` for a number, converted to a plain Python value so ``{glue:text}`` can format it.

    Without myst-nb (a notebook opened in Colab) it does nothing: the numbers are in the outputs.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return

    if isinstance(value, (np.generic, np.ndarray)):
        value = np.asarray(value).item()
    if isinstance(value, str):  # words, not numbers: shown with {glue:md}, without quotes
        from IPython.display import Markdown

        value = Markdown(value)
    _glue(name, value, display=display)


def glue_all(values: dict) -> None:
    """Glue every ``name: value`` of a dict (one call in the chapter's hidden glue cell)."""
    for name, value in values.items():
        glue(name, value)


def show_numbers(values: dict, digits: int = 3) -> Table:
    """The numbers a page quotes in its prose, as a table (so they show in Jupyter too)."""
    rows = []
    for name, value in values.items():
        v = np.asarray(value).item() if isinstance(value, (np.generic, np.ndarray)) else value
        rows.append([name, f"{v:.{digits}g}" if isinstance(v, float) else str(v)])
    return Table(["quantity", "value"], rows)


def setting_text(exp) -> str:
    """An experiment's settings as a caption says them: "128 facts, 1 layer, 1 head, d_model 32, rope, 300 steps"."""
    m, d, t = exp.model, exp.data, exp.train
    parts = [f"{d.n_pairs} facts" + (f" of {d.entity_tokens}-token names" if d.entity_tokens > 1 else ""),
             f"{m.n_layers} layer{'s' * (m.n_layers > 1)}", f"{m.n_heads} head{'s' * (m.n_heads > 1)}",
             f"d_model {m.d_model}", f"{m.positional} positions"]
    if m.mlp != "none":
        parts.append(f"{m.mlp} MLP, {m.norm}")
    parts.append(f"{t.steps} steps")
    return ", ".join(parts)


def seeds_text(seeds) -> str:
    """"8 seeds (0..7)" or "2 seeds (3, 9)"."""
    seeds = list(seeds)
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    listed = f"{seeds[0]}..{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))
    return f"{len(seeds)} seed{'s' * (len(seeds) > 1)} ({listed})"


def cell_text(values, digits: int = 2, ranges: bool = True) -> str:
    """Per-seed values as 'mean ± sd [min, max]' (or without the range)."""
    return spread(values, digits) if ranges else mean_sd(values, digits)
