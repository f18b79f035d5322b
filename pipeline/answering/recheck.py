"""bf16 speed, fp32 orders: ``--reader-backend openvino-recheck``.

OpenVINO's bf16 reader is ~2x (MiniLM) to ~3x (MPNet) faster than fp32 on CPUs with
AVX512-BF16 or AMX, but it moves every score a little, and where two options are
nearly tied their order flips (docs/throughput.md: 97% same top-3 on MiniLM). So:

1. every question is scored by the bf16 reader (``openvino``), stacker and all;
2. a calibration sample (every 20th question, at least 16) is scored again in fp32
   (``openvino-fp32``). In log-probability, the change bf16 makes to the difference
   between two neighbouring options (places 1|2, 2|3, 3|4: what MAP@3 reads) is
   modelled as normal, ``N(0, sigma^2)``, ``sigma`` the sample's root mean square;
3. a neighbour pair ``g`` apart then swaps with probability at most
   ``erfc(g / (sigma sqrt 2))``; the other questions are scored again in fp32, least
   safe first, until the expected number of changed top-3s left is at most ``TARGET``
   of the questions (0.25%: a quarter of the 1% the equivalence rule allows);
4. fp32 scores replace bf16 ones for the calibration sample and those questions.

``sigma`` is measured in the run, on its own readers, stackers, questions and CPU, so
nothing is tuned to a data set. On a CPU without bf16 OpenVINO computes fp32 both times,
``sigma`` is ~0 and only exact ties are scored twice. The run's report says what happened
(``"type": "precision-recheck"``: sample size, ``sigma``, questions rechecked, expected
changes left, the seconds of each precision). Measured: docs/throughput.md.

Example::

    >>> s = np.array([[0.5, 0.2, 0.19, 0.1, 0.01], [0.9, 0.05, 0.03, 0.015, 0.005]])
    >>> neighbour_gaps(s, np.argsort(-s, axis=1)[:, :TOP]).min(axis=1).round(3).tolist()
    [0.01, 0.015]
    >>> calibration_rows(100).tolist()[:3], len(calibration_rows(100)), len(calibration_rows(10))
    ([0, 7, 13], 16, 10)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from pipeline.readers.backends import RECHECK

log = logging.getLogger(__name__)

FAST, EXACT = "openvino", "openvino-fp32"
TARGET = 0.0025  # expected share of questions whose top 3 may still differ from fp32
CALIBRATION_EVERY = 20
CALIBRATION_MIN = 16
TOP = 4  # MAP@3 reads the first three places: gaps 1|2, 2|3 and 3|4 decide them


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _space(scores: np.ndarray) -> np.ndarray:
    """Log-probabilities when the scores are probabilities, else the scores."""
    s = np.asarray(scores, dtype=np.float64)
    return np.log(np.maximum(s, 1e-12)) if (s >= 0).all() else s


def neighbour_gaps(scores: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``(n, k - 1)``: ``scores`` of each row's options ``order`` ``(n, k)`` (the bf16 order,
    first ``TOP`` places) minus those of the next place."""
    s = np.take_along_axis(scores, order, axis=1)
    return s[:, :-1] - s[:, 1:]


def swap_probability(gaps: np.ndarray, sigma: float) -> np.ndarray:
    """``(n,)``: the chance that one of a question's neighbour pairs (``gaps`` ``(n, k)``)
    swaps when each difference moves by ``N(0, sigma^2)`` (two-sided: an upper bound).

    >>> swap_probability(np.array([[0.0, 1.0], [3.0, 3.0]]), 1.0).round(3).tolist()
    [1.0, 0.005]
    """
    if sigma <= 0:
        return (np.asarray(gaps) <= 0).any(axis=1).astype(np.float64)
    p = _erfc(np.asarray(gaps, dtype=np.float64) / (sigma * np.sqrt(2)))
    return 1 - np.prod(1 - np.minimum(p, 1), axis=1)


def calibration_rows(n: int) -> np.ndarray:
    """Rows scored in both precisions: every ``CALIBRATION_EVERY``-th, at least
    ``CALIBRATION_MIN`` (all of them for a small run), spread over the file."""
    k = min(n, max(CALIBRATION_MIN, -(-n // CALIBRATION_EVERY)))
    return np.unique(np.linspace(0, n - 1, k).round().astype(int)) if k else np.zeros(0, int)


def score_with_recheck(cfg, readers: Sequence[str], questions: Sequence, contexts: Sequence,
                       embedder, score: Callable, evidence: dict | None = None
                       ) -> tuple[np.ndarray, str, list[dict]]:
    """``score(cfg, readers, questions, contexts, embedder, evidence)`` (-> scores ``(n, 5)``,
    label, descriptions) in bf16, with the near ties scored again in fp32 (see the module
    docstring); the last description is the recheck's. The stacker features ``evidence``
    (``(n, 5)`` by name, filled in by the bf16 pass) are not computed again for the fp32 one."""
    n = len(questions)
    evidence = {} if evidence is None else evidence
    t0 = time.perf_counter()
    fast, label, described = score(replace(cfg, reader_backend=FAST), readers, questions,
                                   contexts, embedder, evidence)
    t_fast = time.perf_counter() - t0
    exact_cfg = replace(cfg, reader_backend=EXACT)

    def exact(rows: np.ndarray) -> np.ndarray:
        return score(exact_cfg, readers, [questions[i] for i in rows],
                     [contexts[i] for i in rows], embedder,
                     {k: v[rows] for k, v in evidence.items()})[0]

    t1 = time.perf_counter()
    calib = calibration_rows(n)
    out = np.array(fast, dtype=np.float32, copy=True)
    fast_s = _space(fast)
    order = np.argsort(-fast_s, axis=1, kind="stable")[:, :TOP]
    sigma = 0.0
    if len(calib):
        out[calib] = exact(calib)
        change = neighbour_gaps(fast_s[calib], order[calib]) - \
            neighbour_gaps(_space(out[calib]), order[calib])
        sigma = float(np.sqrt(np.mean(change ** 2)))
    p = swap_probability(neighbour_gaps(fast_s, order), sigma)
    p[calib] = 0.0
    worst = np.argsort(-p, kind="stable")
    left = np.cumsum(p[worst][::-1])[::-1]  # expected changes left if we stop before i
    k = int(np.searchsorted(-left, -TARGET * n))  # first i with left[i] <= TARGET * n
    rows = np.sort(worst[:k])
    expected = float(left[k]) if k < n else 0.0
    log.info("precision recheck: sigma %.3g (log-probability) on %d calibration questions; "
             "%d of %d questions scored again in fp32, %.2f changed top-3s expected left",
             sigma, len(calib), len(rows), n, expected)
    if len(rows):
        out[rows] = exact(rows)
    info = {"type": "precision-recheck", "fast": FAST, "exact": EXACT,
            "calibration": int(len(calib)), "sigma": round(sigma, 6), "target": TARGET,
            "rechecked": int(len(rows)), "of": n,
            "scored_in_fp32": int(len(calib) + len(rows)),
            "expected_changed_left": round(expected, 3),
            "seconds_fast": round(t_fast, 3), "seconds_exact": round(time.perf_counter() - t1, 3)}
    return out, f"{label} (bf16, near ties rechecked in fp32)", described + [info]
