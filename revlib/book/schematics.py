"""Pictures of the mechanism, drawn by code in the book's style (no data): what each model sees
when trained on "a is b" (chapter 1), the two queries sharing their weights (chapter 2), the two
gradients and the factors they share (chapter 3), and which objective x attention cells can store
the reversal (chapter 4)."""
from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from . import plot
from .nb import caption

INK, FAINT, TARGET, CONTEXT, HIDDEN = "0.15", "0.6", "#fdd0a2", "#c7e9c0", "0.92"


def _token(ax, x, y, text, fill="white", edge=INK, w=0.9, h=0.62, size=12, weight="normal", ls="-"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=fill, edgecolor=edge, lw=1.3, ls=ls))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, color=INK, weight=weight)


def _arrow(ax, start, end, color=INK, rad=0.0, lw=1.4, style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}", arrowstyle=style, mutation_scale=12,
                                 color=color, lw=lw, ls=ls, shrinkA=4, shrinkB=4))


def _canvas(width: float, height: float, figheight: float):
    fig, axes = plot.figure(1, height=figheight)
    ax = axes[0, 0]
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _sentence(ax, x0, y, tokens, roles, step=1.0):
    """Tokens left to right; ``roles`` per token: "target" (predicted), "context" (seen), "hidden"
    (not seen by the prediction) or "plain"."""
    fill = {"target": TARGET, "context": CONTEXT, "hidden": HIDDEN, "plain": "white"}
    for i, (tok, role) in enumerate(zip(tokens, roles)):
        _token(ax, x0 + i * step, y, tok, fill=fill[role], edge=FAINT if role == "hidden" else INK,
               ls="--" if role == "hidden" else "-")


def training_views():
    """Chapter 1: what the ARM and the MDM train on from the sentence "a is b", and the reversal query."""
    fig, ax = _canvas(15.6, 7.0, 3.4)
    ax.text(0.3, 6.6, "ARM: predicts each token from the ones before it", fontsize=10.5, weight="bold", color=plot.COLORS["ar"])
    ax.text(0.3, 3.4, "MDM: fills blanks anywhere, seeing both sides", fontsize=10.5, weight="bold", color=plot.COLORS["mdm"])
    for j, (roles, label) in enumerate(((("context", "target", "hidden"), "trains a → is"),
                                        (("context", "context", "target"), "trains a is → b"))):
        x0 = 0.9 + 3.9 * j
        _sentence(ax, x0, 5.35, ("a", "is", "b"), roles)
        ax.text(x0 + 1.0, 4.5, label, ha="center", fontsize=9, color=INK)
    ax.text(8.1, 5.35, "b is never context\nfor a prediction", fontsize=9.5, color=INK, va="center")
    for j, (tokens, roles, label) in enumerate(((("[M]", "is", "b"), ("target", "context", "context"), "infill: a the target, b in view"),
                                                (("a", "is", "[M]"), ("context", "context", "target"), "a2b"),
                                                (("[M]", "is", "[M]"), ("target", "context", "target"), "both blanks"))):
        x0 = 0.9 + 3.9 * j
        _sentence(ax, x0, 2.15, tokens, roles)
        ax.text(x0 + 1.0, 1.3, label, ha="center", fontsize=9, color=INK)
    ax.plot([12.15, 12.15], [0.9, 6.4], color=FAINT, lw=0.8)
    ax.text(13.9, 6.55, "asked after training", ha="center", fontsize=9.5, weight="bold", color=INK)
    _sentence(ax, 12.9, 5.35, ("b", "is"), ("context", "context"))
    ax.text(14.8, 5.35, "→ ?", va="center", fontsize=10)
    ax.text(13.9, 4.5, "ARM: the next token; a?", ha="center", fontsize=9)
    _sentence(ax, 12.9, 2.15, ("b", "is", "[M]"), ("context", "context", "target"))
    ax.text(13.9, 1.3, "b2a: the blank is a?", ha="center", fontsize=9)
    for x, text in ((4.4, "target"), (6.9, "context"), (9.4, "not seen")):
        _token(ax, x - 0.5, 0.35, "", fill={"target": TARGET, "context": CONTEXT, "not seen": HIDDEN}[text],
               w=0.45, h=0.35, ls="--" if text == "not seen" else "-")
        ax.text(x - 0.15, 0.35, text, va="center", fontsize=8.5)
    return fig


def shared_routes():
    """Chapter 2: the two masked queries share W_Q, W_K (their routes differ only by the rotation)
    and W = W_O W_V (one stored number, u_a W E[b], read by both)."""
    fig, ax = _canvas(15.6, 7.6, 3.7)
    for x0, tokens, blank, b, title, rot in ((1.2, ("[M]", "is", "b"), 0, 2, "infill (trained): \"[M] is b\" → a", "+2"),
                                             (9.6, ("b", "is", "[M]"), 2, 0, "b2a (never trained): \"b is [M]\" → a", "-2")):
        ax.text(x0 + 1.4, 7.25, title, fontsize=10, weight="bold", color=INK, ha="center")
        for i, tok in enumerate(tokens):
            fill = TARGET if i == blank else CONTEXT if i == b else "white"
            _token(ax, x0 + 1.4 * i, 5.1, tok, fill=fill)
        _arrow(ax, (x0 + 1.4 * blank, 5.45), (x0 + 1.4 * b, 5.45), color=plot.COLORS["mdm"],
               rad=-0.5 if blank < b else 0.5, lw=2)
        ax.text(x0 + 1.4, 6.45, rf"route: $q \cdot R_{{{rot}}}\, k$", ha="center", fontsize=9.5, color=plot.COLORS["mdm"])
        ax.text(x0 + 1.4 * blank, 4.35, r"$q = W_Q\,E[\mathrm{M}]$", ha="center", fontsize=9)
        ax.text(x0 + 1.4 * b, 4.35, r"$k = W_K\,E[b]$", ha="center", fontsize=9)
    ax.add_patch(FancyBboxPatch((5.7, 2.75), 4.2, 1.15, boxstyle="round,pad=0.05", facecolor="white", edgecolor=INK, lw=1.2))
    ax.text(7.8, 3.55, r"shared: $W_Q$, $W_K$", ha="center", fontsize=10, weight="bold")
    ax.text(7.8, 3.05, "the same q and k; only R differs", ha="center", fontsize=8.5)
    ax.add_patch(FancyBboxPatch((3.4, 0.35), 8.8, 1.55, boxstyle="round,pad=0.05", facecolor=CONTEXT, edgecolor=INK, lw=1.2))
    ax.text(7.8, 1.45, r"stored evidence $u_a^\top W E[b]$, with $W = W_O W_V$", ha="center", fontsize=10, weight="bold")
    ax.text(7.8, 0.8, "one number per fact: infill training writes it, b2a reads it", ha="center", fontsize=8.5)
    _arrow(ax, (4.0, 4.0), (5.7, 3.4), color=FAINT, rad=-0.1)
    _arrow(ax, (11.6, 4.0), (9.9, 3.4), color=FAINT, rad=0.1)
    _arrow(ax, (3.2, 4.6), (4.6, 1.95), color=plot.COLORS["mdm"], rad=0.15)
    _arrow(ax, (12.4, 4.6), (11.0, 1.95), color=plot.COLORS["mdm"], rad=-0.15)
    return fig


def shared_factors():
    """Chapter 3: the OV gradients of the two losses are outer products g cᵀ; their inner product is
    the residual factor (same answer a) times the mixture factor (same bag of embeddings)."""
    fig, ax = _canvas(15.6, 6.2, 3.1)
    for x0, name, c in ((0.6, "infill", "infill"), (8.4, "b2a", "b2a")):
        ax.text(x0, 5.6, rf"$\nabla_W \ell_\mathrm{{{name}}} = g_\mathrm{{{name}}}\; c_\mathrm{{{c}}}^\top$",
                fontsize=12, color=INK)
        ax.add_patch(FancyBboxPatch((x0, 2.5), 0.55, 2.2, boxstyle="round,pad=0.02", facecolor=TARGET, edgecolor=INK))
        ax.text(x0 + 0.27, 3.6, "g", ha="center", va="center", fontsize=11)
        ax.add_patch(FancyBboxPatch((x0 + 0.9, 4.25), 3.2, 0.45, boxstyle="round,pad=0.02", facecolor=CONTEXT, edgecolor=INK))
        ax.text(x0 + 2.5, 4.47, r"$c^\top$", ha="center", va="center", fontsize=10)
        ax.text(x0 + 0.95, 3.55, r"$g = U^\top (p - e_a)$: what the loss wants", fontsize=8.8, va="center")
        ax.text(x0 + 0.95, 3.1, "the stream to do: raise the answer a", fontsize=8.8, va="center")
        ax.text(x0 + 0.95, 2.6, r"$c = \sum_j \alpha_j E[x_j]$: the attended mixture", fontsize=8.8, va="center")
    ax.text(7.8, 1.55, r"$\langle \nabla_W \ell_\mathrm{infill}, \nabla_W \ell_\mathrm{b2a} \rangle = "
            r"(g_\mathrm{infill} \cdot g_\mathrm{b2a}) \times (c_\mathrm{infill} \cdot c_\mathrm{b2a})$",
            ha="center", fontsize=12)
    ax.text(5.1, 0.45, "residual factor: both losses\nraise the same answer a", ha="center", fontsize=9)
    ax.text(11.2, 0.45, "mixture factor: mixtures of the same\nthree embeddings [M], is, b", ha="center", fontsize=9)
    return fig


def storage_cells():
    """Chapter 4: the objective x attention grid; a cell can store "b ⇒ a" only if its loss makes a a
    target while b is in view."""
    fig, ax = _canvas(14.4, 4.6, 2.4)
    objectives = ("ar", "suffix", "prefix", "mdm")
    why = {("ar", "causal"): "a is never\na target", ("ar", "bidirectional"): "refused: sees\nits own target",
           ("suffix", "causal"): "only b is\never masked", ("suffix", "bidirectional"): "only b is\never masked",
           ("prefix", "causal"): "a's blank sees\nonly itself", ("prefix", "bidirectional"): "stores b ⇒ a",
           ("mdm", "causal"): "a's blank sees\nonly itself", ("mdm", "bidirectional"): "stores b ⇒ a"}
    for i, attention in enumerate(("causal", "bidirectional")):
        y = 2.9 - 1.45 * i
        ax.text(2.2, y, attention, ha="right", va="center", fontsize=10, weight="bold")
        for j, objective in enumerate(objectives):
            ok = why[objective, attention] == "stores b ⇒ a"
            x = 2.5 + 2.9 * j
            ax.add_patch(FancyBboxPatch((x, y - 0.55), 2.7, 1.1, boxstyle="round,pad=0.02",
                                        facecolor=CONTEXT if ok else "white", edgecolor=INK if ok else FAINT, lw=1.2))
            ax.text(x + 1.35, y, why[objective, attention], ha="center", va="center", fontsize=8.5, color=INK)
    for j, objective in enumerate(objectives):
        ax.text(2.5 + 2.9 * j + 1.35, 4.15, objective, ha="center", fontsize=10, weight="bold")
    return fig


caption("fig-curse-schematic",
        "What each model trains on from the sentence \"a is b\" (shaded: the target; green: what the prediction "
        "sees; dashed: not seen). The ARM never has b in the context of a prediction. The MDM's `infill` view "
        "makes a the target with b in view; the reversal query `b2a` (right) puts b first and asks for the last "
        "slot, a view that neither model trained on.",
        "A diagram: the ARM's two training predictions from 'a is b' never show b as context; the MDM's masked "
        "views include '[M] is b' with a as the target; the reversal query 'b is [M]' is not among either "
        "model's training views.")
caption("fig-coupling-schematic",
        "The two masked queries of one fact share everything but the rotation: the blank's query q and b's key "
        "k come from the same W_Q, W_K, and the stored evidence u_aᵀ W E[b] is one number that both read, each "
        "in proportion to its attention on b.",
        "A diagram of the infill query '[M] is b' and the b2a query 'b is [M]': each blank attends to b through "
        "the shared W_Q and W_K with rotations +2 and −2, and both read the same stored evidence u_a W E[b].")
caption("fig-align-schematic",
        "The OV gradients of the two losses are outer products g cᵀ, so their inner product factorises into the "
        "residual factor (both push the same answer a) and the mixture factor (two mixtures of the same three "
        "embeddings).",
        "A diagram: each OV gradient is a column g times a row c transposed; the inner product of the two "
        "gradients is the product of g_infill·g_b2a and c_infill·c_b2a.")
caption("fig-controls-schematic",
        "Which objective × attention cell can write the \"b ⇒ a\" evidence: only a loss that makes a the target "
        "while b is in view (green). The grid below tests this prediction.",
        "A two-by-four grid of objectives (ar, suffix, prefix, mdm) and attention masks (causal, bidirectional); "
        "only prefix and mdm with bidirectional attention are marked as able to store b implies a.")
