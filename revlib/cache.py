"""A results cache for trained runs, so that re-running a chapter or returning a slider to a
position already seen costs nothing.

An entry is keyed by the complete experiment, the seeds, the torch version and a fingerprint
of revlib's own source: editing any file of revlib invalidates every entry. Entries are
written to a temporary file and renamed into place, so a crash mid-write never leaves a
half-written entry; an entry that fails to load or does not match its key is recomputed.

Where: ``$REVLIB_CACHE`` if set, else ``.revlib_cache/`` in the source checkout (git-ignored),
else ``~/.cache/revlib``. ``REVLIB_CACHE=off`` disables the cache.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import Experiment
from .data import make_world
from .model import Transformer
from .train import Run, train

FORMAT = 2  # bump when the layout of an entry changes


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the source of every module of revlib."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path | None:
    """The cache folder, or None when ``REVLIB_CACHE=off``."""
    env = os.environ.get("REVLIB_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".revlib_cache"
    return Path.home() / ".cache" / "revlib"


def cache_key(experiment: Experiment, seeds: tuple[int, ...]) -> str:
    blob = json.dumps(
        {"format": FORMAT, "experiment": asdict(experiment), "seeds": list(seeds),
         "torch": torch.__version__, "code": code_fingerprint()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _save(path: Path, key: str, run: Run) -> None:
    payload = {
        "key": key,
        "state": run.model.state_dict(),
        "history": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in run.history.items()},
        "seconds": run.seconds,
        "eval_seconds": torch.from_numpy(np.asarray(run.eval_seconds, dtype=np.float64)),
    }
    save_atomic(path, payload)


def save_atomic(path: Path, payload: dict) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place, so a
    reader sees either the old entry or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, key: str, experiment: Experiment, seeds: tuple[int, ...]) -> Run:
    payload = torch.load(path, weights_only=True)
    if payload.get("key") != key:
        raise ValueError("entry does not match its key")
    world = make_world(experiment.data)
    model = Transformer(experiment.model, world.vocab_size, seeds)
    model.load_state_dict(payload["state"])
    history = {k: v.numpy() for k, v in payload["history"].items()}
    return Run(experiment, seeds, model, world, history, float(payload["seconds"]),
               payload["eval_seconds"].numpy(), cached=True)


def cached_train(
    experiment: Experiment, seeds: list[int] | tuple[int, ...] | range | None = None, progress: bool = True
) -> Run:
    """:func:`revlib.train.train`, or the stored result of the identical call. ``run.cached`` says which."""
    seeds = (experiment.train.seed,) if seeds is None else tuple(seeds)
    folder = cache_dir()
    if folder is None:
        return train(experiment, seeds, progress=progress)
    key = cache_key(experiment, seeds)
    path = folder / f"{key}.pt"
    if path.exists():
        try:
            return _load(path, key, experiment, seeds)
        except Exception as err:  # a corrupt or foreign entry: say so, recompute, overwrite
            warnings.warn(f"revlib cache: recomputing unreadable entry {path.name} ({type(err).__name__})")
    run = train(experiment, seeds, progress=progress)
    try:
        _save(path, key, run)
    except OSError as err:  # a read-only or full disk must not lose the result
        warnings.warn(f"revlib cache: could not write {path}: {err}")
    return run
