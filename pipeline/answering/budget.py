"""Time-budget guard for ``predict --time-budget``: finish in time, always with a full submission.

A competition notebook has a hard limit (Kaggle: 9 hours for ~4,000
questions); a run that overruns scores nothing. With a budget, ``predict``
answers the questions in chunks, in file order, and after each chunk
projects the total time from the throughput just measured:

    projected = elapsed + (seconds per question of the last chunk) x (questions left)

The first chunk, and the first after each step down, is small (2% of the
questions, at least 16) so a projection comes early; the others are 5%. The budget
counts from the start of ``predict`` (loading the index and models included).

**Policy** (the levels, cheapest last; the guard only ever steps down):

0. with a confidence cascade (``predict --cascade``): the configured scorer and its cascade
   with ``top_k`` passages; the cascade's second stage is the first thing dropped;
1. the configured scorer with ``top_k`` passages, then ``top_k // 2``, ...
   down to 1 passage (fewer passages = shorter reader inputs: the cost of
   a reader grows with the context length);
2. with a reader configured: the zero-shot baseline with 1 passage;
3. when the time is up (elapsed >= 97% of the budget, or not one more
   question fits at the cheapest level): the remaining questions are ranked
   by option length, longest first (instant, needs neither the index nor a
   model, so every question gets a prediction; its MAP@3 is in docs/results.md).

When a projection exceeds 97% of the budget, the guard moves to the first
lower level whose estimated time fits (the estimate scales the measured
rate by the ratio of ``top_k``; a level with another scorer is tried and
measured). Every projection and every step is logged and recorded in the
report (``"time_budget"``: levels, chunks with their level and time,
projections, questions per level).

Example::

    >>> parse_duration("8.5h"), parse_duration("90m"), parse_duration("45s"), parse_duration("1h30m")
    (30600.0, 5400.0, 45.0, 5400.0)
    >>> [lv.label for lv in plan_levels(top_k=8, has_readers=True)]
    ['configured scorer, top_k=8', 'configured scorer, top_k=4', 'configured scorer, top_k=2', \
'configured scorer, top_k=1', 'zero-shot baseline, top_k=1', 'longest option (no retrieval)']
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from pipeline.errors import OpenbookError

log = logging.getLogger(__name__)

#: The clock the guard reads (tests replace it with a fake one).
CLOCK: Callable[[], float] = time.monotonic

#: Fraction of the budget the projections aim at (the rest absorbs estimation noise).
TARGET = 0.97
FIRST_CHUNK_FRACTION = 0.02
CHUNK_FRACTION = 0.05
MIN_CHUNK = 16

CASCADE, CONFIGURED, ZERO_SHOT, LONGEST = "cascade", "configured", "zero-shot", "longest-option"
POLICY = ("answer in chunks; after each, project elapsed + s/question x questions left; if over "
          f"{TARGET:.0%} of the budget step down: drop the cascade's second stage (when one is "
          "configured), halve top_k (down to 1), then the zero-shot "
          "baseline with 1 passage (when a reader is configured), and once the time is up rank "
          "the remaining questions by option length (longest first)")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)", re.IGNORECASE)


def now() -> float:
    """Seconds on the guard's clock (:data:`CLOCK`)."""
    return CLOCK()


def parse_duration(text: str | float | int, flag: str = "--time-budget") -> float:
    """``"8.5h"``, ``"90m"``, ``"45s"``, ``"1h30m"`` or a bare number of seconds -> seconds (> 0).

    Raises :class:`OpenbookError` naming ``flag`` on anything else.

    >>> parse_duration("2h 15m"), parse_duration(600)
    (8100.0, 600.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip()
        pos, seconds, parts = 0, 0.0, 0
        while pos < len(s):
            m = _PART.match(s, pos)
            if not m:
                break
            seconds += float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
            pos, parts = m.end(), parts + 1
            while pos < len(s) and s[pos].isspace():
                pos += 1
        if not parts or pos != len(s):
            raise OpenbookError(
                f"{flag} {text!r} is not a duration; write a number with s, m or h, such as "
                f"{flag} 8.5h, {flag} 90m or {flag} 3600s")
    if not math.isfinite(seconds) or seconds <= 0:
        raise OpenbookError(f"{flag} {text!r}: the budget must be more than 0 seconds, "
                            f"such as {flag} 8.5h")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400.0`` -> ``'1h30m00s'``; under an hour ``'12m03s'``; under a minute ``'4.2s'``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


@dataclass(frozen=True)
class Level:
    """One step of the policy: which scorer, and how many passages."""

    top_k: int
    scorer: str  # CASCADE | CONFIGURED | ZERO_SHOT | LONGEST

    @property
    def label(self) -> str:
        if self.scorer == LONGEST:
            return "longest option (no retrieval)"
        name = {CASCADE: "configured scorer + cascade", CONFIGURED: "configured scorer"}.get(
            self.scorer, "zero-shot baseline")
        return f"{name}, top_k={self.top_k}"


def plan_levels(top_k: int, has_readers: bool, has_cascade: bool = False) -> list[Level]:
    """The policy's levels for a run configured with ``top_k`` passages, best first.

    >>> [(lv.top_k, lv.scorer) for lv in plan_levels(5, has_readers=False)]
    [(5, 'configured'), (2, 'configured'), (1, 'configured'), (0, 'longest-option')]
    >>> [lv.scorer for lv in plan_levels(2, has_readers=True, has_cascade=True)]
    ['cascade', 'configured', 'configured', 'zero-shot', 'longest-option']
    """
    ks = [top_k]
    while ks[-1] > 1:
        ks.append(ks[-1] // 2)
    levels = [Level(top_k, CASCADE)] if has_cascade else []
    levels += [Level(k, CONFIGURED) for k in ks]
    if has_readers:
        levels.append(Level(min(1, top_k), ZERO_SHOT))
    levels.append(Level(0, LONGEST))
    return levels


def longest_option_scores(questions: Sequence) -> np.ndarray:
    """``(n, 5)`` option lengths in characters: the no-evidence fallback ranking."""
    return np.array([[float(len(o)) for o in q.options] for q in questions],
                    dtype=np.float64).reshape(len(questions), -1)


#: ``answer(questions, level) -> (contexts, scores (n, 5), scorer name, descriptions)``: score
#: with ``level.top_k`` passages and ``level.scorer`` (CASCADE, CONFIGURED or ZERO_SHOT).
AnswerFn = Callable[[Sequence, "Level"], tuple[list, np.ndarray, str, list]]


class TimeBudget:
    """Chooses the level of each chunk so that ``predict`` ends within ``seconds``.

    Args:
        seconds: the budget, counted from ``start`` (default: now).
        n_questions: questions to answer.
        top_k: passages per question as configured.
        has_readers: a reader is configured (else the zero-shot baseline is the scorer).
        has_cascade: a confidence cascade is configured (its level comes first).
        batch_size: the reader's batch; the first chunk holds at least two batches.
        start: the budget's start on the guard's clock (:func:`now`).
    """

    def __init__(self, seconds: float, n_questions: int, *, top_k: int, has_readers: bool,
                 has_cascade: bool = False, batch_size: int = 8, start: float | None = None):
        self.seconds = float(seconds)
        self.n = n_questions
        self.start = now() if start is None else start
        self.levels = plan_levels(top_k, has_readers, has_cascade)
        self.level = 0
        self.first_chunk = min(n_questions, max(MIN_CHUNK, 2 * batch_size,
                                                math.ceil(FIRST_CHUNK_FRACTION * n_questions)))
        self.chunk = max(self.first_chunk, math.ceil(CHUNK_FRACTION * n_questions))
        self.chunks: list[dict] = []
        self.projections: list[dict] = []
        self.steps: list[dict] = []
        self._rates: dict[int, float] = {}  # level -> s/question of its last chunk

    @property
    def target(self) -> float:
        return TARGET * self.seconds

    def elapsed(self) -> float:
        return now() - self.start

    def _estimate(self, level: int) -> float | None:
        """Estimated s/question at ``level``: measured, or scaled from a measured level of the
        same scorer by the ratio of top_k; None when nothing comparable was measured."""
        if level in self._rates:
            return self._rates[level]
        lv = self.levels[level]
        if lv.scorer == LONGEST:
            return 0.0
        for j, rate in self._rates.items():
            other = self.levels[j]
            if other.scorer == lv.scorer and other.top_k > 0:
                return rate * max(lv.top_k, 1) / other.top_k
        return None

    def _step(self, to: int, done: int, why: str) -> None:
        if to == self.level:
            return
        old, new = self.levels[self.level], self.levels[to]
        log.warning("time budget: %s; after %d/%d questions stepping down from %s to %s",
                    why, done, self.n, old.label, new.label)
        self.steps.append({"after_questions": done, "elapsed_seconds": round(self.elapsed(), 2),
                           "from": old.label, "to": new.label, "why": why})
        self.level = to

    def next_chunk(self, done: int) -> tuple[Level, int]:
        """The level and size of the chunk starting at question ``done``."""
        left = self.n - done
        elapsed = self.elapsed()
        last = len(self.levels) - 1
        if elapsed >= self.target:
            self._step(last, done, f"{format_duration(elapsed)} elapsed of "
                       f"{format_duration(self.seconds)}: the time is up")
            return self.levels[last], left
        # Small chunks until the current level is measured (the first chunk, or after a step).
        size = self.chunk if self.level in self._rates else self.first_chunk
        rate = self._rates.get(self.level)
        if rate is not None:
            projected = elapsed + rate * left
            self.projections.append({
                "after_questions": done, "elapsed_seconds": round(elapsed, 2),
                "seconds_per_question": round(rate, 4), "level": self.levels[self.level].label,
                "projected_total_seconds": round(projected, 1)})
            log.info("time budget: %d/%d questions in %s (%.3f s/question, %s); projected "
                     "total %s of %s", done, self.n, format_duration(elapsed), rate,
                     self.levels[self.level].label, format_duration(projected),
                     format_duration(self.seconds))
            if projected > self.target:
                why = (f"projected {format_duration(projected)} exceeds "
                       f"{TARGET:.0%} of the {format_duration(self.seconds)} budget")
                to, cheapest = self.level, last - 1  # the cheapest level that still retrieves
                while to < cheapest:
                    to += 1
                    est = self._estimate(to)
                    if est is None or elapsed + est * left <= self.target:
                        break
                self._step(to, done, why)
                est = self._estimate(self.level)
                if est is not None and elapsed + est * left > self.target:
                    # Even the cheapest level is too slow: answer what fits, then fall back.
                    fits = int((self.target - elapsed) / est) if est > 0 else left
                    if fits < 1:
                        self._step(last, done, "not one more question fits in the budget")
                        return self.levels[last], left
                    size = min(size, fits)
                    log.warning("time budget: only about %d more questions fit at %s; the rest "
                                "will be ranked by %s", fits, self.levels[self.level].label,
                                self.levels[last].label)
        if self.levels[self.level].scorer == LONGEST:
            size = left
        return self.levels[self.level], max(1, min(size, left))

    def record(self, begin: int, end: int, level: Level, seconds: float) -> None:
        """Note a finished chunk ``[begin, end)`` answered at ``level`` in ``seconds``."""
        self.chunks.append({"questions": [begin, end], "level": level.label,
                            "top_k": level.top_k, "scorer": level.scorer,
                            "seconds": round(seconds, 3)})
        if end > begin and level.scorer != LONGEST:
            self._rates[self.levels.index(level)] = seconds / (end - begin)

    def run(self, questions: Sequence, answer: AnswerFn, progress: bool = True
            ) -> tuple[list, np.ndarray, str, list[dict]]:
        """Answer all ``questions`` chunk by chunk -> (contexts, scores ``(n, 5)``, scorer name,
        scorer descriptions), the name and descriptions those of every scorer used."""
        from tqdm.auto import tqdm

        from pipeline.retrieval.retriever import Contexts

        contexts: list = []
        scores: list[np.ndarray] = []
        names: list[str] = []
        described: list[dict] = []
        done = 0
        with tqdm(total=self.n, desc="answering (time budget)", unit="q",
                  disable=not progress) as bar:
            while done < self.n:
                level, size = self.next_chunk(done)
                qs = questions[done:done + size]
                t = now()
                if level.scorer == LONGEST:
                    ctx, sc = [Contexts() for _ in qs], longest_option_scores(qs)
                    name = "longest-option fallback (time budget)"
                    desc = [{"type": "longest-option-fallback", "name": name}]
                else:
                    ctx, sc, name, desc = answer(qs, level)
                self.record(done, done + len(qs), level, now() - t)
                contexts.extend(ctx)
                scores.append(np.asarray(sc, dtype=np.float64))
                if name not in names:
                    names.append(name)
                    described.extend(dict(d) for d in desc)
                else:
                    _add_cascade_counts(described, desc)
                done += len(qs)
                bar.update(len(qs))
        total = np.concatenate(scores) if scores else np.zeros((0, 5))
        return contexts, total, " + ".join(names), described

    def report(self) -> dict:
        """What the guard did, for the report json."""
        per_level: dict[str, int] = {}
        for c in self.chunks:
            per_level[c["level"]] = per_level.get(c["level"], 0) + c["questions"][1] - c["questions"][0]
        elapsed = self.elapsed()
        return {
            "budget_seconds": self.seconds, "budget": format_duration(self.seconds),
            "target_fraction": TARGET, "policy": POLICY,
            "levels": [dict(asdict(lv), label=lv.label) for lv in self.levels],
            "reduced": bool(self.steps), "final_level": self.levels[self.level].label,
            "questions_per_level": per_level, "steps": self.steps,
            "projections": self.projections, "chunks": self.chunks,
            "elapsed_seconds": round(elapsed, 2), "within_budget": elapsed <= self.seconds,
        }


def _add_cascade_counts(described: list[dict], desc: Sequence[dict]) -> None:
    """Add a chunk's cascade counts and seconds to the cascade description already kept."""
    kept = next((d for d in described if d.get("type") == "cascade"), None)
    new = next((d for d in desc if d.get("type") == "cascade"), None)
    if kept is None or new is None:
        return
    for key in ("sent", "of"):
        kept[key] += new[key]
    for key in ("seconds_first", "seconds_second"):
        kept[key] = round(kept[key] + new[key], 3)
    if new.get("max_margin_sent") is not None:
        kept["max_margin_sent"] = max(kept.get("max_margin_sent") or 0.0, new["max_margin_sent"])
