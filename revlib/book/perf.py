"""The Performance appendix: the benchmark (revlib.bench), its table and figure."""
from __future__ import annotations

from ..bench import cached_benchmark
from . import plot
from .registry import figure, table
from .tables import Table

TARGETS = {"step_over_floor": 2.5, "ensemble_over_floor": 2.0, "ensemble_per_seed_over_one": 1.0,
           "explorer_retrain_s": 1.5}


def benchmark() -> dict:
    """The benchmark of this machine (measured once per version of revlib, then reused)."""
    return cached_benchmark()


@table("perf")
def perf_table(b: dict | None = None) -> Table:
    b = b or benchmark()
    rows = [
        ["one step, default MDM, 1 seed", f"{b['step_ms']:.2f} ms", f"floor {b['floor_ms']:.2f} ms: "
         f"{b['step_over_floor']:.2f}x (target ≤ {TARGETS['step_over_floor']})"],
        ["  of which the fused attention kernel", f"{b['attention_ms']:.2f} ms", "not part of the floor"],
        [f"one step, {b['ensemble_k']} seeds together", f"{b['ensemble_step_ms']:.2f} ms",
         f"floor {b['ensemble_floor_ms']:.2f} ms: {b['ensemble_over_floor']:.2f}x (target ≤ {TARGETS['ensemble_over_floor']})"],
        ["  per seed, against one seed alone", f"{b['ensemble_per_seed_over_one']:.2f}x", "target ≤ 1"],
        ["one step, llada_like (2 layers)", f"{b['llada_step_ms']:.2f} ms",
         f"floor {b['llada_floor_ms']:.2f} ms: {b['llada_over_floor']:.2f}x"],
        ["steps to a2b ≥ 0.95", f"{b['steps_to_target']}", "revlib's recipe (full batch, scaled Adam)"],
    ]
    if "reference_step_ms" in b:
        rows += [
            ["reference: one step (1 thread)", f"{b['reference_step_ms']:.2f} ms", "plain PyTorch, batches of 32"],
            ["reference: steps to a2b ≥ 0.95", f"{b['reference_steps_to_target']}", ""],
        ]
        if "speedup" in b:
            rows.append(["time to target, reference / revlib", f"{b['speedup']:.0f}x",
                         f"= {b['recipe_gain']:.0f}x fewer steps × {b['step_gain']:.1f}x cheaper steps"])
    rows.append(["slowest explorer retrain (ARM + MDM)", f"{b['explorer_retrain_s']:.1f} s",
                 f"d_model 64, 300 steps (target ≤ {TARGETS['explorer_retrain_s']} s)"])
    return Table(["measurement", "value", "note"], rows, caption=b["machine"] + "; thread CPU time, medians", data=b)


@figure("perf-step")
def perf_figure(b: dict | None = None):
    """Per configuration: the step, its floor (dense products and vocabulary softmax) and the fused
    attention kernel, in milliseconds per seed."""
    b = b or benchmark()
    k = b["ensemble_k"]
    groups = [("1 seed", b["step_ms"], b["floor_ms"], b["attention_ms"]),
              (f"{k} seeds, per seed", b["ensemble_step_ms"] / k, b["ensemble_floor_ms"] / k, b["ensemble_attention_ms"] / k),
              ("llada_like, 1 seed", b["llada_step_ms"], b["llada_floor_ms"], None)]
    fig, axes = plot.figure(1, height=2.6)
    ax = axes[0, 0]
    for i, (label, step, floor, attn) in enumerate(groups):
        ax.barh(i + 0.25, step, 0.25, color=plot.COLORS["mdm"], label="step" if i == 0 else None)
        ax.barh(i, floor, 0.25, color="0.55", label="floor" if i == 0 else None)
        if attn is not None:
            ax.barh(i - 0.25, attn, 0.25, color="0.8", label="attention kernel" if i == 0 else None)
        ax.text(step * 1.02, i + 0.25, f"{step:.2f}", va="center", fontsize=8)
    ax.set_yticks(range(len(groups)), [g[0] for g in groups])
    ax.set_xlabel("milliseconds per seed (thread CPU time)")
    ax.legend(loc="lower right", fontsize=8)
    return fig
