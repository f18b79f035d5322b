"""The time-budget guard: duration parsing, the step-down policy (on a fake clock), and
``predict --time-budget`` end to end, always writing a complete, valid submission."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import pipeline.answering.predictor as answering
import pipeline.answering.budget as budget
from conftest import REPO, run_cli
from pipeline.answering.budget import LONGEST, TimeBudget, parse_duration, plan_levels
from pipeline.errors import OpenbookError
from pipeline.questions import Question

SAMPLE = REPO / "data" / "sample_questions.csv"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(budget, "CLOCK", c)
    return c


# --- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("8.5h", 30600.0), ("90m", 5400.0), ("45s", 45.0), ("600", 600.0), ("1h30m", 5400.0),
    ("2H 15M", 8100.0), (" 0.5h ", 1800.0), (".5m", 30.0), (3600, 3600.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "8.5q", "eight hours", "-1h", "1h-", "0", "0s", "1d"])
def test_bad_duration_names_the_flag_and_the_fix(text):
    with pytest.raises(OpenbookError) as e:
        parse_duration(text)
    assert "--time-budget" in str(e.value)
    assert "8.5h" in str(e.value)


def test_levels_halve_top_k_then_fall_back():
    labels = [(lv.top_k, lv.scorer) for lv in plan_levels(8, has_readers=True)]
    assert labels == [(8, "configured"), (4, "configured"), (2, "configured"), (1, "configured"),
                      (1, "zero-shot"), (0, LONGEST)]
    assert [(lv.top_k, lv.scorer) for lv in plan_levels(0, has_readers=False)] == \
        [(0, "configured"), (0, LONGEST)]


# --- the policy on a fake clock --------------------------------------------------------------

def _questions(n: int) -> list[Question]:
    return [Question(id=str(i), prompt=f"q{i}", options=("a", "bbbb", "cc", "d", "eee"),
                     answer="B", context=None, row=i + 1) for i in range(n)]


def _simulate(n, seconds, top_k, clock, cost=lambda k, zs: 1.0 * max(k, 1), readers=False):
    """Run the guard with an answer function that costs ``cost(top_k, zero_shot)`` fake
    seconds per question; return (guard, contexts, scores, scorer)."""
    from pipeline.answering.budget import ZERO_SHOT
    from pipeline.retrieval.retriever import Contexts

    calls = []

    def answer(qs, level):
        k, zero_shot = level.top_k, level.scorer == ZERO_SHOT
        calls.append((len(qs), k, zero_shot))
        clock.t += cost(k, zero_shot) * len(qs)
        ctx = [Contexts(passage_ids=[f"p{j}" for j in range(k)]) for _ in qs]
        return ctx, np.tile(np.arange(5.0), (len(qs), 1)), "zs" if zero_shot or not readers \
            else "reader", [{"type": "x"}]

    guard = TimeBudget(seconds, n, top_k=top_k, has_readers=readers, batch_size=8)
    ctx, scores, scorer = guard.run(_questions(n), answer, progress=False)[:3]
    return guard, ctx, scores, scorer, calls


def test_generous_budget_changes_nothing(clock):
    guard, ctx, scores, _, calls = _simulate(200, 10_000, 4, clock)
    assert {k for _, k, _ in calls} == {4}
    assert sum(n for n, _, _ in calls) == 200 and len(ctx) == 200 and scores.shape == (200, 5)
    rep = guard.report()
    assert rep["reduced"] is False and rep["steps"] == [] and rep["within_budget"] is True
    assert rep["projections"], "throughput was measured and projected"


def test_over_budget_halves_top_k_to_the_level_that_fits(clock):
    # 80 questions, chunks of 16; top_k 4 costs 4 s/question -> 64 s for the first chunk.
    # Left: 64 questions. top_k 2 would end at 64 + 128 = 192 > 0.97 * 150; top_k 1 at 128: fits.
    guard, ctx, scores, _, calls = _simulate(80, 150, 4, clock)
    assert [k for _, k, _ in calls] == [4, 1, 1, 1, 1]
    assert len(ctx) == 80 and scores.shape == (80, 5)
    rep = guard.report()
    assert rep["reduced"] is True and rep["within_budget"] is True
    assert rep["steps"][0]["from"].endswith("top_k=4") and rep["steps"][0]["to"].endswith("top_k=1")
    assert rep["questions_per_level"] == {"configured scorer, top_k=4": 16,
                                          "configured scorer, top_k=1": 64}
    assert rep["projections"][0]["projected_total_seconds"] == 64 + 4 * 64


def test_reader_falls_back_to_zero_shot_then_option_length(clock):
    # The reader costs 10 s/question even with one passage; zero-shot 0.5 s.
    cost = lambda k, zs: 0.5 if zs else 10.0 * k  # noqa: E731
    guard, ctx, scores, scorer, calls = _simulate(100, 1000, 2, clock, cost, readers=True)
    assert calls[0] == (16, 2, False)
    assert any(zs for _, _, zs in calls), "stepped down to the zero-shot baseline"
    rep = guard.report()
    assert rep["within_budget"] is True and rep["reduced"] is True
    assert sum(rep["questions_per_level"].values()) == 100 and len(ctx) == 100
    assert "zero-shot baseline, top_k=1" in rep["questions_per_level"]
    assert "reader" in scorer and "zs" in scorer


def test_time_up_ranks_the_rest_by_option_length(clock):
    # Even one passage is too slow: answer what fits, then the instant fallback.
    guard, ctx, scores, scorer, calls = _simulate(80, 100, 1, clock, cost=lambda k, zs: 2.0)
    rep = guard.report()
    assert rep["final_level"] == "longest option (no retrieval)"
    done_with_evidence = sum(n for n, _, _ in calls)
    assert 0 < done_with_evidence < 80
    assert rep["questions_per_level"]["longest option (no retrieval)"] == 80 - done_with_evidence
    assert rep["elapsed_seconds"] <= 100 and rep["within_budget"] is True
    # the fallback ranks the longest option first: "bbbb", then "eee", then "cc"
    assert list(scores[-1].argsort()[::-1][:3]) == [1, 4, 2]
    assert "longest-option" in scorer


def test_budget_spent_before_the_first_question(clock):
    guard = TimeBudget(10, 5, top_k=3, has_readers=False, start=clock.t - 60)
    ctx, scores, scorer, _ = guard.run(_questions(5), answer=None, progress=False)
    assert len(ctx) == 5 and scores.shape == (5, 5) and "longest-option" in scorer
    assert guard.report()["reduced"] is True


# --- through predict -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("budget") / "idx"
    res = run_cli("build_index", "--format", "demo", "--limit", "40", "--chunk-size", "96",
                  "--no-bm25", "--out", out, "--no-progress")
    assert res.returncode == 0, res.stderr
    return out


def _check_submission(path: Path, ids: list[str]) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ids
    for r in rows:
        letters = r["prediction"].split()
        assert len(letters) == 3 and len(set(letters)) == 3 and set(letters) <= set("ABCDE")


def _sample_ids() -> list[str]:
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        return [r["id"] for r in csv.DictReader(f)]


def test_predict_reduces_top_k_when_the_projection_overruns(small_index, tmp_path, clock,
                                                            monkeypatch):
    """20 questions in chunks of 16 and 4; retrieval 'costs' 1 fake second per passage per
    question. After the first chunk (64 s at top_k 4, 4 left) top_k 4 projects 80 s, top_k 2
    72 s: the guard takes top_k 2 for a 76 s budget (target 97% = 73.7 s)."""
    questions = tmp_path / "q.csv"
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with open(questions, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:21])
    ids = [r[0] for r in rows[1:21]]
    from pipeline.retrieval.indexes import IndexSet

    real_retrieve = IndexSet.retrieve

    def slow_retrieve(self, qs, cfg, **kw):
        clock.t += 1.0 * cfg.top_k * len(qs)
        return real_retrieve(self, qs, cfg, **kw)

    monkeypatch.setattr(IndexSet, "retrieve", slow_retrieve)
    out = tmp_path / "submission.csv"
    cfg = answering.PredictConfig(
        questions=str(questions), index=str(small_index), out=str(out), progress=False,
        retrieval=answering.RetrievalConfig(top_k=4), time_budget=76)
    result = answering.predict(cfg)
    _check_submission(out, ids)
    rep = json.loads(out.with_name("submission.report.json").read_text())
    tb = rep["time_budget"]
    assert tb["reduced"] is True and tb["within_budget"] is True
    assert [c["top_k"] for c in tb["chunks"]] == [4, 2]
    assert tb["steps"] == [{"after_questions": 16, "elapsed_seconds": 64.0,
                            "from": "configured scorer, top_k=4",
                            "to": "configured scorer, top_k=2", "why": tb["steps"][0]["why"]}]
    assert "exceeds" in tb["steps"][0]["why"]
    assert tb["questions_per_level"] == {"configured scorer, top_k=4": 16,
                                         "configured scorer, top_k=2": 4}
    assert all(len(q["passages"]) <= 2 for q in rep["per_question"][16:])
    assert any(len(q["passages"]) > 2 for q in rep["per_question"][:16])
    assert result.map3 is not None and len(result.rankings) == 20


def test_cli_time_budget_spent_still_writes_a_complete_submission(small_index, tmp_path):
    out = tmp_path / "sub.csv"
    res = run_cli("predict", SAMPLE, "--index", small_index, "--out", out, "--no-progress",
                  "--time-budget", "1s")
    assert res.returncode == 0, res.stderr
    assert "time budget" in res.stderr and "stepping down" in res.stderr
    _check_submission(out, _sample_ids())
    tb = json.loads((tmp_path / "sub.report.json").read_text())["time_budget"]
    assert tb["budget_seconds"] == 1.0 and tb["reduced"] is True
    assert sum(tb["questions_per_level"].values()) == 36


def test_cli_bad_time_budget(small_index, tmp_path):
    out = tmp_path / "sub.csv"
    res = run_cli("predict", SAMPLE, "--index", small_index, "--out", out, "--time-budget", "9hours")
    assert res.returncode == 2
    assert "--time-budget" in res.stderr and "'9hours' is not a duration" in res.stderr
    assert not out.exists()


def test_the_cascade_is_the_first_thing_dropped(clock):
    """A cascade that costs 6 s/question on top of a 1 s/question reader: over budget, the
    guard keeps the reader at full top_k and drops only the second stage."""
    from pipeline.answering.budget import CASCADE, ZERO_SHOT

    assert [lv.scorer for lv in plan_levels(4, has_readers=True, has_cascade=True)][:2] == \
        [CASCADE, "configured"]
    calls = []

    def answer(qs, level):
        calls.append((len(qs), level.top_k, level.scorer))
        clock.t += (7.0 if level.scorer == CASCADE else 0.5 if level.scorer == ZERO_SHOT
                    else 1.0) * len(qs)
        desc = [{"type": "reader"}]
        if level.scorer == CASCADE:
            desc.append({"type": "cascade", "sent": len(qs) // 4, "of": len(qs),
                         "seconds_first": 1.0, "seconds_second": 6.0, "max_margin_sent": 0.1})
        return [None] * len(qs), np.zeros((len(qs), 5)), \
            "reader + cascade" if level.scorer == CASCADE else "reader", desc

    guard = TimeBudget(250, 100, top_k=4, has_readers=True, has_cascade=True, batch_size=8)
    _, scores, scorer, described = guard.run(_questions(100), answer, progress=False)
    assert calls[0] == (16, 4, CASCADE)
    assert all(k == 4 and s == "configured" for _, k, s in calls[1:]), calls
    assert scores.shape == (100, 5) and guard.report()["within_budget"] is True
    assert guard.report()["steps"][0]["to"] == "configured scorer, top_k=4"
    assert [d for d in described if d["type"] == "cascade"][0]["of"] == 16
