"""The claim map: each claim of Shin et al.'s paper (by version), the chapter that tests it, the
book's claims (revlib.claims) it rests on, and the verdict, which holds only while those claims
hold on this build."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperClaim:
    claim: str  # what the paper says
    versions: str  # which versions say it
    chapter: str  # where the book tests it
    rests_on: tuple[str, ...]  # "chN.claim-name" of the book's claims
    verdict: str  # the book's verdict while every claim it rests on holds


CLAIM_MAP = (
    PaperClaim("ARMs trained on \"a is b\" fail \"b is ?\"; MDMs fail much less", "v1, v2, ICLR", "ch1",
               ("ch1.arm-no-b2a", "ch1.mdm-b2a-mean", "ch1.zhu-arm-no-b2a"),
               "holds: in the one-layer toy the ARM answers no reversed query and the MDM nearly all"),
    PaperClaim("the any-order objective alone does not train the reverse conditional", "v1, v2", "ch1, ch4",
               ("ch4.grid-zeros", "ch4.grid-mdm", "ch4.grid-suffix-learns"),
               "holds: the masked objective under a causal mask, and a bidirectional encoder trained only on the "
               "last entity, never answer b2a"),
    PaperClaim("forward and reverse attention scores are positively correlated (bound above 0.4 for "
               "isotropic queries and keys)", "ICLR, v1", "ch2",
               ("ch2.closed-form-bound", "ch2.monte-carlo", "ch2.init-mean"),
               "holds under its condition: in closed form for every even head size of at least 6, and on "
               "average over initialisations; single models scatter widely"),
    PaperClaim("training induces correlated forward and reverse routes", "v2", "ch2",
               ("ch2.mdm-routes-reach-b", "ch2.base-init-negative", "ch2.base-mdm-reverses"),
               "holds as \"both blanks come to attend to b\"; a correlation at initialisation is sufficient, not "
               "necessary (anti-correlated routes still reverse)"),
    PaperClaim("shared parameters store evidence \"b ⇒ a\" that reverse queries reuse", "v2", "ch2, ch4",
               ("ch2.mdm-stores", "ch2.arm-stores-nothing", "ch4.untied-collapses"),
               "holds: infill training writes the pair's evidence, and untying the value matrices per position "
               "removes the reversal"),
    PaperClaim("gradients of the forward and reverse losses are aligned", "v1, v2", "ch3",
               ("ch3.construction", "ch3.control-init", "ch3.survives-training", "ch3.trace-qk"),
               "holds per fact for the value path and all parameters, partly by construction; not for the "
               "attention scores (QK), and averaged-gradient cosines are not evidence"),
    PaperClaim("a positively aligned shared-storage gradient lowers the reverse loss to first order", "v2",
               "ch3, ch4", ("ch3.first-order-mdm-infill", "ch3.ov-mostly-positive", "ch4.projection-not-needed"),
               "holds to first order, for most facts; but it is not necessary: removing it from every value-side "
               "update leaves the reversal intact"),
    PaperClaim("the architecture interacting with training, not the objective alone, explains the mitigation",
               "ICLR, v2", "ch4", ("ch4.grid-zeros", "ch4.no-storage", "ch4.storage-mdm"),
               "holds: only a loss that makes a the target with b in view stores the reversal"),
    PaperClaim("MDMs mitigate the curse, they do not remove it (reverse below forward)", "v1, v2", "ch1, ch5",
               ("ch5.rope-below-infill", "ch5.names-break-2", "ch5.names-break-3"),
               "holds beyond the toy: one-token reversal is nearly complete in the toy, but multi-token names "
               "break it"),
    PaperClaim("(implicit) the MDM's reverse answer is knowledge of the converse", "—", "ch4",
               ("ch4.order-blind", "ch4.order-swap"),
               "contradicted in the toy: the MDM answers the false converse as readily as the true one"),
)


def verdicts(reports: dict) -> list[dict]:
    """One row per paper claim: the claim, the versions, the chapter, the verdict, and the book's
    claims behind it with whether each holds. ``reports`` maps a chapter to its revlib.claims.Report.
    A claim whose supports do not all hold gets "not supported by this build" and the failing names."""
    outcomes = {f"{ch}.{o.name}": o for ch, rep in reports.items() for o in rep.outcomes}
    rows = []
    for c in CLAIM_MAP:
        missing = [name for name in c.rests_on if name not in outcomes]
        failing = [name for name in c.rests_on if name in outcomes and not outcomes[name].holds]
        if missing or failing:
            verdict = f"not supported by this build ({', '.join(failing + missing)} did not hold)"
        else:
            verdict = c.verdict
        rows.append({"claim": c.claim, "versions": c.versions, "chapter": c.chapter, "verdict": verdict,
                     "rests_on": list(c.rests_on), "supported": not (missing or failing)})
    return rows
