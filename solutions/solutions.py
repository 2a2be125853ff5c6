"""Solutions to the coding exercises of the book.

For teachers: withhold this folder from students.

Each function is what a student writes in the exercise cell of its chapter; the chapter's checker
(revlib.book.exercises.check_*) tests it on random inputs against revlib.
"""

import torch
import torch.nn.functional as F


def mdm_loss(logits, tokens, mask, t):
    """Exercise 1.1: the MDM objective, cross entropy of the masked tokens
    weighted 1/t, over all B·T slots."""
    # (B, T): every slot's loss
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    return (ce * mask / t[:, None]).sum() / tokens.numel()


def rope_corr(d, offset, base):
    """Exercise 2.1: Corr(S_infill, S_b2a) = (2/d) Σ_m cos(2Δθ_m),
    θ_m = base^(-2m/d)."""
    theta = base ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    return float(2 / d * torch.cos(2 * offset * theta).sum())


def ov_inner_product(U, p1, p2, answer, c1, c2):
    """Exercise 3.1: <g1 c1ᵀ, g2 c2ᵀ>_F with g = Uᵀ(p - e_answer): the
    residual factor times the mixture factor."""
    e = torch.zeros_like(p1)
    e[answer] = 1.0
    g1, g2 = U.T @ (p1 - e), U.T @ (p2 - e)
    return float((g1 @ g2) * (c1 @ c2))


def project_out(update, grad):
    """Exercise 4.1: the update without its component along grad (a zero
    grad removes nothing)."""
    norm = grad @ grad
    if norm == 0:
        return update.clone()
    return update - (update @ grad / norm) * grad


def b2a_query(tokenize, fact, mask_id):
    """Exercise 5.1: "object converse [M]..[M]", the answer being the
    subject's tokens."""
    b = tokenize(fact.object)
    conv = tokenize(
        fact.converse if fact.converse is not None else fact.relation
    )
    a = tokenize(fact.subject)
    ids = b + conv + [mask_id] * len(a)
    positions = list(range(len(b) + len(conv), len(ids)))
    return ids, positions, a
