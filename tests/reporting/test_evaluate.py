"""``python -m pipeline.evaluate`` on a tiny real index: report folder, numbers equal predict's, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from conftest import EASY_IDS, _sample_rows, _tiny_reader

from pipeline.metrics import margins
from pipeline.reporting.evaluation import context_steps, first_k
from pipeline.retrieval.sources import Source, is_source, shingles, source_rank
from pipeline.reporting.plots import plot_context_curve, plot_margins, plot_recall, report_markdown
from pipeline.retrieval.retriever import Contexts

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ("--no-progress", "--max-contexts", "3", "--recall-k", "1,3,5")


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture()
def with_context(tmp_path, demo_summaries) -> Path:
    """The easy questions with a `context` column (their source summary) instead of source_title."""
    rows = []
    for r in _sample_rows():
        if r["id"] in EASY_IDS:
            r = dict(r)
            r["context"] = demo_summaries[r.pop("source_title")]["extract"]
            rows.append(r)
    return _write(tmp_path / "ctx.csv", rows)


@pytest.fixture()
def with_title(tmp_path) -> Path:
    return _write(tmp_path / "titled.csv", [r for r in _sample_rows() if r["id"] in EASY_IDS])


def _predict_map3(questions: Path, index: Path, tmp: Path, readers=(), **kw) -> float:
    """MAP@3 of ``predict`` itself on the same input (in-process: one import of torch for all)."""
    from pipeline.answering.predictor import PredictConfig, predict

    res = predict(PredictConfig(questions=str(questions), index=str(index),
                                out=str(tmp / "pred" / "s.csv"), readers=list(readers),
                                progress=False, **kw))
    return res.map3


def _check_report(out: Path, n: int) -> dict:
    report = (out / "report.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert images, report
    for name in images:
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
        from PIL import Image

        with Image.open(out / name) as im:
            im.verify()
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == n and 0 <= metrics["map@3"] <= 1
    with open(out / "per_question.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    assert {"id", "answer", "ranking", "correct@1", "ap@3", "margin", "score_A", "score_E",
            "passage_ids", "source_rank"} <= set(rows[0])
    ap = [float(r["ap@3"]) for r in rows]
    assert abs(sum(ap) / n - metrics["map@3"]) < 1e-3
    assert not list(out.parent.glob(f".{out.name}.*")), "temp folder left behind"
    return metrics


def test_zero_shot_report_matches_predict(tiny_index, with_context, tmp_path):
    out = tmp_path / "report"
    out.mkdir()  # an older report of this command: --overwrite replaces it whole
    (out / "metrics.json").write_text("{}\n")
    (out / "stale.txt").write_text("from an older run\n")
    res = run_cli("evaluate", with_context, "--index", tiny_index, "--out", out, "--overwrite",
                  *FAST)
    assert res.returncode == 0, res.stderr
    assert "MAP@3 = " in res.stdout and "recall dense" in res.stdout
    assert not (out / "stale.txt").exists()
    m = _check_report(out, len(EASY_IDS))
    assert m["map@3"] == pytest.approx(_predict_map3(with_context, tiny_index, tmp_path), abs=1e-4)
    assert m["baseline"] is True and m["retrieval"]["top_k"] == 5
    assert [c["k"] for c in m["map@3_vs_contexts"]] == [1, 2, 3, 5]
    assert [c["map@3"] for c in m["map@3_vs_contexts"] if c["k"] == 5] == [m["map@3"]]
    # the `context` column is each question's source summary; the easy ones are found
    assert m["recall"]["dense"]["n"] == len(EASY_IDS)
    assert m["recall"]["dense"]["recall@k"]["5"] >= 0.8
    assert {"recall_at_k.png", "map_vs_contexts.png", "margins.png"} <= set(
        p.name for p in out.iterdir())
    assert "Rule:" in (out / "report.md").read_text()


def test_reader_ensemble_matches_predict(tiny_index, with_title, tmp_path, minilm_path):
    """In-process (the CLI path is covered above): an ensemble of two *different* tiny random
    readers scores each option with the mean of the two readers' probabilities (a second
    reader that were ignored, or the first one used twice, would not give the mean)."""
    from pipeline.answering.predictor import PredictConfig, predict
    from pipeline.reporting.evaluation import EvaluateConfig, evaluate

    import torch
    from transformers import AutoModelForMultipleChoice, AutoTokenizer, DebertaV2Config

    def wide_reader(seed: int) -> str:
        """A tiny random reader with a wide init: its probabilities are far from uniform."""
        torch.manual_seed(seed)
        config = DebertaV2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=512, initializer_range=1.0)
        folder = tmp_path / f"reader{seed}"
        AutoModelForMultipleChoice.from_config(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
        return str(folder)

    readers = [wide_reader(0), wide_reader(1)]
    out = tmp_path / "report"
    res = evaluate(EvaluateConfig(questions=str(with_title), index=str(tiny_index), out=str(out),
                                  readers=readers, max_length=128, max_contexts=2,
                                  recall_k=(1, 5), progress=False))
    m = _check_report(out, len(EASY_IDS))
    assert m["map@3"] == round(res.map3, 4) and m["baseline"] is False and len(m["scorers"]) == 2
    assert [c["k"] for c in m["map@3_vs_contexts"]] == [1, 2, 5]
    assert m["recall"]["dense"]["recall@k"]["5"] >= 0.8  # found by source_title

    def predicted(names, tag):
        return predict(PredictConfig(questions=str(with_title), index=str(tiny_index),
                                     out=str(tmp_path / tag / "s.csv"), readers=names,
                                     max_length=128, progress=False))

    each = [predicted([r], f"one{i}").scores for i, r in enumerate(readers)]
    both = predicted(readers, "both")
    assert np.abs(each[0] - each[1]).max() > 0.05  # two readers that really differ
    np.testing.assert_allclose(both.scores, (each[0] + each[1]) / 2, atol=1e-5)
    with open(out / "per_question.csv", encoding="utf-8", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    evaluated = np.array([[float(rows[i][f"score_{L}"]) for L in "ABCDE"] for i in both.ids])
    np.testing.assert_allclose(evaluated, both.scores, atol=1e-3)  # evaluate == predict
    assert m["map@3"] == pytest.approx(both.map3, abs=1e-4)


def test_unlabelled_csv_exits_2_naming_file_and_fix(tiny_index, tmp_path):
    q = _write(tmp_path / "nolabel.csv", [{k: v for k, v in r.items() if k != "answer"}
                                          for r in _sample_rows()[:3]])
    out = tmp_path / "report"
    res = run_cli("evaluate", q, "--index", tiny_index, "--out", out)
    assert res.returncode == 2
    assert "nolabel.csv" in res.stderr and "'answer'" in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


def test_existing_out_refused_without_overwrite(tiny_index, with_title, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("keep me\n")
    res = run_cli("evaluate", with_title, "--index", tiny_index, "--out", out)
    assert res.returncode == 2 and "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "keep me\n"
    assert not list(tmp_path.glob(".report.*"))


def test_bad_recall_k_flag(tiny_index, with_title, tmp_path):
    res = run_cli("evaluate", with_title, "--index", tiny_index, "--out", tmp_path / "r",
                  "--recall-k", "0,x")
    assert res.returncode == 2 and "--recall-k" in res.stderr


# ---------------------------------------------------------------- pure functions, no model

def test_source_matching_rules():
    gold = ("Mitochondria are organelles found in most eukaryotic cells. They were first observed "
            "by Albert von Kolliker in 1857 in the voluntary muscles of insects.")
    src = Source(shingles=shingles(gold))
    chunk = "They were first observed by Albert von Kolliker in 1857 in the voluntary muscles"
    assert is_source("12:1", "Mitochondrion", chunk, src)  # a chunk of the gold passage
    assert is_source("12:0", "Mitochondrion", "Intro words. " + gold + " More after it.", src)
    assert not is_source("7:0", "Cell", "Cells are the basic unit of life in most organisms "
                                        "and were observed by Robert Hooke.", src)
    assert is_source("12:3", "Anything", "x", Source(doc_id="12"))
    assert not is_source("123:0", "Anything", "x", Source(doc_id="12"))
    assert is_source("5:0", "  absolute   ZERO", "x", Source(title="absolute zero"))
    ctx = Contexts(rows=[0, 1], passage_ids=["7:0", "12:1"], titles=["Biology", "Mitochondrion"],
                   texts=["Cells are small.", chunk], scores=[0.9, 0.8])
    assert source_rank(ctx, src) == 2 and source_rank(ctx, None) is None
    assert first_k(ctx, 1).passage_ids == ["7:0"] and first_k(ctx, 1).joined() == "Biology. Cells are small."


def test_steps_and_margins():
    assert context_steps(5, 10) == [1, 2, 3, 5, 8, 10]
    assert context_steps(12, 3) == [1, 2, 3, 12]
    assert context_steps(5, 0) == [5]
    np.testing.assert_allclose(margins(np.array([[0.1, 0.7, 0.2, 0.0, 0.0]])), [0.5])


def test_plots_and_markdown_without_recall(tmp_path):
    curve = [{"k": 1, "map@3": 0.5, "accuracy@1": 0.4}, {"k": 3, "map@3": 0.6, "accuracy@1": 0.5}]
    for path in (plot_context_curve(curve, 3, tmp_path / "c.png"),
                 plot_margins(np.array([0.2, 0.0, 1.0]), np.array([True, False, True]),
                              tmp_path / "m.png"),
                 plot_margins(np.array([0.3]), np.array([False]), tmp_path / "m1.png"),
                 plot_recall({"dense": {"n": 2, "recall@k": {"1": 0.5, "5": 1.0}},
                              "bm25": {"n": 2, "recall@k": {"1": 0.0, "5": 0.5}}},
                             tmp_path / "r.png")):
        assert path.read_bytes()[:8] == PNG
    m = {"questions": "q.csv", "index": "idx", "embedder": "e", "scorer": "s", "baseline": True,
         "retrieval": {"retriever": "dense", "top_k": 3, "query": "prompt"}, "n": 2,
         "map@3": 0.6, "accuracy@1": 0.5, "seconds_headline": 1.0, "seconds": 2.0,
         "map@3_vs_contexts": curve, "margin": {"right_median": 0.6, "wrong_median": None},
         "recall": None}
    md = report_markdown(m, {"curve": "c.png", "margins": "m.png"})
    assert "![MAP@3 vs number of contexts](c.png)" in md and "No recall@k" in md
    assert "| **0.600** | 0.500 | 2 |" in md


def test_focused_contexts_match_predict(tiny_index, with_title, tmp_path, minilm_path):
    """The headline is cut from a wider retrieval, then focused: exactly predict's contexts."""
    from pipeline.reporting.evaluation import EvaluateConfig, evaluate
    from pipeline.retrieval.retriever import RetrievalConfig

    reader = str(_tiny_reader("deberta-v2", tmp_path / "deberta", minilm_path))
    focus = RetrievalConfig(top_k=3, focus="sentences")
    out = tmp_path / "report"
    res = evaluate(EvaluateConfig(questions=str(with_title), index=str(tiny_index), out=str(out),
                                  readers=[reader], retrieval=focus, max_length=128,
                                  max_contexts=5, recall_k=(1, 5), plots=False, progress=False))
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["retrieval"]["focus"] == "sentences" and [c["k"] for c in m["map@3_vs_contexts"]] == [1, 2, 3, 5]
    pred = tmp_path / "pred" / "s.csv"
    from pipeline.answering.predictor import PredictConfig, predict

    p = predict(PredictConfig(questions=str(with_title), index=str(tiny_index), out=str(pred),
                              readers=[reader], retrieval=focus, max_length=128, progress=False))
    assert res.map3 == pytest.approx(p.map3, abs=1e-9)
    with open(out / "per_question.csv", encoding="utf-8", newline="") as f:
        ev = {r["id"]: float(r["score_A"]) for r in csv.DictReader(f)}
    rep = json.loads(pred.with_name("s.report.json").read_text(encoding="utf-8"))
    assert {q["id"]: round(q["scores"]["A"], 5) for q in rep["per_question"]} == pytest.approx(ev, abs=1e-4)
