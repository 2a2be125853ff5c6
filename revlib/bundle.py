"""Results bundles: every results-cache entry the book reads, in one file, so that a reader's "Run
all" loads what this code computed instead of training it.

**Pack** (``python -m revlib results pack PATH``). The cache logs every entry it reads or writes
(``access.log``; weights only when read). A bundle holds the logged entries that are valid for the
code this process runs, so after a ``make book`` it holds what the book reads, and nothing that
nothing reads (the weights of a run whose measurements are all cached stay out). The file is a
gzipped tar: ``manifest.json`` (format, the code fingerprint, torch and revlib versions, and per
entry its file name, size and sha256), then ``entries/<name>`` per entry, each an ordinary cache
entry (revlib.cache: a checksummed ``torch.save`` body, loaded with ``weights_only``).

**Fetch** (``python -m revlib results fetch URL_OR_PATH``). A bundle is untrusted data. It is read
whole into memory and checked before anything is written: a gzipped tar whose members are regular
files named ``manifest.json`` or ``entries/<cache file name>`` (no ``..``, no absolute path, no
link), every entry listed in the manifest with its size and sha256, every entry a cache entry that
torch's ``weights_only`` loader accepts (no pickled object runs code) and whose key matches its
name. A corrupt, truncated or foreign file is refused with one line and the cache is left exactly
as it was. Entries computed by other code (another fingerprint) are skipped: they would never be
read, and are computed again when asked for. Installing writes each new entry atomically
(revlib.cache.write_atomic) and records where it came from in ``bundle-index.json``, so each
chapter can say how many of its results came from a bundle. A second fetch of the same bundle
changes nothing.

**Where bundles live.** The release workflow attaches the bundle of each tagged version to a
release of the hosting repository named after the code: :func:`release_url`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from . import cache

FORMAT = "revlib-results-bundle 1"
MAX_BYTES = 400 * 2**20  # refuse to read more than this from a file or URL
TARGET_BYTES = 100 * 2**20  # what a bundle of the whole book should stay under
MEMBER = re.compile(r"entries/(" + cache.ENTRY_NAME.pattern + r")")
COLD_MINUTES = 16  # the book's chapters trained from an empty cache, one after another, on a 2-core laptop-class CPU


class BundleError(Exception):
    """A bundle that cannot be used; the message is one line saying why."""


@dataclass
class Summary:
    path: str
    code: str
    entries: int
    bytes: int
    installed: int = 0
    present: int = 0
    skipped: int = 0

    def describe(self) -> str:
        return (f"{self.entries} entries, {self.bytes / 2**20:.1f} MB, code {self.code[:12]}"
                + (f": {self.installed} installed, {self.present} already present, {self.skipped} skipped "
                   "(computed by other code)" if self.installed or self.present or self.skipped else ""))


def release_tag(fingerprint: str | None = None) -> str:
    """The name of the release that carries this code's bundle: ``results-<12 hex>``."""
    return f"results-{(fingerprint or cache.FINGERPRINT)[:12]}"


def release_url(repository: str, fingerprint: str | None = None) -> str:
    """Where the bundle of this code is published: the asset of release :func:`release_tag` of the
    hosting repository (``repository.url`` of _config.yml)."""
    tag = release_tag(fingerprint)
    return f"{repository.rstrip('/')}/releases/download/{tag}/revlib-{tag}.tar.gz"


# ---------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------

def logged_entries(folder: Path) -> list[str]:
    """The cache file names the access log lists, once each, in the order first logged."""
    try:
        lines = (folder / cache.ACCESS_LOG).read_text().split()
    except OSError:
        return []
    return list(dict.fromkeys(n for n in lines if cache.ENTRY_NAME.fullmatch(n)))


def _current(filename: str, raw: bytes) -> bool:
    """Is ``raw`` a readable entry of the code this process runs, under its own name?"""
    try:
        entry = cache.read_entry(raw)
        args = json.loads(entry.get("args", "{}"))
        name = entry.get("name", "")
        return cache.entry_key(name, args) == entry["key"] and cache.file_name(name, entry["key"]) == filename
    except Exception:
        return False


def pack(path: str | Path) -> Summary:
    """Write every logged, current entry of the cache into a bundle at ``path`` (atomically)."""
    folder = cache.cache_dir()
    if folder is None or not folder.is_dir():
        raise BundleError("there is no results cache to pack (REVLIB_CACHE is off or the folder is empty)")
    names = logged_entries(folder)
    if not names:
        raise BundleError(f"{folder / cache.ACCESS_LOG} lists no entries: build the book first (make book), "
                          "which records what it reads")
    members, listed = [], []
    for name in names:
        try:
            raw = (folder / name).read_bytes()
        except OSError:
            continue  # logged, since removed
        if not _current(name, raw):
            continue  # another version of the code, or damaged
        members.append((name, raw))
        listed.append({"name": name, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})
    if not members:
        raise BundleError("no entry of the access log belongs to the code this process runs: rebuild the book")
    manifest = {"format": FORMAT, "code": cache.FINGERPRINT, "torch": torch.__version__,
                "revlib": _version(), "created": time.strftime("%Y-%m-%d"), "entries": listed}
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member_name, data in [("manifest.json", json.dumps(manifest, indent=1).encode())] + \
                                 [(f"entries/{n}", raw) for n, raw in members]:
            info = tarfile.TarInfo(member_name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(body.getvalue(), compresslevel=6, mtime=0)
    path = Path(path)
    cache.write_atomic(path, data)
    return Summary(str(path), cache.FINGERPRINT, len(members), len(data))


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------

def read_source(source: str) -> bytes:
    """The bytes of a bundle from a local path, a ``file://`` or an ``http(s)://`` URL (at most
    ``MAX_BYTES``). Unreachable sources raise BundleError; :class:`Unreachable` says it was
    the network or a missing file, not the bundle."""
    if re.match(r"^https?://", source) or source.startswith("file://"):
        try:
            with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310  (http(s) and file only)
                data = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as err:
            raise Unreachable(f"{source}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise Unreachable(f"{source}: {getattr(err, 'reason', err)}") from None
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except OSError as err:
            raise Unreachable(f"{source}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise BundleError(f"{source} is larger than {MAX_BYTES // 2**20} MB: not a results bundle")
    return data


class Unreachable(BundleError):
    """The bundle could not be read at all (network, HTTP status, missing file)."""


def parse(data: bytes, source: str = "the bundle") -> tuple[dict, dict[str, bytes]]:
    """Check a bundle completely and return ``(manifest, {entry file name: bytes})``; BundleError
    (one line) if anything is wrong. Nothing is written."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise BundleError(f"{source} is not a revlib results bundle (not gzip data, or truncated: {err})") from None
    try:
        tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError) as err:
        raise BundleError(f"{source} is not a revlib results bundle (not a tar archive, or truncated: {err})") from None
    files: dict[str, bytes] = {}
    manifest = None
    for m in members:
        name = m.name
        if not m.isfile():
            raise BundleError(f"{source} holds {name!r}, which is not a regular file (a link or a folder): refused")
        if name == "manifest.json":
            target = "manifest"
        elif MEMBER.fullmatch(name):
            target = name[len("entries/"):]
        else:
            raise BundleError(f"{source} holds an entry named {name!r}, which is not a cache entry name: refused")
        if target in files or (target == "manifest" and manifest is not None):
            raise BundleError(f"{source} holds {name!r} twice: refused")
        f = tar.extractfile(m)
        content = f.read() if f is not None else b""
        if len(content) != m.size:
            raise BundleError(f"{source} is truncated (entry {name!r} is cut short)")
        if target == "manifest":
            try:
                manifest = json.loads(content)
            except ValueError:
                raise BundleError(f"{source} has an unreadable manifest: not a revlib results bundle") from None
        else:
            files[target] = content
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{source} is not a revlib results bundle (no manifest of format {FORMAT!r})")
    listed = manifest.get("entries")
    if not isinstance(listed, list) or not isinstance(manifest.get("code"), str):
        raise BundleError(f"{source} has a malformed manifest")
    names = set()
    for e in listed:
        if not isinstance(e, dict) or not cache.ENTRY_NAME.fullmatch(str(e.get("name", ""))):
            raise BundleError(f"{source} lists an entry with an invalid name: refused")
        n = e["name"]
        names.add(n)
        if n not in files:
            raise BundleError(f"{source} is truncated or damaged: entry {n} is listed but missing")
        if len(files[n]) != e.get("bytes") or hashlib.sha256(files[n]).hexdigest() != e.get("sha256"):
            raise BundleError(f"{source} is damaged: entry {n} does not match its checksum")
    extra = set(files) - names
    if extra:
        raise BundleError(f"{source} holds {len(extra)} entries its manifest does not list: refused")
    for n, content in files.items():  # every entry must load safely, and be what its name says
        try:
            entry = cache.read_entry(content)
        except cache.CorruptEntry as err:
            raise BundleError(f"{source}: entry {n} is not a valid cache entry ({err}): refused") from None
        if cache.file_name(str(entry.get("name", "")), str(entry.get("key", ""))) != n:
            raise BundleError(f"{source}: entry {n} carries another entry's key: refused")
    return manifest, files


def fetch(source: str) -> Summary:
    """Verify the bundle at ``source`` and install its entries of this code into the cache."""
    data = read_source(source)
    manifest, files = parse(data, source)
    folder = cache.cache_dir()
    if folder is None:
        raise BundleError("the results cache is off (REVLIB_CACHE=off): nothing to fetch into")
    if cache.stale() is not None:
        raise BundleError(f"{cache.stale()} changed on disk after revlib was imported: restart and fetch again")
    summary = Summary(source, manifest["code"], len(files), len(data))
    if manifest["code"] != cache.FINGERPRINT:
        summary.skipped = len(files)
        return summary
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / cache.BUNDLE_INDEX
    try:
        index = json.loads(index_path.read_text())
        assert isinstance(index.get("entries"), dict)
    except (OSError, ValueError, AssertionError):
        index = {"entries": {}}
    version = manifest["code"][:12]
    changed = False
    for n, content in files.items():
        if not _current(n, content):
            summary.skipped += 1  # an entry of other code inside a bundle of this code: never read
            continue
        target = folder / n
        if target.exists():  # computed here or fetched before: the local entry stays as it is
            summary.present += 1
            continue
        cache.write_atomic(target, content)
        summary.installed += 1
        index["entries"][n] = version
        changed = True
    if changed:
        cache.write_atomic(index_path, json.dumps(index, indent=0, sort_keys=True).encode())
    return summary
