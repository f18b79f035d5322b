"""bf16 speed, fp32 orders: ``--reader-backend openvino-recheck``.

OpenVINO's bf16 reader is ~2x (MiniLM) to ~3x (MPNet) faster than fp32 on CPUs with
AVX512-BF16 or AMX, but it moves every score a little, and where two options are
nearly tied their order flips (docs/throughput.md: 97% same top-3 on MiniLM). An order
can only flip between two options whose scores are closer than twice the largest change
bf16 makes to one score. So:

1. every question is scored by the bf16 reader (``openvino``), stacker and all;
2. a calibration sample (every 20th question, at least 16) is scored again in fp32
   (``openvino-fp32``): the largest change bf16 made to any of their final scores is
   ``max_change``;
3. every other question whose first four options have two neighbours closer than
   ``2 x SAFETY x max_change`` is scored again in fp32;
4. fp32 scores replace bf16 ones for the calibration sample and those questions.

The threshold is measured in the run, on its own readers, stackers, questions and CPU,
so nothing is tuned to a data set; ``SAFETY`` covers a change larger than any in the
sample. On a CPU without bf16, OpenVINO computes fp32 for both, ``max_change`` is ~0 and
next to nothing is scored twice. The run's report says what happened (``"type":
"precision-recheck"``: sample size, ``max_change``, threshold, questions rechecked, the
seconds of each precision). Measured: docs/throughput.md.

Example::

    >>> top_gaps(np.array([[0.5, 0.2, 0.19, 0.1, 0.01], [0.9, 0.05, 0.03, 0.015, 0.005]])).round(3).tolist()
    [0.01, 0.015]
    >>> calibration_rows(100).tolist()[:3], len(calibration_rows(100)), len(calibration_rows(10))
    ([0, 7, 13], 16, 10)
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from pipeline.readers.backends import RECHECK

log = logging.getLogger(__name__)

FAST, EXACT = "openvino", "openvino-fp32"
SAFETY = 1.5
CALIBRATION_EVERY = 20
CALIBRATION_MIN = 16
TOP = 4  # MAP@3 reads the first three places: gaps 1|2, 2|3 and 3|4 decide them


def top_gaps(scores: np.ndarray, top: int = TOP) -> np.ndarray:
    """``(n,)``: the smallest difference between neighbours among each row's ``top`` best."""
    s = -np.sort(-np.asarray(scores, dtype=np.float64), axis=1)[:, :top]
    return (s[:, :-1] - s[:, 1:]).min(axis=1) if s.shape[1] > 1 else np.full(len(s), np.inf)


def calibration_rows(n: int) -> np.ndarray:
    """Rows scored in both precisions: every ``CALIBRATION_EVERY``-th, at least
    ``CALIBRATION_MIN`` (all of them for a small run), spread over the file."""
    k = min(n, max(CALIBRATION_MIN, -(-n // CALIBRATION_EVERY)))
    return np.unique(np.linspace(0, n - 1, k).round().astype(int)) if k else np.zeros(0, int)


def score_with_recheck(cfg, readers: Sequence[str], questions: Sequence, contexts: Sequence,
                       embedder, score: Callable) -> tuple[np.ndarray, str, list[dict]]:
    """``score(cfg, readers, questions, contexts, embedder)`` (-> scores ``(n, 5)``, label,
    descriptions) in bf16, with the near ties scored again in fp32 (see the module
    docstring); the last description is the recheck's."""
    n = len(questions)
    t0 = time.perf_counter()
    fast, label, described = score(replace(cfg, reader_backend=FAST), readers, questions,
                                   contexts, embedder)
    t_fast = time.perf_counter() - t0
    exact_cfg = replace(cfg, reader_backend=EXACT)

    def exact(rows: np.ndarray) -> np.ndarray:
        return score(exact_cfg, readers, [questions[i] for i in rows],
                     [contexts[i] for i in rows], embedder)[0]

    t1 = time.perf_counter()
    calib = calibration_rows(n)
    out = np.array(fast, dtype=np.float32, copy=True)
    max_change = 0.0
    if len(calib):
        out[calib] = exact(calib)
        max_change = float(np.abs(out[calib] - fast[calib]).max())
    threshold = 2 * SAFETY * max_change
    near = top_gaps(fast) < threshold
    near[calib] = False
    rows = np.flatnonzero(near)
    log.info("precision recheck: bf16 changed final scores by up to %.2g on %d calibration "
             "questions; %d of %d questions closer than %.2g are scored again in fp32",
             max_change, len(calib), len(rows), n, threshold)
    if len(rows):
        out[rows] = exact(rows)
    info = {"type": "precision-recheck", "fast": FAST, "exact": EXACT,
            "calibration": int(len(calib)), "max_change": round(max_change, 6),
            "safety": SAFETY, "threshold": round(threshold, 6), "rechecked": int(len(rows)),
            "of": n, "scored_in_fp32": int(len(calib) + len(rows)),
            "seconds_fast": round(t_fast, 3), "seconds_exact": round(time.perf_counter() - t1, 3)}
    return out, f"{label} (bf16, near ties rechecked in fp32)", described + [info]
