"""The training loop. It knows the objectives by name and nothing about reversal.

:func:`train` trains an ensemble, one member per seed, side by side (revlib.model), and records
a history of the loss and the probe metrics. Two interventions of chapter 4 live here because
they change the update, not the model: ``freeze="qk"`` leaves W_Q and W_K at their initial
values, and ``project_out="b2a"`` removes from every update of the value side (W_V, W_O) its
component along the gradient of the ``b2a`` loss (``"b2a-all"``: from the whole update).

**One thread.** Small models run on one torch thread: on a 2-core machine tiny models train
about 100x slower with two threads than with one, because the per-operator thread hand-off
costs more than the arithmetic.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.optim.adam import adam as functional_adam

from .config import ConfigError, Experiment, MEMORY_LIMIT_BYTES, as_seeds
from .data import FactWorld, make_world
from .measure import METRICS, evaluate, failed
from .model import Transformer, build_model
from . import objectives

# Above this many parameters per member a model is no longer "small" and keeps torch's threads.
SMALL_MODEL_PARAMS = 2_000_000
# The training generator of member k is seeded with seed + this offset, so that the masks
# and batches are not drawn from the same stream as the initial weights.
TRAIN_SEED_OFFSET = 1_000_003
BETAS = (0.9, 0.98)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the seeds."""


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op torch threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def denormals_flushed():
    """Run the block with subnormal floats flushed to zero, then restore torch's default.

    Once a model fits its facts, many gradients and Adam moments fall below float32's smallest
    normal number (1.2e-38), and arithmetic on such subnormals is many times slower on x86: the
    ARM at d_model 64 trains a third faster with them flushed. A value that small changes no
    loss or accuracy the book reports."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)  # torch's default; torch cannot report the previous mode


def threads_for(model: Transformer) -> int:
    """One thread for small models (the rule of this project), torch's default otherwise."""
    n_params = sum(p[0].numel() for p in model.parameters())
    return 1 if n_params <= SMALL_MODEL_PARAMS else torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# memory: refuse what cannot fit before allocating it
# ---------------------------------------------------------------------------------------------

def estimated_bytes(exp: Experiment, n_members: int = 1) -> int:
    """A generous estimate of the float32 memory of training ``n_members`` seeds of ``exp``:
    parameters with their gradients and two Adam moments, the activations every layer saves
    for the backward pass, the unembedded slots, and the masks drawn ahead."""
    m, d, V = exp.model, exp.model.d_model, exp.data.n_vocab
    T, H, f = exp.max_len, m.n_heads, m.mlp_width if m.mlp != "none" else 0
    per_layer_params = (3 * (T if m.untie_values else 1) + 1) * d * d + (3 if m.mlp == "swiglu" else 2) * d * f + 4 * d
    n_params = 2 * V * d + T * d + m.n_layers * per_layer_params
    n_text = exp.data.n_pairs * 2  # at most every pair in both directions
    B = min(n_text, exp.train.batch_size or n_text) * (exp.train.mask_copies if exp.train.masked else 1)
    per_layer_acts = B * T * (10 * d + 3 * f + 4 * H * T)  # q, k, v, rotations, outputs, norms, MLP, scores
    unembedded = 3 * B * T * V  # logits, log-softmax and its gradient
    ahead = objectives.Batches.CHUNK * B * T * 3  # tokens (as 8-byte ids) and masks drawn ahead
    per_member = 4 * n_params + m.n_layers * per_layer_acts + unembedded + ahead
    return 4 * n_members * per_member


def check_memory(exp: Experiment, n_members: int = 1) -> None:
    need = estimated_bytes(exp, n_members)
    if need > MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"training {n_members} seed{'s' if n_members > 1 else ''} of this configuration needs about "
            f"{need / 2**30:.1f} GiB (vocabulary {exp.data.n_vocab}, d_model {exp.model.d_model}, "
            f"{exp.model.n_layers} layer{'s' if exp.model.n_layers > 1 else ''}); the limit is {MEMORY_LIMIT_BYTES / 2**30:.0f} GiB"
        )


@contextlib.contextmanager
def out_of_memory_is_a_config_error():
    """torch reports a failed allocation as RuntimeError; turn it into a ConfigError a reader can act on."""
    try:
        yield
    except RuntimeError as err:
        if "alloc" in str(err).lower() or "out of memory" in str(err).lower():
            raise ConfigError("out of memory: try fewer pairs, seeds, layers or a smaller d_model") from None
        raise


# ---------------------------------------------------------------------------------------------
# the optimiser: Adam, each tensor's step scaled by its initial entry size
# ---------------------------------------------------------------------------------------------

class ScaledAdam:
    """Adam whose step for each parameter is ``lr`` times that parameter's initial entry size.

    Adam moves every entry by about ``lr`` per step whatever its scale. Embeddings have entries
    of size 1, the weight matrices of size 1/sqrt(d): one learning rate would change the
    matrices ~6x faster, relatively, than the embeddings, and the MDM then wanders on a plateau
    for hundreds of steps. Scaling by the initial size gives every tensor the same relative
    step. beta2 = 0.98: the masked losses are noisy (random masks, 1/t weights) and a shorter
    second-moment memory copes better. One fused kernel per distinct scale (two or three);
    calling it directly saves the bookkeeping of ``torch.optim.Optimizer`` (about a tenth of a
    tiny model's step).
    """

    def __init__(self, params: list[torch.nn.Parameter]):
        groups: dict[float, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(getattr(p, "init_std", 1.0), []).append(i)
        self.params = params
        self.groups = [(std, idx) for std, idx in groups.items()]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in params]

    @torch.no_grad()
    def step(self, grads, lr: float) -> None:
        # The fused kernel reads each gradient as one contiguous block. torch.autograd.grad can
        # return views (W_Q, W_K, W_V are used through one concatenated matrix, so their
        # gradients are slices of one tensor); fed as they are, their entries get mixed up.
        grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
        torch._foreach_add_(self.steps, 1.0)
        for std, idx in self.groups:
            _adam([self.params[i] for i in idx], [grads[i] for i in idx], [self.m[i] for i in idx],
                  [self.v[i] for i in idx], [], [self.steps[i] for i in idx], lr=lr * std, beta1=BETAS[0],
                  beta2=BETAS[1], weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)


def _adam(params, grads, m, v, vmax, steps, **hyper) -> None:
    """One fused Adam update (steps already counted). ``torch._fused_adam_`` where this torch has
    it (it skips the checks of the functional wrapper), else ``torch.optim.adam.adam``."""
    if hasattr(torch, "_fused_adam_"):
        torch._fused_adam_(params, grads, m, v, vmax, steps, **hyper)
    else:  # the public functional API counts the steps itself: undo ours
        torch._foreach_sub_(steps, 1.0)
        functional_adam(params, grads, m, v, vmax, steps, fused=True, **hyper)


def lr_factor(step: int, tc) -> float:
    """Cosine decay from 1 to 0.1 over the run (constant if ``tc.schedule == "constant"``)."""
    if tc.schedule == "constant":
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / tc.steps))


# ---------------------------------------------------------------------------------------------
# the interventions
# ---------------------------------------------------------------------------------------------

def trainable(model: Transformer, freeze: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters the optimiser moves: all, or all but W_Q and W_K (``freeze="qk"``)."""
    named = list(model.named_parameters())
    if freeze == "qk":
        return [(n, p) for n, p in named if not n.endswith((".W_Q", ".W_K"))]
    return named


def is_value_side(name: str) -> bool:
    """W_V and W_O of every layer: the shared storage of the book's OV map."""
    return name.endswith((".attn.W_V", ".attn.W_O"))


def b2a_loss(model: Transformer, world: FactWorld, objective: str) -> torch.Tensor:
    """l_b2a per member, (K,), differentiable: mean over one-way facts of -log p(whole answer)."""
    probe = world.probe("b2a")
    reads = objectives.read_positions(objective, probe.slots)
    tokens = probe.full if objective == "ar" else probe.tokens
    h, _ = model.residual(tokens, check=False)
    logp = model.unembed_logits(h[:, :, reads]).log_softmax(-1)  # (K, N, k, V)
    picked = logp.gather(-1, probe.answers.expand(logp.shape[0], *probe.answers.shape)[..., None])
    return -picked[..., 0].sum(-1).mean(-1)


class ProjectOut:
    """Remove from each update of the value side (or of every parameter) its component along
    ∇l_b2a, per member.

    The first-order change of l_b2a caused by an update Δθ is <∇l_b2a, Δθ>; after the
    projection the value-side part of every update contributes exactly zero to it. The update,
    not the gradient, is projected: Adam rescales each coordinate, so a projected gradient
    would come out of Adam aligned again. An *oracle* intervention: it reads the b2a loss,
    which training never sees, only to remove what the update shares with it.
    """

    def __init__(self, model: Transformer, world: FactWorld, objective: str, named: list, everything: bool = False):
        self.model, self.world, self.objective = model, world, objective
        self.index = [i for i, (n, _) in enumerate(named) if everything or is_value_side(n)]
        self.params = [named[i][1] for i in self.index]

    def before(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        g = torch.autograd.grad(b2a_loss(self.model, self.world, self.objective).sum(), self.params)
        return [p.detach().clone() for p in self.params], list(g)

    @torch.no_grad()
    def after(self, saved) -> None:
        old, g = saved
        deltas = [p - o for p, o in zip(self.params, old)]
        K = self.params[0].shape[0]
        dot = sum((d * gi).reshape(K, -1).sum(1) for d, gi in zip(deltas, g))  # (K,)
        norm = sum((gi * gi).reshape(K, -1).sum(1) for gi in g)
        coef = torch.where(norm > 0, dot / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
        for p, o, d, gi in zip(self.params, old, deltas, g):
            p.copy_(o + d - coef.view(K, *[1] * (d.dim() - 1)) * gi)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A trained ensemble with its history.

    ``history`` maps ``"step"`` to an array (n,) and ``"loss"`` and ``"<probe>_<metric>"``
    (metrics ``acc``, ``p_correct``, ``nll``) to arrays (n, K), one column per seed; a probe the
    model cannot answer (``ar`` and ``infill``) has no entries. ``model`` is the trained ensemble;
    a run loaded from the cache (revlib.cache) reads it from disk on first use.
    """

    experiment: Experiment
    seeds: tuple[int, ...]
    world: FactWorld
    history: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the training loop
    eval_seconds: np.ndarray | None = None  # (n,) time at each history step (timing, not a result)
    cached: bool = False  # True when revlib.cache loaded this run instead of training it
    trained_model: Transformer | None = field(default=None, repr=False)
    load_model: object = field(default=None, repr=False, compare=False)  # () -> Transformer, for a cached run

    @property
    def model(self) -> Transformer:
        """The trained ensemble (loaded on first use for a run that came from the cache)."""
        if self.trained_model is None:
            if self.load_model is None:
                raise ValueError("this run holds no model")
            self.trained_model = self.load_model()
        return self.trained_model

    @property
    def objective(self) -> str:
        return self.experiment.train.objective

    @property
    def probe_names(self) -> tuple[str, ...]:
        return self.world.probe_names

    @property
    def final(self) -> dict[str, dict[str, np.ndarray] | None]:
        """Probe metrics at the end of training, arrays (K,); None where there is no answer."""
        return {
            name: ({m: self.history[f"{name}_{m}"][-1] for m in METRICS} if f"{name}_acc" in self.history else None)
            for name in self.probe_names
        }

    @property
    def failed(self) -> np.ndarray:
        """Members (K,) that did not learn the trained direction (revlib.measure.failed)."""
        return failed(self.final, self.objective)

    def initial_model(self) -> Transformer:
        """The ensemble as it was before the first step: rebuilt from the seeds, which determine
        every initial weight (revlib.model)."""
        return build_model(self.experiment, self.seeds, self.world.vocab_size)


def _record(history: dict[str, list], step: int, losses: torch.Tensor, metrics) -> None:
    history["step"].append(step)
    history["loss"].append(losses.detach().numpy().copy())
    for name, m in metrics.items():
        if m is not None:
            for metric in METRICS:
                history.setdefault(f"{name}_{metric}", []).append(m[metric].numpy())


def train(experiment: Experiment, seeds=None, progress: bool = False, callback=None,
          world: FactWorld | None = None) -> Run:
    """Train one model per seed (default: ``experiment.train.seed``) on the experiment's world.

    The fact world is the same for every member (``experiment.data.seed``); the seeds vary the
    initialisation and the training randomness, so the spread over members is the spread of
    training. Raises :class:`TrainingDiverged` if the loss turns NaN or infinite, and
    :class:`~revlib.config.ConfigError` before allocating anything that cannot fit in memory.

    ``callback(step, model, world)``, if given, is called at every evaluation step (step 0,
    every ``eval_every`` steps and the last step), before that step's update; measurements
    along training hook in here. It may compute gradients but must not change the parameters
    or draw from the global RNG. ``world`` may pass the world if the caller already built it.
    """
    if not isinstance(experiment, Experiment):
        raise ConfigError(f"train needs an Experiment (see revlib.preset), got {type(experiment).__name__}")
    seeds = as_seeds((experiment.train.seed,) if seeds is None else seeds)
    check_memory(experiment, len(seeds))
    tc = experiment.train
    world = make_world(experiment.data) if world is None else world
    if world.config != experiment.data:
        raise ConfigError("the world passed to train() was not built from this experiment's data config")
    with out_of_memory_is_a_config_error():
        model = build_model(experiment, seeds, world.vocab_size)
        gens = [torch.Generator().manual_seed(s + TRAIN_SEED_OFFSET) for s in seeds]
        batches = objectives.Batches(world.train_tokens, tc, world.k, gens)
        named = trainable(model, tc.freeze)
        params = [p for _, p in named]
        opt = ScaledAdam(params)
        project = (ProjectOut(model, world, tc.objective, named, everything=tc.project_out == "b2a-all")
                   if tc.project_out != "none" else None)
        history: dict[str, list] = {"step": [], "loss": []}
        eval_seconds: list[float] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            # delay: no bar at all for runs that finish within a couple of seconds
            bar = tqdm(total=tc.steps, delay=2.0, desc=f"{tc.objective} x{len(seeds)}", leave=False)
        start = time.perf_counter()
        with torch_threads(threads_for(model)), denormals_flushed():
            for step in range(tc.steps + 1):
                losses = objectives.loss(model, tc, batches.get(step))  # (K,)
                total = losses.sum()
                if not torch.isfinite(total):
                    bad = [s for s, v in zip(seeds, losses.tolist()) if not math.isfinite(v)]
                    raise TrainingDiverged(f"loss became {total.item()} at step {step} (seeds {bad}); "
                                           f"try a smaller learning rate than {tc.lr:g}")
                if step % tc.eval_every == 0 or step == tc.steps:
                    eval_seconds.append(time.perf_counter() - start)
                    _record(history, step, losses, evaluate(model, world, tc.objective))
                    if callback is not None:
                        callback(step, model, world)
                if step == tc.steps:
                    break  # the last pass only measures
                saved = project.before() if project is not None else None
                grads = torch.autograd.grad(total, params)
                opt.step(grads, tc.lr * lr_factor(step, tc))
                if saved is not None:
                    project.after(saved)
                if bar is not None:
                    bar.update(1)
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
    arrays = {k: np.asarray(v) for k, v in history.items()}
    return Run(experiment, seeds, world, arrays, seconds, np.asarray(eval_seconds), trained_model=model)
