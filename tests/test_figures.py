"""revlib.book.figures and `python -m revlib figures`: what is written, and the command's refusals.

The real figures train the book's models, which the notebooks test; here a stand-in figure and
table show what save_all writes, without training anything.
"""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from revlib.book import figures  # noqa: E402
from revlib.book.tables import Table  # noqa: E402
from revlib.cli import main  # noqa: E402


def _fake_figure(results):
    assert results == {"from": "the test chapter's results"}
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def _fake_table(results):
    return Table(["a", "b"], [["1", "2"]], caption="fake", data={"x": 1.5})


@pytest.fixture
def fake_registry(monkeypatch):
    from revlib.book import registry

    monkeypatch.setattr(registry, "REGISTRY", {"fake-figure": ("test_figures", _fake_figure)})
    monkeypatch.setattr(registry, "TABLES", {"fake-table": ("test_figures", _fake_table)})
    monkeypatch.setattr(figures, "REGISTRY", registry.REGISTRY)
    monkeypatch.setattr(figures, "TABLES", registry.TABLES)
    monkeypatch.setattr(registry, "_RESULTS", {"test_figures": {"from": "the test chapter's results"}})


def test_save_all_writes_png_svg_and_table_json(tmp_path, fake_registry):
    written = figures.save_all(tmp_path, with_tables=True)
    assert sorted(p.name for p in written) == ["fake-figure.png", "fake-figure.svg", "fake-table.json", "timings.json"]
    assert (tmp_path / "fake-figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "fake-figure.svg").read_text()
    table = json.loads((tmp_path / "fake-table.json").read_text())
    assert table == {"caption": "fake", "header": ["a", "b"], "rows": [["1", "2"]], "data": {"x": 1.5}}


def test_save_all_records_each_chapters_seconds_and_the_cache_it_started_from(tmp_path, fake_registry, monkeypatch):
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "cache"))
    figures.save_all(tmp_path / "out", with_tables=True)
    t = figures.read_timings(tmp_path / "out")
    assert set(t["chapter_seconds"]) == {"test_figures"} and t["chapter_seconds"]["test_figures"] >= 0
    assert t["wall_seconds"] >= t["chapter_seconds"]["test_figures"] - 0.01
    assert t["jobs"] == 1 and t["cache_entries_before"] == 0 == t["cache_entries_after"]
    assert figures.read_timings(tmp_path / "nowhere") is None


def test_svg_output_is_deterministic(tmp_path, fake_registry):
    figures.save_all(tmp_path / "one")
    figures.save_all(tmp_path / "two")
    assert (tmp_path / "one" / "fake-figure.svg").read_bytes() == (tmp_path / "two" / "fake-figure.svg").read_bytes()


def test_every_figure_and_table_of_the_book_is_registered():
    names = set(figures.REGISTRY) | set(figures.TABLES)
    for expected in ("curse-headline", "curse-probes", "coupling-heads", "align-unembed", "controls-grid",
                     "controls-summary", "beyond-multitoken", "beyond-signatures", "perf-step", "ch1-robustness",
                     "ch4-order", "ch5-decoding", "perf"):
        assert expected in names, expected


@pytest.mark.parametrize("argv, words", [
    (["figures", "--out", "x", "--only", "no-such-figure"], "unknown figure"),
    (["figures", "--out", "x", "--jobs", "0"], "--jobs"),
    (["tables", "--only", "no-such-table"], "unknown table"),
])
def test_bad_figure_commands_are_one_line_and_status_2(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_unwritable_output_folder_is_a_usage_error(tmp_path, fake_registry, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["figures", "--out", str(blocker / "sub")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_table_html_escapes_wraps_prose_columns_and_stacks_ranges():
    t = Table(["name", "why", "acc"], [["<a>", "a long reason", "0.97 ± 0.01 [0.95, 0.99]"]],
              caption="c & d", wrap=(1,), stack_ranges=True)
    page = t._repr_html_()
    assert "<td>&lt;a&gt;</td>" in page and "<caption>c &amp; d</caption>" in page
    assert '<td class="wrap">a long reason</td>' in page
    assert '<td>0.97 ± 0.01<br><span class="range">[0.95, 0.99]</span></td>' in page
    plain = Table(["acc"], [["0.97 ± 0.01 [0.95, 0.99]"]])._repr_html_()
    assert "<td>0.97 ± 0.01 [0.95, 0.99]</td>" in plain  # stacking is asked for, never implied
    assert "0.97 ± 0.01 [0.95, 0.99]" in str(t)  # the text form keeps one line per row


def test_an_explorer_closes_the_figure_it_replaces():
    """A long-lived kernel must not accumulate figures: every redraw closes the one it drew."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from revlib.book.explore import Explorer

    plt.close("all")
    drawn = []

    def draw(x):
        fig = plt.figure()
        drawn.append(fig)
        return fig, True

    slider = w.IntSlider(value=0, min=0, max=10)
    explorer = Explorer({"x": slider}, draw)
    for value in range(1, 6):
        slider.value = value  # each change redraws
    assert len(drawn) == 6
    assert plt.get_fignums() == []
    assert explorer.status.value.startswith("trained in")


@pytest.mark.parametrize("cores", [1, 2])
def test_explorer_runs_side_by_side_are_the_runs_trained_alone(monkeypatch, cores):
    """Training the explorer's ARM and MDM at once (one thread each) changes no number, keeps their
    order, and leaves the caller's thread settings as they were."""
    import torch

    from conftest import tiny
    from revlib.book import explore
    from revlib.training import train

    monkeypatch.setattr(explore, "usable_cores", lambda: cores)
    exps = [tiny("ar"), tiny("mdm")]
    threads = torch.get_num_threads()
    together = explore.train_side_by_side(exps, cached=False)
    assert torch.get_num_threads() == threads
    for exp, run in zip(exps, together):
        alone = train(exp)
        assert run.objective == exp.train.objective
        assert run.history.keys() == alone.history.keys()
        for key, values in alone.history.items():
            assert (run.history[key] == values).all(), key
        for (name, p), q in zip(run.model.named_parameters(), alone.model.parameters()):
            assert torch.equal(p, q), name


def test_explorer_retrain_reports_side_by_side_against_alone(monkeypatch):
    from conftest import tiny
    from revlib import bench

    exps = [tiny("ar"), tiny("mdm")]
    out = bench.explorer_retrain(exps)
    assert set(out) == {"explorer_retrain_s", "explorer_slowest_alone_s", "explorer_sequential_s", "explorer_workers"}
    assert 0 < out["explorer_slowest_alone_s"] <= out["explorer_sequential_s"] and out["explorer_workers"] >= 1


def test_the_performance_page_reports_the_book_only_from_an_empty_cache(tmp_path):
    from revlib.book import perf

    assert perf.cold_book(tmp_path) is None and "not measured" in perf.book_story(None)
    timings = {"chapter_seconds": {"ch1": 60.0, "ch5": 300.0}, "wall_seconds": 330.0, "jobs": 2,
               "cache_entries_before": 0, "cache_entries_after": 40}
    (tmp_path / "timings.json").write_text(json.dumps(timings))
    story = perf.book_story(perf.cold_book(tmp_path))
    assert story.startswith("missed by 83%") and "5.5 minutes" in story and "(ch5) alone takes 5.0 minutes" in story
    (tmp_path / "timings.json").write_text(json.dumps({**timings, "cache_entries_before": 3}))
    assert perf.cold_book(tmp_path) is None  # a warm run measured loading, not training
    assert perf.book_story({**timings, "wall_seconds": 120.0}).startswith("met")
