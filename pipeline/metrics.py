"""Scores for ranked answers and for retrieval; pure functions, no I/O.

MAP@3 follows the Kaggle "LLM Science Exam" definition: each question has one
correct letter; its average precision is precision-at-k at the *first*
position k (1..3) where the correct letter appears, i.e. ``1/k``, and 0 if it
is not among the first three predictions. Later repeats of the correct letter
are skipped (so a score never exceeds 1); every prediction, repeated or not,
occupies its position, so ``["B", "B", "A"]`` scores 1/3 for answer ``A``.

>>> map_at_3([["A", "B", "C"], ["B", "A", "C"]], ["A", "A"])
0.75
>>> rank_letters(np.array([[0.1, 0.9, 0.5, 0.5, 0.0]]))
[['B', 'C', 'D', 'A', 'E']]
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from pipeline.questions import LETTERS


def _check_ranked(ranked: Sequence[str]) -> None:
    if isinstance(ranked, str):
        raise TypeError(f"ranked must be a sequence of letters, not the string {ranked!r}; "
                        "split it first, e.g. 'A B C'.split()")


def _check_pair(a: Sequence[object], b: Sequence[object], names: tuple[str, str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {len(a)} != {len(b)}")
    if len(a) == 0:
        raise ValueError(f"{names[0]} is empty: nothing to score")


def average_precision_at_3(ranked: Sequence[str], answer: str) -> float:
    """``1/k`` for the first position k <= 3 holding ``answer``, else 0.

    >>> average_precision_at_3(["C", "A", "A"], "A")
    0.5
    >>> average_precision_at_3(["B", "C", "D", "A"], "A")
    0.0
    """
    _check_ranked(ranked)
    for k, letter in enumerate(list(ranked)[:3], start=1):
        if letter == answer:
            return 1.0 / k
    return 0.0


def softmax(scores: np.ndarray) -> np.ndarray:
    """Scores ``(n, n_options)`` -> probabilities over each row's options, float32."""
    shifted = np.asarray(scores) - np.max(scores, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def margins(scores: np.ndarray) -> np.ndarray:
    """Top score minus the second, per row of ``(n, k)`` scores -> ``(n,)``: how sure a scorer is.

    >>> margins(np.array([[0.1, 0.7, 0.2, 0.0, 0.0]])).round(6).tolist()
    [0.5]
    """
    s = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    return s[:, -1] - s[:, -2]


def map_at_3(rankings: Sequence[Sequence[str]], answers: Sequence[str]) -> float:
    """Mean of :func:`average_precision_at_3` over questions.

    >>> round(map_at_3([["A"], ["B", "C", "A"], ["E"]], ["A", "A", "A"]), 4)
    0.4444
    """
    return float(sum(average_precisions(rankings, answers))) / len(answers)


def accuracy_at_1(rankings: Sequence[Sequence[str]], answers: Sequence[str]) -> float:
    """Fraction of questions whose first prediction is the answer.

    >>> accuracy_at_1([["A", "B"], ["C", "A"], []], ["A", "A", "A"])
    0.3333333333333333
    """
    _check_pair(rankings, answers, ("rankings", "answers"))
    hits = 0
    for ranked, answer in zip(rankings, answers):
        _check_ranked(ranked)
        hits += bool(len(ranked)) and ranked[0] == answer
    return hits / len(answers)


def recall_at_k(retrieved: Sequence[Sequence[Hashable]],
                relevant: Sequence[Hashable | set[Hashable] | frozenset[Hashable]],
                k: int) -> float:
    """Fraction of queries with a relevant item among their first ``k`` retrieved.

    ``relevant[i]`` is one item, or a set/frozenset of items any of which
    counts (an empty set never matches).

    >>> recall_at_k([[3, 1, 2], [5, 6, 7]], [1, {7, 9}], k=2)
    0.5
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    _check_pair(retrieved, relevant, ("retrieved", "relevant"))
    hits = 0
    for items, rel in zip(retrieved, relevant):
        wanted = rel if isinstance(rel, (set, frozenset)) else {rel}
        hits += any(item in wanted for item in list(items)[:k])
    return hits / len(relevant)


def rank_letters(scores: np.ndarray) -> list[list[str]]:
    """For each row of an ``(n, 5)`` score array, letters by descending score.

    Ties keep letter order (earlier letter first); NaN scores rank last.

    >>> rank_letters(np.array([[1, 1, 1, 2, 0], [0, 0, 0, 0, 0]]))
    [['D', 'A', 'B', 'C', 'E'], ['A', 'B', 'C', 'D', 'E']]
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(LETTERS):
        raise ValueError(f"scores must have shape (n, {len(LETTERS)}), got {arr.shape}")
    order = np.argsort(-arr, axis=1, kind="stable")
    return [[LETTERS[i] for i in row] for row in order.tolist()]


def average_precisions(rankings: Sequence[Sequence[str]], answers: Sequence[str]) -> np.ndarray:
    """Per-question :func:`average_precision_at_3`, shape ``(n,)``; its mean is MAP@3.

    >>> average_precisions([["A"], ["B", "A"], ["E"]], ["A", "A", "A"]).tolist()
    [1.0, 0.5, 0.0]
    """
    _check_pair(rankings, answers, ("rankings", "answers"))
    return np.array([average_precision_at_3(r, a) for r, a in zip(rankings, answers)])


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-question scores (sample std / sqrt(n)).

    >>> round(standard_error([1.0, 0.0, 1.0, 0.0]), 4)
    0.2887
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError(f"need at least 2 values for a standard error, got {v.size}")
    return float(v.std(ddof=1) / np.sqrt(v.size))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired per-question scores, with a percentile bootstrap interval.

    ``a`` and ``b`` are two scorers' per-question values on the same questions (e.g.
    :func:`average_precisions`); questions are resampled with replacement ``n_boot``
    times, so the interval accounts for which questions happen to be in the set.
    Returns ``(difference, low, high)``.

    >>> d, lo, hi = paired_bootstrap([1.0, 1.0, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0])
    >>> d, lo <= d <= hi
    (0.375, True)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    _check_pair(x, y, ("a", "b"))
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    diff = x - y
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(lo), float(hi)
