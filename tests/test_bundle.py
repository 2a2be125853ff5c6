"""revlib.bundle and `python -m revlib results`: pack what the book reads, fetch it into an empty cache
(from a file or over HTTP), and refuse anything corrupt, truncated, foreign, unsafe or pickled with
one line, leaving the cache exactly as it was."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from revlib import bundle, cache, coupling
from revlib.cache import cached_train
from revlib.cli import main

from conftest import assert_same_history, tiny


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (hidden ones too) and its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def packed(tmp_path, monkeypatch):
    """A bundle of a small book: two runs read back (history only) and one measurement."""
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "source"))
    exp = tiny("mdm", steps=8, eval_every=4)
    run = cached_train(exp, seeds=(0, 1))
    coupling.measured(run)
    cached_train(exp, seeds=(0, 1))  # read back: logged
    path = tmp_path / "book.tar.gz"
    summary = bundle.pack(path)
    target = tmp_path / "target"
    monkeypatch.setenv("REVLIB_CACHE", str(target))
    return {"path": path, "summary": summary, "experiment": exp, "run": run, "target": target, "tmp": tmp_path}


def _bundle_bytes(manifest: dict, members: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode())] + members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return gzip.compress(body.getvalue())


def _manifest(entries: list[tuple[str, bytes]]) -> dict:
    return {"format": bundle.FORMAT, "code": cache.FINGERPRINT, "entries": [
        {"name": n.removeprefix("entries/"), "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in entries]}


def test_pack_then_fetch_into_an_empty_cache_loads_without_training(packed, monkeypatch):
    summary = packed["summary"]
    assert summary.entries == 2 and summary.code == cache.FINGERPRINT  # the run and its measurement
    members = tarfile.open(fileobj=io.BytesIO(gzip.decompress(packed["path"].read_bytes()))).getnames()
    assert not any(n.startswith("entries/weights-") for n in members)  # nothing read the weights: left out
    fetched = bundle.fetch(str(packed["path"]))
    assert fetched.installed == summary.entries and fetched.skipped == 0
    from revlib import training

    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    cache.TALLY.reset()
    again = cached_train(packed["experiment"], seeds=(0, 1))
    assert again.cached and cache.TALLY.bundle >= 1 and cache.TALLY.bundles == {cache.code_version()}
    assert_same_history(again.history, packed["run"].history)
    assert np.array_equal(coupling.measured(again)["corr"], coupling.measured(packed["run"])["corr"])


def test_a_trace_under_a_hyphenated_name_travels_in_the_bundle(tmp_path, monkeypatch):
    """Coupling histories and alignment traces are cached as ``coupling-history-...`` and
    ``alignment-trace-...``: a bundle that dropped them made chapters 2 and 3 train after a fetch."""
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "source"))
    exp = tiny("mdm", steps=8, eval_every=4)
    _, history = coupling.coupling_history(exp, seeds=(0, 1))
    coupling.coupling_history(exp, seeds=(0, 1))  # read back: logged
    path = tmp_path / "book.tar.gz"
    bundle.pack(path)
    members = tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))).getnames()
    assert any(n.startswith("entries/coupling-history-") for n in members), members
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "target"))
    bundle.fetch(str(path))
    from revlib import training

    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    _, again = coupling.coupling_history(exp, seeds=(0, 1))
    assert set(again) == set(history) and all(np.array_equal(again[k], history[k]) for k in history)


def test_a_second_fetch_changes_nothing(packed):
    bundle.fetch(str(packed["path"]))
    before = _snapshot(packed["target"])
    summary = bundle.fetch(str(packed["path"]))
    assert summary.installed == 0 and summary.present == summary.entries
    assert _snapshot(packed["target"]) == before


def test_entries_of_other_code_are_skipped(packed, monkeypatch):
    monkeypatch.setattr(cache, "FINGERPRINT", "f" * 64)
    summary = bundle.fetch(str(packed["path"]))
    assert summary.skipped == summary.entries and summary.installed == 0
    assert not any(n.endswith(".pt") for n in _snapshot(packed["target"]))


def _refused(packed, data: bytes, words: str, capsys):
    """Fetching ``data`` fails with one line naming ``words``, exit status 1, and no change."""
    bad = packed["tmp"] / "bad.tar.gz"
    bad.write_bytes(data)
    target = packed["target"]
    target.mkdir(parents=True, exist_ok=True)
    (target / "keep.txt").write_text("the cache as it was")
    before = _snapshot(target)
    capsys.readouterr()
    assert main(["results", "fetch", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert _snapshot(target) == before  # no entry, no temporary file, no index


def test_a_corrupt_bundle_is_refused(packed, capsys):
    raw = bytearray(gzip.decompress(packed["path"].read_bytes()))
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside an entry
    _refused(packed, gzip.compress(bytes(raw)), "checksum", capsys)


def test_a_truncated_bundle_is_refused(packed, capsys):
    data = packed["path"].read_bytes()
    _refused(packed, data[: len(data) * 2 // 3], "truncated", capsys)


@pytest.mark.parametrize("data, words", [(b"not a bundle at all", "not a revlib results bundle"),
                                         (gzip.compress(b"plain text, gzipped"), "not a tar archive")])
def test_a_foreign_file_is_refused(packed, capsys, data, words):
    _refused(packed, data, words, capsys)


def test_a_bundle_without_a_manifest_is_refused(packed, capsys):
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        info = tarfile.TarInfo("README")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    _refused(packed, gzip.compress(body.getvalue()), "not a cache entry name", capsys)


@pytest.mark.parametrize("name", ["entries/../../outside-0123456789abcdef0123456789abcdef.pt", "../escape.pt",
                                  "/etc/cron.d/x", "entries/sub/run-0123456789abcdef0123456789abcdef.pt"])
def test_an_entry_name_that_leaves_the_cache_is_refused(packed, capsys, name):
    data = b"x"
    _refused(packed, _bundle_bytes(_manifest([]), [(name, data)]), "refused", capsys)
    assert not (packed["tmp"] / "outside-0123456789abcdef0123456789abcdef.pt").exists()


def test_a_link_is_refused(packed, capsys):
    _refused(packed, _bundle_bytes(_manifest([]), [], symlink="entries/run-0123456789abcdef0123456789abcdef.pt"),
             "not a regular file", capsys)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/revlib-bundle-pwned",))


def test_a_pickled_object_is_refused_and_never_runs(packed, capsys):
    marker = Path("/tmp/revlib-bundle-pwned")
    marker.unlink(missing_ok=True)
    buf = io.BytesIO()
    torch.save({"key": "0" * 32, "name": "run", "args": "{}", "payload": _Boom()}, buf, pickle_protocol=2)
    body = buf.getvalue()
    entry = cache.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    name = f"entries/run-{'0' * 32}.pt"
    _refused(packed, _bundle_bytes(_manifest([(name, entry)]), [(name, entry)]), "not a valid cache entry", capsys)
    assert not marker.exists()
    plain = pickle.dumps(_Boom())  # a bare pickle is not even an entry
    name = f"entries/run-{'1' * 32}.pt"
    _refused(packed, _bundle_bytes(_manifest([(name, plain)]), [(name, plain)]), "not a valid cache entry", capsys)
    assert not marker.exists()


def test_an_entry_under_another_entrys_name_is_refused(packed, capsys):
    raw = gzip.decompress(packed["path"].read_bytes())
    tar = tarfile.open(fileobj=io.BytesIO(raw))
    member = next(m for m in tar.getmembers() if m.name.startswith("entries/run-"))
    data = tar.extractfile(member).read()
    wrong = "entries/run-" + "a" * 32 + ".pt"
    _refused(packed, _bundle_bytes(_manifest([(wrong, data)]), [(wrong, data)]), "another entry's key", capsys)


def test_fetch_over_http_from_a_loopback_server(packed, capsys):
    folder = packed["path"].parent

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{packed['path'].name}"
        assert main(["results", "fetch", url]) == 0
        assert "installed" in capsys.readouterr().out
        missing = f"http://127.0.0.1:{server.server_address[1]}/no-such-bundle.tar.gz"
        assert main(["results", "fetch", missing]) == 1
        assert "HTTP 404" in capsys.readouterr().err
        assert main(["results", "fetch", missing, "--if-available"]) == 0
        assert "no results bundle for this code" in capsys.readouterr().out
    finally:
        server.shutdown()


def test_pack_needs_a_record_of_what_was_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REVLIB_CACHE", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    assert main(["results", "pack", str(tmp_path / "x.tar.gz")]) == 1
    assert "build the book first" in capsys.readouterr().err


def test_the_release_url_is_derived_from_the_repository_and_the_code():
    url = bundle.release_url("https://github.com/owner/book/")
    assert url == (f"https://github.com/owner/book/releases/download/results-{cache.FINGERPRINT[:12]}/"
                   f"revlib-results-{cache.FINGERPRINT[:12]}.tar.gz")
