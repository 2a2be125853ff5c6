"""``python -m revlib``: bad input gives one line on stderr and exit status 2; a good run prints JSON.

Importing torch costs about 3.5 CPU seconds per process, and a 2-core runner gives the suite
about one core, so a subprocess per case would take over a minute. Instead:

* two cases run as real ``python -m revlib`` processes (the process contract itself:
  exit status, stderr, no traceback), and
* the whole matrix of bad inputs runs in *one* subprocess that executes ``revlib.__main__``
  once per case with :func:`runpy.run_module` (what ``-m`` does), capturing stdout/stderr and
  the exit status, and printing any escaping exception as the interpreter would (a
  traceback, status 1). A test checks that this driver agrees with real processes.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BAD = {  # name -> arguments after ``python -m revlib``
    "odd_d_model_with_rope": ["train", "--d-model", "31"],
    "heads_do_not_divide": ["train", "--heads", "3", "--d-model", "32"],
    "zero_pairs": ["train", "--pairs", "0"],
    "negative_steps": ["train", "--steps", "-1"],
    "nan_lr": ["train", "--lr", "nan"],
    "inf_lr": ["train", "--lr", "inf"],
    "huge_lr": ["train", "--lr", "1e38"],
    "zero_lr": ["train", "--lr", "0"],
    "both_fraction_above_one": ["train", "--both-fraction", "1.5"],
    "vocabulary_too_large": ["train", "--pairs", "100000000"],
    "unknown_positional": ["train", "--positional", "sinusoidal"],
    "unknown_model": ["train", "--model", "gpt"],
    "unknown_flag": ["train", "--frobnicate"],
    "non_integer_pairs": ["train", "--pairs", "abc"],
    "zero_layers": ["train", "--layers", "0"],
    "unknown_command": ["fly"],
    "seed_too_large": ["train", "--seed", "18446744073709551615"],
    "negative_seed": ["train", "--seed", "-1"],
}
GOOD = {
    "ar": ["train", "--model", "ar", "--pairs", "16", "--steps", "30", "--json"],  # a real process
    "mdm": ["train", "--model", "mdm", "--pairs", "16", "--steps", "20", "--positional", "alibi",
            "--seed", "3", "--d-model", "16", "--json"],  # in the driver
}
REAL = {  # run as genuine ``python -m revlib`` processes
    "bad:unknown_flag": BAD["unknown_flag"],
    "good:ar": GOOD["ar"],
}
TIMEOUT_S = 300

DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
cases = json.load(sys.stdin)
results = {}
for name, args in cases.items():
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["-m", *args]  # run_module sets argv[0] to the module's path
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("revlib", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # what the interpreter does with sys.exit(code)
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # an escaping exception: a traceback and status 1
            traceback.print_exc()
            code = 1
    results[name] = {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
sys.stdout.write(json.dumps(results))
"""


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "revlib", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def real(cli_env) -> dict[str, subprocess.CompletedProcess]:
    return {name: _run(args, cli_env) for name, args in REAL.items()}


@pytest.fixture(scope="module")
def results(cli_env) -> dict[str, subprocess.CompletedProcess]:
    """Every case of BAD, and the good MDM run, run by the driver in one subprocess."""
    cases = {**{f"bad:{k}": v for k, v in BAD.items()}, "good:mdm": GOOD["mdm"]}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER], input=json.dumps(cases),
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    raw = json.loads(proc.stdout)
    return {
        name: subprocess.CompletedProcess(cases[name], r["returncode"], r["stdout"], r["stderr"])
        for name, r in raw.items()
    }


def _check_one_line_status_2(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].strip(), "the error line is empty"
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""  # nothing half-printed


def test_real_process_bad_input_is_one_line_and_status_2(real):
    _check_one_line_status_2(real["bad:unknown_flag"])


@pytest.mark.parametrize("case", sorted(k for k in REAL if k.startswith("bad:")))
def test_driver_agrees_with_real_processes(real, results, case):
    assert results[case].returncode == real[case].returncode
    assert results[case].stderr == real[case].stderr
    assert results[case].stdout == real[case].stdout


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_status_2(results, case):
    _check_one_line_status_2(results[f"bad:{case}"])


@pytest.mark.parametrize(
    "case,words",
    [
        ("odd_d_model_with_rope", ["even"]),
        ("heads_do_not_divide", ["divide"]),
        ("nan_lr", ["lr"]),
        ("both_fraction_above_one", ["both"]),
        ("vocabulary_too_large", ["vocabulary"]),
        ("unknown_positional", ["sinusoidal"]),
        ("unknown_model", ["gpt"]),
        ("unknown_flag", ["--frobnicate"]),
        ("non_integer_pairs", ["pairs", "abc"]),
    ],
)
def test_error_line_says_what_is_wrong(results, case, words):
    line = results[f"bad:{case}"].stderr.strip()
    for word in words:
        assert word in line, line


def _good(results, name: str) -> dict:
    proc = results[f"good:{name}"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # one JSON object, nothing else on stdout
    return json.loads(lines[0])


REQUIRED = {"model", "positional", "pairs", "steps", "seed", "seconds", "final_loss", "chance", "probes"}


def _check_probe(value) -> None:
    assert set(value) >= {"acc", "p_correct"}
    assert 0.0 <= value["acc"] <= 1.0 and 0.0 <= value["p_correct"] <= 1.0


def test_good_ar_run_prints_one_json_object(real):
    out = _good(real, "ar")
    assert REQUIRED <= set(out)
    assert out["model"] == "ar" and out["pairs"] == 16 and out["steps"] == 30
    assert out["positional"] in ("rope", "absolute", "alibi", "none")
    assert isinstance(out["seed"], int) and out["seconds"] >= 0
    assert out["chance"] == pytest.approx(1 / (3 + 2 * 16))
    assert set(out["probes"]) == {"a2b", "infill", "b2a"}
    assert out["probes"]["infill"] is None  # an ARM cannot fill a blank before its context
    _check_probe(out["probes"]["a2b"])
    _check_probe(out["probes"]["b2a"])
    # it really trained: the loss is finite and below the uniform model's log V
    assert math.isfinite(out["final_loss"]) and 0 < out["final_loss"] < math.log(35)


def test_good_mdm_run_passes_its_options_through(results):
    out = _good(results, "mdm")
    assert REQUIRED <= set(out)
    assert out["model"] == "mdm" and out["positional"] == "alibi" and out["seed"] == 3
    assert out["pairs"] == 16 and out["steps"] == 20
    for name in ("a2b", "infill", "b2a"):
        _check_probe(out["probes"][name])
    assert math.isfinite(out["final_loss"]) and out["final_loss"] > 0
