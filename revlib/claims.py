"""Claims: every sentence of the book that states a result, as a check with a margin.

A :class:`Claim` is a statement (what the prose says), the quantity it rests on (how to compute
it from a chapter's results), a relation and a threshold. Evaluated, it has a value and a
*margin*: how far the value lies on the right side of the threshold, in the quantity's own
units (negative: the claim fails). Every claim of a chapter is evaluated, even after one has
failed; a claim whose quantity cannot be computed with the given settings (a knob changed so
that the cell it reads is not there) is reported as not applicable, with the reason.

Each chapter's claims live beside its experiments (``revlib.recipes.chN.claims``). A chapter
notebook calls :func:`check` with its own results:

* with the **book's settings** (the chapter's defaults, on the seed set of ``REVLIB_BOOK_SEEDS``),
  a failing claim raises :class:`ClaimsFailed`, which fails the build and nbval;
* with **any other settings** nothing fails: the report says, claim by claim, whether it holds
  in this run and by what margin, and that the prose describes the book's settings.

A claim marked ``guard=False`` states a tendency the book reports as a frequency over seed sets
(see the appendix "How robust are the claims?"); it is reported, never enforced.

Every check is stored in the results cache under its chapter and settings, so the appendix can
list every seed set that was checked with this code (``python -m revlib claims``).
"""
from __future__ import annotations

import functools
import hashlib
import html
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import ConfigError

SPECS = Path(__file__).resolve().parent / "recipes" / "claims.toml"  # every claim's statement and threshold
RELATIONS = {"<": lambda v, t: v < t, "<=": lambda v, t: v <= t, ">": lambda v, t: v > t, ">=": lambda v, t: v >= t}


@functools.lru_cache(maxsize=1)
def machine() -> str:
    """The CPU model and torch version that computed a report: machines of different CPU classes
    round differently and train slightly different models, so the appendix names them."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; torch {torch.__version__}"


class ClaimsFailed(AssertionError):
    """A claim the book's prose makes does not hold with the book's settings."""


@dataclass(frozen=True)
class Claim:
    """``statement`` holds when ``quantity`` (computed by ``compute()``) ``relation`` ``threshold``."""

    name: str
    statement: str
    quantity: str
    compute: Callable[[], float] = field(repr=False, compare=False)
    relation: str
    threshold: float
    guard: bool = True  # False: a tendency reported over seed sets, never enforced

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ConfigError(f"claim {self.name}: relation must be one of {', '.join(RELATIONS)}, got {self.relation!r}")


@dataclass(frozen=True)
class Outcome:
    """A claim evaluated: its value, whether it holds, its margin, or why it could not be computed."""

    name: str
    statement: str
    quantity: str
    relation: str
    threshold: float
    guard: bool
    value: float | None
    holds: bool | None
    margin: float | None
    error: str | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "statement", "quantity", "relation", "threshold", "guard",
                                              "value", "holds", "margin", "error")}


@functools.lru_cache(maxsize=None)
def _specs(mtime_ns: int) -> tuple[dict, str]:
    raw = SPECS.read_bytes()
    return tomllib.loads(raw.decode()), hashlib.sha256(raw).hexdigest()[:16]


def specs() -> tuple[dict, str]:
    """The claims data (revlib/recipes/claims.toml) and its hash, reread when the file changes."""
    return _specs(SPECS.stat().st_mtime_ns)


def claim_factory(chapter: str) -> Callable[[str, Callable[[], float]], Claim]:
    """``C = claim_factory("ch1"); C("learn-a2b", lambda: ...)``: a claim whose statement,
    quantity, relation, threshold and guard come from the claims data, and whose value the
    chapter computes. An unknown name is an error (every claim is written down in the data)."""
    data = specs()[0].get(chapter, {})

    def make(name: str, compute: Callable[[], float]) -> Claim:
        if name not in data:
            raise KeyError(f"claim {chapter}.{name} is not in {SPECS.name}")
        d = data[name]
        return Claim(name, d["statement"], d["quantity"], compute, d["relation"], float(d["threshold"]),
                     bool(d.get("guard", True)))

    return make


def evaluate(claim: Claim) -> Outcome:
    """Compute one claim; an error in computing it becomes an outcome, not an exception."""
    base = dict(name=claim.name, statement=claim.statement, quantity=claim.quantity, relation=claim.relation,
                threshold=float(claim.threshold), guard=claim.guard)
    try:
        value = float(claim.compute())
    except (ConfigError, KeyError, IndexError, ValueError, ZeroDivisionError) as err:
        return Outcome(**base, value=None, holds=None, margin=None, error=f"not computable with these settings ({err})")
    if not math.isfinite(value):
        return Outcome(**base, value=value, holds=False, margin=None, error="the quantity is not finite")
    holds = bool(RELATIONS[claim.relation](value, claim.threshold))
    margin = claim.threshold - value if claim.relation in ("<", "<=") else value - claim.threshold
    return Outcome(**base, value=value, holds=holds, margin=float(margin))


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


@dataclass
class Report:
    """The outcomes of a chapter's claims for one set of settings; renders as a table."""

    chapter: str
    params: dict
    strict: bool
    outcomes: list[Outcome]
    machine: str = field(default_factory=lambda: machine())

    @property
    def failed(self) -> list[Outcome]:
        """Guarded claims that do not hold or could not be computed."""
        return [o for o in self.outcomes if o.guard and not o.holds]

    @property
    def smallest_margin(self) -> Outcome | None:
        ok = [o for o in self.outcomes if o.margin is not None and o.guard]
        return min(ok, key=lambda o: o.margin) if ok else None

    def headline(self) -> str:
        n, bad = len([o for o in self.outcomes if o.guard]), self.failed
        settings = ("the book's settings" if self.strict else
                    "settings other than the book's (the prose describes the book's settings; here each claim "
                    "is only reported)")
        line = f"{self.chapter}: {n - len(bad)} of {n} claims hold with {settings}"
        tendencies = [o for o in self.outcomes if not o.guard]
        if tendencies:
            line += f"; {sum(bool(o.holds) for o in tendencies)} of {len(tendencies)} reported tendencies hold"
        return line + "."

    def lines(self) -> list[str]:
        out = []
        for o in self.outcomes:
            status = "n/a" if o.holds is None else "holds" if o.holds else "FAILS"
            tag = "" if o.guard else " (tendency)"
            detail = o.error or f"{o.quantity} = {_fmt(o.value)} {o.relation} {_fmt(o.threshold)}, margin {_fmt(o.margin)}"
            out.append(f"{o.statement}{tag}: {status}, {detail}")
        return out

    def __str__(self) -> str:
        return "\n".join([self.headline()] + ["  " + line for line in self.lines()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = []
        for o in self.outcomes:
            status = "n/a" if o.holds is None else "holds" if o.holds else "<b>fails</b>"
            detail = html.escape(o.error) if o.error else (
                f"{html.escape(o.quantity)} = {_fmt(o.value)} {html.escape(o.relation)} {_fmt(o.threshold)}")
            rows.append(f"<tr><td class='wrap'>{html.escape(o.statement)}{'' if o.guard else ' (tendency)'}</td>"
                        f"<td>{status}</td><td>{_fmt(o.margin)}</td><td class='wrap'>{detail}</td></tr>")
        return (f"<p>{html.escape(self.headline())}</p><table class='revlib-table compact claims'>"
                "<thead><tr><th>claim</th><th>status</th><th>margin</th><th>measured</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")

    def to_json(self) -> dict:
        return {"chapter": self.chapter, "params": self.params, "strict": self.strict, "machine": self.machine,
                "outcomes": [o.to_json() for o in self.outcomes]}

    def raise_if_failed(self) -> None:
        if self.strict and self.failed:
            raise ClaimsFailed(f"{len(self.failed)} claim(s) of {self.chapter} fail with the book's settings:\n"
                               + "\n".join(f"  {o.name}: {o.statement}: {o.error or f'{o.quantity} = {_fmt(o.value)}, margin {_fmt(o.margin)}'}"
                                           for o in self.failed))


def record(report: Report) -> None:
    """Store a report in the results cache, keyed by chapter, settings and the claims data, for the appendix."""
    from .cache import store

    store("claims", {"chapter": report.chapter, "params": report.params, "claims": specs()[1]}, report.to_json())


def recorded() -> list[dict]:
    """Every stored claims report for the code and the claims data this process runs (any chapter,
    any settings)."""
    from .cache import entries

    current = specs()[1]
    return [value for args, value in entries("claims") if args.get("claims") == current]


def check(chapter: str, params: dict, claims: list[Claim], strict: bool, raise_on_failure: bool = True) -> Report:
    """Evaluate every claim, store the report, and, when ``strict``, raise :class:`ClaimsFailed`
    if a guarded claim fails. Returns the report (display it)."""
    report = Report(chapter, params, strict, [evaluate(c) for c in claims])
    record(report)
    if raise_on_failure:
        report.raise_if_failed()
    return report


# ---------------------------------------------------------------------------------------------
# over many seed sets
# ---------------------------------------------------------------------------------------------

def robustness_run(chapters, n_sets: int, first: int = 1000, stride: int = 1000, seeds_per_set: int = 8,
                   knobs: dict | None = None, progress=None) -> dict:
    """Every chapter's claims on ``n_sets`` disjoint seed sets (seeds first + i·stride, ...,
    each with the world of its first seed), trained through the cache. ``knobs`` change settings
    in every chapter that has them. Every report is stored (:func:`record`). Returns the table of
    :func:`table_of`, with the seconds each set took per chapter."""
    import time

    from . import recipes

    knobs = knobs or {}
    reports, seconds = [], []
    for i in range(n_sets):
        start = first + i * stride
        seeds, world = recipes.seed_set(start, seeds_per_set)
        spent = {}
        for ch in chapters:
            module = recipes.chapter(ch)
            p = recipes.params(ch, seeds, world, **{k: v for k, v in knobs.items() if k in module.KNOBS})
            t0 = time.perf_counter()
            results = module.compute(**p)
            reports.append(check(ch, p, module.claims(results, **p), strict=False, raise_on_failure=False).to_json())
            spent[ch] = time.perf_counter() - t0
            if progress:
                progress(f"seed set {start}..{start + seeds_per_set - 1}: {ch} in {spent[ch]:.0f} s; "
                         f"{reports[-1]['chapter']} {sum(o['holds'] is True for o in reports[-1]['outcomes'])} of "
                         f"{len(reports[-1]['outcomes'])} claims hold")
        seconds.append({"first": start, "seconds": spent})
    table = table_of(reports)
    table["seconds"] = seconds
    return table


def table_of(reports: list[dict]) -> dict:
    """Claims x seed sets from stored reports: ``{"sets": [set label, ...], "claims": [{"chapter",
    "name", "statement", "guard", "margins": {set: margin}, "holds": {set: bool}, "smallest",
    "held", "failed_in": [set, ...]}, ...], "machines": {set: [machine, ...]}}``, sets labelled by
    their seeds "0..7 (world 0)"."""
    def label(params):
        seeds = list(params["seeds"])
        return f"{seeds[0]}..{seeds[-1]} (world {params['world_seed']})"

    sets = sorted({label(r["params"]) for r in reports}, key=lambda s: int(s.split("..")[0]))
    machines: dict[str, set] = {s: set() for s in sets}
    for r in reports:
        machines[label(r["params"])].add(r.get("machine", "machine not recorded"))
    claims: dict[tuple[str, str], dict] = {}
    for r in reports:
        for o in r["outcomes"]:
            row = claims.setdefault((r["chapter"], o["name"]), {
                "chapter": r["chapter"], "name": o["name"], "statement": o["statement"], "guard": o["guard"],
                "quantity": o["quantity"], "relation": o["relation"], "threshold": o["threshold"],
                "margins": {}, "holds": {}})
            row["margins"][label(r["params"])] = o["margin"]
            row["holds"][label(r["params"])] = o["holds"]
    out = []
    for row in claims.values():
        margins = [m for m in row["margins"].values() if m is not None]
        row["smallest"] = min(margins) if margins else None
        row["held"] = sum(bool(h) for h in row["holds"].values())
        row["failed_in"] = [s for s in sets if s in row["holds"] and not row["holds"][s]]
        out.append(row)
    order = {ch: i for i, ch in enumerate(("ch1", "ch2", "ch3", "ch4", "ch5"))}
    out.sort(key=lambda r: order.get(r["chapter"], 9))
    return {"sets": sets, "claims": out, "machines": {s: sorted(m) for s, m in machines.items()}}


def robustness_lines(table: dict) -> list[str]:
    """The claims table as text: claim, margin per set, how many sets it holds in."""
    sets = table["sets"]
    lines = [f"{len(sets)} seed set{'s' * (len(sets) != 1)}: " + "; ".join(sets),
             f"{'claim':44} " + " ".join(f"{'set ' + str(i + 1):>9}" for i in range(len(sets))) + "   holds in"]
    for row in table["claims"]:
        name = f"{row['chapter']}.{row['name']}" + ("" if row["guard"] else " (t)")
        cells = " ".join(f"{_fmt(row['margins'].get(s)):>9}" for s in sets)
        lines.append(f"{name[:44]:44} {cells}   {row['held']} of {len(row['holds'])}")
    failing = [r for r in table["claims"] if r["failed_in"]]
    lines.append(f"{len(failing)} claim(s) fail in some set" + (": " + ", ".join(f"{r['chapter']}.{r['name']}"
                                                                             for r in failing) if failing else ""))
    for m in sorted({m for ms in table.get("machines", {}).values() for m in ms}):
        which = [str(i + 1) for i, s in enumerate(sets) if m in table["machines"].get(s, ())]
        lines.append(f"computed on {m} (set{'s' * (len(which) != 1)} {', '.join(which)})")
    if "seconds" in table:
        for s in table["seconds"]:
            lines.append(f"seed set {s['first']}: " + ", ".join(f"{ch} {sec:.0f} s" for ch, sec in s["seconds"].items())
                         + f" (total {sum(s['seconds'].values()) / 60:.1f} min)")
    return lines


def book_seed_sets() -> dict:
    """The claims table over every seed set present in the results cache whose settings are the
    book's apart from the seeds (eight seeds; the world of the first), for the appendix."""
    from . import recipes
    from .cache import canonical

    keep = []
    for r in recorded():
        p = dict(r["params"])
        if r["chapter"] not in recipes.CHAPTERS or len(p.get("seeds", ())) != recipes.N_SEEDS:
            continue
        book = recipes.params(r["chapter"], p["seeds"], p["world_seed"])
        if canonical(book) == canonical(p) and p["world_seed"] == p["seeds"][0]:
            keep.append(r)
    return table_of(keep)
