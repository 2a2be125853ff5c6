"""The results cache: hits return the same run, any change of config, seeds or code misses,
writes are atomic and a corrupt entry is recomputed."""
import numpy as np
import pytest

import revlib
from revlib import cache


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path))
    return tmp_path


def small(**kw):
    return revlib.preset("ar", n_pairs=8, d_model=8, steps=20, eval_every=10, **kw)


def test_second_call_is_a_hit_with_identical_results(tmp_cache):
    first = revlib.cached_train(small(), seeds=(0, 1), progress=False)
    second = revlib.cached_train(small(), seeds=(0, 1), progress=False)
    assert not first.cached and second.cached
    for key in first.history:
        assert np.array_equal(first.history[key], second.history[key])
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert (a == b).all(), name
    assert len(list(tmp_cache.glob("*.pt"))) == 1
    assert not list(tmp_cache.glob("*.tmp"))  # nothing half-written left behind


def test_config_seeds_and_code_are_all_in_the_key(tmp_cache, monkeypatch):
    base = cache.cache_key(small(), (0,))
    assert cache.cache_key(small(lr=0.05), (0,)) != base
    assert cache.cache_key(small(), (1,)) != base
    assert cache.cache_key(small(), (0, 1)) != base
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "edited revlib")
    assert cache.cache_key(small(), (0,)) != base


def test_corrupt_entry_is_detected_and_recomputed(tmp_cache):
    first = revlib.cached_train(small(), progress=False)
    (entry,) = tmp_cache.glob("*.pt")
    entry.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="recomputing"):
        again = revlib.cached_train(small(), progress=False)
    assert not again.cached
    assert np.array_equal(first.history["loss"], again.history["loss"])
    assert revlib.cached_train(small(), progress=False).cached  # rewritten whole


def test_entry_under_the_wrong_name_is_not_trusted(tmp_cache):
    revlib.cached_train(small(), progress=False)
    (entry,) = tmp_cache.glob("*.pt")
    other = small(lr=0.05)
    entry.rename(tmp_cache / f"{cache.cache_key(other, (0,))}.pt")
    with pytest.warns(UserWarning, match="recomputing"):
        assert not revlib.cached_train(other, progress=False).cached


def test_cache_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("REVLIB_CACHE", "off")
    assert cache.cache_dir() is None
    assert not revlib.cached_train(small(), progress=False).cached
