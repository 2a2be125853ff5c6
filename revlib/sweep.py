"""Sweeps: train every setting of a grid with N seeds, and the one result type they return.

``sweep(preset("mdm"), {"n_heads": [1, 2, 4]}, seeds=range(8))`` trains each cell of the grid
as one ensemble of the seeds (through the cache) and returns a :class:`Sweep`: a tidy table
with one value per cell, seed, quantity and metric, and the spread over seeds of each.

* **Axes** name config fields (``n_heads``, ``positional``, ``objective``, ...). An
  ``objective`` without an ``attention`` axis takes that objective's usual mask (``ar``:
  causal, else bidirectional), so ``{"objective": ["ar", "mdm"]}`` is the ARM and the MDM.
* **Variants** are named sets of overrides, for settings that are not one axis:
  ``variants={"routes frozen": {"freeze": "qk"}, "untied values": {"untie_values": True}}``;
  each cell then carries ``variant=<name>``.
* **Measurements** add per-seed quantities to every cell: ``measure=[coupling.head_reach]``
  calls each function on the cell's run (they are cached functions of revlib's core) and keeps
  the arrays of shape (K,) they return.

Read a sweep with ``s.mean("b2a", n_heads=4)``, ``s.values("b2a", metric="nll", n_heads=4)``
(one value per seed), ``s.min``, ``s.max``, ``s.sd``, ``s.failed(n_heads=4)``; ``s.cell(...)``
gives the cell itself (its run and experiment); ``s.records()`` the tidy rows and
``s.summary()`` the spread of every quantity. Every cell's configuration is validated before
anything trains.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .cache import cached_train
from .config import DEFAULT_ATTENTION, ConfigError, Experiment, as_seeds
from .measure import METRICS

# CLI axis name -> config field (the CLI spells them with dashes)
AXES = {
    "pairs": "n_pairs", "d-model": "d_model", "heads": "n_heads", "layers": "n_layers", "lr": "lr",
    "steps": "steps", "positional": "positional", "entity-tokens": "entity_tokens", "rope-base": "rope_base",
    "objective": "objective", "attention": "attention", "mlp": "mlp", "norm": "norm", "masking": "masking",
    "freeze": "freeze", "project-out": "project_out", "relations": "relations",
    "reversed-fraction": "reversed_fraction", "unembed-scale": "unembed_scale", "untie-values": "untie_values",
    "vocab-size": "vocab_size", "hold-out": "hold_out",
}
STATS = ("mean", "sd", "min", "max")


def spread(values) -> dict[str, float]:
    """mean, sd (ddof 1; 0 for one value), min, max of an array of per-seed values."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


@dataclass
class Cell:
    """One setting of a sweep: its axis values, experiment and run, the per-seed measurements
    (``measured``: name -> (K,)), or, for a cell that cannot be run, why it was refused."""

    values: dict
    experiment: Experiment | None
    run: object = None
    measured: dict[str, np.ndarray] = field(default_factory=dict)
    refused: str | None = None

    def quantity(self, name: str, metric: str = "acc") -> np.ndarray | None:
        """Per-seed values (K,) of a probe's metric, a measurement, or the final training
        ``loss``; None where the model has no answer (an ``ar`` model and ``infill``)."""
        if self.refused:
            raise ConfigError(f"the cell {self.values} was refused: {self.refused}")
        if name in self.measured:
            return np.asarray(self.measured[name])
        if name == "loss":
            return np.asarray(self.run.history["loss"][-1])
        if name in self.run.probe_names:
            if metric not in METRICS:
                raise ConfigError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
            final = self.run.final[name]
            return None if final is None else np.asarray(final[metric])
        known = list(self.run.probe_names) + list(self.measured) + ["loss"]
        raise ConfigError(f"unknown quantity {name!r}; this sweep has {', '.join(known)}")

    @property
    def failed(self) -> np.ndarray:
        """Seeds (K,) bool that did not learn the trained direction (revlib.measure.failed)."""
        return np.asarray(self.run.failed)

    @property
    def label(self) -> str:
        """The cell's settings as a reader writes them: ``n_heads=4, variant=frozen``."""
        return ", ".join(f"{v}" if k == "variant" else f"{k}={v}" for k, v in self.values.items())


class Sweep:
    """The result of :func:`sweep`: cells in grid order, each trained with the same seeds."""

    def __init__(self, base: Experiment, axes: dict, seeds: tuple[int, ...], cells: list[Cell]):
        self.base, self.axes, self.seeds, self.cells = base, axes, seeds, cells

    def __iter__(self):
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def __repr__(self) -> str:
        return f"Sweep({len(self.cells)} cells x {len(self.seeds)} seeds: {', '.join(c.label for c in self.cells)})"

    # -- finding cells ----------------------------------------------------------------------------

    def where(self, **where) -> list[Cell]:
        """The cells whose values match every ``name=value`` given (all cells for none)."""
        names = set(self.axes)
        unknown = [k for k in where if k not in names]
        if unknown:
            raise ConfigError(f"this sweep has no axis {unknown[0]!r}; its axes are {', '.join(self.axes) or 'none'}")
        return [c for c in self.cells if all(c.values.get(k) == v for k, v in where.items())]

    def cell(self, **where) -> Cell:
        """The one cell that matches; ConfigError listing the cells otherwise."""
        found = self.where(**where)
        if len(found) != 1:
            listed = "; ".join(c.label for c in self.cells)
            raise ConfigError(f"{'no' if not found else len(found)} cells match {where}; the cells are: {listed}")
        return found[0]

    def run(self, **where):
        """The trained run of the one matching cell."""
        return self.cell(**where).run

    # -- reading numbers --------------------------------------------------------------------------

    def values(self, quantity: str, metric: str = "acc", **where) -> np.ndarray:
        """Per-seed values (K,) of ``quantity`` (a probe, a measurement or ``loss``) in one cell."""
        v = self.cell(**where).quantity(quantity, metric)
        if v is None:
            raise ConfigError(f"the cell {where} has no {quantity!r} answer")
        return v

    def mean(self, quantity: str, metric: str = "acc", **where) -> float:
        return float(self.values(quantity, metric, **where).mean())

    def sd(self, quantity: str, metric: str = "acc", **where) -> float:
        return spread(self.values(quantity, metric, **where))["sd"]

    def min(self, quantity: str, metric: str = "acc", **where) -> float:
        return float(self.values(quantity, metric, **where).min())

    def max(self, quantity: str, metric: str = "acc", **where) -> float:
        return float(self.values(quantity, metric, **where).max())

    def failed(self, **where) -> int:
        """How many seeds of the matching cell did not learn what they were trained on."""
        return int(self.cell(**where).failed.sum())

    def quantities(self) -> list[str]:
        """Every quantity a cell of this sweep can report."""
        c = next((c for c in self.cells if not c.refused), None)
        return [] if c is None else list(c.run.probe_names) + list(c.measured) + ["loss"]

    # -- tables -----------------------------------------------------------------------------------

    def records(self) -> list[dict]:
        """The tidy table: one dict per cell, seed, quantity and metric (measurements and the
        loss have metric ``"value"``). Refused cells have no rows."""
        rows = []
        for c in self.cells:
            if c.refused:
                continue
            for name in self.quantities():
                for metric in (METRICS if name in c.run.probe_names else ("value",)):
                    v = c.quantity(name, metric if metric != "value" else "acc")
                    if v is None:
                        continue
                    for seed, x in zip(self.seeds, np.asarray(v).tolist()):
                        rows.append({**c.values, "seed": seed, "quantity": name, "metric": metric, "value": x})
        return rows

    def summary(self) -> list[dict]:
        """Per cell: its values, the number of seeds, which seeds failed, and for every quantity
        and metric the mean, sd, min and max over seeds (or why the cell was refused)."""
        out = []
        for c in self.cells:
            if c.refused:
                out.append({"values": c.values, "refused": c.refused})
                continue
            stats = {}
            for name in self.quantities():
                if name in c.run.probe_names:
                    f = c.run.final[name]
                    stats[name] = None if f is None else {m: spread(f[m]) for m in METRICS}
                else:
                    stats[name] = spread(c.quantity(name))
            failed = [s for s, bad in zip(self.seeds, c.failed) if bad]
            out.append({"values": c.values, "n_seeds": len(self.seeds), "failed": len(failed), "failed_seeds": failed,
                        "chance": c.run.world.chance, "quantities": stats})
        return out

    def to_json(self) -> dict:
        return {"axes": {k: list(v) for k, v in self.axes.items()}, "seeds": list(self.seeds), "cells": self.summary()}


def _overrides(base: Experiment, values: dict) -> dict:
    overrides = dict(values)
    if "objective" in overrides and "attention" not in overrides:
        overrides["attention"] = DEFAULT_ATTENTION.get(overrides["objective"], base.model.attention)
    return overrides


def grid(base: Experiment, axes: dict[str, Sequence] | None = None, skip_invalid: bool = False,
         variants: dict[str, dict] | None = None) -> list[tuple[dict, Experiment | str]]:
    """Every combination of the variants and axis values applied to ``base``; ConfigError names
    the bad cell (with ``skip_invalid``, the cell carries the message instead of an Experiment)."""
    if not isinstance(base, Experiment):
        raise ConfigError(f"a sweep starts from an Experiment (see revlib.preset), got {type(base).__name__}")
    axes = {} if axes is None else axes
    if not isinstance(axes, dict):
        raise ConfigError(f"sweep axes must be a dict of field -> list of values, got {type(axes).__name__}")
    if variants is not None:
        if not isinstance(variants, dict) or not variants:
            raise ConfigError("variants must be a non-empty dict of name -> dict of overrides")
        for name, over in variants.items():
            if not isinstance(name, str) or not isinstance(over, dict):
                raise ConfigError(f"variant {name!r} must map a name to a dict of overrides, got {over!r}")
        if "variant" in axes:
            raise ConfigError("'variant' names the variants; it cannot also be an axis")
    if not axes and variants is None:
        raise ConfigError("a sweep needs at least one axis with values, or variants")
    for name, vals in axes.items():
        if not isinstance(vals, (list, tuple, range)) or len(vals) == 0:
            raise ConfigError(f"sweep axis {name!r} needs a non-empty list of values, got {vals!r}")
        if len(set(map(repr, vals))) != len(vals):
            raise ConfigError(f"sweep axis {name!r} lists a value twice: {list(vals)}")
    names = list(axes)
    cells = []
    for variant in (list(variants) if variants is not None else [None]):
        for combo in itertools.product(*(list(axes[n]) for n in names)):
            values = ({"variant": variant} if variant is not None else {}) | dict(zip(names, combo))
            overrides = _overrides(base, {**(variants[variant] if variant is not None else {}), **dict(zip(names, combo))})
            try:
                cells.append((values, base.replace(**overrides)))
            except ConfigError as err:
                if not skip_invalid:
                    raise ConfigError(f"sweep cell {values}: {err}") from None
                cells.append((values, str(err)))
    return cells


def sweep(base: Experiment, axes: dict[str, Sequence] | None = None, seeds=range(8), *,
          variants: dict[str, dict] | None = None, measure: Sequence[Callable] = (), progress: bool = False,
          skip_invalid: bool = False) -> Sweep:
    """Train every cell of the grid with ``seeds`` (one ensemble per cell, cached) and return the
    :class:`Sweep`. With ``skip_invalid`` a cell that cannot be run is kept with ``refused`` set.
    """
    seeds = as_seeds(seeds)
    cells = grid(base, axes, skip_invalid, variants)
    measure = list(measure)
    for fn in measure:
        if not callable(fn):
            raise ConfigError(f"measure takes functions of a run, got {fn!r}")
    out_axes = ({"variant": list(variants)} if variants is not None else {}) | {k: list(v) for k, v in (axes or {}).items()}
    out = []
    for values, exp in cells:
        if isinstance(exp, str):
            out.append(Cell(values, None, refused=exp))
            continue
        run = cached_train(exp, seeds, progress=progress)
        measured = {}
        for fn in measure:
            for name, v in fn(run).items():
                v = np.asarray(v)
                if v.shape != (len(seeds),):
                    raise ConfigError(f"{getattr(fn, '__name__', fn)} returned {name!r} of shape {v.shape}; a sweep keeps "
                                      f"one value per seed, shape ({len(seeds)},)")
                measured[name] = v
        out.append(Cell(values, exp, run, measured))
    return Sweep(base, out_axes, seeds, out)
