"""``python -m revlib``: the book's experiments from the shell.

Every subcommand is a thin wrapper: it builds a config, calls the library and prints. Bad
input never produces a traceback: argument errors and impossible configurations print one
line on stderr and exit with status 2; a diverged run prints one line and exits with 1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from .config import ConfigError, preset
from .train import TrainingDiverged, train


class UsageError(Exception):
    """A bad command line; the CLI turns it into one line on stderr and exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block and the error on two lines; we promise one line.
    def error(self, message: str):
        raise UsageError(message)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["ar", "mdm"], default="mdm", help="ARM (causal) or MDM (masked diffusion)")
    p.add_argument("--positional", choices=["rope", "absolute", "alibi", "none"], default="rope")
    p.add_argument("--pairs", type=int, default=128, help="number of (a, b) facts")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--mlp", action="store_true", help="add an MLP to every layer")
    p.add_argument("--layernorm", action="store_true", help="pre-LayerNorm in every block")
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default: the preset's)")
    p.add_argument("--lr", type=_finite_float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the facts, the weights and the masks")
    p.add_argument("--both-fraction", type=float, default=0.0,
                   help="share of pairs also trained reversed (Zhu et al.'s split)")


def experiment_from_args(args: argparse.Namespace):
    overrides = dict(
        positional=args.positional, n_pairs=args.pairs, n_layers=args.layers, n_heads=args.heads,
        d_model=args.d_model, mlp=args.mlp, layernorm=args.layernorm, seed=args.seed,
        both_fraction=args.both_fraction,
    )
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.lr is not None:
        overrides["lr"] = args.lr
    return preset(args.model, **overrides)


def _probe_json(final) -> dict:
    return {
        name: None if m is None else {"acc": float(m["acc"][0]), "p_correct": float(m["p_correct"][0])}
        for name, m in final.items()
    }


def cmd_train(args: argparse.Namespace) -> int:
    exp = experiment_from_args(args)
    run = train(exp, progress=not args.json)
    result = {
        "model": exp.kind,
        "positional": exp.model.positional,
        "pairs": exp.data.n_pairs,
        "both_fraction": exp.data.both_fraction,
        "layers": exp.model.n_layers,
        "heads": exp.model.n_heads,
        "d_model": exp.model.d_model,
        "steps": exp.train.steps,
        "lr": exp.train.lr,
        "seed": args.seed,
        "seconds": round(run.seconds, 3),
        "final_loss": float(run.history["loss"][-1, 0]),
        "vocab_size": run.world.vocab_size,
        "chance": run.world.chance,
        "probes": _probe_json(run.final),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{exp.kind.upper()} on {exp.data.n_pairs} facts, {exp.train.steps} steps in {run.seconds:.2f} s; "
          f"final loss {result['final_loss']:.4f}; chance 1/V = {run.world.chance:.4f}")
    print(f"{'probe':8} {'accuracy':>9} {'p(right)':>9}")
    for name, m in result["probes"].items():
        if m is None:
            print(f"{name:8} {'-':>9} {'-':>9}   (an ARM cannot fill a blank before its context)")
        else:
            print(f"{name:8} {m['acc']:9.3f} {m['p_correct']:9.4f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    if args.ensemble_k < 1:
        raise UsageError(f"argument --ensemble-k: must be at least 1, got {args.ensemble_k}")
    result = run_benchmark(ensemble_k=args.ensemble_k, reference=not args.no_reference)
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        print(f"{key:28} {value:.4g}" if isinstance(value, float) else f"{key:28} {value}")
    return 0


MAX_MC_WORK = 2 * 10**8  # Monte-Carlo samples x numbers drawn per sample, about 1.6 GB of float64


def cmd_coupling(args: argparse.Namespace) -> int:
    """Chapter 2: the RoPE score correlation in closed form and by Monte-Carlo, or measured in training."""
    from . import coupling, theory

    if args.trained:
        exp = experiment_from_args(args)
        run, hist = coupling.coupling_history(exp, seeds=(args.seed,), progress=not args.json)
        routes = list(coupling.ROUTES[exp.kind])
        result = {
            "model": exp.kind, "positional": exp.model.positional, "pairs": exp.data.n_pairs,
            "layers": exp.model.n_layers, "heads": exp.model.n_heads, "d_model": exp.model.d_model,
            "mlp": exp.model.mlp, "layernorm": exp.model.layernorm, "steps": exp.train.steps,
            "seed": args.seed, "routes": routes, "seconds": round(run.seconds, 3),
            "corr_init": float(hist["corr"][0, 0]), "corr_final": float(hist["corr"][-1, 0]),
            "evidence_init": float(hist["evidence"][0, 0]), "evidence_final": float(hist["evidence"][-1, 0]),
            "evidence_baseline_final": float(hist["evidence_baseline"][-1, 0]),
            **{f"weight_{r}_final": float(hist[f"weight_{r}"][-1, 0]) for r in routes},
            "probes": _probe_json(run.final),
        }
        if args.json:
            print(json.dumps(result))
            return 0
        print(f"{exp.kind.upper()}, {exp.model.positional}: routes {routes[0]} and {routes[1]} "
              f"({exp.train.steps} steps in {run.seconds:.2f} s)")
        print(f"score correlation across facts: {result['corr_init']:+.3f} at init, {result['corr_final']:+.3f} trained")
        print(f"stored evidence u_a^T W E[b], mean over facts: {result['evidence_init']:+.3f} at init, "
              f"{result['evidence_final']:+.3f} trained (other b's: {result['evidence_baseline_final']:+.3f})")
        for name, m in result["probes"].items():
            print(f"{name:8} accuracy {'-' if m is None else format(m['acc'], '.3f')}")
        return 0

    if args.heads <= 0 or args.d_model % args.heads:
        raise UsageError(f"--heads {args.heads} does not divide --d-model {args.d_model}")
    d, offset, base, samples = args.d_model // args.heads, args.offset, args.base, args.samples  # d: head size
    if d <= 0 or (args.positional == "rope" and d % 2):
        raise UsageError(f"the head size --d-model/--heads must be a positive"
                         f"{' even' if args.positional == 'rope' else ''} integer (RoPE rotates pairs "
                         f"of coordinates), got {d}")
    if base <= 0:
        raise UsageError(f"--base must be positive, got {base:g}")
    if samples < 3:
        raise UsageError(f"--samples must be at least 3, got {samples}")
    per_sample = 4 * d + (2 * d * d if args.positional == "absolute" else 0)
    if samples * per_sample > MAX_MC_WORK:
        raise UsageError(f"--samples {samples} with --d-model {d} is too large for memory; "
                         f"use at most {MAX_MC_WORK // per_sample} samples")
    analytic = theory.analytic_corr(args.positional, d, offset, base)
    mc = theory.monte_carlo_corr(args.positional, d, offset, base, samples=samples, seed=args.seed)
    result = {"positional": args.positional, "d_model": d, "offset": offset, "base": base, "samples": samples,
              "seed": args.seed, "analytic": analytic, "monte_carlo": mc.estimate, "stderr": mc.stderr}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"Corr(S_infill, S_b2a), {args.positional}, d = {d}, offset {offset}, base {base:g}:")
    print(f"  closed form  {analytic:.4f}")
    print(f"  Monte-Carlo  {mc.estimate:.4f} ± {mc.stderr:.4f} (standard error, {samples} samples, seed {args.seed})")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    """Chapter 3: how ∇ℓ_source and ∇ℓ_b2a align, at initialisation and after training."""
    from . import alignment
    from .data import make_world
    from .model import Transformer

    exp = experiment_from_args(args)
    if exp.data.n_both == exp.data.n_pairs:
        raise UsageError("--both-fraction leaves no pair trained one way only: there is no b2a loss to align with")
    if exp.kind == "ar" and args.step == "infill":
        raise UsageError("argument --step: an ARM cannot answer infill (nothing precedes the blank); use a2b")
    if args.eta is not None and min(args.eta) <= 0:
        raise UsageError(f"argument --eta: step sizes must be positive, got {min(args.eta):g}")
    etas = sorted(args.eta) if args.eta is not None else list(alignment.DEFAULT_ETAS)
    world = make_world(exp.data)
    init = Transformer(exp.model, world.vocab_size, (exp.train.seed,))  # train()'s starting weights
    run = train(exp, progress=not args.json)
    source = alignment.SOURCE[exp.kind]
    start, end = (alignment.alignment(m, world, train_config=exp.train) for m in (init, run.model))
    fo = alignment.first_order(init, world, step=args.step, etas=etas, train_config=exp.train)
    identity_error = None
    if alignment.identity_applies(init):
        identity_error = max(float(alignment.ov_identity(m, world).relative_error.max()) for m in (init, run.model))

    def blocks(values: dict) -> dict:
        return {block: float(v[0]) for block, v in values.items()}

    result = {
        "model": exp.kind, "positional": exp.model.positional, "pairs": exp.data.n_pairs,
        "layers": exp.model.n_layers, "heads": exp.model.n_heads, "d_model": exp.model.d_model,
        "mlp": exp.model.mlp, "layernorm": exp.model.layernorm, "steps": exp.train.steps, "seed": args.seed,
        "source": source, "seconds": round(run.seconds, 3),
        # cosine of the averaged gradients ∇ℓ_source and ∇ℓ_b2a, by block
        "cosine_init": blocks(start["mean"]), "cosine_final": blocks(end["mean"]),
        # mean over facts of the cosine of one fact's two gradients
        "fact_cosine_init": blocks(start["fact"]), "fact_cosine_final": blocks(end["fact"]),
        # one plain gradient step at initialisation: change of ℓ_b2a, predicted -η<g_b2a, g_step>
        "first_order": {"step": fo.step, "at": "init", "eta": fo.eta.tolist(),
                        "predicted": fo.predicted[:, 0].tolist(), "measured": fo.measured[:, 0].tolist()},
        "identity_error": identity_error,
        "probes": _probe_json(run.final),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{exp.kind.upper()}: cosine of the gradients of l_{source} and l_b2a "
          f"({exp.train.steps} steps in {run.seconds:.2f} s)")
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


def cmd_figures(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    from .figures import REGISTRY, save_all

    unknown = [n for n in (args.only or []) if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown figure {unknown[0]!r}; choose from {', '.join(REGISTRY)}")
    try:
        written = save_all(args.out, args.only)
    except OSError as err:
        raise UsageError(f"cannot write to {args.out}: {err.strerror or err}") from None
    for path in written:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m revlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train an ARM or an MDM on one-direction facts and probe it")
    _add_train_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("coupling", help="attention-score coupling: closed form vs Monte-Carlo, or --trained")
    _add_train_options(p)
    p.add_argument("--trained", action="store_true",
                   help="train a model and measure the correlation across facts and the stored evidence")
    p.add_argument("--offset", type=int, default=2, help="distance between the blank and b (closed form)")
    p.add_argument("--base", type=_finite_float, default=10_000.0, help="RoPE base (closed form)")
    p.add_argument("--samples", type=int, default=100_000, help="Monte-Carlo samples (closed form)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_coupling)

    p = sub.add_parser("bench", help="time revlib against a plain-PyTorch reference, ensembles and the compute floor")
    p.add_argument("--ensemble-k", type=int, default=8, help="seeds trained together in the ensemble timing")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) plain-PyTorch reference")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("figures", help="write the book's figures as PNG and SVG (for slides)")
    p.add_argument("--out", required=True, help="folder to write NAME.png and NAME.svg into")
    p.add_argument("--only", nargs="+", metavar="NAME", help="just these figures")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("align", help="gradient alignment of l_infill (ARM: l_a2b) and l_b2a, and the first-order test")
    _add_train_options(p)
    p.add_argument("--step", choices=["infill", "a2b", "objective"], default=None,
                   help="loss of the first-order step (default: infill for the MDM, a2b for the ARM)")
    p.add_argument("--eta", type=_finite_float, nargs="+", default=None, help="step sizes of the first-order test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_align)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError) as err:
        print(f"revlib: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("revlib: error: out of memory; try fewer pairs or a smaller d_model", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"revlib: training diverged: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("revlib: interrupted", file=sys.stderr)
        return 130
