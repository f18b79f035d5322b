"""A confidence cascade: a cheap scorer answers every question, a strong one the unsure ones.

The first scorer's option probabilities ``(n, 5)`` say how sure it is: the
*margin* of a question is its best probability minus its second best. The
questions with the smallest margins go on to the second scorer:

* ``fraction=f``: the ``ceil(f * n)`` least confident questions (ties broken by
  question order, so the choice is deterministic);
* ``margin=m``: every question whose margin is below ``m``.

For the questions sent on, the second scorer's probabilities replace the
first's (``combine="replace"``) or are averaged with them (``combine="mean"``);
the others keep the first scorer's. Everything here works on probability
arrays, so any scorer can stand at either stage (a reader, an ensemble, the
zero-shot scorer through :func:`as_probabilities`, an LLM reader).

Example::

    >>> import numpy as np
    >>> p1 = np.array([[.9, .1, 0, 0, 0], [.4, .35, .25, 0, 0], [.5, .5, 0, 0, 0]])
    >>> route(p1, fraction=0.5).tolist()            # ceil(0.5 * 3) = 2 least confident
    [False, True, True]
    >>> route(p1, margin=0.2).tolist()
    [False, True, True]
    >>> p2 = np.array([[0, 1., 0, 0, 0]] * 3)
    >>> combine(p1, p2, route(p1, fraction=0.2)).argmax(1).tolist()  # only the tie goes on
    [0, 0, 1]
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import OpenbookError
from pipeline.metrics import map_at_3, margins, rank_letters, softmax

COMBINE = ("replace", "mean")


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that already sum to one (and lie in [0, 1]) are kept; others go through softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size and np.all(scores >= 0) and np.all(scores <= 1) and \
            np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    return softmax(scores)


def check_settings(fraction: float | None, margin: float | None, combine_mode: str = "replace") -> None:
    """Refuse settings that cannot route: one of ``fraction`` / ``margin``, each in range."""
    if fraction is not None and margin is not None:
        raise OpenbookError("give --cascade-fraction or --cascade-margin, not both")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise OpenbookError(f"--cascade-fraction must be between 0 and 1, got {fraction}")
    if margin is not None and not 0.0 <= margin <= 1.0:
        raise OpenbookError(f"--cascade-margin must be between 0 and 1 (a probability margin), "
                            f"got {margin}")
    if combine_mode not in COMBINE:
        raise OpenbookError(f"--cascade-combine must be one of {', '.join(COMBINE)}, got {combine_mode!r}")


def route(probs: np.ndarray, *, fraction: float | None = None,
          margin: float | None = None) -> np.ndarray:
    """Which questions go to the second scorer: a boolean mask ``(n,)``.

    Exactly one of ``fraction`` (share of questions, least confident first) or
    ``margin`` (send those with a margin below it) is used; with neither, 0.3.
    """
    check_settings(fraction, margin)
    m = margins(probs)
    if margin is not None:
        return m < margin
    fraction = 0.3 if fraction is None else fraction
    n_send = min(len(m), math.ceil(fraction * len(m) - 1e-9))
    mask = np.zeros(len(m), dtype=bool)
    if n_send:
        order = np.lexsort((np.arange(len(m)), m))  # smallest margin first, then question order
        mask[order[:n_send]] = True
    return mask


def combine(first: np.ndarray, second: np.ndarray, sent: np.ndarray,
            mode: str = "replace") -> np.ndarray:
    """Final probabilities ``(n, 5)``: ``first`` where not ``sent``; for the rows sent,
    ``second`` (``replace``) or the mean of both (``mean``). ``second`` holds either a row
    per question ``(n, 5)`` or a row per question sent ``(sent.sum(), 5)``."""
    if mode not in COMBINE:
        raise OpenbookError(f"--cascade-combine must be one of {', '.join(COMBINE)}, got {mode!r}")
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if len(second) != len(first):
        full = first.copy()
        full[sent] = second
        second = full
    out = first.copy()
    out[sent] = second[sent] if mode == "replace" else (first[sent] + second[sent]) / 2
    return out


def curve(first: np.ndarray, second: np.ndarray, answers, *, seconds_first: float,
          seconds_second: float, fractions=None, mode: str = "replace") -> list[dict]:
    """MAP@3 and projected seconds against the fraction sent on, from both scorers'
    probabilities on every question (``(n, 5)`` each) and their measured total seconds.

    A row: ``{"fraction", "sent", "map@3", "seconds"}`` with
    ``seconds = seconds_first + seconds_second * sent / n``.
    """
    n = len(first)
    fractions = [i / 10 for i in range(11)] if fractions is None else fractions
    rows = []
    for f in fractions:
        sent = route(first, fraction=f)
        final = combine(first, second, sent, mode)
        rows.append({"fraction": round(float(f), 4), "sent": int(sent.sum()),
                     "map@3": round(map_at_3(rank_letters(final), answers), 4),
                     "seconds": round(seconds_first + seconds_second * int(sent.sum()) / max(n, 1), 2)})
    return rows
