"""revlib.lm_probe: the book's probes for any masked LM. revlib's own model scores what evaluate
scores; an oracle LM scores 1; a uniform one scores chance; a Hugging Face BertForMaskedLM built
locally from a config, with a WordLevel tokenizer, goes through the same interface."""
from __future__ import annotations

import math

import pytest
import torch

from revlib import DataConfig, evaluate, make_world, train
from revlib.lm_probe import MaskedLM, TextFact, facts_from_world, hf_lm, queries, revlib_lm, score

from conftest import tiny

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "is", "parent", "child", "of",
         "alice", "bob", "carol", "dave", "eve", "frank", "grace"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
FACTS = [TextFact("alice", "parent of", "bob", "child of"), TextFact("carol dave", "is", "eve"),
         TextFact("frank", "is", "grace alice")]


def _word_lm(logits_fn, prefix=(), suffix=()):
    return MaskedLM(logits_fn, lambda text: [VOCAB[w] for w in text.split()], VOCAB["[MASK]"], tuple(prefix), tuple(suffix))


def _oracle_logits(facts, lm_shell):
    """Logits that put all mass on the right token at every position of every known query."""
    full = {}
    for f in facts:
        for ids, slots, answer in queries(lm_shell, f).values():
            filled = list(ids)
            for s, a in zip(slots, answer):
                filled[s] = a
            full[tuple(ids)] = filled

    def logits(ids):
        out = torch.full((*ids.shape, len(WORDS)), -30.0)
        for b, row in enumerate(ids.tolist()):
            for t, token in enumerate(full[tuple(row)]):
                out[b, t, token] = 30.0
        return out

    return logits


def test_queries_place_the_blanks():
    lm = _word_lm(None, prefix=[VOCAB["[CLS]"]], suffix=[VOCAB["[SEP]"]])
    q = queries(lm, FACTS[1])  # "carol dave is eve"
    M, C, S = VOCAB["[MASK]"], VOCAB["[CLS]"], VOCAB["[SEP]"]
    assert q["a2b"] == ([C, VOCAB["carol"], VOCAB["dave"], VOCAB["is"], M, S], [4], [VOCAB["eve"]])
    assert q["infill"] == ([C, M, M, VOCAB["is"], VOCAB["eve"], S], [1, 2], [VOCAB["carol"], VOCAB["dave"]])
    assert q["b2a"] == ([C, VOCAB["eve"], VOCAB["is"], M, M, S], [3, 4], [VOCAB["carol"], VOCAB["dave"]])
    conv = queries(lm, FACTS[0])["b2a"]  # the converse relation
    assert conv[0] == [C, VOCAB["bob"], VOCAB["child"], VOCAB["of"], M, S]
    with pytest.raises(ValueError, match="at least one token"):
        queries(_word_lm(None), TextFact("alice", "is", ""))


@pytest.mark.parametrize("prefix,suffix", [((), ()), ((2,), (3,))])
def test_an_oracle_lm_scores_one(prefix, suffix):
    shell = _word_lm(None, prefix, suffix)
    lm = _word_lm(_oracle_logits(FACTS, shell), prefix, suffix)
    result = score(lm, FACTS)
    assert set(result) == {"a2b", "infill", "b2a"}
    for m in result.values():
        assert m["acc"] == 1.0
        assert m["p_correct"] == pytest.approx(1.0, abs=1e-6) and m["nll"] == pytest.approx(0.0, abs=1e-6)


def test_a_uniform_lm_scores_chance():
    lm = _word_lm(lambda ids: torch.zeros(*ids.shape, len(WORDS)))
    result = score(lm, FACTS, batch_size=1)
    V = len(WORDS)
    # the answers' lengths in tokens, fact by fact
    for name, ks in {"a2b": [1, 1, 2], "infill": [1, 2, 1], "b2a": [1, 2, 1]}.items():
        assert result[name]["p_correct"] == pytest.approx(sum(V ** -k for k in ks) / 3)
        assert result[name]["nll"] == pytest.approx(sum(k * math.log(V) for k in ks) / 3)
        assert result[name]["acc"] == 0.0


def test_score_checks_its_arguments():
    lm = _word_lm(lambda ids: torch.zeros(*ids.shape, len(WORDS)))
    with pytest.raises(ValueError, match="at least one fact"):
        score(lm, [])
    with pytest.raises(ValueError, match="unknown probe"):
        score(lm, FACTS, probes=("swap",))
    assert set(score(lm, FACTS, probes=("b2a",))) == {"b2a"}


@pytest.mark.parametrize("extra", [{}, {"entity_tokens": 2}, {"entity_tokens": 2, "relations": "inverse",
                                                              "hold_out": "random"}])
def test_revlib_lm_scores_exactly_what_evaluate_scores(extra):
    run = train(tiny(steps=30, **extra), seeds=(0, 1))
    expected = evaluate(run.model, run.world, "mdm")
    facts = facts_from_world(run.world)
    assert len(facts) == len(run.world.one_way)
    for member in (0, 1):
        got = score(revlib_lm(run.model, run.world, member), facts)
        for name, m in got.items():
            assert m["acc"] == float(expected[name]["acc"][member])
            assert m["p_correct"] == pytest.approx(float(expected[name]["p_correct"][member]), rel=1e-5)
            assert m["nll"] == pytest.approx(float(expected[name]["nll"][member]), rel=1e-5)
    with pytest.raises(ValueError, match="ar model"):
        revlib_lm(run.model, run.world, 0, objective="ar")


def test_revlib_lm_refuses_a_member_the_model_does_not_have():
    run = train(tiny(steps=2), seeds=(4,))
    assert revlib_lm(run.model, run.world, 0).mask_id == 0
    import numpy as np

    assert revlib_lm(run.model, run.world, np.int64(0)).mask_id == 0
    for bad in (1, 2, -1, True, 0.0):  # a one-member model once silently scored member 0 for these
        with pytest.raises(ValueError, match="member"):
            revlib_lm(run.model, run.world, bad)


def test_facts_from_world_are_the_trained_sentences():
    world = make_world(DataConfig(n_pairs=6, relations="inverse", hold_out="random", seed=1))
    facts = facts_from_world(world)
    a2b = world.probe("a2b")
    for fact, row in zip(facts, a2b.full):
        assert f"{fact.subject} {fact.relation} {fact.object}" == world.decode(row)
        assert fact.converse == ("rev" if fact.relation == "is" else "is")
    lm = revlib_lm(train(tiny(steps=2, n_pairs=6)).model, make_world(DataConfig(n_pairs=6)))
    with pytest.raises(ValueError, match="not a token"):
        lm.tokenize("alice is bob")


@pytest.fixture(scope="module")
def bert():
    import transformers  # a test dependency (requirements.txt): a missing one is a failure, not a skip
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                     mask_token="[MASK]", cls_token="[CLS]", sep_token="[SEP]")
    config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.BertForMaskedLM(config)  # built from a config: nothing is downloaded
    return model, tokenizer


def test_a_local_bert_passes_through_score(bert):
    model, tokenizer = bert
    lm = hf_lm(model, tokenizer, prefix=[VOCAB["[CLS]"]], suffix=[VOCAB["[SEP]"]])
    assert lm.mask_id == VOCAB["[MASK]"] and lm.tokenize("carol dave is eve") == [11, 12, 5, 13]
    result = score(lm, FACTS)
    for m in result.values():
        assert 0.0 <= m["acc"] <= 1.0 and 0.0 < m["p_correct"] < 1.0
        assert math.isfinite(m["nll"]) and m["nll"] > 0
    # the scores are the model's: its logits at the blanks, by hand for one query
    ids, slots, answer = queries(lm, FACTS[0])["a2b"]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0, slots].log_softmax(-1)
    single = score(lm, FACTS[:1], probes=("a2b",))["a2b"]
    assert single["nll"] == pytest.approx(-float(logp[0, answer[0]]), rel=1e-5)


def test_hf_lm_needs_a_mask_token(bert):
    model, tokenizer = bert

    class NoMask:
        mask_token_id = None

    with pytest.raises(ValueError, match="mask token"):
        hf_lm(model, NoMask())
