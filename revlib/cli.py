"""``python -m revlib``: the book's experiments from the shell.

Every subcommand is a thin wrapper: it builds a config, calls the library and prints. Bad
input never produces a traceback: argument errors, impossible configurations and options that
do not apply in the chosen mode print one line on stderr and exit with status 2; a diverged run
prints one line and exits with 1. ``--json`` prints one strict JSON object (never NaN or
Infinity: a non-finite result is an error that says which value overflowed).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from .config import ConfigError, MAX_SEED, PRESETS, preset
from .training import TrainingDiverged


class UsageError(Exception):
    """A bad command line; the CLI turns it into one line on stderr and exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block and the error on two lines; we promise one line.
    def error(self, message: str):
        raise UsageError(message)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must lie in [0, {MAX_SEED}], got {value}")
    return value


def _flag_value(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# flag -> (config field, parse one value, help). Parsed values default to None: "not given".
TRAIN_OPTIONS = {
    "objective": ("objective", str, "ar (next token) | suffix (mask the last entity) | prefix (the first) | mdm (any-order masking)"),
    "attention": ("attention", str, "causal | bidirectional (default: causal for ar, else bidirectional)"),
    "positional": ("positional", str, "rope | absolute | alibi | none"),
    "rope-base": ("rope_base", _number, "RoPE base (theta_k = base^(-2k/d))"),
    "pairs": ("n_pairs", _integer, "number of (a, b) facts"),
    "entity-tokens": ("entity_tokens", _integer, "tokens per entity (k)"),
    "vocab-size": ("vocab_size", _integer, "vocabulary size V (default: exactly the tokens used)"),
    "reversed-fraction": ("reversed_fraction", _number, "share of pairs also trained the other way"),
    "hold-out": ("hold_out", str, "b2a (one-way pairs are 'a r b') | random (a random direction each)"),
    "relations": ("relations", str, "one (a single relation) | inverse (a relation and its inverse)"),
    "layers": ("n_layers", _integer, "Transformer layers"),
    "heads": ("n_heads", _integer, "attention heads"),
    "d-model": ("d_model", _integer, "width of the residual stream"),
    "mlp": ("mlp", str, "none | gelu | swiglu"),
    "norm": ("norm", str, "none | layernorm | rmsnorm"),
    "bias": ("bias", _flag_value, "biases in MLP and LayerNorm (true | false)"),
    "untie-values": ("untie_values", _flag_value, "one value matrix per position (true | false)"),
    "unembed-scale": ("unembed_scale", _number, "initial scale of the unembedding"),
    "steps": ("steps", _integer, "Adam steps"),
    "lr": ("lr", _number, "learning rate"),
    "schedule": ("schedule", str, "cosine | constant"),
    "batch-size": ("batch_size", _integer, "sentences per step (default: all)"),
    "mask-copies": ("mask_copies", _integer, "masked objectives: maskings of each sentence per step"),
    "t-min": ("t_min", _number, "masked objectives: smallest masking rate"),
    "masking": ("masking", str, "token | span (whole entities)"),
    "freeze": ("freeze", str, "none | qk (W_Q, W_K stay at initialisation)"),
    "project-out": ("project_out", str, "none | b2a (remove from each OV update its part along the b2a gradient) | b2a-all (from each whole update)"),
    "eval-every": ("eval_every", _integer, "steps between evaluations"),
}
ALIASES = {"both-fraction": "reversed-fraction"}  # the first edition's name


def _add_train_options(p: argparse.ArgumentParser, as_lists: bool = False) -> None:
    p.add_argument("--model", choices=["ar", "mdm"], default=None,
                   help="shorthand: ar = objective ar + causal, mdm = objective mdm + bidirectional (default mdm)")
    p.add_argument("--preset", choices=list(PRESETS), default=None, help="start from a named preset")
    for flag, (_, parse, help_text) in TRAIN_OPTIONS.items():
        names = [f"--{flag}"] + [f"--{a}" for a, target in ALIASES.items() if target == flag]
        p.add_argument(*names, dest=flag.replace("-", "_"), type=str if as_lists else parse, default=None,
                       help=help_text + (" (comma-separated values: an axis)" if as_lists else ""))
    p.add_argument("--seed", type=_seed, default=None, help="seed of the facts, the weights and the masks (default 0)")


def _given(args, flag: str):
    return getattr(args, flag.replace("-", "_"), None)


def _base(args) -> tuple[str, dict]:
    """The preset name and the overrides every command shares (model, preset, objective, seed)."""
    if args.model is not None and args.preset is not None:
        raise UsageError("give --model or --preset, not both")
    if args.model is not None and _given(args, "objective") is not None:
        raise UsageError("--model is a shorthand for --objective and --attention; give one or the other")
    name = args.preset or args.model or ("ar" if _given(args, "objective") == "ar" else "mdm")
    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    return name, overrides


def experiment_from_args(args):
    name, overrides = _base(args)
    for flag, (field, _, _) in TRAIN_OPTIONS.items():
        value = _given(args, flag)
        if value is not None:
            overrides[field] = value
    return preset(name, **overrides)


def _reject(args, flags, why: str) -> None:
    for flag in flags:
        if _given(args, flag) is not None:
            raise UsageError(f"argument --{flag}: {why}")


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _nonfinite(obj, path: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{path or 'the result'} = {obj}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _nonfinite(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _nonfinite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def emit_json(obj) -> None:
    """Print one strict JSON object, or refuse with the path of the value that is not finite."""
    bad = _nonfinite(obj)
    if bad:
        raise UsageError(f"a result is not a finite number ({bad}): the computation overflowed")
    print(json.dumps(obj, allow_nan=False))


def _probe_json(final, member: int = 0) -> dict:
    return {name: None if m is None else {k: float(v[member]) for k, v in m.items()} for name, m in final.items()}


def _config_json(exp) -> dict:
    m, d, t = exp.model, exp.data, exp.train
    return {"objective": t.objective, "attention": m.attention, "positional": m.positional, "pairs": d.n_pairs,
            "entity_tokens": d.entity_tokens, "vocab_size": d.n_vocab, "reversed_fraction": d.reversed_fraction,
            "hold_out": d.hold_out, "relations": d.relations, "layers": m.n_layers, "heads": m.n_heads,
            "d_model": m.d_model, "mlp": m.mlp, "norm": m.norm, "steps": t.steps, "lr": t.lr,
            "masking": t.masking, "freeze": t.freeze, "project_out": t.project_out, "untie_values": m.untie_values,
            "rope_base": m.rope_base, "seed": t.seed}


def _print_probes(probes: dict) -> None:
    print(f"{'probe':8} {'accuracy':>9} {'p(right)':>10} {'nll':>9}")
    for name, m in probes.items():
        if m is None:
            print(f"{name:8} {'-':>9} {'-':>10} {'-':>9}   (read one position before the blank: nothing precedes it)")
        else:
            print(f"{name:8} {m['acc']:9.3f} {m['p_correct']:10.3g} {m['nll']:9.3f}")


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from .cache import cached_train

    exp = experiment_from_args(args)
    run = cached_train(exp, progress=not args.json)
    result = {**_config_json(exp), "seconds": round(run.seconds, 3), "cached": run.cached,
              "final_loss": float(run.history["loss"][-1, 0]), "chance": run.world.chance,
              "probes": _probe_json(run.final)}
    if args.json:
        emit_json(result)
        return 0
    print(f"objective {exp.train.objective} + {exp.model.attention} attention, {exp.model.positional} positions, "
          f"{exp.data.n_pairs} facts of {exp.data.entity_tokens}-token entities; {exp.train.steps} steps in "
          f"{run.seconds:.2f} s{' (cached)' if run.cached else ''}; final loss {result['final_loss']:.4f}; "
          f"chance {run.world.chance:.3g}")
    _print_probes(result["probes"])
    return 0


def cmd_sweep(args) -> int:
    from .sweep import AXES, STATS, sweep

    name, overrides = _base(args)
    axes = {}
    for flag, (field, parse, _) in TRAIN_OPTIONS.items():
        text = _given(args, flag)
        if text is None:
            continue
        try:
            values = [parse(v.strip()) for v in text.split(",")]
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"argument --{flag}: {err}") from None
        if flag in AXES:
            axes[field] = values
        elif len(values) > 1:
            raise UsageError(f"argument --{flag}: not an axis a sweep can vary")
        else:
            overrides[field] = values[0]
    if not axes:
        raise UsageError(f"name at least one axis to sweep, e.g. --heads 1,2,4 (axes: {', '.join(AXES)})")
    if args.seeds < 1 or args.seeds > 64:
        raise UsageError(f"argument --seeds: between 1 and 64 seeds, got {args.seeds}")
    base = preset(name, **overrides)
    start = base.train.seed
    result = sweep(base, axes, seeds=range(start, start + args.seeds), progress=not args.json, skip_invalid=args.skip_invalid)
    if args.json:
        emit_json({"preset": name, **result.to_json()})
        return 0
    for cell in result.summary():
        values = ", ".join(f"{k}={v}" for k, v in cell["values"].items())
        if "refused" in cell:
            print(f"{values}: refused ({cell['refused']})")
            continue
        print(f"{values}: {cell['n_seeds']} seeds, {cell['failed']} failed to learn the trained direction")
        for probe, m in cell["quantities"].items():
            if m is None or "acc" not in m:
                continue
            acc = " ".join(f"{s} {m['acc'][s]:.3f}" for s in STATS)
            nll = " ".join(f"{s} {m['nll'][s]:.3g}" for s in STATS)
            print(f"  {probe:7} acc {acc} | nll {nll}")
    return 0


CLOSED_FORM_ONLY = ("offset", "base", "samples")


def cmd_coupling(args) -> int:
    """Chapter 2: the RoPE score correlation in closed form and by Monte-Carlo, or measured in training."""
    from . import coupling, theory

    if args.trained:
        _reject(args, CLOSED_FORM_ONLY, "applies to the closed form, not to --trained (use --rope-base for the model)")
        exp = experiment_from_args(args)
        run, hist = coupling.coupling_history(exp, seeds=(exp.train.seed,), progress=not args.json)
        routes = [n for n in hist if n.startswith("weight_")]
        result = {**_config_json(exp), "routes": [r[len("weight_"):] for r in routes], "seconds": round(run.seconds, 3),
                  "corr_init": float(hist["corr"][0, 0]), "corr_final": float(hist["corr"][-1, 0]),
                  "evidence_init": float(hist["evidence"][0, 0]), "evidence_final": float(hist["evidence"][-1, 0]),
                  "evidence_baseline_final": float(hist["evidence_baseline"][-1, 0]),
                  **{f"{r}_final": float(hist[r][-1, 0]) for r in routes},
                  "probes": _probe_json(run.final)}
        if args.json:
            emit_json(result)
            return 0
        print(f"{exp.train.objective} + {exp.model.attention}, {exp.model.positional}: routes "
              f"{' and '.join(result['routes'])} ({exp.train.steps} steps in {run.seconds:.2f} s)")
        print(f"score correlation across facts: {result['corr_init']:+.3f} at init, {result['corr_final']:+.3f} trained")
        print(f"stored evidence u_a W E[b], mean over facts: {result['evidence_init']:+.3f} at init, "
              f"{result['evidence_final']:+.3f} trained (other b's: {result['evidence_baseline_final']:+.3f})")
        _print_probes(result["probes"])
        return 0

    given = [flag for flag in TRAIN_OPTIONS if _given(args, flag) is not None
             and flag not in ("positional", "d-model", "heads")] + (["model"] if args.model else []) \
        + (["preset"] if args.preset else [])
    if given:
        raise UsageError(f"argument --{given[0]}: applies to --trained only; the closed form takes --positional, "
                         "--d-model, --heads, --offset, --base, --samples, --seed")
    positional = _given(args, "positional") or "rope"
    d_model = 32 if _given(args, "d-model") is None else _given(args, "d-model")  # 0 is an error, not "unset"
    heads = 1 if _given(args, "heads") is None else _given(args, "heads")
    offset = 2 if args.offset is None else args.offset
    base = 10_000.0 if args.base is None else args.base
    samples = 100_000 if args.samples is None else args.samples
    seed = 0 if args.seed is None else args.seed
    if positional not in ("rope", "absolute", "alibi", "none"):
        raise UsageError(f"argument --positional: one of rope, absolute, alibi, none; got {positional!r}")
    if heads <= 0 or d_model <= 0 or d_model % heads:
        raise UsageError(f"--heads {heads} does not divide --d-model {d_model}")
    d = d_model // heads  # the head size
    if positional == "rope" and d % 2:
        raise UsageError(f"the head size --d-model/--heads must be even for RoPE (it rotates pairs), got {d}")
    if abs(offset) > theory.MAX_OFFSET:
        raise UsageError(f"argument --offset: at most {theory.MAX_OFFSET} positions either way, got {offset}")
    if not 1.0 <= base <= 1e12:
        raise UsageError(f"argument --base: must lie in [1, 1e12] so the rotary frequencies stay representable, got {base:g}")
    if not 3 <= samples <= theory.MAX_SAMPLES:
        raise UsageError(f"argument --samples: between 3 and {theory.MAX_SAMPLES}, got {samples}")
    from .config import MEMORY_LIMIT_BYTES

    need = theory.monte_carlo_bytes(positional, d, samples)
    if need > MEMORY_LIMIT_BYTES:
        most = int(samples * MEMORY_LIMIT_BYTES / need)
        raise UsageError(f"--samples {samples} with head size {d} needs about {need / 2**30:.1f} GiB; "
                         f"use at most {most} samples")
    analytic = theory.analytic_corr(positional, d, offset, base)
    try:
        mc = theory.monte_carlo_corr(positional, d, offset, base, samples=samples, seed=seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = {"positional": positional, "d_head": d, "offset": offset, "base": base, "samples": samples,
              "seed": seed, "analytic": analytic, "monte_carlo": mc.estimate, "stderr": mc.stderr}
    if args.json:
        emit_json(result)
        return 0
    print(f"Corr(S_infill, S_b2a), {positional}, head size {d}, offset {offset}, base {base:g}:")
    print(f"  closed form  {analytic:.4f}")
    print(f"  Monte-Carlo  {mc.estimate:.4f} ± {mc.stderr:.4f} (standard error, {samples} samples, seed {seed})")
    return 0


def cmd_align(args) -> int:
    """Chapter 3: how ∇l_source and ∇l_b2a align, at initialisation and after training."""
    from . import alignment
    from .cache import cached_train

    exp = experiment_from_args(args)
    objective = exp.train.objective
    if objective == "ar" and args.step == "infill":
        raise UsageError("argument --step: an ar model cannot answer infill (nothing precedes the blank); use a2b")
    if args.eta is not None and min(args.eta) <= 0:
        raise UsageError(f"argument --eta: step sizes must be positive, got {min(args.eta):g}")
    etas = sorted(args.eta) if args.eta is not None else list(alignment.DEFAULT_ETAS)
    run = cached_train(exp, progress=not args.json)
    init, world = run.initial_model(), run.world
    start, end = (alignment.alignment(m, world, objective, train_config=exp.train) for m in (init, run.model))
    fo = alignment.first_order(init, world, objective, step=args.step, etas=etas, train_config=exp.train)
    identity_error = None
    if alignment.identity_applies(init, world):
        identity_error = max(float(alignment.ov_identity(m, world, objective).relative_error.max())
                             for m in (init, run.model))

    def blocks(values: dict) -> dict:
        return {block: float(v[0]) for block, v in values.items()}

    result = {**_config_json(exp), "source": alignment.source_of(objective), "seconds": round(run.seconds, 3),
              "cosine_init": blocks(start["mean"]), "cosine_final": blocks(end["mean"]),
              "fact_cosine_init": blocks(start["fact"]), "fact_cosine_final": blocks(end["fact"]),
              "first_order": {"step": fo.step, "at": "init", "eta": fo.eta.tolist(),
                              "predicted": fo.predicted[:, 0].tolist(), "measured": fo.measured[:, 0].tolist()},
              "identity_error": identity_error, "probes": _probe_json(run.final)}
    if args.json:
        emit_json(result)
        return 0
    print(f"{objective}: cosine of the gradients of l_{result['source']} and l_b2a ({exp.train.steps} steps)")
    print(f"{'block':11} {'init':>7} {'trained':>8} {'same-fact init':>15} {'trained':>8}")
    for block in result["cosine_init"]:
        print(f"{block:11} {result['cosine_init'][block]:7.3f} {result['cosine_final'][block]:8.3f} "
              f"{result['fact_cosine_init'][block]:15.3f} {result['fact_cosine_final'][block]:8.3f}")
    print(f"one gradient step on l_{fo.step} at init: change of l_b2a")
    print(f"{'eta':>9} {'predicted':>11} {'measured':>11}")
    for eta, pred, meas in zip(fo.eta, fo.predicted[:, 0], fo.measured[:, 0]):
        print(f"{eta:9.3g} {pred:11.4g} {meas:11.4g}")
    if identity_error is not None:
        print(f"factorised OV inner product vs autograd: largest relative error {identity_error:.2e}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_benchmark

    if not 1 <= args.ensemble_k <= 4096:
        raise UsageError(f"argument --ensemble-k: between 1 and 4096 seeds, got {args.ensemble_k}")
    result = run_benchmark(ensemble_k=args.ensemble_k, with_reference=not args.no_reference)
    if args.json:
        emit_json(result)
        return 0
    for key, value in result.items():
        print(f"{key:28} {value:.4g}" if isinstance(value, float) else f"{key:28} {value}")
    return 0


def cmd_figures(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    from .book.figures import REGISTRY, TABLES, read_timings, save_all

    unknown = [n for n in (args.only or []) if n not in REGISTRY and n not in TABLES]
    if unknown:
        raise UsageError(f"unknown figure {unknown[0]!r}; choose from {', '.join(list(REGISTRY) + list(TABLES))}")
    if args.jobs == "auto":
        from .book.explore import usable_cores

        args.jobs = max(1, min(8, usable_cores()))
        print(f"drawing in {args.jobs} process{'es' * (args.jobs > 1)} (one per usable core)")
    else:
        try:
            args.jobs = int(args.jobs)
        except ValueError:
            raise UsageError(f"argument --jobs: a number of processes or 'auto', got {args.jobs!r}") from None
    if not 1 <= args.jobs <= 8:
        raise UsageError(f"argument --jobs: between 1 and 8 processes, got {args.jobs}")
    try:
        written = save_all(args.out, args.only, jobs=args.jobs, with_tables=args.tables)
    except OSError as err:
        raise UsageError(f"cannot write to {args.out}: {err.strerror or err}") from None
    for path in written:
        print(path)
    timings = read_timings(args.out)
    if timings:
        chapters = ", ".join(f"{name} {sec:.0f} s" for name, sec in timings["chapter_seconds"].items())
        print(f"wall {timings['wall_seconds']:.0f} s with {args.jobs} job{'s' if args.jobs > 1 else ''} "
              f"(per chapter: {chapters}); results-cache entries {timings['cache_entries_before']} -> "
              f"{timings['cache_entries_after']}")
    return 0


def cmd_tables(args) -> int:
    from .book.figures import TABLES, build

    unknown = [n for n in (args.only or []) if n not in TABLES]
    if unknown:
        raise UsageError(f"unknown table {unknown[0]!r}; choose from {', '.join(TABLES)}")
    names = args.only or list(TABLES)
    tables = {name: build(name) for name in names}
    if args.json:
        emit_json({name: t.to_json() for name, t in tables.items()})
        return 0
    for name, t in tables.items():
        print(f"[{name}]")
        print(t)
        print()
    return 0


def _seed_list(text: str) -> list[int]:
    """"0-7" or "0,1,5" -> seeds."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            if hi < lo:
                raise ValueError
            return list(range(lo, hi + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"argument --seeds: a range such as 0-7 or a list such as 0,1,5; got {text!r}") from None


def _settings(pairs: list[str] | None) -> dict:
    """--set name=value ...: values are Python literals (numbers, strings, tuples, dicts), never code."""
    import ast

    out = {}
    for item in pairs or []:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"argument --set: expected NAME=VALUE, got {item!r}")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text  # a bare word: a string
    return out


def _plain(x, depth: int = 0):
    """A chapter result as JSON: sweeps by their summary, runs by their final metrics, arrays of
    up to 64 values in full and larger ones by their shape and spread."""
    import dataclasses

    import numpy as np

    from .sweep import Sweep
    from .training import Run

    if isinstance(x, Sweep):
        return x.to_json()
    if isinstance(x, Run):
        return {"seeds": list(x.seeds), "final": _plain(x.final, depth + 1)}
    if isinstance(x, np.ndarray) or isinstance(x, np.generic):
        a = np.asarray(x)
        if a.size <= 64:
            return a.tolist()
        a = a.astype(float)
        return {"shape": list(a.shape), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name), depth + 1) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {(k if isinstance(k, str) else ", ".join(map(str, k)) if isinstance(k, tuple) else str(k)): _plain(v, depth + 1)
                for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v, depth + 1) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def cmd_chapter(args) -> int:
    """Every measurement of a chapter, with the book's settings or changed ones, and its claims."""
    from . import recipes

    knobs = _settings(args.set)
    seeds = _seed_list(args.seeds) if args.seeds else None
    params = recipes.params(args.chapter, seeds, args.world_seed, **knobs)  # refuses unknown settings first
    full = recipes.chapter(args.chapter).compute(**params)
    report = recipes.check(args.chapter, full, raise_on_failure=False, **params)
    results = full
    if args.only:
        unknown = [n for n in args.only if n not in results]
        if unknown:
            raise UsageError(f"{args.chapter} has no result {unknown[0]!r}; its results are {', '.join(results)}")
        results = {n: results[n] for n in args.only}
    if args.json:
        emit_json({"chapter": args.chapter, "params": _plain(params), "results": _plain(results),
                   "claims": _plain(report.to_json())})
        return 0
    print(f"{args.chapter}, {', '.join(f'{k}={v}' for k, v in params.items() if k not in ('order_variants', 'interventions', 'blocks'))}")
    for name, value in results.items():
        print(f"[{name}] {value!r}"[:300] if not hasattr(value, "to_json") else f"[{name}] {value}")
    print(report)
    return 0


def cmd_claims(args) -> int:
    """Every chapter's claims over disjoint seed sets."""
    from . import recipes
    from .claims import robustness_run

    chapters = args.chapters.split(",") if args.chapters else list(recipes.CHAPTERS)
    for ch in chapters:
        if ch not in recipes.CHAPTERS:
            raise UsageError(f"argument --chapters: unknown chapter {ch!r}; choose from {', '.join(recipes.CHAPTERS)}")
    if not 1 <= args.seed_sets <= 100:
        raise UsageError(f"argument --seed-sets: between 1 and 100, got {args.seed_sets}")
    if not 1 <= args.seeds_per_set <= 64:
        raise UsageError(f"argument --seeds-per-set: between 1 and 64, got {args.seeds_per_set}")
    if args.stride < args.seeds_per_set:
        raise UsageError(f"argument --stride: sets of {args.seeds_per_set} seeds {args.stride} apart would overlap")
    knobs = _settings(args.set)
    for ch in chapters:  # refuse a bad setting before anything trains
        recipes.params(ch, **{k: v for k, v in knobs.items() if k in recipes.chapter(ch).KNOBS})
    table = robustness_run(chapters, args.seed_sets, args.first, args.stride, args.seeds_per_set, knobs,
                           progress=None if args.json else print)
    if args.json:
        emit_json(_plain(table))
        return 0
    print(table_text(table))
    return 0


def _repository_url() -> str | None:
    """``repository.url`` of the book's _config.yml, where the checkout has one."""
    from pathlib import Path
    import re as _re

    config = Path(__file__).resolve().parents[1] / "_config.yml"
    try:
        m = _re.search(r"^repository:[^\n]*\n(?:[ \t]+[^\n]*\n)*?[ \t]+url:[ \t]*(\S+)", config.read_text(), _re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def cmd_results(args) -> int:
    """Pack the results cache into a bundle, fetch one into it, or print where this code's bundle is published."""
    from . import bundle

    if args.action == "tag":
        print(bundle.release_tag())
        return 0
    if args.action == "url":
        repo = args.repository or _repository_url()
        if not repo:
            raise UsageError("give --repository https://github.com/OWNER/REPO (no _config.yml found)")
        print(bundle.release_url(repo))
        return 0
    if args.action == "fetch" and args.from_release:
        if args.target:
            raise UsageError("give a URL or file, or --from-release, not both")
        repo = args.repository or _repository_url()
        if not repo:
            raise UsageError("--from-release needs --repository https://github.com/OWNER/REPO (no _config.yml found)")
        args.target = bundle.release_url(repo)
    if not args.target:
        raise UsageError(f"results {args.action} needs a {'file' if args.action == 'pack' else 'URL or file'}")
    try:
        if args.action == "pack":
            summary = bundle.pack(args.target)
            print(f"packed {summary.describe()} into {summary.path}")
            if summary.bytes > bundle.TARGET_BYTES:
                print(f"revlib: warning: the bundle is larger than {bundle.TARGET_BYTES // 2**20} MB", file=sys.stderr)
            return 0
        summary = bundle.fetch(args.target)
    except bundle.Unreachable as err:
        if args.if_available:
            print(f"no results bundle for this code ({err}); the chapters will train, about "
                  f"{bundle.COLD_MINUTES} minutes for the whole book on a laptop")
            return 0
        print(f"revlib: error: {err}", file=sys.stderr)
        return 1
    except bundle.BundleError as err:
        print(f"revlib: error: {err}", file=sys.stderr)
        return 1
    if summary.skipped and not summary.installed and not summary.present:
        print(f"the bundle was computed by other code ({summary.code[:12]}; this code is "
              f"{__import__('revlib').cache.code_version()}): nothing installed, the chapters will train")
    else:
        print(f"fetched {summary.describe()}")
    return 0


def table_text(table: dict) -> str:
    from .claims import robustness_lines

    return "\n".join(robustness_lines(table))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="python -m revlib", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"revlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str, func):
        p = sub.add_parser(name, help=help_text, allow_abbrev=False)
        p.set_defaults(func=func)
        return p

    p = command("train", "train a model on one-direction facts and probe it (cached)", cmd_train)
    _add_train_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("sweep", "train every value of one or more axes with N seeds and print the spread", cmd_sweep)
    _add_train_options(p, as_lists=True)
    p.add_argument("--seeds", type=_integer, default=8, help="seeds per value (default 8), starting at --seed")
    p.add_argument("--skip-invalid", action="store_true",
                   help="report impossible cells of the grid (e.g. ar with bidirectional attention) instead of refusing the sweep")
    p.add_argument("--json", action="store_true", help="print one JSON object with a list of rows")

    p = command("coupling", "attention-score coupling: closed form vs Monte-Carlo, or --trained", cmd_coupling)
    _add_train_options(p)
    p.add_argument("--trained", action="store_true",
                   help="train a model and measure the correlation across facts and the stored evidence")
    p.add_argument("--offset", type=_integer, default=None, help="distance between the blank and b (closed form; default 2)")
    p.add_argument("--base", type=_number, default=None, help="RoPE base (closed form; default 10000)")
    p.add_argument("--samples", type=_integer, default=None, help="Monte-Carlo samples (closed form; default 100000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("align", "gradient alignment of l_infill (ar: l_a2b) and l_b2a, and the first-order test", cmd_align)
    _add_train_options(p)
    p.add_argument("--step", choices=["infill", "a2b", "objective"], default=None,
                   help="loss of the first-order step (default: infill for mdm, a2b otherwise)")
    p.add_argument("--eta", type=_number, nargs="+", default=None, help="step sizes of the first-order test")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("bench", "time a training step against the machine's floor and a plain-PyTorch reference", cmd_bench)
    p.add_argument("--ensemble-k", type=_integer, default=8, help="seeds trained together in the ensemble timing")
    p.add_argument("--no-reference", action="store_true", help="skip the plain-PyTorch reference")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("figures", "write the book's figures as PNG and SVG (for slides), and with --tables its tables", cmd_figures)
    p.add_argument("--out", required=True, help="folder to write NAME.png and NAME.svg into")
    p.add_argument("--only", nargs="+", metavar="NAME", help="just these figures")
    p.add_argument("--jobs", default="1",
                   help="draw the chapters in this many processes (one torch thread each), or 'auto': one per core "
                        "this process may run on")
    p.add_argument("--tables", action="store_true", help="also write every table of the book as NAME.json")

    p = command("chapter", "every measurement of one chapter, with the book's settings or changed ones, and its claims",
                cmd_chapter)
    p.add_argument("chapter", help="ch1 ... ch5")
    p.add_argument("--seeds", default=None, help="training seeds: a range such as 0-7 or a list (default: the book's)")
    p.add_argument("--world-seed", type=_seed, default=None, help="the fact world (default: the book's)")
    p.add_argument("--set", nargs="+", metavar="NAME=VALUE", help="change a setting of the chapter, e.g. heads=(1,2)")
    p.add_argument("--only", nargs="+", metavar="RESULT", help="print only these results")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("claims", "check every chapter's claims over disjoint seed sets (trains through the cache)", cmd_claims)
    p.add_argument("--seed-sets", type=_integer, default=1, help="how many seed sets (default 1)")
    p.add_argument("--first", type=_seed, default=1000, help="first seed of the first set (default 1000)")
    p.add_argument("--stride", type=_integer, default=1000, help="distance between the sets' first seeds (default 1000)")
    p.add_argument("--seeds-per-set", type=_integer, default=8, help="training seeds per set (default 8)")
    p.add_argument("--chapters", default=None, help="comma-separated, e.g. ch1,ch2 (default: all)")
    p.add_argument("--set", nargs="+", metavar="NAME=VALUE",
                   help="change a setting in every chapter that has it, e.g. n_pairs=32 (a smaller world)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("results", "the results bundle: pack this cache, fetch a bundle into it, print this code's bundle URL or release tag",
                cmd_results)
    p.add_argument("action", choices=["pack", "fetch", "url", "tag"])
    p.add_argument("target", nargs="?", help="pack: the file to write; fetch: a file or an http(s) URL")
    p.add_argument("--repository", help="url: the hosting repository (default: _config.yml's repository.url)")
    p.add_argument("--from-release", action="store_true",
                   help="fetch: this code's bundle from the hosting repository's release (see `results url`)")
    p.add_argument("--if-available", action="store_true",
                   help="fetch: a bundle that cannot be reached is not an error (say so in one line, exit 0)")

    p = command("tables", "print the book's result tables (every experiment of every chapter)", cmd_tables)
    p.add_argument("--only", nargs="+", metavar="NAME", help="just these tables")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError) as err:
        print(f"revlib: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("revlib: error: out of memory; try fewer pairs, seeds, layers or a smaller d_model", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"revlib: training diverged: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("revlib: interrupted", file=sys.stderr)
        return 130
