"""Tests for pipeline.metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import (accuracy_at_1, average_precision_at_3, average_precisions, map_at_3,
                              paired_bootstrap, rank_letters, recall_at_k, standard_error)


def kaggle_map3_reference(rankings, answers):
    """The Kaggle LLM Science Exam metric, with its rule that a correct label,
    once scored, is no longer relevant (later repeats are skipped)."""
    total = 0.0
    for preds, truth in zip(rankings, answers):
        seen = False
        for k, p in enumerate(preds[:3], start=1):
            if p == truth and not seen:
                total += sum(x == truth for x in preds[:k]) / k
                seen = True
    return total / len(answers)


# --- average_precision_at_3 -------------------------------------------------

@pytest.mark.parametrize("ranked, expected", [
    (["A", "B", "C"], 1.0),
    (["B", "A", "C"], 0.5),
    (["C", "B", "A"], 1 / 3),
    (["D", "E", "A"], 1 / 3),
    (["D", "E", "B"], 0.0),
    (["B", "C", "D", "A", "E"], 0.0),  # fourth place is beyond @3
    (["A"], 1.0),
    ([], 0.0),
    (("B", "A"), 0.5),  # any sequence
])
def test_average_precision_positions(ranked, expected):
    assert average_precision_at_3(ranked, "A") == pytest.approx(expected)


@pytest.mark.parametrize("ranked, expected", [
    (["A", "A", "A"], 1.0),  # repeats of the correct label are skipped: never above 1
    (["A", "B", "A"], 1.0),
    (["B", "A", "A"], 0.5),
    (["B", "B", "A"], 1 / 3),  # a repeated wrong letter still occupies its position
    (["B", "B", "B", "A"], 0.0),
])
def test_average_precision_duplicates(ranked, expected):
    assert average_precision_at_3(ranked, "A") == pytest.approx(expected)
    assert average_precision_at_3(ranked, "A") == pytest.approx(
        kaggle_map3_reference([ranked], ["A"]))


def test_average_precision_is_case_sensitive_and_exact():
    assert average_precision_at_3(["a", "B", "C"], "A") == 0.0


def test_average_precision_rejects_plain_string():
    with pytest.raises(TypeError, match="split"):
        average_precision_at_3("B A C", "A")


# --- map_at_3 ----------------------------------------------------------------

def test_map_at_3_hand_computed():
    rankings = [["A", "B", "C"], ["B", "A", "C"], ["C", "B", "A"], ["D", "E", "B"]]
    assert map_at_3(rankings, ["A", "A", "A", "A"]) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)


def test_map_at_3_third_place_counts_whatever_precedes_it():
    # ["D", "E", "A"]: A is third, so 1/3 (as for ["C", "B", "A"]), not 0.
    rankings = [["A", "B", "C"], ["B", "A", "C"], ["C", "B", "A"], ["D", "E", "A"]]
    assert map_at_3(rankings, ["A"] * 4) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)


def test_map_at_3_mixed_answers_and_long_rankings():
    rankings = [["E", "D", "C", "B", "A"], ["C", "E", "D", "A", "B"], ["B", "B", "B", "B", "B"]]
    answers = ["D", "A", "B"]
    assert map_at_3(rankings, answers) == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert map_at_3(rankings, answers) == pytest.approx(kaggle_map3_reference(rankings, answers))


def test_map_at_3_perfect_and_zero():
    assert map_at_3([["B", "A"], ["E"]], ["B", "E"]) == 1.0
    assert map_at_3([["B", "C", "D"], ["A", "B", "C"]], ["A", "E"]) == 0.0


def test_map_at_3_length_mismatch():
    with pytest.raises(ValueError, match="length"):
        map_at_3([["A"]], ["A", "B"])


def test_map_at_3_empty():
    with pytest.raises(ValueError, match="empty"):
        map_at_3([], [])


def test_map_at_3_matches_reference_on_random_rankings():
    rng = np.random.default_rng(0)
    letters = np.array(list("ABCDE"))
    rankings = [list(rng.choice(letters, size=rng.integers(0, 7))) for _ in range(300)]
    answers = list(rng.choice(letters, size=300))
    assert map_at_3(rankings, answers) == pytest.approx(kaggle_map3_reference(rankings, answers))


# --- accuracy_at_1 -----------------------------------------------------------

def test_accuracy_at_1():
    rankings = [["A", "B", "C"], ["B", "A", "C"], ["C", "B", "A"], ["A", "E", "D"]]
    assert accuracy_at_1(rankings, ["A", "A", "C", "E"]) == pytest.approx(2 / 4)


def test_accuracy_at_1_empty_ranking_is_a_miss():
    assert accuracy_at_1([[], ["B"]], ["A", "B"]) == 0.5


def test_accuracy_at_1_errors():
    with pytest.raises(ValueError):
        accuracy_at_1([["A"]], [])
    with pytest.raises(ValueError):
        accuracy_at_1([], [])


# --- recall_at_k -------------------------------------------------------------

def test_recall_at_k_single_items():
    retrieved = [[3, 1, 2], [5, 6, 7], [9, 8, 4], []]
    relevant = [1, 7, 10, 1]
    assert recall_at_k(retrieved, relevant, k=1) == 0.0
    assert recall_at_k(retrieved, relevant, k=2) == 0.25
    assert recall_at_k(retrieved, relevant, k=3) == 0.5
    assert recall_at_k(retrieved, relevant, k=100) == 0.5


def test_recall_at_k_sets_mean_any_of():
    retrieved = [["x", "y"], ["p", "q"], ["a", "b"]]
    relevant = [{"q", "y"}, frozenset({"z", "p"}), set()]
    assert recall_at_k(retrieved, relevant, k=1) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, relevant, k=2) == pytest.approx(2 / 3)


def test_recall_at_k_string_and_tuple_items_are_single_items():
    assert recall_at_k([["doc1", "doc2"]], ["doc2"], k=2) == 1.0
    assert recall_at_k([["d", "o"]], ["do"], k=2) == 0.0  # a string is not split into chars
    assert recall_at_k([[("a", 1), ("b", 2)]], [("b", 2)], k=2) == 1.0


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_recall_at_k_bad_k(k):
    with pytest.raises(ValueError, match="k must"):
        recall_at_k([[1]], [1], k=k)


def test_recall_at_k_mismatch_and_empty():
    with pytest.raises(ValueError, match="length"):
        recall_at_k([[1], [2]], [1], k=1)
    with pytest.raises(ValueError, match="empty"):
        recall_at_k([], [], k=1)


def test_recall_at_k_accepts_numpy_k_and_rows():
    retrieved = np.array([[4, 2, 0], [1, 3, 5]])
    assert recall_at_k(retrieved, [2, 5], k=np.int64(2)) == 0.5


# --- rank_letters ------------------------------------------------------------

def test_rank_letters_descending():
    scores = np.array([[0.1, 0.5, 0.3, 0.9, 0.2],
                       [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert rank_letters(scores) == [["D", "B", "C", "E", "A"], ["A", "B", "C", "D", "E"]]


def test_rank_letters_ties_keep_letter_order():
    scores = np.array([[1.0, 2.0, 2.0, 1.0, 2.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0],
                       [-0.0, 0.0, 3.0, -0.0, 3.0]])
    assert rank_letters(scores) == [["B", "C", "E", "A", "D"],
                                    ["A", "B", "C", "D", "E"],
                                    ["C", "E", "A", "B", "D"]]


def test_rank_letters_integer_and_unsigned_scores():
    assert rank_letters(np.array([[1, 3, 2, 0, 3]], dtype=np.uint8)) == [["B", "E", "C", "A", "D"]]
    assert rank_letters([[1, 3, 2, 0, 3]]) == [["B", "E", "C", "A", "D"]]


def test_rank_letters_nan_and_inf():
    scores = np.array([[math.nan, -math.inf, 0.0, math.inf, math.nan]])
    assert rank_letters(scores) == [["D", "C", "B", "A", "E"]]


def test_rank_letters_empty_batch():
    assert rank_letters(np.zeros((0, 5))) == []


@pytest.mark.parametrize("shape", [(5,), (2, 4), (2, 6), (1, 5, 1)])
def test_rank_letters_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        rank_letters(np.zeros(shape))


def test_rank_letters_feeds_map_at_3():
    scores = np.array([[0.0, 1.0, 0.5, 0.2, 0.1], [0.3, 0.2, 0.1, 0.9, 0.8]])
    assert map_at_3(rank_letters(scores), ["C", "A"]) == pytest.approx((1 / 2 + 1 / 3) / 2)


# --- per-question scores, standard error, paired bootstrap -------------------

def test_average_precisions_mean_is_map_at_3():
    rankings = [["A", "B", "C"], ["B", "A", "C"], ["C", "D", "E"], ["B", "C", "A"]]
    answers = ["A", "A", "B", "A"]
    ap = average_precisions(rankings, answers)
    assert ap.tolist() == [1.0, 0.5, 0.0, pytest.approx(1 / 3)]
    assert ap.mean() == pytest.approx(map_at_3(rankings, answers))


def test_standard_error_by_hand():
    # std (ddof=1) of [1, 0, 0, 0] is 0.5; / sqrt(4) = 0.25
    assert standard_error([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 2"):
        standard_error([1.0])


def test_paired_bootstrap_identical_scorers_is_exactly_zero():
    a = np.random.default_rng(1).random(50)
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_covers_and_excludes():
    rng = np.random.default_rng(2)
    b = rng.choice([0.0, 1 / 3, 0.5, 1.0], size=400)
    better = np.minimum(b + (rng.random(400) < 0.3) * 0.5, 1.0)  # clearly better on 30%
    d, lo, hi = paired_bootstrap(better, b, n_boot=2000)
    assert d == pytest.approx((better - b).mean())
    assert 0 < lo < d < hi
    noise = np.clip(b + rng.normal(0, 0.2, 400), 0, 1)  # a noisy copy: a narrow interval about d2
    d2, lo2, hi2 = paired_bootstrap(noise, b, n_boot=2000)
    assert lo2 < d2 < hi2 and hi2 - lo2 < 0.1
    assert paired_bootstrap(better, b, n_boot=2000, seed=5) != (d, lo, hi)  # the seed is used


def test_paired_bootstrap_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([1.0, 0.0], [1.0, 0.0], level=95)
