"""The book's probes for any masked language model: facts as text, one pass per query.

A masked LM here is anything that maps token ids (B, T) to logits (B, T, V) and has a mask
id: revlib's own models (:func:`revlib_lm`), a Hugging Face masked LM (:func:`hf_lm`, the
optional extra ``pip install revlib[hf]``), or LLaDA-8B and Dream-7B, which load the same way
with ``trust_remote_code=True`` (chapter 5 shows the code; the book does not run it).

A :class:`TextFact` is "subject relation object", with an optional converse relation (the
inverse: "parent of" / "child of"; by default the relation itself). For each fact:

==========  ===================================  ===========
probe       query                                answer
==========  ===================================  ===========
``a2b``     subject relation [M]..[M]            object
``infill``  [M]..[M] relation object             subject
``b2a``     object converse [M]..[M]             subject
==========  ===================================  ===========

with as many ``[M]`` as the answer has tokens. Scores are the one-pass scores of
revlib.measure: ``acc`` (every answer token is the argmax), ``p_correct`` (the product of the
slot probabilities, a pseudo-likelihood) and ``nll`` (its negative log), averaged over facts.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

PROBES = ("a2b", "infill", "b2a")


@dataclass(frozen=True)
class TextFact:
    subject: str
    relation: str
    object: str
    converse: str | None = None


@dataclass(frozen=True)
class MaskedLM:
    """``logits(ids (B, T)) -> (B, T, V)``, ``tokenize(text) -> list[int]`` (no special
    tokens), the mask id, and token ids to put before and after every query."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    tokenize: Callable[[str], list[int]]
    mask_id: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()


def queries(lm: MaskedLM, fact: TextFact) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """Per probe: (ids, answer positions, answer ids) of the query for one fact."""
    a, r, b = lm.tokenize(fact.subject), lm.tokenize(fact.relation), lm.tokenize(fact.object)
    conv = lm.tokenize(fact.converse) if fact.converse is not None else r
    if not a or not r or not b or not conv:
        raise ValueError(f"every part of the fact must tokenize to at least one token: {fact}")
    pre, post, M = list(lm.prefix), list(lm.suffix), lm.mask_id
    spec = {"a2b": (a + r, [M] * len(b), b), "infill": ([M] * len(a), r + b, a), "b2a": (b + conv, [M] * len(a), a)}
    out = {}
    for name, (left, right, answer) in spec.items():
        if name == "infill":
            ids = pre + left + right + post
            slots = list(range(len(pre), len(pre) + len(a)))
        else:
            ids = pre + left + right + post
            slots = list(range(len(pre) + len(left), len(pre) + len(left) + len(answer)))
        out[name] = (ids, slots, answer)
    return out


@torch.no_grad()
def score(lm: MaskedLM, facts: Sequence[TextFact], probes=PROBES, batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Per probe: {"acc", "p_correct", "nll"} averaged over ``facts`` (queries of equal length
    are batched; nothing is padded, so any model works without an attention mask)."""
    if not facts:
        raise ValueError("score needs at least one fact")
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; expected some of {PROBES}")
    out = {}
    for name in probes:
        qs = [queries(lm, f)[name] for f in facts]
        logp_entity = np.empty(len(qs))
        hit = np.empty(len(qs), dtype=bool)
        by_shape: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for i, (ids, slots, _) in enumerate(qs):
            by_shape.setdefault((len(ids), tuple(slots)), []).append(i)
        for (_, slots), idx in by_shape.items():
            for lo in range(0, len(idx), batch_size):
                chunk = idx[lo:lo + batch_size]
                ids = torch.tensor([qs[i][0] for i in chunk])
                answers = torch.tensor([qs[i][2] for i in chunk])  # (b, k)
                logits = lm.logits(ids)[:, list(slots)].float()  # (b, k, V)
                logp = logits.log_softmax(-1).gather(-1, answers[..., None])[..., 0]  # (b, k)
                logp_entity[chunk] = logp.sum(-1).double().numpy()
                hit[chunk] = (logits.argmax(-1) == answers).all(-1).numpy()
        out[name] = {"acc": float(hit.mean()), "p_correct": float(np.exp(logp_entity).mean()),
                     "nll": float(-logp_entity.mean())}
    return out


# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------

def facts_from_world(world) -> list[TextFact]:
    """The one-way facts of a revlib world as text ("a3 is b17"), in the direction they were trained."""
    x, r, y = world._trained
    out = []
    for i in world.one_way.tolist():
        rel = world.token_name(int(r[i]))
        conv = world.token_name(int(world.converse_relation(r[i:i + 1])[0]))
        out.append(TextFact(" ".join(world.token_name(int(t)) for t in x[i]), rel,
                            " ".join(world.token_name(int(t)) for t in y[i]), conv))
    return out


def revlib_lm(model, world, member: int = 0, objective: str = "mdm") -> MaskedLM:
    """Member ``member`` of a revlib model as a :class:`MaskedLM` over the world's token names.

    Only masked objectives read a blank in place; an ``ar`` model answers from the position
    before (revlib.measure), which is not a masked LM.
    """
    if objective == "ar":
        raise ValueError("an ar model predicts the next token, not a masked slot; score it with revlib.evaluate")
    if isinstance(member, bool) or not isinstance(member, numbers.Integral) or not 0 <= member < model.n_members:
        raise ValueError(f"member must be an integer in [0, {model.n_members}), got {member!r}")
    names = {world.token_name(t): t for t in range(world.vocab_size)}
    one = model.member(int(member)) if model.n_members > 1 else model

    def tokenize(text: str) -> list[int]:
        try:
            return [names[w] for w in text.split()]
        except KeyError as err:
            raise ValueError(f"{err.args[0]!r} is not a token of this world") from None

    return MaskedLM(lambda ids: one(ids)[0], tokenize, 0)


def hf_lm(model, tokenizer, prefix: Sequence[int] = (), suffix: Sequence[int] = ()) -> MaskedLM:
    """A Hugging Face masked LM (anything whose ``model(input_ids=ids).logits`` is (B, T, V))
    and its tokenizer (which must define a mask token)."""
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer defines no mask token")
    model.eval()

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return MaskedLM(lambda ids: model(input_ids=ids).logits, tokenize, int(tokenizer.mask_token_id),
                    tuple(prefix), tuple(suffix))


def demo(run) -> dict:
    """The text probes on (a) member 0 of a masked revlib run, beside ``revlib.evaluate``'s scores
    of the same member, and (b) a tiny Hugging Face BERT built locally from a config, untrained
    (``None`` without the optional ``transformers``): ``{"revlib", "evaluate", "hf", "hf_chance"}``."""
    lm = revlib_lm(run.model, run.world, member=0, objective=run.objective)
    facts = facts_from_world(run.world)
    out = {"revlib": score(lm, facts),
           "evaluate": {p: {m: float(v[0]) for m, v in s.items()} for p, s in run.final.items() if s},
           "hf": None, "hf_chance": None}
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
    except ImportError:  # the optional extra revlib[hf] is not installed
        return out
    words = ["[PAD]", "[UNK]", "[MASK]", "is", "the", "parent", "child", "of", "ada", "bo", "cy", "di", "eve", "fay"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, mask_token="[MASK]", unk_token="[UNK]", pad_token="[PAD]")
    state = torch.random.get_rng_state()
    torch.manual_seed(0)  # only the untrained BERT's weights; the global RNG is restored after
    try:
        bert = BertForMaskedLM(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, max_position_embeddings=16))
    finally:
        torch.random.set_rng_state(state)
    text = [TextFact("ada", "is the parent of", "bo", "is the child of"),
            TextFact("cy", "is the parent of", "di", "is the child of"),
            TextFact("eve", "is the parent of", "fay", "is the child of")]
    out["hf"] = score(hf_lm(bert, tokenizer), text)
    out["hf_chance"] = 1 / len(words)
    return out
