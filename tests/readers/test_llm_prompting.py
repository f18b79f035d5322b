"""pipeline.readers.prompting across WordPiece, byte-level BPE and SentencePiece-style tokenizers.

Proves: the letter ids are the tokens each family writes after the answer cue (one token
or several); truncation only ever cuts the context, keeps its head, and keeps the question
and every option whole (hypothesis property test); the chat template wraps the prompt;
rotations show every option at every position and map back to the original letters.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_fixtures import FAMILIES, WORDS, make_tokenizer
from pipeline.errors import OpenbookError
from pipeline.readers import prompting as P
from pipeline.readers.record import ReaderError

LETTER_TOKENS = {  # what each family writes for " A" after "Answer:"
    "wordpiece": ["A", "B", "C", "D", "E"],
    "metaspace": ["▁A", "▁B", "▁C", "▁D", "▁E"],
}


def ids_of(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []


def contains(seq, sub):
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_letter_ids_are_what_the_tokenizer_writes_after_the_cue(family):
    tok = make_tokenizer(family)
    letters = P.letter_token_ids(tok)
    if family in LETTER_TOKENS:
        assert [tok.convert_ids_to_tokens(ids) for ids in letters] == [[t] for t in LETTER_TOKENS[family]]
    else:  # byte-level: "ĠA" is one merged token, "ĠD" was not merged in this small vocab
        tokens = [tok.convert_ids_to_tokens(ids) for ids in letters]
        assert tokens[0] == ["ĠA"] and tokens[3] == ["Ġ", "D"]
    # the prompt's last piece followed by " X" tokenizes as that piece + the letter's ids
    _, after = P.prompt_pieces(tok, P.DEFAULT_TEMPLATE, "Which planet?", ["Mars"] * 5)
    for letter, ids in zip("ABCDE", letters):
        assert ids_of(tok, after + " " + letter) == ids_of(tok, after) + ids


def test_letters_of_several_tokens_are_sequences():
    tok = make_tokenizer("bytelevel", vocab_size=262)  # too small to merge "Ġ" + letter
    letters = P.letter_token_ids(tok)
    assert [tok.convert_ids_to_tokens(ids) for ids in letters] == [["Ġ", c] for c in "ABCDE"]


def test_letters_the_tokenizer_cannot_tell_apart_are_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "Answer": 1, ":": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    with pytest.raises(ReaderError, match="same tokens.*Fix:"):
        P.letter_token_ids(tok)


question = st.fixed_dictionaries({
    "context": st.lists(st.sampled_from(WORDS), max_size=300).map(" ".join),
    "question": st.lists(st.sampled_from(WORDS), min_size=1, max_size=40).map(" ".join),
    "options": st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join),
                        min_size=5, max_size=5),
    "max_length": st.one_of(st.integers(16, 120), st.integers(16, 600)),
    "reserve": st.sampled_from([0, 0, 3]),
})


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(q=question)
def test_only_the_context_is_ever_cut(family, q, caplog):
    tok = make_tokenizer(family)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.readers.prompting"):
        ids = P.build_prompt_ids(tok, q["context"], q["question"], q["options"], q["max_length"],
                                 reserve=q["reserve"], row=7)
    before, after = P.prompt_pieces(tok, P.DEFAULT_TEMPLATE, q["question"], q["options"])
    fixed = P.special_prefix(tok) + ids_of(tok, before)
    tail = ids_of(tok, after)
    # the question-and-options piece is at the end, whole, and decodes to the question and options
    assert ids[:len(fixed)] == fixed and ids[len(ids) - len(tail):] == tail
    text = " ".join(tok.decode(ids).split())
    for part in (q["question"], *q["options"]):
        assert " ".join(tok.decode(ids_of(tok, part)).split()) in text
    ctx = ids_of(tok, q["context"])
    kept = ids[len(fixed):len(ids) - len(tail)]
    room = q["max_length"] - q["reserve"] - len(fixed) - len(tail)
    if room >= 0:
        assert len(ids) <= q["max_length"] - q["reserve"]
        assert kept == ctx[:room]  # the head of the context, filling exactly what is left
        assert not caplog.records
    else:
        assert kept == [] and "row 7" in caplog.text and "kept them whole" in caplog.text


def test_chat_template_wraps_the_prompt_and_moves_the_cue():
    tok = make_tokenizer.__wrapped__("bytelevel")  # a private copy: the template is set on it
    with pytest.raises(ReaderError, match="no chat template.*Fix:"):
        P.build_prompt_ids(tok, "ctx", "q", ["a"] * 5, 512, use_chat_template=True)
    tok.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|end|>", "<|assistant|>"]})
    ids = P.build_prompt_ids(tok, "Mars is red.", "Which planet?", ["Mars"] * 5, 512,
                             use_chat_template=True)
    assert tok.convert_ids_to_tokens(ids[:1] + ids[-2:]) == ["<|user|>", "<|end|>", "<|assistant|>"]
    assert "Mars is red." in tok.decode(ids) and "Question: Which planet?" in tok.decode(ids)
    cue, sep = P.prompt_cue(tok, P.DEFAULT_TEMPLATE, use_chat_template=True)
    assert cue.endswith("<|assistant|>") and sep == ""
    letters = P.letter_token_ids(tok, cue=cue, sep=sep)
    assert [tok.convert_ids_to_tokens(i) for i in letters] == [[c] for c in "ABCDE"]


def test_rotations_cover_every_position_and_map_back():
    perms = P.rotations(5, 5)
    assert perms[0] == (0, 1, 2, 3, 4)
    assert all(sorted(p[j] for p in perms) == list(range(5)) for j in range(5))
    assert P.rotations(5, 1) == [(0, 1, 2, 3, 4)]
    options = ["a", "b", "c", "d", "e"]
    scores = np.arange(5.0)  # score = original index
    for perm in perms:
        shown = P.permute(options, perm)
        shown_scores = np.array([options.index(o) for o in shown], dtype=float)
        assert P.unpermute(shown_scores, perm).tolist() == scores.tolist()
    with pytest.raises(ReaderError, match="--tta"):
        P.rotations(5, 6)


@pytest.mark.parametrize("template, message", [
    ("{context} {question} {answer}", "unknown placeholder"),
    ("{context} {question}", "needs the lettered"),
    ("{question} {options}", "exactly one {context}"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(ReaderError, match=message) as e:
        P.resolve_template(template, "letter")
    assert isinstance(e.value, OpenbookError) and "Fix:" in str(e.value)


def test_named_and_custom_templates():
    assert P.resolve_template(None, "letter") == ("default", P.DEFAULT_TEMPLATE)
    assert P.resolve_template(None, "per-option") == ("per-option", P.PER_OPTION_TEMPLATE)
    name, text = P.resolve_template("{context}\nQ: {question}\n{options}\nA:", "letter")
    assert name.startswith("sha1:") and P.answer_cue(text) == "A:"
    assert P.answer_cue(P.DEFAULT_TEMPLATE) == "Answer:"
