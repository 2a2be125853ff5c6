"""revlib.cache: a hit returns the identical run; the key covers model, data, training, seeds and
code; corrupt, foreign, half-written and orphaned entries are never served; a read-only or full
disk costs the cache, not the result; ``REVLIB_CACHE=off`` really computes again."""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil

import numpy as np
import pytest
import torch

from revlib import cache, training
from revlib.cache import cached_train

from conftest import assert_same_history, assert_same_weights, tiny


def small(**kw):
    return tiny("ar", n_pairs=8, steps=6, eval_every=3, **kw)


def _entries(folder):
    return sorted(folder.glob("*.pt"))


def _counting(monkeypatch):
    """Count the calls of revlib.training.train (what cached_train calls on a miss)."""
    calls = []
    real = training.train

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", counted)
    return calls


def assert_same_run(a, b):
    assert a.experiment == b.experiment and a.seeds == b.seeds
    assert_same_weights(a.model, b.model)
    assert_same_history(a.history, b.history)
    assert a.init_state.keys() == b.init_state.keys()
    for name in a.init_state:
        assert torch.equal(a.init_state[name], b.init_state[name]), name
    assert torch.equal(a.world.train_tokens, b.world.train_tokens)


def test_a_hit_returns_the_identical_run(cache_folder, monkeypatch):
    calls = _counting(monkeypatch)
    first = cached_train(small(), seeds=(0, 1))
    second = cached_train(small(), seeds=(0, 1))
    assert len(calls) == 1
    assert not first.cached and second.cached
    assert_same_run(first, second)
    assert second.seconds == first.seconds and np.array_equal(second.eval_seconds, first.eval_seconds)
    assert_same_weights(second.initial_model(), first.initial_model())
    assert len(_entries(cache_folder)) == 1
    assert not list(cache_folder.glob(".*.tmp"))  # nothing half-written left behind


def test_the_default_seed_is_the_training_seed(monkeypatch):
    calls = _counting(monkeypatch)
    exp = small(seed=3)
    assert cached_train(exp).seeds == (3,)
    assert cached_train(exp, seeds=[3]).cached and len(calls) == 1


@pytest.mark.parametrize("change", [
    lambda e: e.replace(d_model=16),  # model
    lambda e: e.replace(positional="alibi"),
    lambda e: dataclasses.replace(e, data=dataclasses.replace(e.data, seed=5)),  # data only, same shapes
    lambda e: e.replace(reversed_fraction=0.25),
    lambda e: e.replace(hold_out="random"),
    lambda e: e.replace(lr=0.05),  # training
    lambda e: dataclasses.replace(e, train=dataclasses.replace(e.train, seed=9)),
    lambda e: e.replace(steps=7),
], ids=["d_model", "positional", "data_seed", "reversed_fraction", "hold_out", "lr", "train_seed", "steps"])
def test_any_change_of_the_experiment_misses(monkeypatch, change):
    calls = _counting(monkeypatch)
    base = small()
    cached_train(base)
    other = change(base)
    assert other != base
    run = cached_train(other)
    assert not run.cached and len(calls) == 2
    assert run.experiment == other and run.world.config == other.data
    assert cached_train(base).cached and cached_train(other).cached


def test_data_config_is_in_the_key():
    """Two experiments that differ only in the world must not share an entry."""
    base = small()
    other = dataclasses.replace(base, data=dataclasses.replace(base.data, seed=5))
    assert base.model == other.model and base.train == other.train
    k1 = cache.cache_key("run", cache.experiment_key(base, (0,)))
    k2 = cache.cache_key("run", cache.experiment_key(other, (0,)))
    assert k1 != k2
    first, second = cached_train(base), cached_train(other)
    assert not second.cached
    assert not torch.equal(first.world.a, second.world.a)


def test_seeds_kind_options_and_code_are_in_the_key(monkeypatch):
    exp = small()
    key = lambda seeds=(0,), kind="run", **opt: cache.cache_key(kind, cache.experiment_key(exp, seeds, **opt))  # noqa: E731
    base = key()
    assert key((1,)) != base and key((0, 1)) != base and key((1, 0)) != key((0, 1))
    assert key(kind="coupling-history") != base and key(source="a2b") != base
    assert key() == base  # and it is a function of its inputs
    monkeypatch.setattr(cache, "code_fingerprint", lambda *args, **kwargs: "edited revlib")
    assert key() != base


def test_seeds_are_in_the_key_of_a_run(monkeypatch):
    calls = _counting(monkeypatch)
    cached_train(small(), seeds=(0,))
    assert not cached_train(small(), seeds=(1,)).cached
    assert not cached_train(small(), seeds=(0, 1)).cached
    assert len(calls) == 3


def test_code_change_misses(monkeypatch):
    calls = _counting(monkeypatch)
    cached_train(small())
    monkeypatch.setattr(cache, "code_fingerprint", lambda *args, **kwargs: "edited revlib")
    assert not cached_train(small()).cached and len(calls) == 2


@pytest.mark.parametrize("where", ["magic", "digest", "body_start", "body_middle", "body_late", "last_byte"])
def test_a_one_byte_corruption_is_detected_and_recomputed(cache_folder, monkeypatch, where):
    calls = _counting(monkeypatch)
    first = cached_train(small())
    (entry,) = _entries(cache_folder)
    raw = entry.read_bytes()
    header = len(cache.MAGIC) + 65
    offset = {"magic": 3, "digest": len(cache.MAGIC) + 10, "body_start": header + 40, "body_middle": len(raw) // 2,
              "body_late": (3 * len(raw)) // 4, "last_byte": len(raw) - 1}[where]
    corrupt = bytearray(raw)
    corrupt[offset] ^= 0x10
    entry.write_bytes(bytes(corrupt))
    with pytest.warns(UserWarning, match="recomputing unreadable entry"):
        again = cached_train(small())
    assert not again.cached and len(calls) == 2  # recomputed, never served
    assert_same_run(first, again)
    assert entry.read_bytes() != bytes(corrupt)  # rewritten whole: the next call is a valid hit
    hit = cached_train(small())
    assert hit.cached and len(calls) == 2
    assert_same_run(hit, first)


def test_garbage_and_truncated_entries_are_recomputed(cache_folder):
    cached_train(small())
    (entry,) = _entries(cache_folder)
    raw = entry.read_bytes()
    for bad in (b"", b"not a torch file", raw[: len(raw) // 2], raw + b"x"):
        entry.write_bytes(bad)
        with pytest.warns(UserWarning, match="recomputing"):
            assert not cached_train(small()).cached


def test_an_entry_under_the_wrong_name_is_not_trusted(cache_folder):
    cached_train(small())
    (entry,) = _entries(cache_folder)
    other = small(lr=0.05)
    target = cache_folder / f"run-{cache.cache_key('run', cache.experiment_key(other, (0,)))}.pt"
    shutil.copy(entry, target)  # a valid entry, but for another key
    with pytest.warns(UserWarning, match="does not match its key"):
        run = cached_train(other)
    assert not run.cached and run.experiment == other


def test_decode_entry_checks_magic_checksum_and_key():
    raw = cache.encode_entry("k1", {"x": torch.arange(3)})
    assert torch.equal(cache.decode_entry(raw, "k1")["x"], torch.arange(3))
    with pytest.raises(cache.CorruptEntry, match="key"):
        cache.decode_entry(raw, "k2")
    with pytest.raises(cache.CorruptEntry, match="not a revlib"):
        cache.decode_entry(b"X" + raw[1:], "k1")
    bad = bytearray(raw)
    bad[-20] ^= 1
    with pytest.raises(cache.CorruptEntry, match="checksum"):
        cache.decode_entry(bytes(bad), "k1")


# ---------------------------------------------------------------------------------------------
# atomic writes, orphans, unwritable folders
# ---------------------------------------------------------------------------------------------

def test_a_crash_between_write_and_rename_leaves_the_old_entry_intact(tmp_path, monkeypatch):
    path = tmp_path / "entry.pt"
    path.write_bytes(b"the old entry")

    def crash(src, dst):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.write_atomic(path, b"the new entry, " * 1000)
    assert path.read_bytes() == b"the old entry"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.pt"]  # no temporary file left


def test_a_crash_before_the_first_rename_leaves_no_entry(cache_folder, monkeypatch):
    real_replace = os.replace

    def crash(src, dst):
        raise OSError(errno.EIO, "crashed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.warns(UserWarning, match="not stored"):
        run = cached_train(small())
    assert not run.cached
    assert list(cache_folder.iterdir()) == []  # neither an entry nor a temporary file
    monkeypatch.setattr(os, "replace", real_replace)
    assert not cached_train(small()).cached  # nothing was served: it trains
    assert cached_train(small()).cached


def test_write_atomic_writes_the_whole_entry(tmp_path):
    path = tmp_path / "sub" / "entry.pt"
    cache.write_atomic(path, b"abc" * 10)
    assert path.read_bytes() == b"abc" * 10
    cache.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["entry.pt"]


def test_orphaned_temporary_files_of_dead_writers_are_cleaned_up(cache_folder):
    cache_folder.mkdir(parents=True)
    dead = [cache_folder / ".run-0123.pt.999999.abc.tmp", cache_folder / ".run-4567.pt.99999999999.xyz.tmp"]
    alive = [cache_folder / f".run-89ab.pt.{os.getpid()}.def.tmp", cache_folder / ".run-cdef.pt.1.ghi.tmp"]
    for p in dead + alive:
        p.write_bytes(b"half an entry")
    other = cache_folder / "notes.txt"
    other.write_text("not ours")
    cached_train(small())  # the first use of a folder cleans it
    for p in dead:
        assert not p.exists(), p.name
    for p in alive:
        assert p.exists(), p.name  # our own pid and a live one (pid 1) are writers at work
    assert other.exists()


def test_stale_temporary_files_are_removed_whatever_their_pid(cache_folder):
    cache_folder.mkdir(parents=True)
    stale = cache_folder / f".run-0.pt.{os.getpid()}.old.tmp"
    stale.write_bytes(b"x")
    old = stale.stat().st_mtime - cache.STALE_SECONDS - 10
    os.utime(stale, (old, old))
    assert cache.clean_orphans(cache_folder) == 1 and not stale.exists()
    assert cache.clean_orphans(cache_folder / "missing") == 0


def test_a_read_only_cache_folder_costs_the_cache_not_the_result(cache_folder, monkeypatch):
    cache_folder.mkdir(parents=True)
    cache_folder.chmod(0o555)
    real = cache.tempfile.mkstemp

    def denied(*args, **kwargs):  # what a read-only folder does (root ignores chmod)
        raise PermissionError(errno.EACCES, "Permission denied", str(cache_folder))

    monkeypatch.setattr(cache.tempfile, "mkstemp", denied)
    try:
        with pytest.warns(UserWarning, match="could not write.*Permission denied"):
            run = cached_train(small())
        assert not run.cached and run.history["loss"].shape == (3, 1)
    finally:
        cache_folder.chmod(0o755)
    monkeypatch.setattr(cache.tempfile, "mkstemp", real)
    assert list(cache_folder.iterdir()) == []


def test_a_cache_folder_that_cannot_exist_costs_the_cache_not_the_result(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("REVLIB_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write"):
        run = cached_train(small())
    assert not run.cached


def test_a_full_disk_costs_the_cache_not_the_result(cache_folder, monkeypatch):
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    with pytest.warns(UserWarning, match="No space left on device"):
        run = cached_train(small())
    assert not run.cached and np.isfinite(run.history["loss"]).all()
    assert list(cache_folder.iterdir()) == []  # the partial temporary file is gone


def test_cache_off_computes_every_time(monkeypatch, tmp_path):
    for value in ("off", "OFF", "0", "none"):
        monkeypatch.setenv("REVLIB_CACHE", value)
        assert cache.cache_dir() is None
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    monkeypatch.setenv("REVLIB_CACHE", "off")
    first = cache.cached_arrays("test", {"a": 1}, compute)
    second = cache.cached_arrays("test", {"a": 1}, compute)
    assert len(calls) == 2 and np.array_equal(first["x"], second["x"])
    trains = _counting(monkeypatch)
    assert not cached_train(small()).cached and not cached_train(small()).cached
    assert len(trains) == 2
    # the same calls with a folder compute once
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "on"))
    cache.cached_arrays("test", {"a": 1}, compute)
    cache.cached_arrays("test", {"a": 1}, compute)
    assert len(calls) == 3


def test_cache_dir_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("REVLIB_CACHE")
    where = cache.cache_dir()
    assert where.name in (".revlib_cache", "revlib")


def test_memo_returns_cached_flag_and_round_trips_nested_arrays():
    value = {"a": np.arange(4.0), "nested": {"b": np.ones((2, 3), dtype=np.float32)}, "n": 3}
    out, hit = cache.memo("t", {"k": 1}, lambda: value, cache.arrays_to_tensors, cache.tensors_to_arrays)
    assert not hit and out is value
    out, hit = cache.memo("t", {"k": 1}, lambda: 1 / 0, cache.arrays_to_tensors, cache.tensors_to_arrays)
    assert hit and np.array_equal(out["nested"]["b"], value["nested"]["b"]) and out["n"] == 3
    assert out["nested"]["b"].dtype == np.float32


# ---------------------------------------------------------------------------------------------
# the code fingerprint
# ---------------------------------------------------------------------------------------------

def _copy_package(tmp_path):
    """A copy of revlib's sources (modules and the book) to edit freely."""
    package = tmp_path / "revlib"
    (package / "book").mkdir(parents=True)
    for path in cache.PACKAGE.glob("*.py"):
        (package / path.name).write_bytes(path.read_bytes())
    for path in (cache.PACKAGE / "book").glob("*.py"):
        (package / "book" / path.name).write_bytes(path.read_bytes())
    return package


def _use_sources(monkeypatch, package):
    """Fingerprint the sources under ``package`` as a fresh process would see them."""
    monkeypatch.setattr(cache, "PACKAGE", package)
    if hasattr(cache, "_read_sources"):  # the sources are read once, when revlib is imported
        monkeypatch.setattr(cache, "SOURCES", cache._read_sources())
    cache.code_fingerprint.cache_clear()


def test_the_code_fingerprint_covers_the_modules_that_compute_but_not_the_book(tmp_path, monkeypatch):
    real_package = cache.PACKAGE
    package = _copy_package(tmp_path)
    config = cache.experiment_key(small(), (0,))
    _use_sources(monkeypatch, real_package)  # the package as it is on disk now, like the copy
    real_key = cache.cache_key("run", config)

    def key():
        _use_sources(monkeypatch, package)
        return cache.cache_key("run", config)

    try:
        base = key()
        assert base == key() == real_key  # a function of the sources: the copy is the package
        for name in ("plot.py", "figures.py"):
            book = package / "book" / name
            book.write_text(book.read_text() + "\n# a new colour\n")
        (package / "book" / "new_page.py").write_text("x = 1\n")
        (package / "NOTES.md").write_text("not code")
        assert key() == base  # presentation and non-code files do not count
        for name in ("model.py", "training.py", "objectives.py", "data.py", "config.py"):
            module = package / name
            original = module.read_bytes()
            module.write_bytes(original.replace(b'"""', b'"""Reworded. ', 1) + b"\n# a comment\n")
            assert key() == base, name  # a docstring or a comment computes nothing
            module.write_bytes(original + b"\nEDITED = 1\n")
            assert key() != base, name  # editing the code of a module that computes the run invalidates it
            module.write_bytes(original)
            assert key() == base
    finally:
        _use_sources(monkeypatch, real_package)


def test_editing_the_model_invalidates_a_stored_run(tmp_path, monkeypatch):
    package = _copy_package(tmp_path)
    real_package = cache.PACKAGE
    calls = _counting(monkeypatch)
    try:
        _use_sources(monkeypatch, package)
        cached_train(small())
        book = package / "book" / "plot.py"
        book.write_text(book.read_text() + "\n# restyled\n")
        _use_sources(monkeypatch, package)
        assert cached_train(small()).cached and len(calls) == 1
        (package / "model.py").write_text((package / "model.py").read_text() + "\nEDITED = 1\n")
        _use_sources(monkeypatch, package)
        assert not cached_train(small()).cached and len(calls) == 2
    finally:
        _use_sources(monkeypatch, real_package)


# ---------------------------------------------------------------------------------------------
# traces
# ---------------------------------------------------------------------------------------------

def test_cached_trace_stores_the_run_for_cached_train(monkeypatch):
    exp = small()
    steps = []

    def measure(step, model, world):
        steps.append(step)
        return {"norm": model.embed.detach().norm(dim=(1, 2)).numpy(), "nested": {"s": np.float64(step)}}

    run, trace = cache.cached_trace("test-trace", exp, (0, 1), measure)
    assert steps == [0, 3, 6] and not run.cached
    assert trace["step"].tolist() == [0, 3, 6] and trace["norm"].shape == (3, 2)
    assert trace["nested"]["s"].tolist() == [0.0, 3.0, 6.0]

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train", no_training)
    loaded = cached_train(exp, seeds=(0, 1))
    assert loaded.cached
    assert_same_run(loaded, run)
    again, trace2 = cache.cached_trace("test-trace", exp, (0, 1), measure)
    assert again.cached and steps == [0, 3, 6]  # neither trained nor measured again
    assert np.array_equal(trace2["norm"], trace["norm"])


def test_cached_trace_options_are_in_the_key():
    exp = small()
    calls = []

    def measure(step, model, world):
        calls.append(step)
        return {"x": np.zeros(1)}

    cache.cached_trace("opt-trace", exp, (0,), measure, options={"v": 1})
    n = len(calls)
    cache.cached_trace("opt-trace", exp, (0,), measure, options={"v": 1})
    assert len(calls) == n
    cache.cached_trace("opt-trace", exp, (0,), measure, options={"v": 2})
    assert len(calls) == 2 * n
