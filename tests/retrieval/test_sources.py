"""The one rule for "this retrieved passage is the question's source" (pipeline.retrieval.sources).

Pure functions, no model: each rule (id, title, text overlap at the threshold) and the
absent source, plus recall over questions and the reading of a question file."""

from __future__ import annotations

import csv
import doctest

import pytest

from pipeline.questions import load_questions
from pipeline.reporting import evaluation
from pipeline.retrieval import sources
from pipeline.retrieval.sources import (MATCH_THRESHOLD, SHINGLE, Source, is_source, load_sources,
                                        recall_from_ranks, shingles, source_rank, source_recall,
                                        source_rule)
from pipeline.retrieval.retriever import Contexts


def ctx(*passages: tuple[str, str, str]) -> Contexts:
    """Contexts of ``(passage id, title, text)`` passages, best first."""
    return Contexts(rows=list(range(len(passages))), passage_ids=[p[0] for p in passages],
                    titles=[p[1] for p in passages], texts=[p[2] for p in passages],
                    scores=[1.0 - i / 10 for i in range(len(passages))])


def test_the_rule_is_word_trigrams_at_one_half_and_says_so():
    assert (SHINGLE, MATCH_THRESHOLD) == (3, 0.5)
    rule = source_rule()
    assert "`source_id`" in rule and "`source_title`" in rule and "`context`" in rule
    assert "50%" in rule and "3-grams" in rule
    assert evaluation.source_rule is source_rule and evaluation.source_rank is sources.source_rank  # one copy
    assert not any(name in vars(evaluation) for name in ("shingles", "MATCH_THRESHOLD"))  # no second rule


# ---------------------------------------------------------------- by id

def test_match_by_document_id_or_passage_id():
    src = Source.of(doc_id="12")
    assert is_source("12:0", "T", "x", src) and is_source("12:7", "", "", src)
    assert is_source("12", "T", "x", src)  # a passage id without chunk number
    assert not is_source("123:0", "T", "x", src) and not is_source("1:2", "T", "x", src)
    assert not is_source("x12:0", "T", "x", src)
    assert is_source("12:3", "T", "x", Source.of(doc_id="12:3"))  # one passage named exactly
    assert not is_source("12:4", "T", "x", Source.of(doc_id="12:3"))
    # a document id with a colon: only the chunk number after the last ':' is cut
    assert is_source("wiki:Water:2", "T", "x", Source.of(doc_id="wiki:Water"))
    assert not is_source("wiki:Water:2", "T", "x", Source.of(doc_id="wiki"))


# ---------------------------------------------------------------- by title

def test_match_by_title_ignores_case_and_spacing():
    src = Source.of(title="Absolute Zero")
    for t in ("Absolute Zero", "absolute zero", "  ABSOLUTE   zero ", "Absolute\tZero"):
        assert is_source("5:0", t, "x", src), t
    assert not is_source("5:0", "Absolute Zeros", "x", src)
    assert not is_source("5:0", "Zero, absolute", "x", src)
    assert is_source("5:0", "ÉCOLE", "x", Source.of(title="école"))  # casefold, not only ASCII
    # the old direct construction (already normalised title) still works
    assert is_source("5:0", "  absolute   ZERO", "x", Source(title="absolute zero"))


def test_an_empty_title_or_id_is_unknown_not_a_wildcard():
    assert Source.of(title="   ") is None and Source.of(doc_id="") is None
    assert not is_source("5:0", "", "x", Source(title="  ", doc_id="9"))


# ---------------------------------------------------------------- by text overlap

GOLD = "alpha beta gamma delta epsilon zeta eta theta"  # 8 words: 6 trigrams


def test_text_overlap_at_the_threshold_matches_and_below_does_not():
    src = Source.of(context=GOLD)
    assert len(src.shingles) == 6
    # 3 of the gold's 6 trigrams (the shorter side): exactly one half -> source
    half = "alpha beta gamma delta epsilon xx yy zz ww"
    assert len(shingles(half) & src.shingles) == 3 and len(shingles(half)) == 7
    assert is_source("9:0", "Other", half, src)
    # 2 of 6: under one half -> not the source
    under = "alpha beta gamma delta xx yy zz ww vv"
    assert len(shingles(under) & src.shingles) == 2 and len(shingles(under)) == 7
    assert not is_source("9:0", "Other", under, src)
    # the same words in another order share no trigram
    assert not is_source("9:0", "Other", " ".join(reversed(GOLD.split())), src)


def test_text_overlap_is_over_the_shorter_text_both_ways():
    src = Source.of(context=GOLD)
    long_chunk = "Intro words here. " + GOLD.upper() + ". And many more words after it, on and on."
    assert is_source("3:0", "", long_chunk, src)  # a chunk holding the short gold passage
    piece = "gamma delta epsilon zeta"  # a chunk of the gold passage split while indexing
    assert is_source("3:1", "", piece, src)
    long_gold = Source.of(context=" ".join(f"w{i}" for i in range(200)))
    assert is_source("3:2", "", "w10 w11 w12 w13 w14 w15", long_gold)
    assert not is_source("3:2", "", "w10 w11 w12 x w14 w15", long_gold)  # 1 of 4 trigrams


def test_text_is_lower_cased_words_punctuation_ignored():
    src = Source.of(context="Water boils at 100 degrees, at sea level.")
    assert is_source("1:0", "", "WATER BOILS AT 100 DEGREES at SEA LEVEL!", src)
    assert not is_source("1:0", "", "", src) and not is_source("1:0", "", "...", src)


# ---------------------------------------------------------------- no source, ranks, recall

def test_no_source_gives_none():
    c = ctx(("1:0", "Iron", "Iron is a metal."), ("2:0", "Water", GOLD))
    assert Source.of() is None and Source.of(context="", title=None, doc_id=None) is None
    assert source_rank(c, None) is None
    assert source_rank(c, Source.of(doc_id="3")) is None  # known but not retrieved
    assert source_rank(c, Source.of(context=GOLD)) == 2
    assert source_rank(c, Source.of(doc_id="2", title="Iron")) == 1  # first match by any rule
    assert source_rank(ctx(), Source.of(doc_id="1")) is None


def test_recall_leaves_unknown_sources_out():
    c = ctx(("1:0", "Iron", "Iron is a metal."), ("2:0", "Water", GOLD))
    got = source_recall([c, c, c], [Source.of(doc_id="1"), Source.of(doc_id="2"), None], ks=(1, 2))
    assert got == {1: 0.5, 2: 1.0}
    assert source_recall([c], [Source.of(doc_id="9")], ks=(1, 10)) == {1: 0.0, 10: 0.0}
    assert recall_from_ranks([1, None, 3, 2], ks=(1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.75}
    with pytest.raises(ValueError, match="no question has a known source"):
        source_recall([c], [None], ks=(1,))
    with pytest.raises(ValueError, match="contexts"):
        source_recall([c, c], [None], ks=(1,))


def test_load_sources_reads_context_title_and_id(tmp_path):
    path = tmp_path / "q.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "context", "A", "B", "C", "D", "E", "answer",
                    "source_title", "source_id"])
        w.writerow(["a", "p?", GOLD, *"abcde", "A", "", ""])
        w.writerow(["b", "p?", "", *"abcde", "A", " Absolute  Zero ", ""])
        w.writerow(["c", "p?", "", *"abcde", "A", "", "doc7"])
        w.writerow(["d", "p?", "", *"abcde", "A", "", ""])
    qs = load_questions(path, require_answer=True)
    a, b, c, d = load_sources(path, qs)
    assert a == Source(shingles=shingles(GOLD)) and a.title is None and a.doc_id is None
    assert b == Source(title="absolute zero") and c == Source(doc_id="doc7") and d is None


def test_load_sources_without_extra_columns_uses_the_context(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(f"id,prompt,context,A,B,C,D,E\n1,p?,{GOLD},a,b,c,d,e\n2,p?,,a,b,c,d,e\n",
                    encoding="utf-8")
    assert load_sources(path, load_questions(path)) == [Source(shingles=shingles(GOLD)), None]


def test_the_module_examples_run():
    assert doctest.testmod(sources).failed == 0
