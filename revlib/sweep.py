"""Sweeps: train every value of one or more axes with N seeds and summarise the spread.

``sweep(preset("mdm"), {"n_heads": [1, 2, 4]}, seeds=range(8))`` trains each cell of the grid
as one ensemble of the seeds (through the cache) and returns one :class:`Row` per cell: per
probe the mean, standard deviation, minimum and maximum over seeds of the accuracy and the
``nll``, and how many seeds failed to learn the trained direction (revlib.measure.failed).
Every cell's configuration is validated before anything trains.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .cache import cached_train
from .config import ConfigError, Experiment, as_seeds

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
class Row:
    """One cell of a sweep: the axis values, the experiment, its run and the summary; or, for a
    cell that cannot be run (``skip_invalid``), why it was refused."""

    values: dict
    experiment: Experiment | None
    run: object
    summary: dict
    refused: str | None = None

    def to_json(self) -> dict:
        if self.refused:
            return {"values": self.values, "refused": self.refused}
        return {"values": self.values, **self.summary}


def summarise(run) -> dict:
    """The spread over seeds of every probe's ``acc`` and ``nll`` (and the mean ``p_correct``),
    the number of seeds, and how many failed to learn the trained direction."""
    probes = {}
    for name, m in run.final.items():
        probes[name] = None if m is None else {"acc": spread(m["acc"]), "nll": spread(m["nll"]),
                                               "p_correct": float(np.mean(m["p_correct"]))}
    return {"n_seeds": len(run.seeds), "failed": int(run.failed.sum()), "chance": run.world.chance, "probes": probes}


def grid(base: Experiment, axes: dict[str, list], skip_invalid: bool = False) -> list[tuple[dict, Experiment | str]]:
    """Every combination of the axis values applied to ``base``; ConfigError names the bad cell
    (with ``skip_invalid``, the cell carries the message instead of an Experiment)."""
    if not axes:
        raise ConfigError("a sweep needs at least one axis with values")
    names = list(axes)
    for name in names:
        if not isinstance(axes[name], (list, tuple)) or not axes[name]:
            raise ConfigError(f"sweep axis {name!r} needs a non-empty list of values")
    cells = []
    for combo in itertools.product(*(axes[n] for n in names)):
        values = dict(zip(names, combo))
        overrides = dict(values)
        if "objective" in overrides and "attention" not in overrides:
            from .config import DEFAULT_ATTENTION
            overrides["attention"] = DEFAULT_ATTENTION.get(overrides["objective"], base.model.attention)
        try:
            cells.append((values, base.replace(**overrides)))
        except ConfigError as err:
            if not skip_invalid:
                raise ConfigError(f"sweep cell {values}: {err}") from None
            cells.append((values, str(err)))
    return cells


def sweep(base: Experiment, axes: dict[str, list], seeds=range(8), progress: bool = False,
          skip_invalid: bool = False) -> list[Row]:
    """Train every cell of the grid with ``seeds`` (one ensemble per cell, cached) and summarise.

    With ``skip_invalid`` a cell that cannot be run becomes a Row with ``refused`` set.
    """
    seeds = as_seeds(seeds)
    cells = grid(base, axes, skip_invalid)
    rows = []
    for values, exp in cells:
        if isinstance(exp, str):
            rows.append(Row(values, None, None, {}, refused=exp))
            continue
        run = cached_train(exp, seeds, progress=progress)
        rows.append(Row(values, exp, run, summarise(run)))
    return rows
