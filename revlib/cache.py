"""One results cache for everything that takes time: trained runs, measurement histories and the
benchmark. Re-running a chapter, or returning a slider to a setting already seen, costs a load.

**Keys.** An entry is keyed by what produced it: a kind ("run", "coupling-history", ...), the
complete configuration (experiment, seeds and any options), the torch version and a
fingerprint of the code (the syntax tree: comments and docstrings do not count) of the library
modules that *produce* that kind of entry (``MODULES``): editing a figure's colour (``revlib/book``) or the CLI keeps every entry, editing
the alignment analysis keeps the trained runs, editing the model or the trainer invalidates
them all.

**Integrity.** An entry file is a header, the sha256 of its body and the body (``torch.save``
bytes, loaded with ``weights_only=True``). A load verifies the checksum and the stored key;
an entry that fails either is reported and recomputed. Writes go to a temporary file that is
renamed into place, so a crash leaves the old entry or none, never half of one; temporary
files left by a killed writer are removed. A full disk or a read-only folder costs the cache,
never the result: the computed value is returned with a warning.

Where: ``$REVLIB_CACHE`` if set, else ``.revlib_cache/`` in the source checkout (git-ignored),
else ``~/.cache/revlib``. ``REVLIB_CACHE=off`` disables the cache.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import Experiment, as_seeds

FORMAT = 3  # bump when the layout of an entry changes
MAGIC = b"revlib-cache 3\n"
STALE_SECONDS = 24 * 3600  # a temporary file this old belongs to no live writer
PACKAGE = Path(__file__).resolve().parent


# The modules whose source decides each kind of entry: editing one invalidates exactly the
# entries it can change. Presentation (revlib/book), the CLI, sweeps and the text probes
# compute nothing that is stored, so they are in no list.
RUN_MODULES = ("config", "data", "model", "objectives", "training", "measure", "cache")
ANALYSIS_MODULES = RUN_MODULES + ("theory", "coupling", "gradients", "alignment")
MODULES = {"run": RUN_MODULES, "coupling-history": RUN_MODULES + ("theory", "coupling"),
           "alignment-trace": RUN_MODULES + ("gradients", "alignment"), "bench": ANALYSIS_MODULES + ("bench",)}


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


def _read_sources() -> dict[str, bytes]:
    return {name: _code_of((PACKAGE / f"{name}.py").read_bytes())
            for name in sorted(set(ANALYSIS_MODULES) | {"bench"})}


# Read once, when revlib is imported: the fingerprint describes the code this process runs,
# even if the files change on disk while it works.
SOURCES = _read_sources()


@functools.lru_cache(maxsize=None)
def code_fingerprint(modules: tuple[str, ...] = ANALYSIS_MODULES) -> str:
    """sha256 over the code of the given modules of revlib (never revlib/book: presentation),
    as they were when revlib was imported; comments and docstrings do not count."""
    h = hashlib.sha256()
    for name in sorted(modules):
        h.update(name.encode())
        h.update(SOURCES[name] if name in SOURCES else _code_of((PACKAGE / f"{name}.py").read_bytes()))
    return h.hexdigest()


def cache_dir() -> Path | None:
    """The cache folder, or None when ``REVLIB_CACHE=off``."""
    env = os.environ.get("REVLIB_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env)
    checkout = PACKAGE.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / ".revlib_cache"
    return Path.home() / ".cache" / "revlib"


def cache_key(kind: str, config: dict) -> str:
    """The key of an entry: kind, configuration, format, torch version and the fingerprint of the
    modules that produce that kind (``MODULES``; any other kind: every analysis module)."""
    blob = json.dumps({"kind": kind, "config": config, "format": FORMAT, "torch": torch.__version__,
                       "code": code_fingerprint(MODULES.get(kind, ANALYSIS_MODULES))}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def experiment_key(experiment: Experiment, seeds, **options) -> dict:
    """The configuration part of a key for work done on an experiment with given seeds."""
    return {"experiment": asdict(experiment), "seeds": list(seeds), **options}


# ---------------------------------------------------------------------------------------------
# entries on disk
# ---------------------------------------------------------------------------------------------

class CorruptEntry(ValueError):
    """An entry whose checksum, header or key does not match."""


def encode_entry(key: str, payload: dict) -> bytes:
    body = io.BytesIO()
    torch.save({"key": key, "payload": payload}, body)
    data = body.getvalue()
    return MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data


def decode_entry(raw: bytes, key: str) -> dict:
    if not raw.startswith(MAGIC):
        raise CorruptEntry("not a revlib cache entry")
    rest = raw[len(MAGIC):]
    digest, _, data = rest.partition(b"\n")
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise CorruptEntry("checksum mismatch")
    entry = torch.load(io.BytesIO(data), weights_only=True)
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
            stale = now - tmp.stat().st_mtime > STALE_SECONDS
            if stale or (pid is not None and pid != os.getpid() and not _pid_alive(pid)):
                tmp.unlink()
                removed += 1
        except OSError:
            pass
    return removed


_cleaned: set[str] = set()


def memo(kind: str, config: dict, compute: Callable[[], object], encode: Callable[[object], dict],
         decode: Callable[[dict], object]) -> tuple[object, bool]:
    """``compute()``, or the stored result of the identical earlier call: ``(value, cached)``.

    ``encode`` turns the value into a dict of tensors, numbers and strings (``torch.save``-able
    with ``weights_only``); ``decode`` turns it back.
    """
    folder = cache_dir()
    if folder is None:
        return compute(), False
    if str(folder) not in _cleaned:
        _cleaned.add(str(folder))
        clean_orphans(folder)
    key = cache_key(kind, config)
    path = folder / f"{kind}-{key}.pt"
    if path.exists():
        try:
            return decode(decode_entry(path.read_bytes(), key)), True
        except Exception as err:  # corrupt, foreign or unreadable: say so, recompute, overwrite
            warnings.warn(f"revlib cache: recomputing unreadable entry {path.name} ({err})", stacklevel=2)
    value = compute()
    try:
        write_atomic(path, encode_entry(key, encode(value)))
    except OSError as err:  # a read-only or full disk must not lose the result
        warnings.warn(f"revlib cache: could not write {path} ({err.strerror or err}); the result is "
                      "returned but not stored", stacklevel=2)
    return value, False


# ---------------------------------------------------------------------------------------------
# what is cached
# ---------------------------------------------------------------------------------------------

def arrays_to_tensors(values: dict) -> dict:
    """A nested dict of numpy arrays (and numbers) -> the same with tensors, for an entry."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out[k] = arrays_to_tensors(v)
        elif isinstance(v, np.ndarray):
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        else:
            out[k] = v
    return out


def tensors_to_arrays(values: dict) -> dict:
    return {k: tensors_to_arrays(v) if isinstance(v, dict) else v.numpy() if isinstance(v, torch.Tensor) else v
            for k, v in values.items()}


def _run_codec(experiment: Experiment, seeds: tuple[int, ...]):
    from .data import make_world
    from .model import build_model
    from .training import Run

    def encode(run) -> dict:
        return {"state": run.model.state_dict(), "init_state": run.init_state,
                "history": arrays_to_tensors(run.history), "seconds": run.seconds,
                "eval_seconds": torch.from_numpy(np.asarray(run.eval_seconds, dtype=np.float64))}

    def decode(p: dict):
        world = make_world(experiment.data)
        model = build_model(experiment, seeds, world.vocab_size)
        model.load_state_dict(p["state"])
        return Run(experiment, seeds, model, world, tensors_to_arrays(p["history"]), float(p["seconds"]),
                   p["eval_seconds"].numpy(), p["init_state"], cached=True)

    return encode, decode


def cached_train(experiment: Experiment, seeds=None, progress: bool = False):
    """:func:`revlib.training.train`, or the stored result of the identical call; ``run.cached`` says which."""
    from .training import train

    seeds = as_seeds((experiment.train.seed,) if seeds is None else seeds)
    encode, decode = _run_codec(experiment, seeds)
    run, _ = memo("run", experiment_key(experiment, seeds), lambda: train(experiment, seeds, progress=progress),
                  encode, decode)
    return run


def cached_arrays(kind: str, config: dict, compute: Callable[[], dict]) -> dict:
    """A nested dict of numpy arrays computed by ``compute()``, through :func:`memo`."""
    value, _ = memo(kind, config, compute, arrays_to_tensors, tensors_to_arrays)
    return value


def stack_rows(rows: list[dict]) -> dict:
    """A list of (nested) dicts of arrays, one per checkpoint -> one dict of arrays stacked on axis 0."""
    first = rows[0]
    return {k: stack_rows([r[k] for r in rows]) if isinstance(first[k], dict) else np.stack([np.asarray(r[k]) for r in rows])
            for k in first}


def cached_trace(kind: str, experiment: Experiment, seeds, measure: Callable, progress: bool = False,
                 options: dict | None = None):
    """Train ``experiment`` with ``measure(step, model, world)`` called at every evaluation step;
    returns ``(run, trace)``, the trace a dict of arrays stacked over checkpoints with ``"step"``.

    The trace is cached under ``kind`` (with ``options`` in its key); the run is stored as
    :func:`cached_train` would store it, so a later ``cached_train`` of the same experiment and
    seeds loads it instead of training again.
    """
    from .training import train

    seeds = as_seeds((experiment.train.seed,) if seeds is None else seeds)
    made = {}

    def compute() -> dict:
        steps, rows = [], []

        def callback(step, model, world):
            steps.append(step)
            rows.append(measure(step, model, world))

        run = train(experiment, seeds, progress=progress, callback=callback)
        made["run"] = run
        encode, decode = _run_codec(experiment, seeds)
        memo("run", experiment_key(experiment, seeds), lambda: run, encode, decode)  # store it for cached_train
        return {"step": np.asarray(steps), **stack_rows(rows)}

    trace = cached_arrays(kind, experiment_key(experiment, seeds, **(options or {})), compute)
    run = made.get("run") or cached_train(experiment, seeds, progress=progress)
    return run, trace
