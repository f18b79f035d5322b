"""data/sample_questions.csv: valid, labelled, and each answerable from a demo-corpus article."""

from __future__ import annotations

import csv
from collections import Counter

from conftest import REPO
from pipeline.questions import load_questions

SAMPLE = REPO / "data" / "sample_questions.csv"


def test_sample_questions_load_and_are_balanced():
    qs = load_questions(SAMPLE, require_answer=True)
    assert len(qs) >= 30
    counts = Counter(q.answer for q in qs)
    assert set(counts) == set("ABCDE") and max(counts.values()) - min(counts.values()) <= 2


def test_sample_sources_are_in_the_demo_corpus(demo_summaries):
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        assert r["source_title"] in demo_summaries, r["source_title"]
    assert len({r["source_title"] for r in rows}) == len(rows)
