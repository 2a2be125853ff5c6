"""The training loop. It knows the objective by name and nothing about reversal.

:func:`train` trains an ensemble, one member per seed, side by side (see revlib.model) and
records a history of the loss and the probe metrics. Small models run on one torch thread:
on a 2-core machine tiny models train ~100x slower with two threads than with one, because
the per-operator thread hand-off costs more than the arithmetic.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Experiment
from .data import PROBES, FactWorld, make_world
from .measure import evaluate
from .model import Transformer
from .objectives import ar_loss, mdm_loss

# Above this many parameters per member a model is no longer "small" and keeps torch's threads.
SMALL_MODEL_PARAMS = 2_000_000
# The training generator of member k is seeded with seed + this offset, so that the masks
# and batches are not drawn from the same stream as the initial weights.
TRAIN_SEED_OFFSET = 1_000_003


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op torch threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threads_for(model: Transformer) -> int:
    """One thread for small models (the rule of this project), torch's default otherwise."""
    n_params = sum(p[0].numel() for p in model.parameters())
    return 1 if n_params <= SMALL_MODEL_PARAMS else torch.get_num_threads()


def make_optimizer(model: Transformer, lr: float) -> torch.optim.Adam:
    """Adam whose step for each parameter is ``lr`` times that parameter's initial entry size.

    Adam moves every entry by about ``lr`` per step whatever its scale. Embeddings have entries
    of size 1, the weight matrices of size 1/sqrt(d): one learning rate would change the
    matrices ~6x faster, relatively, than the embeddings, and the MDM then wanders on its
    plateau for hundreds of steps. Scaling by the initial size gives every tensor the same
    relative step (as if all were stored with unit entries). beta2 = 0.98: the MDM's loss is
    noisy (random masks, 1/t weights) and a shorter second-moment memory copes better.
    """
    by_scale: dict[float, list] = {}
    for p in model.parameters():
        by_scale.setdefault(getattr(p, "init_std", 1.0), []).append(p)
    # one group per distinct scale (two or three), so the fused kernel updates each in one call
    groups = [{"params": ps, "lr": lr * std, "base_lr": lr * std} for std, ps in by_scale.items()]
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.98), fused=True)


def lr_factor(step: int, tc) -> float:
    """Cosine decay from 1 to 0.1 over the run (constant if ``tc.schedule == "constant"``)."""
    if tc.schedule == "constant":
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / tc.steps))


@dataclass
class Run:
    """A trained ensemble with its history.

    ``history`` maps ``"step"`` to an array (n,) and ``"loss"``, ``"<probe>_acc"``,
    ``"<probe>_p"``, ``"<probe>_nll"`` to arrays (n, K), one column per seed; the ARM has no
    infill entries.
    """

    experiment: Experiment
    seeds: tuple[int, ...]
    model: Transformer
    world: FactWorld
    history: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the training loop
    eval_seconds: np.ndarray | None = None  # (n,) wall time at each history step (timing, not a result)
    cached: bool = False  # True when revlib.cache loaded this run instead of training it

    @property
    def final(self) -> dict[str, dict[str, np.ndarray] | None]:
        """Probe metrics at the end of training, arrays (K,)."""
        return {
            name: (
                {
                    "acc": self.history[f"{name}_acc"][-1],
                    "p_correct": self.history[f"{name}_p"][-1],
                    "nll": self.history[f"{name}_nll"][-1],
                }
                if f"{name}_acc" in self.history
                else None
            )
            for name in PROBES
        }


def _record(history: dict[str, list], step: int, loss: torch.Tensor, metrics) -> None:
    history["step"].append(step)
    history["loss"].append(loss.detach().numpy().copy())
    for name, m in metrics.items():
        if m is not None:
            history.setdefault(f"{name}_acc", []).append(m["acc"].numpy())
            history.setdefault(f"{name}_p", []).append(m["p_correct"].numpy())
            history.setdefault(f"{name}_nll", []).append(m["nll"].numpy())


def train(
    experiment: Experiment,
    seeds: list[int] | tuple[int, ...] | None = None,
    progress: bool = True,
    callback=None,
) -> Run:
    """Train one model per seed (default: ``experiment.train.seed``) on the experiment's world.

    The fact world is the same for every member (``experiment.data.seed``); the seeds vary the
    initialisation and the training randomness, so the spread over members is the spread of
    training. Raises :class:`TrainingDiverged` if the loss turns NaN or infinite.

    ``callback(step, model)``, if given, is called at every evaluation step (step 0, every
    ``eval_every`` steps and the last step), before that step's update; measurements along
    training (chapters 2 and 3) hook in here. It may compute gradients (it runs before
    ``zero_grad``) but must not change the parameters.
    """
    seeds = (experiment.train.seed,) if seeds is None else tuple(seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    tc = experiment.train
    world = make_world(experiment.data)
    model = Transformer(experiment.model, world.vocab_size, seeds)
    gens = [torch.Generator().manual_seed(s + TRAIN_SEED_OFFSET) for s in seeds]
    opt = make_optimizer(model, tc.lr)
    text = world.train_tokens  # (n, 3)
    history: dict[str, list] = {"step": [], "loss": []}
    eval_seconds: list[float] = []

    def batch() -> torch.Tensor:
        tokens = text
        if tc.batch_size is not None and tc.batch_size < len(text):
            idx = torch.stack([torch.randint(len(text), (tc.batch_size,), generator=g) for g in gens])
            tokens = text[idx]  # (K, batch, 3): each member its own batch
        if tc.objective == "mdm" and tc.mask_copies > 1:
            tokens = tokens.repeat_interleave(tc.mask_copies, dim=-2)
        return tokens

    def loss_fn() -> torch.Tensor:
        if tc.objective == "ar":
            return ar_loss(model, batch())
        return mdm_loss(model, batch(), gens, tc.t_min)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        # delay: no bar at all for runs that finish within a couple of seconds
        bar = tqdm(total=tc.steps, delay=2.0, desc=f"{tc.objective} x{len(seeds)}", leave=False)
    start = time.perf_counter()
    with torch_threads(threads_for(model)):
        for step in range(tc.steps + 1):
            losses = loss_fn()  # (K,)
            total = losses.sum()
            if not math.isfinite(total.item()):
                bad = [s for s, v in zip(seeds, losses.tolist()) if not math.isfinite(v)]
                raise TrainingDiverged(
                    f"loss became {total.item()} at step {step} (seeds {bad}); "
                    f"try a smaller learning rate than {tc.lr}"
                )
            if step % tc.eval_every == 0 or step == tc.steps:
                eval_seconds.append(time.perf_counter() - start)
                _record(history, step, losses, evaluate(model, world))
                if callback is not None:
                    callback(step, model)
            if step == tc.steps:
                break  # the last pass only measures
            opt.zero_grad(set_to_none=True)
            total.backward()
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, tc)
            opt.step()
            if bar is not None:
                bar.update(1)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    arrays = {k: np.asarray(v) for k, v in history.items()}
    return Run(experiment, seeds, model, world, arrays, seconds, np.asarray(eval_seconds))
