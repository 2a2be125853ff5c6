"""One results cache for everything that takes time: trained runs, measurements, traces along
training, claim checks and the benchmark. Re-running a chapter, or returning a slider to a
setting already seen, costs a load.

**One key.** An entry is keyed by *what was asked* and *the code that answered*: a name (``"run"``,
``"coupling.positional_parts"``, ...), the value of every argument, the entry format, the torch
version, and a fingerprint of revlib's code. The arguments are turned into a canonical JSON
value (:func:`canonical`): numbers, strings, lists, arrays, configs (by their fields) and runs
(by their experiment and seeds). Anything else is refused with a :class:`~revlib.config.ConfigError` naming
the argument, so a result is never stored under a key that misses one of its inputs. Nothing is
keyed by source text.

**The fingerprint** covers every module of revlib outside ``revlib/book/`` (presentation:
editing a colour keeps every entry), found on disk, not listed by hand: a new core module
changes it. It is computed from each module's syntax tree, so a comment or a docstring counts
for nothing. It describes the code this process *imported*; if a core module on disk no longer
matches (an edit after import, ``%autoreload``), the cache neither reads nor writes, and says so
in one line, until the process restarts.

**Runs** are stored as two entries: ``run`` (the history, small) and ``weights`` (the trained
parameters, loaded only when a measurement needs the model). Initial weights are not stored:
they are rebuilt from the seeds.

**Integrity.** An entry file is a header, the sha256 of its body and the body (``torch.save``
bytes, loaded with ``weights_only=True``: never arbitrary pickles). A load verifies the
checksum and the stored key; an entry that fails either is reported and recomputed. Writes go to
a temporary file that is renamed into place, so a crash leaves the old entry or none; temporary
files left by a killed writer are removed. A full disk or a read-only folder costs the cache,
never the result: the computed value is returned with a warning.

**Provenance.** ``TALLY`` counts, for the current process, what was trained or computed
here (and how long it took), loaded from the local cache, or taken from a results bundle
(revlib.bundle); each chapter's first output reports it. Every read and write is also appended
to ``access.log`` in the cache folder, which ``python -m revlib results pack`` reads to bundle
what the book uses.

Where: ``$REVLIB_CACHE`` if set, else ``.revlib_cache/`` in the source checkout (git-ignored),
else ``~/.cache/revlib``. ``REVLIB_CACHE=off`` disables the cache.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import io
import json
import math
import numbers
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import ConfigError, Experiment, as_seeds

FORMAT = 4  # bump when the layout of an entry changes
MAGIC = b"revlib-cache 4\n"
STALE_SECONDS = 24 * 3600  # a temporary file this old belongs to no live writer
PACKAGE = Path(__file__).resolve().parent
PRESENTATION = "book"  # revlib/book/: drawn, never fingerprinted
ACCESS_LOG = "access.log"
BUNDLE_INDEX = "bundle-index.json"  # entries installed from a results bundle (revlib.bundle)
ENTRY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*-[0-9a-f]{32}\.pt")  # a cache file's name (hyphens too: coupling-history-...)


# ---------------------------------------------------------------------------------------------
# the code fingerprint
# ---------------------------------------------------------------------------------------------

def _code_of(source: bytes) -> bytes:
    """The code of a module without its comments, docstrings or layout (its syntax tree): a
    reworded docstring or a reflowed line computes the same numbers and keeps every entry."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


def core_modules(package: Path | None = None) -> list[Path]:
    """Every ``.py`` file of revlib outside ``revlib/book/``, found on disk, sorted."""
    package = PACKAGE if package is None else package
    return sorted(p for p in package.rglob("*.py")
                  if p.relative_to(package).parts[0] != PRESENTATION and "__pycache__" not in p.parts)


def _file_state(package: Path) -> tuple:
    """(relative path, mtime, size) of every core module: cheap to compare, no parsing."""
    out = []
    for p in core_modules(package):
        try:
            st = p.stat()
            out.append((p.relative_to(package).as_posix(), st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return tuple(out)


def module_codes(package: Path | None = None) -> dict[str, str]:
    """{relative path: sha256 of its code} for every core module."""
    package = PACKAGE if package is None else package
    return {p.relative_to(package).as_posix(): hashlib.sha256(_code_of(p.read_bytes())).hexdigest()
            for p in core_modules(package)}


def fingerprint_of(codes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(codes):
        h.update(name.encode() + b"\0" + codes[name].encode() + b"\n")
    return h.hexdigest()


# Read once, when revlib is imported: the fingerprint describes the code this process runs.
_IMPORTED_STATE = _file_state(PACKAGE)
_IMPORTED_CODES = module_codes(PACKAGE)
FINGERPRINT = fingerprint_of(_IMPORTED_CODES)
_checked: dict[tuple, str | None] = {_IMPORTED_STATE: None}
_warned: set[str] = set()


def stale() -> str | None:
    """The first core module whose code on disk differs from what this process imported (added,
    removed or edited), or None. A comment or a reflow is not a difference."""
    state = _file_state(PACKAGE)
    if state not in _checked:
        now = module_codes(PACKAGE)
        changed = sorted(set(now) ^ set(_IMPORTED_CODES)) + sorted(
            n for n in set(now) & set(_IMPORTED_CODES) if now[n] != _IMPORTED_CODES[n])
        _checked[state] = f"revlib/{changed[0]}" if changed else None
    return _checked[state]


def code_version() -> str:
    """The short form of ``FINGERPRINT`` that bundles and chapters print."""
    return FINGERPRINT[:12]


# ---------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------

def canonical(value, name: str = "argument"):
    """A JSON value that identifies ``value`` as an input to a computation, or ConfigError.

    Numbers, strings, None, lists/tuples/ranges, numpy arrays, dicts with string keys, configs
    (their fields) and runs (the experiment and seeds that trained them). Floats keep every bit
    (``repr``); 3 and 3.0 are different inputs.
    """
    from .training import Run

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return {"float": repr(value)} if not math.isfinite(value) else value
    if isinstance(value, Experiment):
        return {"experiment": dataclasses.asdict(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and type(value).__module__.startswith("revlib.config"):
        return {type(value).__name__: dataclasses.asdict(value)}
    if isinstance(value, Run):
        return {"run": {"experiment": dataclasses.asdict(value.experiment), "seeds": list(value.seeds)}}
    if isinstance(value, np.ndarray):
        return {"array": canonical(value.tolist(), name), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, (list, tuple, range)):
        return [canonical(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ConfigError(f"{name} has a key {k!r}; keys of a cached argument must be strings or integers")
            out[str(k)] = canonical(v, f"{name}[{k!r}]")
        return out
    if isinstance(value, torch.dtype):
        return str(value)
    raise ConfigError(f"{name} cannot be part of a results-cache key (a {type(value).__name__}); "
                      "pass numbers, strings, lists, arrays, configs or runs")


def entry_key(name: str, args: dict) -> str:
    """The key of an entry: its name, its canonical arguments, the format, torch and the code."""
    blob = json.dumps({"name": name, "args": canonical(args), "format": FORMAT, "torch": torch.__version__,
                       "code": FINGERPRINT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def file_name(name: str, key: str) -> str:
    slug = re.sub(r"[^a-z0-9_.]+", "-", name.lower()).strip("-.") or "entry"
    return f"{slug}-{key}.pt"


def cache_dir() -> Path | None:
    """The cache folder, or None when ``REVLIB_CACHE=off``."""
    env = os.environ.get("REVLIB_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env)
    checkout = PACKAGE.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / ".revlib_cache"
    return Path.home() / ".cache" / "revlib"


# ---------------------------------------------------------------------------------------------
# entries on disk
# ---------------------------------------------------------------------------------------------

class CorruptEntry(ValueError):
    """An entry whose checksum, header or key does not match."""


def encode_entry(key: str, payload: dict, name: str = "", args=None) -> bytes:
    body = io.BytesIO()
    torch.save({"key": key, "name": name, "args": json.dumps(canonical(args or {}), sort_keys=True),
                "payload": payload}, body)
    data = body.getvalue()
    return MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data


def read_entry(raw: bytes) -> dict:
    """Verify magic and checksum and load an entry with torch's ``weights_only`` loader (no code
    runs); returns ``{"key", "name", "args", "payload"}``. CorruptEntry on any failure."""
    if not raw.startswith(MAGIC):
        raise CorruptEntry("not a revlib cache entry")
    digest, _, data = raw[len(MAGIC):].partition(b"\n")
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise CorruptEntry("checksum mismatch")
    try:
        entry = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # an object the safe loader refuses, or a damaged archive
        raise CorruptEntry(f"unreadable body ({type(err).__name__})") from None
    if not isinstance(entry, dict) or not {"key", "payload"} <= set(entry):
        raise CorruptEntry("not a revlib cache entry")
    return entry


def decode_entry(raw: bytes, key: str) -> dict:
    entry = read_entry(raw)
    if entry.get("key") != key:
        raise CorruptEntry("entry does not match its key")
    return entry["payload"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into
    place: a reader sees the old entry or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond any pid, so no such process
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_orphans(folder: Path) -> int:
    """Remove temporary files of writers that died before renaming them; returns how many."""
    removed = 0
    try:
        candidates = list(folder.glob(".*.tmp"))
    except OSError:
        return 0
    now = time.time()
    for tmp in candidates:
        parts = tmp.name.split(".")  # .<name>.<pid>.<random>.tmp
        try:
            pid = int(parts[-3])
        except (ValueError, IndexError):
            pid = None
        try:
            stale_file = now - tmp.stat().st_mtime > STALE_SECONDS
            if stale_file or (pid is not None and pid != os.getpid() and not _pid_alive(pid)):
                tmp.unlink()
                removed += 1
        except OSError:
            pass
    return removed


_cleaned: set[str] = set()


# ---------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Tally:
    """What this process's cached calls did: computed here (with the seconds it took), loaded
    from the local cache, or loaded from entries a results bundle installed (revlib.bundle)."""

    trained: int = 0  # runs trained here
    trained_seconds: float = 0.0
    computed: int = 0  # other entries (measurements, traces) computed here
    computed_seconds: float = 0.0
    local: int = 0
    bundle: int = 0
    bundles: set = dataclasses.field(default_factory=set)  # code versions of the bundles read

    def reset(self) -> None:
        self.__init__()

    def describe(self) -> str:
        parts = [f"{self.trained} run{'s' * (self.trained != 1)} trained here ({self.trained_seconds:.0f} s)",
                 f"{self.computed} measurement{'s' * (self.computed != 1)} computed here ({self.computed_seconds:.0f} s)",
                 f"{self.local} result{'s' * (self.local != 1)} loaded from the local cache"]
        if self.bundle:
            parts.append(f"{self.bundle} from a results bundle (code {', '.join(sorted(self.bundles))})")
        else:
            parts.append("none from a results bundle")
        return "; ".join(parts)


TALLY = Tally()
_bundle_index: dict = {"mtime": None, "entries": {}}


def _bundled(folder: Path, filename: str) -> str | None:
    """The code version of the bundle that installed ``filename``, or None."""
    path = folder / BUNDLE_INDEX
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    if _bundle_index["mtime"] != (str(folder), mtime):
        try:
            _bundle_index["entries"] = json.loads(path.read_text()).get("entries", {})
        except (OSError, ValueError, AttributeError):
            _bundle_index["entries"] = {}
        _bundle_index["mtime"] = (str(folder), mtime)
    return _bundle_index["entries"].get(filename)


def _log_access(folder: Path, filename: str) -> None:
    try:
        with open(folder / ACCESS_LOG, "a") as f:
            f.write(filename + "\n")
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# memo: the one way anything is cached
# ---------------------------------------------------------------------------------------------

def memo(name: str, args: dict, compute: Callable[[], object], encode: Callable[[object], dict] | None = None,
         decode: Callable[[dict], object] | None = None, kind: str = "computed") -> tuple[object, bool]:
    """``compute()``, or the stored result of the identical earlier call: ``(value, cached)``.

    ``args`` must hold every input that can change the result (:func:`canonical` refuses what it
    cannot key). ``encode`` turns the value into what :func:`torch.save` can store with
    ``weights_only`` and ``decode`` turns it back; by default nested dicts, lists and tuples of
    numpy arrays, numbers and strings (:func:`to_storable`). ``kind`` ("trained" or "computed")
    only says how ``TALLY`` counts a computation.
    """
    encode = encode or to_storable
    decode = decode or from_storable
    key = entry_key(name, args)
    folder = cache_dir()
    changed = stale() if folder is not None else None
    if changed is not None:
        if changed not in _warned:
            _warned.add(changed)
            warnings.warn(f"revlib cache: {changed} changed on disk after revlib was imported; results are "
                          "computed but neither read from nor written to the cache until the process restarts",
                          stacklevel=2)
        folder = None
    if folder is None:
        return _timed(compute, kind), False
    if str(folder) not in _cleaned:
        _cleaned.add(str(folder))
        clean_orphans(folder)
    filename = file_name(name, key)
    path = folder / filename
    if path.exists():
        try:
            value = decode(decode_entry(path.read_bytes(), key))
        except Exception as err:  # corrupt, foreign or unreadable: say so, recompute, overwrite
            warnings.warn(f"revlib cache: recomputing unreadable entry {path.name} ({err})", stacklevel=2)
        else:
            version = _bundled(folder, filename)
            if version is None:
                TALLY.local += 1
            else:
                TALLY.bundle += 1
                TALLY.bundles.add(version)
            _log_access(folder, filename)
            return value, True
    value = _timed(compute, kind)
    store(name, args, value, encode, key=key)
    return value, False


def _timed(compute, kind: str):
    start = time.perf_counter()
    value = compute()
    seconds = time.perf_counter() - start
    if kind == "trained":
        TALLY.trained += 1
        TALLY.trained_seconds += seconds
    else:
        TALLY.computed += 1
        TALLY.computed_seconds += seconds
    return value


def store(name: str, args: dict, value, encode: Callable | None = None, key: str | None = None) -> Path | None:
    """Write ``value`` as the entry of ``(name, args)``, replacing any; returns the path, or None
    when the cache is off, the code is stale or the disk refuses (with a warning)."""
    folder = cache_dir()
    if folder is None or stale() is not None:
        return None
    key = key or entry_key(name, args)
    filename = file_name(name, key)
    path = folder / filename
    try:
        write_atomic(path, encode_entry(key, (encode or to_storable)(value), name, args))
    except OSError as err:  # a read-only or full disk must not lose the result
        warnings.warn(f"revlib cache: could not write {path} ({err.strerror or err}); the result is "
                      "returned but not stored", stacklevel=3)
        return None
    if name != "weights":  # weights are logged when read: a bundle carries only the weights the book reads
        _log_access(folder, filename)
    return path


def entries(name: str) -> list[tuple[dict, object]]:
    """Every readable entry called ``name`` for the code this process runs, as ``(args, value)``
    (args as stored: canonical JSON). Used to list, e.g., every seed set whose claims were checked."""
    folder = cache_dir()
    if folder is None or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(file_name(name, "0" * 32).replace("0" * 32, "*"))):
        try:
            entry = read_entry(path.read_bytes())
            args = json.loads(entry.get("args", "{}"))
            if entry.get("name") != name or entry_key(name, args) != entry["key"] or path.name != file_name(name, entry["key"]):
                continue  # another version of the code, or a misnamed file
            out.append((args, from_storable(entry["payload"])))
        except Exception:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# what a stored value may hold
# ---------------------------------------------------------------------------------------------

_DATACLASSES: dict[str, type] = {}


def storable(cls: type) -> type:
    """Register a dataclass so that :func:`to_storable` may store it (class decorator)."""
    _DATACLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def to_storable(value):
    """Nested dicts, lists, tuples and registered dataclasses of numpy arrays, numbers, strings
    -> the same with tensors, storable with ``weights_only``."""
    if isinstance(value, np.ndarray):
        return {"__array__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.detach()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        if name not in _DATACLASSES:
            raise TypeError(f"{name} is not registered with revlib.cache.storable")
        return {"__dataclass__": name, "fields": {f.name: to_storable(getattr(value, f.name))
                                                   for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {"__dict__": [(to_storable(k), to_storable(v)) for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__list__" if isinstance(value, list) else "__tuple__": [to_storable(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in the results cache")


def from_storable(value):
    if isinstance(value, dict):
        if "__array__" in value:
            return value["__array__"].numpy()
        if "__tensor__" in value:
            return value["__tensor__"]
        if "__dataclass__" in value:
            cls = _DATACLASSES.get(value["__dataclass__"])
            if cls is None:
                raise CorruptEntry(f"unknown stored type {value['__dataclass__']}")
            return cls(**{k: from_storable(v) for k, v in value["fields"].items()})
        if "__dict__" in value:
            return {from_storable(k): from_storable(v) for k, v in value["__dict__"]}
        if "__list__" in value:
            return [from_storable(v) for v in value["__list__"]]
        if "__tuple__" in value:
            return tuple(from_storable(v) for v in value["__tuple__"])
        raise CorruptEntry("unknown stored layout")
    return value


# ---------------------------------------------------------------------------------------------
# cached functions
# ---------------------------------------------------------------------------------------------

def cached(fn: Callable | None = None, *, name: str | None = None, ignore: tuple[str, ...] = ("progress",)):
    """Decorate a function of revlib's core so that its result is cached under its own name and
    the value of **every** argument (defaults included), except those in ``ignore`` (arguments
    that cannot change the result, such as a progress bar). An argument that cannot be keyed is
    refused with a ConfigError before anything runs. ``fn.uncached`` is the plain function.

    The function's own code is covered by the fingerprint (it lives in the core); what it returns
    must be storable (:func:`to_storable`).
    """
    def wrap(fn):
        sig = inspect.signature(fn)
        key_name = name or f"{fn.__module__.removeprefix('revlib.')}.{fn.__qualname__}"

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as err:
                raise ConfigError(f"{fn.__name__}: {err}") from None
            bound.apply_defaults()
            key_args = {k: v for k, v in bound.arguments.items() if k not in ignore}
            for k, v in key_args.items():
                canonical(v, f"{fn.__name__}({k}=...)")
            value, _ = memo(key_name, key_args, lambda: fn(*bound.args, **bound.kwargs))
            return value

        inner.uncached = fn
        inner.cache_name = key_name
        return inner

    return wrap(fn) if fn is not None else wrap


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------

def run_args(experiment: Experiment, seeds) -> dict:
    return {"experiment": experiment, "seeds": list(seeds)}


def _encode_run(run) -> dict:
    return {"history": to_storable(run.history), "seconds": run.seconds,
            "eval_seconds": to_storable(np.asarray(run.eval_seconds, dtype=np.float64))}


def _load_weights(experiment: Experiment, seeds: tuple[int, ...], world):
    """The trained model of a stored run; trained again (and stored) if its weights are missing."""
    from .model import build_model
    from .training import train

    def retrain():
        return {"state": train(experiment, seeds, world=world).model.state_dict()}

    state, _ = memo("weights", run_args(experiment, seeds), retrain, encode=lambda s: s, decode=lambda p: p,
                    kind="trained")
    model = build_model(experiment, seeds, world.vocab_size)
    model.load_state_dict(state["state"])
    return model


def store_run(run) -> None:
    """Store a run as its two entries, ``run`` and ``weights``."""
    args = run_args(run.experiment, run.seeds)
    store("weights", args, {"state": run.model.state_dict()}, encode=lambda s: s)
    store("run", args, run, encode=_encode_run)


def cached_train(experiment: Experiment, seeds=None, progress: bool = False):
    """:func:`revlib.training.train`, or the stored result of the identical call; ``run.cached``
    says which. A loaded run reads its weights from the cache only when ``run.model`` is used."""
    from .data import make_world
    from .training import Run, train

    if not isinstance(experiment, Experiment):
        raise ConfigError(f"cached_train needs an Experiment (see revlib.preset), got {type(experiment).__name__}")
    seeds = as_seeds((experiment.train.seed,) if seeds is None else seeds)
    args = run_args(experiment, seeds)
    made = {}

    def compute():
        made["run"] = train(experiment, seeds, progress=progress)
        return made["run"]

    def decode(p: dict):
        world = make_world(experiment.data)
        history = from_storable(p["history"])
        return Run(experiment, seeds, world, history, float(p["seconds"]), from_storable(p["eval_seconds"]),
                   cached=True, load_model=lambda: _load_weights(experiment, seeds, world))

    run, hit = memo("run", args, compute, encode=_encode_run, decode=decode, kind="trained")
    if not hit and "run" in made:
        store("weights", args, {"state": run.model.state_dict()}, encode=lambda s: s)
    return run


def stack_rows(rows: list[dict]) -> dict:
    """A list of (nested) dicts of arrays, one per checkpoint -> one dict of arrays stacked on axis 0."""
    first = rows[0]
    return {k: stack_rows([r[k] for r in rows]) if isinstance(first[k], dict) else np.stack([np.asarray(r[k]) for r in rows])
            for k in first}


def cached_trace(name: str, experiment: Experiment, seeds, measure: Callable, progress: bool = False,
                 options: dict | None = None):
    """Train ``experiment`` with ``measure(step, model, world)`` called at every evaluation step;
    returns ``(run, trace)``, the trace a dict of arrays stacked over checkpoints with ``"step"``.

    The trace is cached under ``name`` with the experiment, the seeds and ``options``: ``name``
    names the measurement (a function of revlib's core, so the fingerprint covers it) and
    ``options`` must hold every argument it takes. The run is stored as :func:`cached_train`
    would store it, so a later ``cached_train`` loads it instead of training again.
    """
    from .training import train

    seeds = as_seeds((experiment.train.seed,) if seeds is None else seeds)
    made = {}

    def compute() -> dict:
        steps, rows = [], []

        def callback(step, model, world):
            steps.append(step)
            rows.append(measure(step, model, world))

        made["run"] = train(experiment, seeds, progress=progress, callback=callback)
        store_run(made["run"])
        return {"step": np.asarray(steps), **stack_rows(rows)}

    trace, _ = memo(name, {**run_args(experiment, seeds), "options": options or {}}, compute)
    run = made.get("run") or cached_train(experiment, seeds, progress=progress)
    return run, trace
