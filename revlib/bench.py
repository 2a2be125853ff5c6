"""``python -m revlib bench``: how fast revlib trains the book's toy, measured side by side.

One process measures, in order:

1. revlib training the default MDM (128 facts) until ``a2b`` accuracy reaches 0.95: the wall
   time at the first evaluation that reaches it, and steps per second over the whole run;
2. the *reference*: the same model size and objective written in plain PyTorch as a user
   without revlib would (``benchmarks/reference_mdm.py``: nanoGPT-style modules, a shuffled
   DataLoader, Adam, torch's default thread count), trained to the same accuracy;
3. an ensemble: 8 seeds trained in one pass against 1 seed, same steps;
4. the compute floor: matmul FLOPs per step times the steps revlib needed, over the measured
   single-thread matmul rate;
5. the slowest retrain behind the chapter-1 widget (its largest slider settings).

Timings are measurements of this machine at this moment, never asserted by a test.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import time
from pathlib import Path

import torch

from .config import Experiment, preset
from .data import make_world
from .train import torch_threads, train

TARGET = 0.95


def _reference_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_mdm.py"
    if not path.exists():
        raise FileNotFoundError(f"the reference implementation is not at {path}: run from a source checkout")
    spec = importlib.util.spec_from_file_location("reference_mdm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_to_target(exp: Experiment, seeds=(0,), target: float = TARGET) -> dict:
    """Train ``exp`` (no cache) and report when every member first reached ``target`` a2b accuracy."""
    run = train(exp, seeds=seeds, progress=False)
    reached = (run.history["a2b_acc"] >= target).all(axis=1)  # (n,) all members at target
    i = int(reached.argmax()) if reached.any() else None
    return {
        "seconds_to_target": None if i is None else float(run.eval_seconds[i]),
        "steps_to_target": None if i is None else int(run.history["step"][i]),
        "run_seconds": run.seconds,
        "steps": exp.train.steps,
        "steps_per_second": exp.train.steps / run.seconds,
    }


def matmul_flops_per_step(exp: Experiment, masked_share: float = 0.525) -> float:
    """Multiply-add FLOPs of one MDM training step of one member (forward + backward = 3x forward).

    Counts the matrix products only: projections, attention scores and mixing, output
    projection and the unembedding of the masked slots (expected share (1 + t_min) / 2).
    """
    m, V = exp.model, exp.data.vocab
    rows = exp.data.n_pairs * exp.train.mask_copies * 3  # sequences x positions
    d, H, e, T = m.d_model, m.n_heads, m.d_head, 3
    per_layer = 2 * rows * d * (3 * H * e) + 2 * rows * H * e * d + 2 * 2 * rows * H * T * e
    if m.mlp:
        per_layer += 2 * 2 * rows * d * 4 * d
    forward = m.n_layers * per_layer + 2 * rows * masked_share * d * V
    return 3.0 * forward


def matmul_rate(rows: int, d: int, V: int, repeats: int = 50) -> float:
    """Measured single-thread FLOP/s of the unembedding-shaped matmul (rows, d) @ (d, V)."""
    a, b = torch.randn(rows, d), torch.randn(d, V)
    with torch_threads(1):
        for _ in range(5):
            a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = (time.perf_counter() - start) / repeats
    return 2.0 * rows * d * V / seconds


def widget_seconds() -> float:
    """Wall time of one uncached retrain behind the chapter-1 explorer (ARM + MDM) at its
    slowest corner: the largest pairs, d_model and steps its sliders allow."""
    from .explore import MAX_D_MODEL, MAX_PAIRS, MAX_STEPS

    pairs, d_model, steps = MAX_PAIRS, MAX_D_MODEL, MAX_STEPS
    start = time.perf_counter()
    for kind in ("ar", "mdm"):
        train(preset(kind, n_pairs=pairs, d_model=d_model, steps=steps), progress=False)
    return time.perf_counter() - start


def run_benchmark(ensemble_k: int = 8, reference: bool = True, max_reference_steps: int = 30_000) -> dict:
    """All measurements above as one flat dict (the ``--json`` output)."""
    exp = preset("mdm", eval_every=5)
    single = time_to_target(exp)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "target_a2b_acc": TARGET,
        "revlib_seconds": single["seconds_to_target"],
        "revlib_steps": single["steps_to_target"],
        "revlib_steps_per_second": single["steps_per_second"],
    }
    if reference:
        ref = _reference_module()
        world = make_world(exp.data)
        probe = world.probe("a2b")
        # torch's default thread count is the number of cores; OMP_NUM_THREADS=1 (our Makefile)
        # would lower it, so the reference gets what a user without that setting gets.
        with torch_threads(os.cpu_count() or 1):
            threads = torch.get_num_threads()
            r = ref.train_reference(world.train_tokens, probe.tokens, probe.answers, world.vocab_size,
                                    target=TARGET, max_steps=max_reference_steps)
        result.update({
            "reference_seconds": r["seconds"],
            "reference_steps": r["steps"],
            "reference_converged": r["converged"],
            "reference_threads": threads,
            "speedup": r["seconds"] / single["seconds_to_target"] if single["seconds_to_target"] else None,
        })
    full = preset("mdm")  # the book's default run, whole length, evaluated every 25 steps
    one = train(full, seeds=(0,), progress=False).seconds
    many = train(full, seeds=tuple(range(ensemble_k)), progress=False).seconds
    result.update({
        "ensemble_k": ensemble_k,
        "single_seconds": one,
        "ensemble_seconds": many,
        "ensemble_ratio": many / one,
    })
    flops = matmul_flops_per_step(exp)
    rows = int(exp.data.n_pairs * exp.train.mask_copies * 3 * 0.525)
    rate = matmul_rate(rows, exp.model.d_model, exp.data.vocab)
    steps = single["steps_to_target"] or exp.train.steps
    result.update({
        "flops_per_step": flops,
        "matmul_flops_per_second": rate,
        "floor_seconds": flops * steps / rate,
    })
    result["floor_fraction"] = result["floor_seconds"] / single["seconds_to_target"] if single["seconds_to_target"] else None
    result["widget_seconds_max"] = widget_seconds()
    return result


def cached_benchmark(**kwargs) -> dict:
    """:func:`run_benchmark`, measured once per version of revlib and machine, then reused.

    The book executes each page twice in CI (as a test, then for the HTML); the second
    execution shows the measurement of the first instead of timing a busy machine again.
    ``result["cached"]`` says which.
    """
    import hashlib
    import json

    from .cache import cache_dir, code_fingerprint

    folder = cache_dir()
    if folder is None:
        return {**run_benchmark(**kwargs), "cached": False}
    ident = json.dumps({"code": code_fingerprint(), "machine": platform.node(), "kwargs": kwargs}, sort_keys=True)
    path = folder / f"bench-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.json"
    try:
        return {**json.loads(path.read_text()), "cached": True}
    except (OSError, ValueError):
        pass  # absent or corrupt: measure
    result = run_benchmark(**kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)  # atomic
    return {**result, "cached": False}
