"""The Performance appendix: the benchmark (revlib.bench), its table and figure."""
from __future__ import annotations

import json
from pathlib import Path

from ..bench import cached_benchmark
from . import plot
from ..bench import EXPLORER_MAX_STEPS as MAX_STEPS
from .registry import figure, table
from .tables import Table

TARGETS = {"step_over_floor": 2.5, "ensemble_over_floor": 2.0, "ensemble_per_seed_over_one": 1.0,
           "explorer_retrain_s": 1.5, "book_minutes": 3.0}
# Where `make book` and `make test` draw every figure first (python -m revlib figures), and so
# where that command's timings.json lies.
FIGURES = Path(__file__).resolve().parents[2] / "_build" / "figures"


def benchmark() -> dict:
    """The benchmark of this machine (measured once per version of revlib, then reused)."""
    return cached_benchmark()


def cold_book(folder: Path = FIGURES) -> dict | None:
    """The timings of the last ``python -m revlib figures`` into ``folder`` if it started from an
    empty results cache (so it trained every model of the book), else None."""
    try:
        t = json.loads((folder / "timings.json").read_text())
    except (OSError, ValueError):
        return None
    return t if t.get("cache_entries_before") == 0 and t.get("chapter_seconds") else None


def results() -> dict:
    """What the Performance page shows: this machine's benchmark and the cold book's timings."""
    return {"bench": benchmark(), "cold": cold_book()}


def perf_table(b: dict) -> Table:
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
            ["reference: steps to a2b ≥ 0.95", f"{b['reference_steps_to_target']}" if b["reference_steps_to_target"]
             else f"not in {b['reference_max_steps']:,}", f"seed 0; a2b {b['reference_final_a2b']:.2f} at the end"],
        ]
        if "speedup" in b:
            at_least = "≥ " if b["speedup_is_lower_bound"] else ""
            rows.append(["time to target, reference / revlib", f"{at_least}{b['speedup']:.0f}x",
                         f"= {at_least}{b['recipe_gain']:.0f}x fewer steps × {b['step_gain']:.1f}x cheaper steps"])
    side = "side by side" if b.get("explorer_workers", 1) > 1 else "in turn"
    rows.append([f"slowest explorer retrain (ARM + MDM, {side})", f"{b['explorer_retrain_s']:.1f} s",
                 f"d_model 64, 300 steps (target ≤ {TARGETS['explorer_retrain_s']} s)"])
    if "explorer_slowest_alone_s" in b:
        rows.append(["  the slower of the two alone; both in turn", f"{b['explorer_slowest_alone_s']:.1f} s",
                     f"{b['explorer_sequential_s']:.1f} s in turn"])
    book = cold_book()
    if book is not None:
        rows.append([f"every model of the book, empty cache ({book['jobs']} processes)",
                     f"{book['wall_seconds'] / 60:.1f} min", f"python -m revlib figures (target ≤ {TARGETS['book_minutes']:.0f} min)"])
    return Table(["measurement", "value", "note"], rows, caption=b["machine"] + "; thread CPU time, medians", data=b)


def perf_figure(b: dict):
    """Per configuration: the step, its floor (dense products and vocabulary softmax) and the fused
    attention kernel, in milliseconds per seed."""
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


def verdict(value: float, target: float) -> str:
    """"met", or by how much a measurement misses its target."""
    return "met" if value <= target else f"missed by {value / target - 1:.0%}"


def reference_texts(b: dict) -> dict[str, str]:
    """``speedup_text`` and ``recipe_text``: the comparison with the reference, in words, saying
    so when the reference never reached the target and the numbers are lower bounds."""
    if not b["speedup_is_lower_bound"]:
        return {"speedup_text": f"{b['speedup']:.0f} times faster",
                "recipe_text": f"{b['recipe_gain']:.0f} times fewer steps"}
    return {"speedup_text": (f"at least {b['speedup']:.0f} times faster: the reference (seed 0) had not reached "
                             f"the target after {b['reference_max_steps']:,} steps (its a2b accuracy was "
                             f"{b['reference_final_a2b']:.2f} when it stopped), so its time to target is longer "
                             "than the one counted here"),
            "recipe_text": f"at least {b['recipe_gain']:.0f} times fewer steps"}


def explorer_story(b: dict) -> str:
    """What bounds the explorer's retrain, in words, from the benchmark ``b``."""
    mdm_floor_s = b["explorer_mdm_floor_ms"] * MAX_STEPS / 1e3
    mdm = (f"the slower of the two, the MDM at d_model 64, takes {b['explorer_slowest_alone_s']:.1f} s alone; "
           f"its steps cost {b['explorer_mdm_step_ms']:.1f} ms each, {b['explorer_mdm_step_ms'] / b['explorer_mdm_floor_ms']:.1f} "
           f"times their floor, and {MAX_STEPS} of them at the floor alone would take {mdm_floor_s:.1f} s on this machine")
    if b.get("explorer_workers", 1) > 1:
        return (f"the two train side by side, one thread each, where in turn they took {b['explorer_sequential_s']:.1f} s; "
                + mdm)
    return "this machine has one core, so the two train in turn; " + mdm


def book_story(t: dict | None) -> str:
    """The cold book's time and where it goes, in words, from :func:`cold_book`'s timings ``t``."""
    if t is None:
        return ("not measured on this machine yet. `make book` and `make test` measure it when they first "
                "draw every figure (`python -m revlib figures --out _build/figures --jobs 2`) from an empty "
                "results cache, and this line then gives it")
    minutes = t["wall_seconds"] / 60
    chapters = ", ".join(f"{name} {sec:.0f} s" for name, sec in t["chapter_seconds"].items())
    slowest = max(t["chapter_seconds"], key=t["chapter_seconds"].get)
    return (f"{verdict(minutes, TARGETS['book_minutes'])}. The last `python -m revlib figures` here, in "
            f"{t['jobs']} processes, trained every model of the book in {minutes:.1f} minutes (per chapter, "
            f"training included: {chapters}); the notebooks then execute from the filled cache. The bound is "
            f"the book's volume, not its step: the sweeps train eight seeds of every setting, one chapter runs "
            f"in one process, and the slowest ({slowest}) alone takes "
            f"{t['chapter_seconds'][slowest] / 60:.1f} minutes")


@table("perf", "perf")
def _perf_table(r: dict) -> Table:
    return perf_table(r["bench"])


@figure("perf-step", "perf")
def _perf_figure(r: dict):
    return perf_figure(r["bench"])


from .nb import caption  # noqa: E402

caption("fig-performance",
        "Milliseconds per seed for one training step (green), its floor (dense products and vocabulary softmax, "
        "dark grey) and the fused attention kernel (light grey), for one seed, eight seeds together and the "
        "two-layer llada_like block.",
        "Horizontal bars comparing each step's time with its floor for three configurations.")


def cold_table(folder: Path = FIGURES) -> Table:
    """Each chapter's wall time when every model of the book was last trained here from an empty
    results cache (``python -m revlib figures``), or a row saying it was not measured yet."""
    t = cold_book(folder)
    if t is None:
        return Table(["chapter", "cold time"], [["not measured on this machine yet",
                                                  "run python -m revlib figures --out _build/figures from an empty cache"]],
                     caption="no cold timing found in _build/figures/timings.json")
    names = {"ch1": "1. The reversal curse", "ch2": "2. Weight-sharing coupling", "ch3": "3. Gradient alignment",
             "ch4": "4. Objective or architecture?", "ch5": "5. Beyond one layer", "perf": "Performance (benchmark)"}
    rows = [[names.get(ch, ch), f"{sec:.0f} s ({sec / 60:.1f} min)"] for ch, sec in sorted(t["chapter_seconds"].items())]
    rows.append([f"every figure, {t['jobs']} processes in parallel", f"{t['wall_seconds'] / 60:.1f} min"])
    return Table(["chapter", "cold time (training included)"], rows,
                 caption=f"one torch thread per process, {t.get('cores', '?')} cores; "
                         "the notebooks then execute from the filled cache")
