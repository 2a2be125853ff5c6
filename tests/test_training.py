"""revlib.training: ensemble members train bit for bit like solo runs, runs are deterministic and
leave the global RNG alone, divergence is reported, the interventions (freeze, project_out) do
what they say, the optimiser is Adam with per-tensor learning rates, the schedule decays, and
memory is checked before anything is allocated."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import revlib
from revlib import ConfigError, TrainingDiverged, make_world, preset, train
from revlib import objectives, training
from revlib.model import build_model
from revlib.training import BETAS, ProjectOut, ScaledAdam, b2a_loss, check_memory, estimated_bytes, lr_factor

from conftest import assert_same_history, assert_same_weights, tiny


@pytest.mark.parametrize("objective", ["ar", "mdm", "suffix"])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_ensemble_member_trains_exactly_like_a_solo_run(objective, batch_size):
    exp = tiny(objective=objective, batch_size=batch_size)
    ensemble = train(exp, seeds=(3, 7, 11))
    for k, seed in ((1, 7), (2, 11)):
        solo = train(exp, seeds=(seed,))
        assert_same_weights(ensemble.model, solo.model, [k], [0])
        assert_same_history(ensemble.history, solo.history, k, 0)
    assert not np.array_equal(ensemble.history["loss"][:, 0], ensemble.history["loss"][:, 1])


@pytest.mark.parametrize("extra", [
    dict(entity_tokens=2, masking="span"), dict(n_layers=2, mlp="swiglu", norm="rmsnorm", n_heads=2),
    dict(untie_values=True, positional="absolute"), dict(freeze="qk"), dict(project_out="b2a"),
])
def test_ensemble_equivalence_holds_for_every_variant(extra):
    exp = tiny(**extra)
    ensemble, solo = train(exp, seeds=(0, 5)), train(exp, seeds=(5,))
    assert_same_weights(ensemble.model, solo.model, [1], [0])
    assert_same_history(ensemble.history, solo.history, 1, 0)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_same_seed_same_history(objective, batch_size):
    exp = tiny(objective=objective, batch_size=batch_size)
    r1, r2 = train(exp), train(exp)
    assert_same_history(r1.history, r2.history)
    assert_same_weights(r1.model, r2.model)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_different_seeds_differ(objective):
    exp = tiny(objective=objective)
    r0, r1 = train(exp, seeds=[0]), train(exp, seeds=[1])
    assert torch.equal(r0.world.train_tokens, r1.world.train_tokens)  # same world
    assert not np.array_equal(r0.history["loss"], r1.history["loss"])  # other weights and masks
    r2 = train(tiny(objective=objective, seed=1))  # preset's "seed" moves the world too
    assert not torch.equal(r0.world.a, r2.world.a)


def test_training_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for objective in ("ar", "mdm"):
        train(tiny(objective=objective, batch_size=8, project_out="b2a"), seeds=(0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    # and the global RNG does not change the run
    torch.manual_seed(99)
    a = train(tiny())
    torch.manual_seed(12345)
    b = train(tiny())
    assert_same_history(a.history, b.history)


def test_history_layout_and_run_properties():
    run = train(tiny(steps=10, eval_every=4), seeds=(0, 1))
    assert run.history["step"].tolist() == [0, 4, 8, 10]
    assert run.history["loss"].shape == (4, 2)
    for name in ("a2b", "infill", "b2a"):
        for metric in ("acc", "p_correct", "nll"):
            assert run.history[f"{name}_{metric}"].shape == (4, 2)
    assert set(run.final) == {"a2b", "infill", "b2a"} and run.final["a2b"]["acc"].shape == (2,)
    assert run.failed.shape == (2,) and run.failed.dtype == bool
    assert run.eval_seconds.shape == (4,) and run.seconds >= 0
    ar = train(tiny("ar", steps=4, eval_every=2))
    assert ar.final["infill"] is None and "infill_acc" not in ar.history
    # the initial model is the model before the first step
    init = run.initial_model()
    assert_same_weights(init, build_model(run.experiment, (0, 1)))
    assert not torch.equal(init.embed, run.model.embed)


def test_callback_sees_every_evaluation_step_before_its_update():
    seen = []
    exp = tiny(steps=9, eval_every=3)
    init = build_model(exp, (0,))

    def callback(step, model, world):
        seen.append((step, model.embed.detach().clone()))

    run = train(exp, callback=callback)
    assert [s for s, _ in seen] == [0, 3, 6, 9]
    assert torch.equal(seen[0][1], init.embed)  # step 0: before any update
    assert torch.equal(seen[-1][1], run.model.embed)  # the last step only measures


def test_train_checks_the_world_it_is_given():
    exp = tiny()
    world = make_world(exp.data)
    assert_same_history(train(exp, world=world).history, train(exp).history)
    with pytest.raises(ConfigError, match="world"):
        train(exp, world=make_world(exp.data.__class__(n_pairs=16, seed=1)))


def test_reversal_curse_end_to_end():
    """The book's headline at toy size: the ARM learns a2b and never b2a; the MDM does both."""
    ar = train(preset("ar", n_pairs=16, d_model=16, steps=150, eval_every=50), seeds=(0, 1, 2))
    mdm = train(preset("mdm", n_pairs=16, d_model=16, steps=150, eval_every=50), seeds=(0, 1, 2))
    assert (ar.final["a2b"]["acc"] == 1).all()
    assert (ar.final["b2a"]["acc"] == 0).all()
    assert mdm.final["b2a"]["acc"].mean() > 0.5


# ---------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_nonfinite_loss_raises_naming_the_step_and_the_seed(poison, monkeypatch):
    models = []
    real = ScaledAdam.step
    calls = []

    def step(self, grads, lr):
        real(self, grads, lr)
        calls.append(lr)
        if len(calls) == 3:  # after the update of step 2, poison member 1 (seed 13) only
            with torch.no_grad():
                models[0].unembed[1].fill_(poison)

    monkeypatch.setattr(ScaledAdam, "step", step)
    with pytest.raises(TrainingDiverged, match=r"at step 3 \(seeds \[13\]\)"):
        train(tiny(eval_every=1), seeds=(5, 13), callback=lambda s, model, w: models.append(model))


def test_poisoned_initial_unembedding_diverges_at_step_0(monkeypatch):
    real = training.build_model

    def poisoned(experiment, seeds, vocab_size=None):
        model = real(experiment, seeds, vocab_size)
        with torch.no_grad():
            model.unembed[0, 0, 0] = float("inf")
        return model

    monkeypatch.setattr(training, "build_model", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 0 \(seeds \[4\]\)") as err:
        train(tiny("ar"), seeds=(4, 6))
    assert isinstance(err.value, RuntimeError)


# ---------------------------------------------------------------------------------------------
# the interventions
# ---------------------------------------------------------------------------------------------

def test_freeze_qk_leaves_W_Q_and_W_K_at_their_initial_values():
    run = train(tiny(freeze="qk", n_layers=2))
    init = run.initial_model()
    for (name, p), (_, q) in zip(run.model.named_parameters(), init.named_parameters()):
        if name.endswith((".W_Q", ".W_K")):
            assert torch.equal(p, q), name
        else:
            assert not torch.equal(p, q), name  # everything else moves
    plain = train(tiny(n_layers=2))
    assert not torch.equal(plain.model.blocks[0].attn.W_Q, init.blocks[0].attn.W_Q)


@pytest.mark.parametrize("objective", ["mdm", "ar"])
def test_project_out_removes_the_b2a_component_of_the_value_update(objective):
    exp = tiny(objective=objective, n_heads=2, n_layers=2)
    world = make_world(exp.data)
    model = build_model(exp, (0, 1))
    named = list(model.named_parameters())
    project = ProjectOut(model, world, objective, named)
    assert {named[i][0] for i in project.index} == {f"blocks.{l}.attn.{w}" for l in (0, 1) for w in ("W_V", "W_O")}
    saved = project.before()
    old, g = saved
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an arbitrary update of every parameter
        before_other = {n: p.clone() for n, p in named}
        for _, p in named:
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
        moved = {n: p.clone() for n, p in named}
    dots_before = sum((p - o).reshape(2, -1).mul(gi.reshape(2, -1)).sum(1) for p, o, gi in zip(project.params, old, g))
    assert (dots_before.abs() > 1e-6).all()  # the update did have a b2a component
    project.after(saved)
    dots = sum((p - o).reshape(2, -1).mul(gi.reshape(2, -1)).sum(1) for p, o, gi in zip(project.params, old, g))
    scale = sum((p - o).norm() * gi.norm() for p, o, gi in zip(project.params, old, g))
    assert (dots.abs() < 1e-5 * scale).all()
    for i, (name, p) in enumerate(named):  # the other parameters keep their update
        if i not in project.index:
            assert torch.equal(p, moved[name]), name
        else:
            assert not torch.equal(p, before_other[name])
    # g is the gradient of l_b2a with respect to the value side
    g_direct = torch.autograd.grad(b2a_loss(model, world, objective).sum(), project.params)
    assert all(gi.shape == gd.shape for gi, gd in zip(g, g_direct))


def test_project_out_changes_the_run_and_still_moves_the_values():
    plain, projected = train(tiny()), train(tiny(project_out="b2a"))
    assert not torch.equal(plain.model.blocks[0].attn.W_V, projected.model.blocks[0].attn.W_V)
    assert not torch.equal(projected.model.blocks[0].attn.W_V, projected.initial_model().blocks[0].attn.W_V)


def test_project_out_makes_each_training_step_orthogonal_to_the_b2a_gradient(monkeypatch):
    """Inside train(): after every step, <value-side update, grad l_b2a before the step> = 0."""
    checks = []
    real_after = ProjectOut.after

    def after(self, saved):
        real_after(self, saved)
        old, g = saved
        with torch.no_grad():
            dot = sum(((p - o) * gi).sum() for p, o, gi in zip(self.params, old, g))
            scale = sum((p - o).norm() * gi.norm() for p, o, gi in zip(self.params, old, g))
            checks.append(float(dot.abs() / scale))

    monkeypatch.setattr(ProjectOut, "after", after)
    train(tiny(project_out="b2a", steps=6))
    assert len(checks) == 6 and max(checks) < 1e-5


# ---------------------------------------------------------------------------------------------
# the optimiser and the schedule
# ---------------------------------------------------------------------------------------------

def test_scaled_adam_equals_torch_adam_with_per_tensor_learning_rates():
    exp = tiny(n_heads=2)
    world = make_world(exp.data)
    model, reference = build_model(exp, (0, 1)), build_model(exp, (0, 1))
    params, ref_params = list(model.parameters()), list(reference.parameters())
    opt = ScaledAdam(params)
    ref = torch.optim.Adam([{"params": [p], "lr": 0.05 * p.init_std} for p in ref_params], betas=BETAS, eps=1e-8)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    batches = objectives.Batches(world.train_tokens, exp.train, 1, gens)
    saw_views = False
    for step in range(6):
        grads = torch.autograd.grad(objectives.loss(model, exp.train, batches.get(step)).sum(), params)
        saw_views |= any(not g.is_contiguous() for g in grads)
        for p, g in zip(ref_params, grads):
            p.grad = g.clone(memory_format=torch.contiguous_format)
        opt.step([g.detach() for g in grads], 0.05)
        ref.step()
        for p, q in zip(params, ref_params):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    assert saw_views  # W_Q, W_K, W_V gradients are slices of one tensor: the case that once went wrong


def test_scaled_adam_reads_non_contiguous_gradients_correctly():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 4, 5))
    a.init_std = 0.5
    b = torch.nn.Parameter(a.detach().clone())
    opt, ref = ScaledAdam([a]), torch.optim.Adam([b], lr=0.1 * 0.5, betas=BETAS, eps=1e-8)
    for _ in range(3):
        g = torch.randn(5, 4, 3).permute(2, 1, 0)  # a transposed view
        assert not g.is_contiguous()
        opt.step([g], 0.1)
        b.grad = g.contiguous()
        ref.step()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lr_factor_decays_from_one_to_a_tenth():
    tc = tiny(steps=100).train
    assert lr_factor(0, tc) == pytest.approx(1.0)
    assert lr_factor(50, tc) == pytest.approx(0.55)
    assert lr_factor(100, tc) == pytest.approx(0.1)
    values = [lr_factor(s, tc) for s in range(101)]
    assert all(x > y for x, y in zip(values, values[1:]))
    assert lr_factor(25, tc) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    constant = tiny(steps=100, schedule="constant").train
    assert {lr_factor(s, constant) for s in range(101)} == {1.0}


def test_train_steps_with_the_scheduled_learning_rate(monkeypatch):
    seen = []
    real = ScaledAdam.step

    def step(self, grads, lr):
        seen.append(lr)
        return real(self, grads, lr)

    monkeypatch.setattr(ScaledAdam, "step", step)
    exp = tiny(steps=10, lr=0.2)
    train(exp)
    assert len(seen) == 10
    assert seen == pytest.approx([0.2 * lr_factor(s, exp.train) for s in range(10)])
    assert seen[0] == pytest.approx(0.2) and seen[-1] < 0.05


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------

def test_estimated_memory_counts_layers_and_members():
    exp = preset("mdm")
    one = estimated_bytes(exp, 1)
    assert estimated_bytes(exp, 4) == 4 * one
    assert estimated_bytes(exp.replace(n_layers=4), 1) > estimated_bytes(exp.replace(n_layers=2), 1) > one
    assert estimated_bytes(exp.replace(d_model=64), 1) > one
    assert estimated_bytes(exp.replace(mask_copies=4), 1) > one


def test_check_memory_refuses_what_does_not_fit():
    big = preset("mdm", n_layers=64, d_model=4096)
    with pytest.raises(ConfigError, match="GiB"):
        check_memory(big)
    exp = preset("mdm", d_model=256, n_pairs=2000)
    n = revlib.config.MEMORY_LIMIT_BYTES // estimated_bytes(exp, 1)
    check_memory(exp, 1)
    check_memory(exp, n)
    with pytest.raises(ConfigError, match=f"training {n + 1} seeds"):
        check_memory(exp, n + 1)


def test_train_refuses_too_large_runs_before_allocating(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("allocated a model that cannot fit")

    monkeypatch.setattr(training, "build_model", never)
    monkeypatch.setattr(training, "make_world", never)
    with pytest.raises(ConfigError, match="layers"):
        train(preset("mdm", n_layers=64, d_model=4096, steps=1))
    exp = preset("mdm", d_model=256, n_pairs=2000, steps=1)
    n = revlib.config.MEMORY_LIMIT_BYTES // estimated_bytes(exp, 1) + 1
    with pytest.raises(ConfigError, match=f"{n} seeds"):
        train(exp, seeds=range(n))


def test_an_allocation_failure_becomes_a_config_error(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(training, "build_model", fail)
    with pytest.raises(ConfigError, match="out of memory"):
        train(tiny())

    def other(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(training, "build_model", other)
    with pytest.raises(RuntimeError, match="some other failure"):
        train(tiny())


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with pytest.raises(KeyError):
        with training.torch_threads(2):
            assert torch.get_num_threads() == 2
            raise KeyError
    assert torch.get_num_threads() == before
    train(tiny(steps=2))
    assert torch.get_num_threads() == before
    assert training.threads_for(build_model(tiny(), (0,))) == 1


def test_training_flushes_subnormals_and_restores_the_default_after():
    """Inside train() subnormal floats are flushed to zero (they make a converged model's steps
    slow); outside, torch's default is back, even when training raises."""
    subnormal = lambda: (torch.tensor([1e-39]) * 1.0).item()  # noqa: E731
    assert subnormal() != 0.0
    seen = []
    train(preset("mdm", n_pairs=8, d_model=8, steps=2, eval_every=1), callback=lambda *a: seen.append(subnormal()))
    assert seen and all(v == 0.0 for v in seen)
    assert subnormal() != 0.0

    def boom(*args):
        raise KeyError("stop")

    with pytest.raises(KeyError):
        train(preset("mdm", n_pairs=8, d_model=8, steps=2), callback=boom)
    assert subnormal() != 0.0
