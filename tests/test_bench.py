"""revlib.bench: the pieces of the benchmark (a training step, the captured kernels, their replay)
work on a tiny model, bad sizes are refused before anything is timed, and the result is cached.
No test asserts a timing."""
from __future__ import annotations

import pytest
import torch

from revlib import ConfigError
from revlib import bench

from conftest import tiny


def test_training_step_takes_scheduled_adam_steps(monkeypatch):
    seen = []
    real = bench.ScaledAdam.step

    def step(self, grads, lr):
        seen.append((lr, [g.shape for g in grads]))
        return real(self, grads, lr)

    monkeypatch.setattr(bench.ScaledAdam, "step", step)
    exp = tiny(steps=5)
    one_step = bench.training_step(exp, 2)
    for _ in range(7):  # past the end of the schedule it starts over
        one_step()
    lrs = [lr for lr, _ in seen]
    assert lrs == pytest.approx([exp.train.lr * bench.lr_factor(s % 5, exp.train) for s in range(7)])
    assert seen[0][1][0][0] == 2  # two members


def test_capture_records_the_matrix_products_and_replay_runs_them():
    exp = tiny(n_heads=2)
    calls = bench.capture(bench.training_step(exp, 1))
    names = {name for name, *_ in calls}
    assert names & bench.MATMULS and names & bench.SOFTMAX
    run, n = bench.replay(calls, bench.MATMULS | bench.SOFTMAX)
    assert n == sum(1 for name, *_ in calls if name in bench.MATMULS | bench.SOFTMAX) and n > 0
    run()
    _, zero = bench.replay(calls, set())
    assert zero == 0


def test_fresh_keeps_shapes_and_strides():
    x = torch.randn(4, 3).t()
    y = bench._fresh([x, 3, (torch.arange(3),)])
    assert y[0].shape == x.shape and y[0].stride() == x.stride() and not torch.equal(y[0], x)
    assert y[1] == 3 and torch.equal(y[2][0], torch.arange(3))


def test_step_and_floor_reports_positive_times():
    out = bench.step_and_floor(tiny(), 2, repeats=1)
    assert set(out) == {"step_ms", "floor_ms", "attention_ms", "floor_kernels"}
    assert out["step_ms"] > 0 and out["floor_ms"] > 0 and out["floor_kernels"] > 0


def test_interleaved_calls_every_function():
    counts = {"a": 0, "b": 0}

    def make(key):
        def fn():
            counts[key] += 1
        return fn

    t = bench.interleaved({"a": make("a"), "b": make("b")}, repeats=3, inner=2)
    assert set(t) == {"a", "b"} and counts == {"a": 7, "b": 7}  # a warm-up, then 3 x 2


@pytest.mark.parametrize("k", [0, -1, True, 2.0, "8"])
def test_run_benchmark_refuses_bad_ensemble_sizes(k):
    with pytest.raises(ConfigError, match="ensemble_k"):
        bench.run_benchmark(ensemble_k=k)


def test_run_benchmark_refuses_an_ensemble_that_cannot_fit_before_timing(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("timed before checking memory")

    monkeypatch.setattr(bench, "step_and_floor", never)
    with pytest.raises(ConfigError, match="GiB"):
        bench.run_benchmark(ensemble_k=1_000_000, with_reference=False)


def test_cached_benchmark_measures_once(monkeypatch):
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return {"step_ms": 1.5, "threads": 1}

    monkeypatch.setattr(bench, "run_benchmark", fake)
    first = bench.cached_benchmark(ensemble_k=2)
    second = bench.cached_benchmark(ensemble_k=2)
    assert calls == [{"ensemble_k": 2}]
    assert first == {"step_ms": 1.5, "threads": 1, "cached": False}
    assert second == {"step_ms": 1.5, "threads": 1, "cached": True}
    bench.cached_benchmark(ensemble_k=3)
    assert len(calls) == 2


def test_a_reference_that_never_converges_makes_the_speedup_a_lower_bound(monkeypatch):
    """No reference run here: its convergence count is replaced, the rest measured on a tiny model."""
    from revlib.book import perf

    monkeypatch.setattr(bench, "preset", lambda name, **kw: tiny(name))
    monkeypatch.setattr(bench, "reference_convergence", lambda exp, max_steps=bench.REFERENCE_MAX_STEPS:
                        {"reference_steps_to_target": None, "reference_max_steps": 500, "reference_final_a2b": 0.37})
    monkeypatch.setattr(bench, "steps_to_target", lambda exp: 10)
    monkeypatch.setattr(bench, "explorer_retrain", lambda: {"explorer_retrain_s": 1.0})
    b = bench.run_benchmark(ensemble_k=2, repeats=1)
    assert b["speedup_is_lower_bound"] and b["recipe_gain"] == 50
    assert b["speedup"] == pytest.approx(500 * b["reference_step_ms"] / (10 * b["step_ms"]))
    texts = perf.reference_texts(b)
    assert texts["speedup_text"].startswith("at least") and "500 steps" in texts["speedup_text"]
    assert texts["recipe_text"] == "at least 50 times fewer steps"
