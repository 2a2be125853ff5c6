"""revlib.recipes: every chapter's experiments take their settings as arguments with the book's
values as defaults; bad settings are refused by name before anything trains; a new intervention
with its prediction, a 16-head row and two seeds run end to end into the tables and figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from revlib import ConfigError, recipes, training  # noqa: E402
from revlib.book import ch2 as book2, ch4 as book4  # noqa: E402
from revlib.recipes import ch1, ch2, ch4  # noqa: E402

SMALL = dict(seeds=(0, 1), world_seed=5, n_pairs=16)


@pytest.fixture
def no_training(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("trained before refusing a bad setting")

    monkeypatch.setattr(training, "train", never)


@pytest.mark.parametrize("call, match", [
    (lambda: recipes.params("ch2", headz=(1, 2)), "no setting 'headz'"),
    (lambda: recipes.params("ch9"), "chapter must be one of"),
    (lambda: recipes.params("ch1", seeds=[]), "at least one seed"),
    (lambda: recipes.params("ch1", seeds="0-7"), "seeds must be a list"),
    (lambda: recipes.params("ch1", world_seed=-1), "world_seed"),
    (lambda: ch2.by_heads((0, 1), 0, heads=(1, 3)), "n_heads=3 does not divide"),
    (lambda: ch2.by_heads((0, 1), 0, heads=4), "non-empty list"),
    (lambda: ch2.by_heads((0, 1), 0, heads=()), "non-empty list"),
    (lambda: ch1.robustness((0, 1), 0, positionals=("rope", "rotary")), "positional must be one of"),
    (lambda: ch4.by_intervention((0, 1), 0, interventions={"frozen": {"freeze": "qk"}}), "must be \\(overrides dict"),
    (lambda: ch4.by_intervention((0, 1), 0, interventions={"frozen": ({"freez": "qk"}, "p")}), "unknown option 'freez'"),
    (lambda: ch4.by_intervention((0, 1), 0, interventions={}), "non-empty dict"),
    (lambda: ch4.grid((0, 1), 0, k=3), "k = 1 or 2"),
])
def test_bad_settings_are_one_config_error_naming_them(no_training, call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_a_16_head_row_and_two_seeds_run_into_the_table_and_figure():
    s = ch2.by_heads(SMALL["seeds"], SMALL["world_seed"], heads=(1, 16), n_pairs=SMALL["n_pairs"])
    assert [c.values["n_heads"] for c in s] == [1, 16] and s.seeds == (0, 1)
    table = book2.heads_table(s)
    assert [row[0] for row in table.rows] == ["1", "16"] and "2 seeds (0, 1)" in table.caption
    assert s.values("reach_ratio", n_heads=16).shape == (2,)
    fig = book2.heads_figure(s)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "16"]
    plt.close(fig)


def test_a_new_intervention_with_its_prediction_runs_into_the_table_and_figure():
    interventions = {"none (the MDM)": ({}, "b2a follows infill"),
                     "ALiBi instead of RoPE": ({"positional": "alibi"}, "b2a equals infill by symmetry")}
    s = ch4.by_intervention(SMALL["seeds"], SMALL["world_seed"], interventions, n_pairs=SMALL["n_pairs"])
    table = book4.interventions_table(s, interventions)
    assert [row[:2] for row in table.rows] == [["none (the MDM)", "b2a follows infill"],
                                              ["ALiBi instead of RoPE", "b2a equals infill by symmetry"]]
    fig = book4.interventions_figure(s)
    labels = [t.get_text().replace("\n", " ") for t in fig.axes[0].get_xticklabels()]
    assert labels == ["none (the MDM)", "ALiBi instead of RoPE"]
    plt.close(fig)
    assert s.values("b2a", variant="ALiBi instead of RoPE").tolist() == s.values("infill", variant="ALiBi instead of RoPE").tolist()


def test_claims_of_a_changed_run_are_reported_not_raised():
    results = {"models": ch1.models(SMALL["seeds"], SMALL["world_seed"], SMALL["n_pairs"]),
               "robustness": ch1.robustness(SMALL["seeds"], SMALL["world_seed"], positionals=("rope",), pair_counts=(16,),
                                            widths=(8,), n_pairs=SMALL["n_pairs"]),
               "zhu": ch1.zhu(SMALL["seeds"], SMALL["world_seed"])}
    report = recipes.check("ch1", results, positionals=("rope",), pair_counts=(16,), widths=(8,), **SMALL)
    assert not report.strict and "settings other than the book's" in report.headline()
    names = {o.name: o for o in report.outcomes}
    assert names["arm-no-b2a"].holds  # the ARM never reverses, whatever the size
    assert names["absolute-below-rope"].holds is None  # this run has no absolute-position cell
