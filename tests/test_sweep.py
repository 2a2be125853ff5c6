"""revlib.sweep: the grid is validated before anything trains (naming the bad cell), every cell is
one cached ensemble, and the one result type (Sweep) reads values, spreads, failures, tidy records
and summaries without lambdas."""
from __future__ import annotations

import numpy as np
import pytest

from revlib import ConfigError, training
from revlib.sweep import AXES, STATS, Sweep, grid, spread, sweep

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
    ({"n_heads": [1, 1]}, "twice"),
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


def test_a_sweep_reads_every_cell_and_is_cached(monkeypatch):
    s = sweep(tiny(steps=20), {"n_heads": [1, 2]}, seeds=range(3))
    assert isinstance(s, Sweep) and len(s) == 2 and s.seeds == (0, 1, 2)
    assert [c.values for c in s] == [{"n_heads": 1}, {"n_heads": 2}]
    for c in s:
        assert c.run.seeds == (0, 1, 2) and c.experiment.model.n_heads == c.values["n_heads"]
        final = c.run.final["b2a"]
        assert np.array_equal(s.values("b2a", n_heads=c.values["n_heads"]), final["acc"])
        assert np.array_equal(s.values("b2a", "nll", n_heads=c.values["n_heads"]), final["nll"])
        assert s.mean("b2a", n_heads=c.values["n_heads"]) == pytest.approx(float(np.mean(final["acc"])))
        assert s.min("b2a", "nll", n_heads=c.values["n_heads"]) == pytest.approx(float(np.min(final["nll"])))
        assert s.max("a2b", n_heads=c.values["n_heads"]) == pytest.approx(float(np.max(c.run.final["a2b"]["acc"])))
        assert s.sd("b2a", n_heads=c.values["n_heads"]) == pytest.approx(float(np.std(final["acc"], ddof=1)))
        assert s.failed(n_heads=c.values["n_heads"]) == int(c.run.failed.sum())
    summary = s.summary()
    assert summary[0]["n_seeds"] == 3 and summary[0]["chance"] == pytest.approx(1 / 35)
    assert set(summary[0]["quantities"]["b2a"]["acc"]) == set(STATS)
    assert summary[0]["failed_seeds"] == [seed for seed, bad in zip(s.seeds, s.cells[0].failed) if bad]
    records = s.records()
    b2a = [r for r in records if r["n_heads"] == 2 and r["quantity"] == "b2a" and r["metric"] == "acc"]
    assert [r["seed"] for r in b2a] == [0, 1, 2] and [r["value"] for r in b2a] == s.values("b2a", n_heads=2).tolist()
    assert s.to_json()["axes"] == {"n_heads": [1, 2]}
    calls = []
    real = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = sweep(tiny(steps=20), {"n_heads": [1, 2]}, seeds=range(3))
    assert calls == [] and all(c.run.cached for c in again)
    assert again.summary() == summary


def test_finding_cells_names_what_is_there():
    s = sweep(tiny(steps=4), {"objective": ["ar", "mdm"]}, seeds=(0,))
    assert s.run(objective="ar").objective == "ar"
    with pytest.raises(ConfigError, match="no axis 'n_heads'"):
        s.cell(n_heads=2)
    with pytest.raises(ConfigError, match="no cells match.*objective=ar; objective=mdm"):
        s.cell(objective="prefix")
    with pytest.raises(ConfigError, match="2 cells match"):
        s.cell()
    with pytest.raises(ConfigError, match="unknown quantity 'b2x'"):
        s.values("b2x", objective="mdm")
    with pytest.raises(ConfigError, match="no 'infill' answer"):
        s.values("infill", objective="ar")  # an ARM cannot answer infill
    with pytest.raises(ConfigError, match="metric"):
        s.values("b2a", "accuracy", objective="mdm")


def test_variants_and_axes_combine_and_each_variant_is_one_cell():
    s = sweep(tiny(steps=4), {"objective": ["ar", "mdm"]}, seeds=(0, 1),
              variants={"plain": {}, "frozen": {"freeze": "qk"}, "alibi": {"positional": "alibi"}})
    assert [c.values for c in s][:2] == [{"variant": "plain", "objective": "ar"}, {"variant": "plain", "objective": "mdm"}]
    assert s.cell(variant="frozen", objective="mdm").experiment.train.freeze == "qk"
    assert s.cell(variant="alibi", objective="ar").experiment.model.attention == "causal"
    assert s.axes == {"variant": ["plain", "frozen", "alibi"], "objective": ["ar", "mdm"]}
    for bad, match in (({"x": {"d_modle": 8}}, "unknown option"), ({"x": 3}, "dict of overrides"), ({}, "non-empty")):
        with pytest.raises(ConfigError, match=match):
            sweep(tiny(), seeds=(0,), variants=bad)


def test_measurements_become_per_seed_quantities():
    def norm(run):
        return {"embed_norm": run.model.embed.detach().norm(dim=(1, 2)).numpy()}

    s = sweep(tiny(steps=4), {"n_heads": [1, 2]}, seeds=(0, 1), measure=[norm])
    assert s.values("embed_norm", n_heads=2).shape == (2,)
    assert "embed_norm" in s.quantities() and any(r["quantity"] == "embed_norm" for r in s.records())

    def wrong(run):
        return {"per_head": np.zeros((2, 3))}

    with pytest.raises(ConfigError, match="one value per seed"):
        sweep(tiny(steps=4), {"n_heads": [1]}, seeds=(0, 1), measure=[wrong])
    with pytest.raises(ConfigError, match="functions of a run"):
        sweep(tiny(steps=4), {"n_heads": [1]}, seeds=(0, 1), measure=["route"])


def test_refused_cells_are_kept_with_their_reason():
    s = sweep(tiny(steps=3), {"objective": ["ar", "mdm"], "attention": ["causal", "bidirectional"]}, seeds=(0,),
              skip_invalid=True)
    refused = s.cell(objective="ar", attention="bidirectional")
    assert refused.refused and "causal" in refused.refused
    assert not any("ar" == r.get("objective") and r.get("attention") == "bidirectional" for r in s.records())
    assert s.summary()[1] == {"values": {"objective": "ar", "attention": "bidirectional"}, "refused": refused.refused}


def test_a_failed_seed_is_counted_and_named():
    s = sweep(tiny("ar", steps=3), {"n_heads": [1]}, seeds=(0, 1))
    assert s.failed(n_heads=1) == 2  # three steps learn nothing
    assert s.summary()[0]["failed_seeds"] == [0, 1]
    assert s.summary()[0]["quantities"]["infill"] is None


def test_cli_axes_map_to_config_fields():
    from revlib.config import DataConfig, ModelConfig, TrainConfig
    import dataclasses

    fields = {f.name for cls in (ModelConfig, DataConfig, TrainConfig) for f in dataclasses.fields(cls)}
    assert set(AXES.values()) <= fields
    assert AXES["heads"] == "n_heads" and AXES["reversed-fraction"] == "reversed_fraction"
