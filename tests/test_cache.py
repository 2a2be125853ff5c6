"""revlib.cache: a hit returns the identical run; the key covers model, data, training, seeds, every
argument of a cached function, and the code of every core module (found on disk); a process whose
code changed on disk after import neither reads nor writes; corrupt, foreign, half-written and
orphaned entries are never served; a read-only or full disk costs the cache, not the result;
``REVLIB_CACHE=off`` really computes again."""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from revlib import ConfigError, alignment, cache, training
from revlib.cache import cached_train

from conftest import assert_same_history, assert_same_weights, tiny


def small(**kw):
    return tiny("ar", n_pairs=8, steps=6, eval_every=3, **kw)


def _entries(folder, name="run"):
    return sorted(folder.glob(f"{name}-*.pt"))


def _key(exp, seeds=(0,), name="run"):
    return cache.entry_key(name, cache.run_args(exp, seeds))


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
    assert_same_weights(a.initial_model(), b.initial_model())
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
    assert len(_entries(cache_folder)) == 1 and len(_entries(cache_folder, "weights")) == 1
    assert not list(cache_folder.glob(".*.tmp"))  # nothing half-written left behind


def test_a_loaded_run_reads_its_weights_only_when_they_are_used(cache_folder, monkeypatch):
    first = cached_train(small(), seeds=(0, 1))
    loaded = cached_train(small(), seeds=(0, 1))
    assert loaded.trained_model is None  # history only, so far
    assert_same_weights(loaded.model, first.model)
    for weights in _entries(cache_folder, "weights"):
        weights.unlink()  # a bundle may carry the history without the weights: they are trained again
    calls = _counting(monkeypatch)
    again = cached_train(small(), seeds=(0, 1))
    assert_same_weights(again.model, first.model) and len(calls) == 1


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
    assert _key(base) != _key(other)
    first, second = cached_train(base), cached_train(other)
    assert not second.cached
    assert not torch.equal(first.world.a, second.world.a)


def test_seeds_name_and_code_are_in_the_key(monkeypatch):
    exp = small()
    base = _key(exp)
    assert _key(exp, (1,)) != base and _key(exp, (0, 1)) != base and _key(exp, (1, 0)) != _key(exp, (0, 1))
    assert _key(exp, name="coupling-history") != base
    assert _key(exp) == base  # and it is a function of its inputs
    monkeypatch.setattr(cache, "FINGERPRINT", "edited revlib")
    assert _key(exp) != base


def test_seeds_are_in_the_key_of_a_run(monkeypatch):
    calls = _counting(monkeypatch)
    cached_train(small(), seeds=(0,))
    assert not cached_train(small(), seeds=(1,)).cached
    assert not cached_train(small(), seeds=(0, 1)).cached
    assert len(calls) == 3


def test_code_change_misses(monkeypatch):
    calls = _counting(monkeypatch)
    cached_train(small())
    monkeypatch.setattr(cache, "FINGERPRINT", "edited revlib")
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
    target = cache_folder / cache.file_name("run", _key(other))
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
    first, _ = cache.memo("test", {"a": 1}, compute)
    second, _ = cache.memo("test", {"a": 1}, compute)
    assert len(calls) == 2 and np.array_equal(first["x"], second["x"])
    trains = _counting(monkeypatch)
    assert not cached_train(small()).cached and not cached_train(small()).cached
    assert len(trains) == 2
    # the same calls with a folder compute once
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "on"))
    cache.memo("test", {"a": 1}, compute)
    cache.memo("test", {"a": 1}, compute)
    assert len(calls) == 3


def test_cache_dir_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("REVLIB_CACHE")
    where = cache.cache_dir()
    assert where.name in (".revlib_cache", "revlib")


def test_memo_returns_cached_flag_and_round_trips_nested_arrays():
    value = {"a": np.arange(4.0), "nested": {"b": np.ones((2, 3), dtype=np.float32)}, "n": 3}
    out, hit = cache.memo("t", {"k": 1}, lambda: value)
    assert not hit and out is value
    out, hit = cache.memo("t", {"k": 1}, lambda: 1 / 0)
    assert hit and np.array_equal(out["nested"]["b"], value["nested"]["b"]) and out["n"] == 3
    assert out["nested"]["b"].dtype == np.float32


# ---------------------------------------------------------------------------------------------
# the code fingerprint
# ---------------------------------------------------------------------------------------------

def _copy_package(tmp_path):
    """A copy of revlib's sources (every module, the book and the recipes) to edit freely."""
    package = tmp_path / "src" / "revlib"
    for path in cache.PACKAGE.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        target = package / path.relative_to(cache.PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return package


def _fingerprint(package):
    return cache.fingerprint_of(cache.module_codes(package))


def test_the_fingerprint_covers_every_core_module_found_on_disk_but_not_the_book(tmp_path):
    package = _copy_package(tmp_path)
    base = _fingerprint(package)
    assert base == _fingerprint(cache.PACKAGE) == cache.FINGERPRINT  # a function of the sources: the copy is the package
    for name in ("plot.py", "figures.py"):
        book = package / "book" / name
        book.write_text(book.read_text() + "\n# a new colour\n")
    (package / "book" / "new_page.py").write_text("x = 1\n")
    (package / "NOTES.md").write_text("not code")
    assert _fingerprint(package) == base  # presentation and non-code files do not count
    for name in ("model.py", "training.py", "objectives.py", "data.py", "config.py", "coupling.py", "claims.py",
                 "recipes/ch2.py", "minimal.py"):
        module = package / name
        original = module.read_bytes()
        module.write_bytes(original.replace(b'"""', b'"""Reworded. ', 1) + b"\n# a comment\n")
        assert _fingerprint(package) == base, name  # a docstring or a comment computes nothing
        module.write_bytes(original + b"\nEDITED = 1\n")
        assert _fingerprint(package) != base, name  # editing the code of any core module invalidates
        module.write_bytes(original)
        assert _fingerprint(package) == base


def test_adding_a_core_module_changes_the_fingerprint(tmp_path):
    """No hand-kept list: a module nobody registered counts as soon as it is on disk (the first
    edition fingerprinted a fixed list, so a new module changed nothing)."""
    package = _copy_package(tmp_path)
    base = _fingerprint(package)
    (package / "signatures.py").write_text("def tweak(x):\n    return x + 1\n")
    with_module = _fingerprint(package)
    assert with_module != base
    (package / "recipes" / "ch6.py").write_text("KNOBS = {}\n")
    assert _fingerprint(package) not in (base, with_module)  # and in a subpackage


def test_a_module_edited_after_import_neither_writes_nor_reads(tmp_path):
    """Under %autoreload (or an editor beside the kernel) the process may run new code with the key
    of the old: the cache must then store nothing, and say why, in one line."""
    package = _copy_package(tmp_path)
    (package.parent / "pyproject.toml").write_text("")
    folder = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys
        # the copy, never the checkout: drop the editable install's finder and put the copy first
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
        sys.path.insert(0, {str(package.parent)!r})
        import warnings, revlib
        from pathlib import Path
        assert Path(revlib.__file__).resolve().parent == Path({str(package)!r}).resolve(), revlib.__file__
        from revlib import cache
        folder = Path({str(folder)!r})
        value, hit = cache.memo("probe", {{"a": 1}}, lambda: 1.0)
        assert not hit and len(list(folder.glob("probe-*.pt"))) == 1
        model = Path(revlib.__file__).parent / "model.py"
        model.write_text(model.read_text() + "\\nEDITED = 2\\n")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value, hit = cache.memo("probe", {{"a": 1}}, lambda: 2.0)   # would have been a hit
            value2, hit2 = cache.memo("probe", {{"a": 2}}, lambda: 3.0)  # would have been written
        assert not hit and value == 2.0 and not hit2, (hit, value, hit2)
        assert len(list(folder.glob("probe-*.pt"))) == 1, "wrote an entry under the old key"
        msgs = [str(w.message) for w in caught]
        assert len(msgs) == 1 and "revlib/model.py changed on disk" in msgs[0], msgs
        print("ok")
    """)
    env = {**os.environ, "REVLIB_CACHE": str(folder)}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_changed_comment_after_import_is_not_a_change(tmp_path, monkeypatch):
    package = _copy_package(tmp_path)
    monkeypatch.setattr(cache, "PACKAGE", package)
    monkeypatch.setattr(cache, "_IMPORTED_CODES", cache.module_codes(package))
    monkeypatch.setattr(cache, "_checked", {})
    assert cache.stale() is None
    model = package / "model.py"
    model.write_text(model.read_text() + "\n# only a comment\n")
    assert cache.stale() is None
    model.write_text(model.read_text() + "\nEDITED = 1\n")
    assert cache.stale() == "revlib/model.py"


def test_every_argument_of_a_cached_function_is_in_its_key():
    """The first edition keyed chapter measurements by the source text of a closure: a call with
    other step sizes returned the default ones from the cache."""
    run = cached_train(small(), seeds=(0,))
    default = alignment.first_order_at_init(run)
    assert default.eta.size == len(alignment.DEFAULT_ETAS)
    two = alignment.first_order_at_init(run, etas=(1e-3, 1e-2))
    assert two.eta.tolist() == [1e-3, 1e-2]
    assert alignment.first_order_at_init(run, etas=(1e-3, 1e-2)).eta.tolist() == [1e-3, 1e-2]  # its own hit
    step = alignment.first_order_at_init(run, step="objective", etas=(1e-3,))
    assert step.step == "objective" and step.eta.tolist() == [1e-3]
    other_run = cached_train(small(), seeds=(1,))
    assert not np.array_equal(alignment.first_order_at_init(other_run, etas=(1e-3,)).dot, step.dot)


def test_cached_functions_refuse_arguments_they_cannot_key():
    calls = []

    @cache.cached(name="test.uncacheable")
    def measure(values, scale=1.0):
        calls.append(1)
        return {"x": np.asarray(values, dtype=float) * scale}

    measure([1, 2])
    measure([1, 2])
    assert len(calls) == 1
    assert measure([1, 2], scale=2.0)["x"].tolist() == [2.0, 4.0] and len(calls) == 2
    assert measure([1, 2], 1) is not None and len(calls) == 3  # 1 and 1.0 are different inputs
    with pytest.raises(ConfigError, match=r"measure\(values=...\).*function"):
        measure(lambda: 1)
    with pytest.raises(ConfigError, match="model"):
        cache.canonical(training.train(small(), seeds=(0,)).model, "model")
    with pytest.raises(ConfigError, match="keys"):
        cache.canonical({(1, 2): 3})
    with pytest.raises(ConfigError, match="unexpected keyword"):
        measure([1], sclae=2)
    assert calls == [1, 1, 1]


def test_entries_lists_what_this_code_stored(cache_folder):
    cache.store("listing", {"set": 1}, {"x": np.arange(2)})
    cache.store("listing", {"set": 2}, {"x": np.arange(3)})
    found = sorted(cache.entries("listing"), key=lambda e: e[0]["set"])
    assert [a["set"] for a, _ in found] == [1, 2] and found[1][1]["x"].tolist() == [0, 1, 2]
    (cache_folder / cache.file_name("listing", "f" * 32)).write_bytes(b"junk")
    assert len(cache.entries("listing")) == 2


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
    assert run.trained_model is not None
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


def test_the_tally_counts_trained_computed_local_and_bundled(cache_folder):
    cache.TALLY.reset()
    cached_train(small())
    assert cache.TALLY.trained == 1 and cache.TALLY.local == 0
    cached_train(small()).model
    assert cache.TALLY.local == 2  # the run and its weights
    (name,) = [p.name for p in _entries(cache_folder)]
    (cache_folder / cache.BUNDLE_INDEX).write_text('{"entries": {"%s": "abcdef012345"}}' % name)
    cached_train(small())
    assert cache.TALLY.bundle == 1 and cache.TALLY.bundles == {"abcdef012345"}
    assert "1 from a results bundle (code abcdef012345)" in cache.TALLY.describe()
    log = (cache_folder / cache.ACCESS_LOG).read_text().split()
    assert name in log and any(n.startswith("weights-") for n in log)
