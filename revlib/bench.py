"""``python -m revlib bench``: how fast a training step is, against this machine's floor.

All timings are thread CPU time (``time.thread_time``), one torch thread, medians of repeats:

``step_ms``
    one training step of the default MDM (one seed, no evaluation): forward, backward, Adam.
``floor_ms``
    the same step's *arithmetic* replayed: every dense matrix product it runs (forward and
    backward, captured from a real step with their exact shapes) and the vocabulary
    log-softmax with its backward, each called once on fresh tensors. The repeats of the step
    and of the replay are interleaved, so both see the same machine state.
``attention_ms``
    the fused attention kernel (forward and backward) of the same step, replayed alone: the
    largest cost outside the floor for three-token sentences (reported, not part of the floor).
``ensemble_*``
    the same for ``ensemble_k`` seeds trained side by side.
``reference_*``
    the same model and objective written in plain PyTorch as a user without revlib would
    (``benchmarks/reference_mdm.py``), on one thread: its step time and the steps it needs to
    reach ``a2b`` accuracy 0.95 (seed 0, at most ``reference_max_steps``), against revlib's
    ``steps_to_target``; ``speedup`` is the ratio of the times to target, and splits into
    ``recipe_gain`` (fewer steps) times ``step_gain`` (cheaper steps). A reference that has
    not reached the target by then (``reference_steps_to_target`` None; it can sit on a
    plateau, ``reference_final_a2b``) makes ``speedup`` a lower bound
    (``speedup_is_lower_bound``).
``llada_*``
    step and floor of the ``llada_like`` preset (two layers, RMSNorm, SwiGLU).
``explorer_retrain_s``
    the slowest retrain behind chapter 1's explorer (ARM + MDM at its largest settings), wall
    time, trained as the explorer trains them: side by side, one thread each, where the machine
    has two cores (``explorer_workers``). ``explorer_slowest_alone_s`` (the slower model trained
    alone, the bound of running side by side) and ``explorer_sequential_s`` (both, in turn)
    say what that gains. ``explorer_mdm_step_ms`` and ``explorer_mdm_floor_ms``: step and floor
    of that MDM (d_model 64), the slower of the two.

Timings describe this machine at this moment; no test asserts them.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import objectives
from .config import ConfigError, Experiment, preset
from .data import make_world
from .model import build_model
from .training import ScaledAdam, check_memory, denormals_flushed, lr_factor, torch_threads, trainable, train

TARGET = 0.95
MATMULS = {"aten.mm", "aten.bmm", "aten.addmm", "aten.baddbmm"}
SOFTMAX = {"aten._log_softmax", "aten._log_softmax_backward_data"}
ATTENTION = {"aten._scaled_dot_product_flash_attention_for_cpu",
             "aten._scaled_dot_product_flash_attention_for_cpu_backward"}


class _Capture(TorchDispatchMode):
    """Records the matrix products, vocabulary softmaxes and attention kernels of a step."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, object, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        if name in MATMULS | SOFTMAX | ATTENTION:
            self.calls.append((name, func, args, kwargs))
        return func(*args, **kwargs)


def _fresh(x):
    """A tensor like x (same shape, dtype and strides) with new contents; other values unchanged."""
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point:  # the same layout (expanded inputs share memory), new numbers
            n = x.untyped_storage().nbytes() // x.element_size()
            return torch.randn(n, dtype=x.dtype).as_strided(x.shape, x.stride(), x.storage_offset())
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_fresh(v) for v in x)
    return x


def training_step(exp: Experiment, n_members: int):
    """A closure running one training step (no evaluation) of ``n_members`` seeds of ``exp``."""
    check_memory(exp, n_members)
    world = make_world(exp.data)
    model = build_model(exp, range(n_members), world.vocab_size)
    gens = [torch.Generator().manual_seed(s + 1) for s in range(n_members)]
    batches = objectives.Batches(world.train_tokens, exp.train, world.k, gens)
    params = [p for _, p in trainable(model, exp.train.freeze)]
    opt = ScaledAdam(params)
    counter = [0]

    def step() -> None:
        s = counter[0] % exp.train.steps
        counter[0] += 1
        losses = objectives.loss(model, exp.train, batches.get(counter[0] - 1))
        grads = torch.autograd.grad(losses.sum(), params)
        opt.step(grads, exp.train.lr * lr_factor(s, exp.train))

    return step


def capture(step) -> list:
    """The kernels of one call of ``step`` (after one warm-up call)."""
    step()
    cap = _Capture()
    with cap:
        step()
    return cap.calls


def replay(calls, kinds: set[str]):
    """A closure calling every captured kernel of ``kinds`` once, on fresh inputs of the same shapes."""
    prepared = [(func, _fresh(args), _fresh(kwargs)) for name, func, args, kwargs in calls if name in kinds]

    def run() -> None:
        for func, args, kwargs in prepared:
            func(*args, **kwargs)

    return run, len(prepared)


def interleaved(fns: dict, repeats: int = 9, inner: int = 10) -> dict[str, float]:
    """Median thread-CPU milliseconds per call of each function, repeats interleaved."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.thread_time()
            for _ in range(inner):
                fn()
            times[name].append((time.thread_time() - t0) / inner * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def step_and_floor(exp: Experiment, n_members: int, repeats: int = 9) -> dict[str, float]:
    """step_ms, floor_ms and attention_ms of ``exp`` with ``n_members`` seeds (see the module doc)."""
    with torch_threads(1), denormals_flushed():  # as in train(), for revlib and the reference alike
        step = training_step(exp, n_members)
        calls = capture(step)
        floor, n_kernels = replay(calls, MATMULS | SOFTMAX)
        attention, _ = replay(calls, ATTENTION)
        t = interleaved({"step": step, "floor": floor, "attention": attention}, repeats=repeats)
    return {"step_ms": t["step"], "floor_ms": t["floor"], "attention_ms": t["attention"], "floor_kernels": n_kernels}


def steps_to_target(exp: Experiment, target: float = TARGET) -> int | None:
    """The first evaluated step (every 5) at which ``a2b`` accuracy reaches ``target`` (one seed, uncached)."""
    run = train(exp.replace(eval_every=5), seeds=(exp.train.seed,))
    reached = run.history["a2b_acc"][:, 0] >= target
    return int(run.history["step"][reached.argmax()]) if reached.any() else None


def _reference_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_mdm.py"
    if not path.exists():
        raise FileNotFoundError(f"the reference implementation is not at {path}: run from a source checkout")
    spec = importlib.util.spec_from_file_location("reference_mdm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE_MAX_STEPS = 10_000  # where the reference's seed 0 converges, it did so in ~7,400 steps


def reference_convergence(exp: Experiment, max_steps: int = REFERENCE_MAX_STEPS) -> dict:
    """Train the plain-PyTorch reference (seed 0, one thread) until its a2b accuracy reaches the
    target or ``max_steps``: its steps to target (None if it never got there) and its final
    accuracy. Counts, not timings: they do not depend on how busy the machine is."""
    ref = _reference_module()
    world = make_world(exp.data)
    probe = world.probe("a2b")
    with torch_threads(1), denormals_flushed():
        r = ref.train_reference(world.train_tokens, probe.tokens, probe.answers[:, 0], world.vocab_size,
                                target=TARGET, max_steps=max_steps)
    return {"reference_steps_to_target": r["steps"] if r["converged"] else None,
            "reference_max_steps": max_steps, "reference_final_a2b": r["a2b_acc"]}


def reference_step(exp: Experiment, repeats: int = 9) -> dict:
    """The plain-PyTorch reference's step on one thread (thread CPU time, median of repeats)."""
    ref = _reference_module()
    world = make_world(exp.data)
    with torch_threads(1), denormals_flushed():  # as in train(), for revlib and the reference alike
        step = ref.make_step(world.train_tokens, world.vocab_size)
        t = interleaved({"step": step}, repeats=repeats)
    return {"reference_step_ms": t["step"], "reference_threads": 1}


def reference(exp: Experiment, repeats: int = 9, max_steps: int = REFERENCE_MAX_STEPS) -> dict:
    """The plain-PyTorch reference on one thread: its step time and its steps to target, in turn."""
    return {**reference_step(exp, repeats), **reference_convergence(exp, max_steps)}


# The largest settings of chapter 1's live explorer (revlib.book.explore): its slowest retrain.
EXPLORER_MAX_PAIRS, EXPLORER_MAX_D_MODEL, EXPLORER_MAX_STEPS = 128, 64, 300


def explorer_experiments() -> list[Experiment]:
    """The ARM and the MDM of chapter 1's explorer at its largest settings (its slowest retrain)."""

    return [preset(name, n_pairs=EXPLORER_MAX_PAIRS, d_model=EXPLORER_MAX_D_MODEL, steps=EXPLORER_MAX_STEPS) for name in ("ar", "mdm")]


def explorer_retrain(experiments=None) -> dict:
    """Wall time of one uncached retrain behind chapter 1's explorer (ARM + MDM) at its slowest
    corner, trained as the explorer trains them (side by side where there are two cores), and
    the time of the slower of the two trained alone: the bound that running side by side leaves."""
    from .book.explore import train_side_by_side, usable_cores

    experiments = explorer_experiments() if experiments is None else experiments
    start = time.perf_counter()
    train_side_by_side(experiments, cached=False)
    together = time.perf_counter() - start
    alone = []
    for exp in experiments:
        start = time.perf_counter()
        train(exp)
        alone.append(time.perf_counter() - start)
    return {"explorer_retrain_s": together, "explorer_slowest_alone_s": max(alone),
            "explorer_sequential_s": sum(alone), "explorer_workers": min(len(experiments), usable_cores())}


def run_benchmark(ensemble_k: int = 8, with_reference: bool = True, repeats: int = 9) -> dict:
    """Every measurement of the module docstring as one flat dict (the ``--json`` output)."""
    if isinstance(ensemble_k, bool) or not isinstance(ensemble_k, int) or ensemble_k < 1:
        raise ConfigError(f"ensemble_k must be a positive integer, got {ensemble_k!r}")
    exp = preset("mdm")
    check_memory(exp, ensemble_k)
    one = step_and_floor(exp, 1, repeats)
    many = step_and_floor(exp, ensemble_k, repeats)
    llada = step_and_floor(preset("llada_like"), 1, repeats)
    slow = step_and_floor(explorer_experiments()[1], 1, repeats)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": 1,
        "step_ms": one["step_ms"], "floor_ms": one["floor_ms"], "attention_ms": one["attention_ms"],
        "step_over_floor": one["step_ms"] / one["floor_ms"],
        "ensemble_k": ensemble_k,
        "ensemble_step_ms": many["step_ms"], "ensemble_floor_ms": many["floor_ms"],
        "ensemble_attention_ms": many["attention_ms"],
        "ensemble_over_floor": many["step_ms"] / many["floor_ms"],
        "ensemble_per_seed_over_one": many["step_ms"] / ensemble_k / one["step_ms"],
        "llada_step_ms": llada["step_ms"], "llada_floor_ms": llada["floor_ms"],
        "llada_over_floor": llada["step_ms"] / llada["floor_ms"],
        "explorer_mdm_step_ms": slow["step_ms"], "explorer_mdm_floor_ms": slow["floor_ms"],
        "steps_to_target": steps_to_target(exp),
    }
    if with_reference:
        # in turn, not in a second process: a process on the other core slowed the timings
        # above by a tenth or more on a 2-core machine
        result.update(reference(exp, repeats))
        s, rs = result["steps_to_target"], result["reference_steps_to_target"]
        if s:
            # not converged: the reference's steps so far bound its time to target from below
            ref_steps = rs if rs else result["reference_max_steps"]
            result["recipe_gain"] = ref_steps / s
            result["step_gain"] = result["reference_step_ms"] / result["step_ms"]
            result["speedup"] = (ref_steps * result["reference_step_ms"]) / (s * result["step_ms"])
            result["speedup_is_lower_bound"] = not rs
    result.update(explorer_retrain())
    return result


def cached_benchmark(**kwargs) -> dict:
    """:func:`run_benchmark`, measured once per version of revlib and machine, then reused.

    The book executes each page twice in CI (as a test, then for the HTML); the second
    execution shows the first's measurement instead of timing a busy machine again.
    ``result["cached"]`` says which.
    """
    from .cache import memo

    config = {"machine": platform.node(), "kwargs": kwargs}
    value, cached = memo("bench", config, lambda: run_benchmark(**kwargs),
                         lambda r: {"json": json.dumps(r)}, lambda p: json.loads(p["json"]))
    return {**value, "cached": cached}
