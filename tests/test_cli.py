"""``python -m revlib``: bad input answers with exit status 2 and exactly one line on stderr, never a
traceback; good input prints a result, and ``--json`` prints strict JSON (no NaN, no Infinity).

Most cases run in-process through ``revlib.cli.main`` (a subprocess costs seconds of torch import
each); two run as real ``python -m revlib`` processes to check the process contract itself.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from revlib import cli as revlib_cli

from conftest import REPO_ROOT


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


S = ["--pairs", "16", "--steps", "5", "--d-model", "8"]  # a tiny, fast run

BAD = {  # name -> (arguments, a fragment of the one-line message)
    "offset_not_an_integer": (["coupling", "--offset", "1e30"], "--offset"),
    "offset_too_far": (["coupling", "--offset", "5000"], "--offset"),
    "seed_above_2^64": (["coupling", "--seed", "18446744073709551616"], "--seed"),
    "coupling_negative_seed": (["coupling", "--seed", "-1"], "--seed"),
    "train_negative_seed": (["train", "--seed", "-1"], "--seed"),
    "train_seed_above_2^32": (["train", "--seed", "4294967296"], "--seed"),
    "trained_two_pairs": (["coupling", "--trained", "--pairs", "2", "--steps", "5"], "at least 3 one-way facts"),
    "trained_all_reversed": (["coupling", "--trained", "--reversed-fraction", "1", "--pairs", "16", "--steps", "5"],
                             "reversed_fraction"),
    "layers_5000": (["train", "--layers", "5000", "--steps", "1"], "n_layers"),
    "too_large_to_train": (["train", "--layers", "64", "--d-model", "4096", "--steps", "1"], "GiB"),
    "ensemble_of_a_million": (["bench", "--ensemble-k", "1000000", "--no-reference"], "--ensemble-k"),
    "base_underflows": (["coupling", "--base", "1e-300", "--samples", "1000", "--json"], "--base"),
    "eta_overflows": (["align", "--eta", "1e300", *S, "--json"], "overflows"),
    "eta_negative": (["align", "--eta", "-1", *S], "--eta"),
    "samples_with_trained": (["coupling", "--trained", "--samples", "10"], "--samples"),
    "samples_too_many": (["coupling", "--positional", "absolute", "--samples", "100000000"], "GiB"),
    "rope_base_without_trained": (["coupling", "--rope-base", "5"], "--rope-base"),
    "d_model_zero": (["coupling", "--d-model", "0", "--samples", "100"], "--d-model 0"),
    "heads_zero": (["coupling", "--heads", "0", "--samples", "100"], "--heads 0"),
    "odd_head_for_rope": (["coupling", "--d-model", "9", "--samples", "100"], "even"),
    "abbreviation": (["train", "--pair", "3"], "--pair"),
    "ar_bidirectional": (["train", "--objective", "ar", "--attention", "bidirectional"], "causal"),
    "model_and_objective": (["train", "--model", "ar", "--objective", "mdm"], "--model"),
    "model_and_preset": (["train", "--model", "ar", "--preset", "gpt2_like"], "--preset"),
    "unknown_positional": (["train", "--positional", "sinusoidal"], "positional"),
    "unknown_objective": (["train", "--objective", "diffusion"], "objective"),
    "unknown_model": (["train", "--model", "gpt"], "--model"),
    "unknown_preset": (["train", "--preset", "tiny"], "--preset"),
    "unknown_step": (["align", "--step", "b2a"], "--step"),
    "ar_cannot_step_on_infill": (["align", "--model", "ar", "--step", "infill", *S], "--step"),
    "unknown_flag": (["train", "--frobnicate"], "--frobnicate"),
    "unknown_command": (["fly"], "fly"),
    "no_command": ([], "command"),
    "non_integer_pairs": (["train", "--pairs", "abc"], "--pairs"),
    "nan_lr": (["train", "--lr", "nan"], "--lr"),
    "huge_pairs": (["train", "--pairs", "99999999999999999999"], "n_pairs"),
    "bad_flag_value": (["train", "--bias", "maybe"], "--bias"),
    "sweep_without_an_axis": (["sweep"], "axis"),
    "sweep_bad_value": (["sweep", "--heads", "1,x"], "--heads"),
    "sweep_bad_cell": (["sweep", "--d-model", "7,8", "--seeds", "1", "--pairs", "16"], "sweep cell"),
    "sweep_zero_seeds": (["sweep", "--heads", "1", "--seeds", "0"], "--seeds"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line(cli, name):
    args, fragment = BAD[name]
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("revlib: error: "), err
    assert fragment in lines[0]
    assert "Traceback" not in err and out == ""


def test_divergence_exits_1_with_one_line(cli):
    code, out, err = cli("train", "--lr", "1000", "--layers", "4", "--steps", "30", "--pairs", "16", "--d-model", "8")
    assert code == 1
    assert len(err.strip().split("\n")) == 1 and "diverged" in err and "step" in err and "seeds [0]" in err


def test_train_json_is_strict_and_complete(cli):
    code, out, err = cli("train", "--model", "ar", *S, "--json")
    assert code == 0, err
    result = strict_json(out)
    assert (result["objective"], result["attention"]) == ("ar", "causal")
    assert result["pairs"] == 16 and result["d_model"] == 8 and result["steps"] == 5 and result["cached"] is False
    assert set(result["probes"]) == {"a2b", "infill", "b2a"} and result["probes"]["infill"] is None
    assert set(result["probes"]["a2b"]) == {"acc", "p_correct", "nll"}
    assert result["chance"] == pytest.approx(1 / 35)
    # a second identical call is served by the cache
    code, out, _ = cli("train", "--model", "ar", *S, "--json")
    assert strict_json(out)["cached"] is True


@pytest.mark.parametrize("args,objective,attention", [
    ([], "mdm", "bidirectional"), (["--objective", "suffix"], "suffix", "bidirectional"),
    (["--objective", "ar"], "ar", "causal"), (["--objective", "mdm", "--attention", "causal"], "mdm", "causal"),
    (["--preset", "llada_like", "--layers", "1"], "mdm", "bidirectional"),
])
def test_train_json_reports_objective_and_attention(cli, args, objective, attention):
    code, out, err = cli("train", *args, *S, "--json")
    assert code == 0, err
    result = strict_json(out)
    assert (result["objective"], result["attention"]) == (objective, attention)


def test_both_fraction_is_an_alias_of_reversed_fraction(cli):
    _, out1, _ = cli("train", "--both-fraction", "0.5", *S, "--json")
    _, out2, _ = cli("train", "--reversed-fraction", "0.5", *S, "--json")
    r1, r2 = strict_json(out1), strict_json(out2)
    assert r1["reversed_fraction"] == 0.5 and r2["cached"] is True  # the same experiment
    assert r1["probes"] == r2["probes"]


def test_zhu_style_world_with_an_inverse_relation_reports_a_swap_probe(cli):
    code, out, err = cli("train", "--vocab-size", "800", "--pairs", "200", "--reversed-fraction", "0.7",
                         "--relations", "inverse", "--steps", "5", "--json")
    assert code == 0, err
    result = strict_json(out)
    assert result["vocab_size"] == 800 and result["relations"] == "inverse"
    assert set(result["probes"]) == {"a2b", "infill", "b2a", "swap"}
    assert all(0 <= m["acc"] <= 1 for m in result["probes"].values())
    assert result["chance"] == pytest.approx(1 / 800)


def test_train_text_output(cli):
    code, out, err = cli("train", "--model", "ar", *S)
    assert code == 0 and err == ""
    assert "objective ar + causal attention" in out
    assert out.count("\n") == 5  # the summary, the header and three probes
    assert "infill" in out and "nothing precedes it" in out


def test_sweep_json_rows_have_mean_sd_min_max(cli):
    code, out, err = cli("sweep", "--heads", "1,2", "--seeds", "2", "--steps", "10", "--pairs", "16", "--d-model", "8",
                         "--json")
    assert code == 0, err
    result = strict_json(out)
    assert result["seeds"] == [0, 1] and result["axes"]["n_heads"] == [1, 2]
    rows = result["cells"]
    assert [r["values"]["n_heads"] for r in rows] == [1, 2]
    for r in rows:
        assert r["n_seeds"] == 2 and 0 <= r["failed"] <= 2
        for probe in ("a2b", "infill", "b2a"):
            for metric in ("acc", "nll"):
                stats = r["quantities"][probe][metric]
                assert set(stats) >= {"mean", "sd", "min", "max"}
                assert stats["min"] <= stats["mean"] <= stats["max"] and stats["sd"] >= 0


def test_sweep_text_output(cli):
    code, out, err = cli("sweep", "--positional", "rope,alibi", "--seeds", "2", *S)
    assert code == 0, err
    assert "positional=rope" in out and "positional=alibi" in out and "acc mean" in out


def test_coupling_closed_form_json(cli):
    code, out, err = cli("coupling", "--samples", "2000", "--d-model", "16", "--offset", "3", "--json")
    assert code == 0, err
    result = strict_json(out)
    from revlib.theory import rope_corr

    assert result["analytic"] == pytest.approx(rope_corr(16, 3))
    assert abs(result["monte_carlo"] - result["analytic"]) < 4 * result["stderr"]
    code, out, _ = cli("coupling", "--samples", "1000", "--positional", "alibi", "--heads", "2")
    assert code == 0 and "closed form  1.0000" in out


def test_coupling_absolute_json_succeeds_at_its_default_size(cli):
    """The default 100 000 samples with absolute positions need about 300 MB: allowed."""
    code, out, err = cli("coupling", "--positional", "absolute", "--json")
    assert code == 0, err
    result = strict_json(out)
    assert result["samples"] == 100_000 and result["d_head"] == 32
    assert abs(result["monte_carlo"] - result["analytic"]) < 4 * result["stderr"]


@pytest.mark.parametrize("extra", [[], ["--model", "ar"], ["--entity-tokens", "2"]])
def test_coupling_trained_json(cli, extra):
    code, out, err = cli("coupling", "--trained", *S, *extra, "--json")
    assert code == 0, err
    result = strict_json(out)
    assert result["routes"] == (["a2b", "b2a"] if extra[:2] == ["--model", "ar"] else ["infill", "b2a"])
    assert -1 <= result["corr_init"] <= 1 and -1 <= result["corr_final"] <= 1


@pytest.mark.parametrize("extra", [[], ["--model", "ar"], ["--step", "objective"], ["--eta", "0.01", "0.001"]])
def test_align_json(cli, extra):
    code, out, err = cli("align", *S, *extra, "--json")
    assert code == 0, err
    result = strict_json(out)
    assert set(result["cosine_init"]) >= {"embed", "qk", "ov", "unembed", "all"}
    fo = result["first_order"]
    assert fo["step"] == ("objective" if "objective" in extra else ("a2b" if "ar" in extra else "infill"))
    if "--eta" in extra:
        assert fo["eta"] == [0.001, 0.01]
    assert result["identity_error"] < 1e-6


def test_align_text_output_for_a_model_without_the_identity(cli):
    code, out, err = cli("align", *S, "--mlp", "gelu")
    assert code == 0, err
    assert "one gradient step" in out and "factorised OV" not in out


def test_emit_json_refuses_non_finite_values(capsys):
    with pytest.raises(revlib_cli.UsageError, match="probes.b2a.nll = inf"):
        revlib_cli.emit_json({"probes": {"b2a": {"nll": float("inf")}}})
    with pytest.raises(revlib_cli.UsageError, match=r"x\[1\]"):
        revlib_cli.emit_json({"x": [1.0, float("nan")]})
    revlib_cli.emit_json({"x": [1.0, 2]})
    assert strict_json(capsys.readouterr().out) == {"x": [1.0, 2]}


# ---------------------------------------------------------------------------------------------
# real processes
# ---------------------------------------------------------------------------------------------

def _revlib(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "revlib", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=timeout)


def test_a_real_process_refuses_bad_input_with_one_line(cli_env, tmp_path):
    env = {**cli_env, "REVLIB_CACHE": str(tmp_path / "cache")}
    result = _revlib(env, "train", "--pair", "3")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("revlib: error: ")
    assert "Traceback" not in result.stderr


def test_a_real_process_prints_strict_json(cli_env, tmp_path):
    env = {**cli_env, "REVLIB_CACHE": str(tmp_path / "cache")}
    result = _revlib(env, "train", "--model", "ar", *S, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1  # one JSON object on one line
    data = strict_json(result.stdout)
    assert data["objective"] == "ar" and data["attention"] == "causal"
    assert list((tmp_path / "cache").glob("run-*.pt"))  # and it was cached where REVLIB_CACHE says
