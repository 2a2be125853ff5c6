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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m revlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train an ARM or an MDM on one-direction facts and probe it")
    _add_train_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train)
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
