"""benchmarks.quality's figures and --versus comparison, on hand-made scores (no models)."""

from __future__ import annotations

import numpy as np
import pytest

import benchmarks.quality


@pytest.fixture(scope="module")
def quality():
    return benchmarks.quality


def one_hot(letters: str) -> np.ndarray:
    s = np.zeros((len(letters), 5))
    s[np.arange(len(letters)), ["ABCDE".index(c) for c in letters]] = 1.0
    return s


def test_figures_carry_the_standard_error(quality):
    f, ap = quality.figures(one_hot("AABB"), ["A", "A", "A", "A"], seconds=2.0)
    assert ap.tolist() == [1, 1, .5, .5]
    # AP per question: 1, 1, then B first and A second (ties keep letter order) = 1/2, 1/2
    assert f["map@3"] == 0.75 and f["accuracy@1"] == 0.5 and f["s/question"] == 0.5
    assert f["se"] == pytest.approx(np.std([1, 1, .5, .5], ddof=1) / 2, abs=1e-4)


def test_versus_adds_a_paired_difference_to_every_row(quality):
    answers = list("ABCDE" * 8)
    right, wrong = one_hot("".join(answers)), one_hot("".join(answers))
    wrong[0] = [-1, 0, 0, 0, 1]  # E, B, C first: the answer A is not in the top 3
    rows = [{"scorer": "reader x + stacker"}, {"scorer": "ensemble"}]
    aps = [quality.figures(s, answers, 0.0)[1] for s in (wrong, right)]
    quality.compare(rows, aps, versus="x + stacker")
    assert rows[0]["vs"] == "+0.000 [+0.000, +0.000]"
    # one question of 40 goes from AP 0 (E first, A not in the top 3) to 1
    assert rows[1]["vs"].startswith("+0.025 [")


def test_versus_that_matches_nothing_names_the_scorers(quality):
    with pytest.raises(SystemExit, match="matches no scorer.*reader x"):
        quality.compare([{"scorer": "reader x"}], [np.ones(1)], versus="mpnet")


def test_subset_ensembles_are_every_smaller_group(quality):
    probs = [np.full((2, 5), v) for v in (0.1, 0.2, 0.6)]
    got = quality.subset_ensembles(["a", "b", "c"], probs)
    assert [label for label, _ in got] == ["ensemble a + b", "ensemble a + c", "ensemble b + c"]
    assert np.allclose(got[1][1], 0.35)
    assert quality.subset_ensembles(["a", "b"], probs[:2]) == []  # the full ensemble has its own row


def test_split_sources_are_the_haystack_document_and_the_context(quality):
    from pipeline.questions import Question

    q = Question(id="stem-12", prompt="p", options=tuple("abcde"), answer="A",
                 context="Water boils at 100 degrees at sea level.", row=0)
    (src,) = quality.split_sources([q])
    assert src.doc_id == "stem_1k-12" and src.shingles
