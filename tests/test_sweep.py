"""revlib.sweep: the grid is validated before anything trains (naming the bad cell), every cell is
one cached ensemble, and the summaries report mean, sd, min, max and the failed seeds."""
from __future__ import annotations

import numpy as np
import pytest

from revlib import ConfigError, training
from revlib.sweep import AXES, STATS, grid, spread, summarise, sweep

from conftest import tiny


def test_spread():
    s = spread([1.0, 2.0, 4.0])
    assert set(s) == set(STATS)
    assert s["mean"] == pytest.approx(7 / 3) and s["min"] == 1.0 and s["max"] == 4.0
    assert s["sd"] == pytest.approx(float(np.std([1, 2, 4], ddof=1)))
    assert spread([3.0])["sd"] == 0.0


def test_grid_is_every_combination():
    cells = grid(tiny(), {"n_heads": [1, 2], "positional": ["rope", "alibi"]})
    assert [v for v, _ in cells] == [{"n_heads": 1, "positional": "rope"}, {"n_heads": 1, "positional": "alibi"},
                                     {"n_heads": 2, "positional": "rope"}, {"n_heads": 2, "positional": "alibi"}]
    assert [(e.model.n_heads, e.model.positional) for _, e in cells] == [(1, "rope"), (1, "alibi"), (2, "rope"), (2, "alibi")]
    (_, ar), (_, mdm) = grid(tiny(), {"objective": ["ar", "mdm"]})
    assert ar.model.attention == "causal" and mdm.model.attention == "bidirectional"  # objective brings attention


@pytest.mark.parametrize("axes,match", [
    ({"d_model": [8, 7]}, r"sweep cell \{'d_model': 7\}"),
    ({"n_heads": [1, 3]}, r"sweep cell \{'n_heads': 3\}.*does not divide"),
    ({"objective": ["ar"], "attention": ["bidirectional"]}, r"sweep cell .*'objective': 'ar'.*causal"),
    ({"n_pairs": [16, 1]}, r"sweep cell \{'n_pairs': 1\}"),
    ({"d_modle": [8]}, "unknown option"),
    ({}, "at least one axis"),
    ({"n_heads": []}, "non-empty list"),
    ({"n_heads": 2}, "non-empty list"),
])
def test_grid_validation_names_the_bad_cell(axes, match):
    with pytest.raises(ConfigError, match=match):
        grid(tiny(), axes)


def test_a_bad_cell_stops_the_sweep_before_anything_trains(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("trained before validating the grid")

    monkeypatch.setattr(training, "train", never)
    with pytest.raises(ConfigError, match="sweep cell"):
        sweep(tiny(), {"d_model": [8, 16, 9]}, seeds=range(2))
    with pytest.raises(ConfigError, match="seed"):
        sweep(tiny(), {"d_model": [8]}, seeds=[])


def test_sweep_rows_summarise_each_cell_and_are_cached(monkeypatch):
    rows = sweep(tiny(steps=20), {"n_heads": [1, 2]}, seeds=range(3))
    assert [r.values for r in rows] == [{"n_heads": 1}, {"n_heads": 2}]
    for r in rows:
        assert r.run.seeds == (0, 1, 2) and r.experiment.model.n_heads == r.values["n_heads"]
        s = r.summary
        assert s["n_seeds"] == 3 and s["chance"] == pytest.approx(1 / 35)
        assert s["failed"] == int(r.run.failed.sum())
        for probe, m in s["probes"].items():
            final = r.run.final[probe]
            for metric in ("acc", "nll"):
                assert set(m[metric]) == set(STATS)
                assert m[metric]["mean"] == pytest.approx(float(np.mean(final[metric])))
                assert m[metric]["sd"] == pytest.approx(float(np.std(final[metric], ddof=1)))
                assert m[metric]["min"] == pytest.approx(float(np.min(final[metric])))
                assert m[metric]["max"] == pytest.approx(float(np.max(final[metric])))
            assert m["p_correct"] == pytest.approx(float(np.mean(final["p_correct"])))
        assert r.to_json()["values"] == r.values and "probes" in r.to_json()
    calls = []
    real = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = sweep(tiny(steps=20), {"n_heads": [1, 2]}, seeds=range(3))
    assert calls == [] and all(r.run.cached for r in again)
    assert [r.summary for r in again] == [r.summary for r in rows]


def test_summarise_counts_failures_and_skips_unanswerable_probes():
    run = training.train(tiny("ar", steps=3), seeds=(0, 1))
    s = summarise(run)
    assert s["probes"]["infill"] is None
    assert s["failed"] == 2  # three steps learn nothing
    assert set(s["probes"]["a2b"]) == {"acc", "nll", "p_correct"}


def test_cli_axes_map_to_config_fields():
    from revlib.config import DataConfig, ModelConfig, TrainConfig
    import dataclasses

    fields = {f.name for cls in (ModelConfig, DataConfig, TrainConfig) for f in dataclasses.fields(cls)}
    assert set(AXES.values()) <= fields
    assert AXES["heads"] == "n_heads" and AXES["reversed-fraction"] == "reversed_fraction"
