"""revlib.claims: every claim is evaluated (even after one fails) with its margin; strict only with
the book's settings; reports are stored for the appendix and tabulated over seed sets."""
from __future__ import annotations

import math

import pytest

from revlib import ConfigError, claims, recipes
from revlib.claims import Claim, ClaimsFailed


def _claims(value_b: float = 0.5):
    return [
        Claim("a", "a holds", "x", lambda: 0.2, "<", 0.5),
        Claim("b", "b is big", "y", lambda: value_b, ">", 0.9),
        Claim("c", "c cannot be computed", "z", lambda: {}["missing"], ">", 0.0),
        Claim("d", "d is a tendency", "w", lambda: 0.1, ">", 0.3, guard=False),
        Claim("e", "e is not finite", "v", lambda: math.nan, "<", 1.0),
    ]


def test_every_claim_is_evaluated_with_its_margin():
    report = claims.check("chx", {"seeds": (0,), "world_seed": 0}, _claims(), strict=False)
    by = {o.name: o for o in report.outcomes}
    assert by["a"].holds and by["a"].margin == pytest.approx(0.3)
    assert not by["b"].holds and by["b"].margin == pytest.approx(-0.4)  # evaluated after a failure
    assert by["c"].holds is None and "not computable" in by["c"].error
    assert not by["d"].guard and by["d"].margin == pytest.approx(-0.2)
    assert by["e"].holds is False and "not finite" in by["e"].error
    assert [o.name for o in report.failed] == ["b", "c", "e"]  # tendencies never fail
    text = str(report)
    assert "b is big: FAILS" in text and "margin -0.4" in text and "prose describes the book's settings" in text
    assert "<table" in report._repr_html_()


def test_strict_reports_raise_listing_every_failing_claim():
    with pytest.raises(ClaimsFailed) as err:
        claims.check("chx", {"seeds": (0,), "world_seed": 0}, _claims(), strict=True)
    message = str(err.value)
    assert "b: b is big" in message and "c: c cannot" in message and "e: e is not finite" in message
    assert "d: d is" not in message
    report = claims.check("chx", {"seeds": (1,), "world_seed": 0}, _claims(value_b=0.95)[:2], strict=True)
    assert not report.failed and "the book's settings" in report.headline()


def test_bad_relation_is_refused():
    with pytest.raises(ConfigError, match="relation"):
        Claim("x", "x", "q", lambda: 1, "=>", 0)


def test_reports_are_stored_and_tabulated_over_seed_sets():
    for first, b in ((0, 0.95), (1000, 0.5)):
        claims.check("chx", {"seeds": tuple(range(first, first + 8)), "world_seed": first}, _claims(b), strict=False)
    stored = [r for r in claims.recorded() if r["chapter"] == "chx"]
    assert len(stored) == 2
    table = claims.table_of(stored)
    assert table["sets"] == ["0..7 (world 0)", "1000..1007 (world 1000)"]
    row = next(r for r in table["claims"] if r["name"] == "b")
    assert row["held"] == 1 and row["failed_in"] == ["1000..1007 (world 1000)"]
    assert row["smallest"] == pytest.approx(-0.4)
    lines = claims.robustness_lines(table)
    assert any(line.startswith("chx.b") and "1 of 2" in line for line in lines)
    assert table["machines"]["0..7 (world 0)"] == [claims.machine()]  # which machine computed each set
    assert any(line.startswith("computed on " + claims.machine()) and "sets 1, 2" in line for line in lines)


def test_strictness_follows_the_book_settings(monkeypatch):
    book = recipes.params("ch1")
    assert recipes.is_book("ch1", book)
    assert not recipes.is_book("ch1", recipes.params("ch1", seeds=(0, 1)))
    assert not recipes.is_book("ch1", recipes.params("ch1", n_pairs=64))
    monkeypatch.setenv("REVLIB_BOOK_SEEDS", "100")
    assert recipes.params("ch1")["seeds"] == tuple(range(100, 108)) and recipes.params("ch1")["world_seed"] == 100
    assert not recipes.is_book("ch1", book)
    monkeypatch.setenv("REVLIB_BOOK_SEEDS", "x")
    with pytest.raises(ConfigError, match="REVLIB_BOOK_SEEDS"):
        recipes.book_seeds()
