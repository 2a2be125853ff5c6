"""revlib.minimal, the readable model, against revlib's engine: from the same initial weights and
batches the same losses step by step, and trained from scratch the same probe accuracies within
the spread of seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from revlib import make_world, minimal, objectives, preset, train
from revlib.training import TRAIN_SEED_OFFSET

STEPS = 50


@pytest.mark.parametrize("kind", ["ar", "mdm"])
def test_same_weights_and_batches_give_the_same_losses(kind):
    exp = preset(kind, n_pairs=64, steps=STEPS, eval_every=1)
    world = make_world(exp.data)
    run = train(exp, seeds=(0,))
    engine_losses = run.history["loss"][:-1, 0]  # the loss at each step, before its update
    model = minimal.from_engine(run.initial_model(), 0)
    batches = None
    if kind == "mdm":  # the engine's masks, drawn as the engine draws them (revlib.objectives.Batches)
        tc, text = exp.train, world.train_tokens
        gen = torch.Generator().manual_seed(0 + TRAIN_SEED_OFFSET)
        units = objectives.mask_units(text.shape[1], world.k, tc.objective, tc.masking)
        masked, t = objectives.draw_masks(objectives.Batches.CHUNK, len(text) * tc.mask_copies, units, tc.t_min, gen)
        tokens = text.repeat_interleave(tc.mask_copies, 0)
        batches = iter([(tokens, masked[s], t[s]) for s in range(STEPS)])
    losses = minimal.train(model, world.train_tokens, kind, steps=STEPS, lr=exp.train.lr, batches=batches)
    assert np.abs(np.asarray(losses) - engine_losses).max() < 1e-5
    assert engine_losses[-1] < 0.75 * engine_losses[0]  # and they did train


def test_the_same_weights_give_the_same_logits():
    run = train(preset("mdm", n_pairs=16, d_model=16, n_heads=2, steps=5), seeds=(3, 4))
    tokens = run.world.probe("b2a").tokens
    with torch.no_grad():
        engine = run.model(tokens)
        for k in range(2):
            assert torch.allclose(minimal.from_engine(run.model, k)(tokens), engine[k], atol=1e-5)
    with pytest.raises(ValueError, match="attention-only"):
        minimal.from_engine(train(preset("mdm", mlp="gelu", n_pairs=8, steps=1)).model)


def test_trained_from_scratch_it_answers_like_the_engine():
    """Eight seeds of each, the book's toy: the same accuracies within the seeds' spread."""
    seeds = range(8)
    for kind in ("ar", "mdm"):
        exp = preset(kind)
        world = make_world(exp.data)
        engine = train(exp, seeds=seeds).final
        for probe in ("a2b", "b2a"):
            p = world.probe(probe)
            mine = []
            for s in seeds:
                model = minimal.Transformer(world.vocab_size, causal=kind == "ar", seed=s)
                minimal.train(model, world.train_tokens, kind, steps=exp.train.steps, lr=exp.train.lr, seed=s)
                mine.append(minimal.accuracy(model, p.tokens, p.answers, p.slots, kind, p.full))
            mine, theirs = np.asarray(mine), np.asarray(engine[probe]["acc"])
            noise = 3 * np.hypot(mine.std(ddof=1), theirs.std(ddof=1)) / np.sqrt(len(seeds)) + 0.02
            assert abs(mine.mean() - theirs.mean()) <= noise, (kind, probe, mine, theirs)
