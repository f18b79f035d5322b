"""Reranking and the confidence cascade inside predict and evaluate (issue #21).

Proves: ``retrieve`` with a reranker keeps the cross-encoder's best ``top_k`` of the first
``rerank_top`` candidates; a reranker saved in a reader's record is reapplied by predict (and
``--rerank none`` turns it off); the cascade sends exactly the least confident questions to
the second reader, whose probabilities replace (or are averaged with) the first stage's;
evaluate reports recall with and without the reranker and the cascade curve, whose ends are
the two stages alone; bad flags and reranker folders are one-line errors before any work.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import EASY_IDS, _tiny_reader, predict_report, report_scores, run_cli
from pipeline.index.chunking import with_title
from pipeline.index.embedding import Embedder
from pipeline.index.store import load_index
from pipeline.metrics import margins, softmax
from pipeline.questions import load_questions
from pipeline.retrieval.query import make_query
from pipeline.retrieval.rerank import load_reranker, order_by_score
from pipeline.retrieval.retriever import RetrievalConfig, first_stage, retrieve


@pytest.fixture(scope="module")
def deberta(tmp_path_factory, minilm_path) -> str:
    return str(_tiny_reader("deberta-v2", tmp_path_factory.mktemp("rd") / "deberta", minilm_path))


def _predict(questions, index, out, *args) -> dict:
    return predict_report(questions, index, out, "--max-length", "96", *args)


def test_retrieve_keeps_the_cross_encoders_best_of_the_first_stage(tiny_index, easy_questions,
                                                                    tiny_cross_encoder):
    store = load_index(tiny_index)
    emb = Embedder(store.meta["embedder"]["name"], device="cpu")
    qs = load_questions(easy_questions)
    got = retrieve(qs, store, emb, RetrievalConfig(top_k=3, rerank=tiny_cross_encoder,
                                                   rerank_top=8), progress=False)
    cands = first_stage(qs, store, emb, RetrievalConfig(top_k=8), progress=False)
    reranker = load_reranker(tiny_cross_encoder, device="cpu")
    changed = 0
    for q, c, g in zip(qs, cands, got):
        assert len(c.passage_ids) == 8 and len(g.passage_ids) == 3
        s = reranker.score([(make_query(q.prompt, q.options), with_title(t, x))
                            for t, x in zip(c.titles, c.texts)]).tolist()
        best = order_by_score(s)[:3]
        assert g.passage_ids == [c.passage_ids[j] for j in best]
        assert g.scores == pytest.approx([s[j] for j in best], abs=1e-4)
        changed += g.passage_ids != c.passage_ids[:3]
    assert changed, "the random cross-encoder reorders at least one question's passages"


def test_a_reranker_saved_with_a_reader_is_reapplied_and_can_be_turned_off(
        tiny_index, easy_questions, tiny_cross_encoder, deberta, tmp_path):
    (tmp_path / "r").mkdir()
    reader = tmp_path / "r" / "deberta"
    import shutil

    shutil.copytree(deberta, reader)
    (reader / "openbook_reader.json").write_text(json.dumps(
        {"max_length": 96, "retrieval": {"top_k": 2, "rerank": tiny_cross_encoder,
                                         "rerank_top": 6}}))
    rep = _predict(easy_questions, tiny_index, tmp_path / "a.csv", "--reader", str(reader))
    assert rep["retrieval"]["rerank"] == tiny_cross_encoder
    assert rep["retrieval"]["rerank_top"] == 6 and rep["retrieval"]["top_k"] == 2
    store = load_index(tiny_index)
    emb = Embedder(store.meta["embedder"]["name"], device="cpu")
    qs = load_questions(easy_questions)
    want = retrieve(qs, store, emb, RetrievalConfig(top_k=2, rerank=tiny_cross_encoder,
                                                    rerank_top=6), progress=False)
    assert [q["passages"] for q in rep["per_question"]] == [c.passage_ids for c in want]

    off = _predict(easy_questions, tiny_index, tmp_path / "b.csv", "--reader", str(reader),
                   "--rerank", "none")
    plain = first_stage(qs, store, emb, RetrievalConfig(top_k=2), progress=False)
    assert [q["passages"] for q in off["per_question"]] == [c.passage_ids for c in plain]


@pytest.mark.parametrize("args, says", [
    (["--rerank", "no/such-reranker"], "--rerank no/such-reranker"),
    (["--rerank-top", "0"], "--rerank-top"),
    (["--cascade-fraction", "0.3"], "--cascade READER"),
    (["--cascade", "x", "--cascade-fraction", "1.5"], "--cascade-fraction"),
    (["--cascade", "x", "--cascade-fraction", "0.2", "--cascade-margin", "0.1"], "not both"),
    (["--tta", "9"], "--tta"),
    (["--max-memory", "lots"], "--max-memory"),
])
def test_bad_flags_are_one_line_errors_before_any_work(tiny_index, easy_questions, tmp_path,
                                                       args, says):
    out = tmp_path / "s.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", out, *args)
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_a_reader_folder_given_as_reranker_is_refused(tiny_index, easy_questions, deberta,
                                                      tmp_path):
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", tmp_path / "s.csv",
                  "--rerank", deberta)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr
    assert "multiple-choice reader" in errors[0] and "--reader" in errors[0]


def test_cascade_sends_the_least_confident_questions_to_the_second_reader(
        tiny_index, easy_questions, deberta, tmp_path):
    first = softmax(report_scores(_predict(easy_questions, tiny_index, tmp_path / "zs.csv")))
    second = report_scores(_predict(easy_questions, tiny_index, tmp_path / "rd.csv", "--reader",
                              deberta))
    rep = _predict(easy_questions, tiny_index, tmp_path / "c.csv", "--cascade", deberta,
                   "--cascade-fraction", "0.4")
    n_sent = math.ceil(0.4 * len(EASY_IDS))
    sent = np.zeros(len(EASY_IDS), bool)
    sent[np.argsort(margins(first), kind="stable")[:n_sent]] = True
    got = report_scores(rep)
    assert got[sent] == pytest.approx(second[sent], abs=2e-4)
    assert got[~sent] == pytest.approx(first[~sent], abs=2e-4)
    c = rep["cascade"]
    assert c["sent"] == n_sent and c["of"] == len(EASY_IDS) and c["readers"] == [deberta]
    assert c["seconds_second"] > 0 and "cascade to" in rep["scorer"]

    mean = report_scores(_predict(easy_questions, tiny_index, tmp_path / "m.csv", "--cascade", deberta,
                            "--cascade-margin", "1.0", "--cascade-combine", "mean"))
    assert mean == pytest.approx((first + second) / 2, abs=2e-4)  # every margin is below 1


def test_evaluate_reports_recall_with_and_without_the_reranker_and_the_cascade_curve(
        tiny_index, easy_questions, tiny_cross_encoder, deberta, tmp_path):
    out = tmp_path / "report"
    res = run_cli("evaluate", easy_questions, "--index", tiny_index, "--out", out,
                  "--no-progress", "--max-length", "96", "--max-contexts", "0",
                  "--recall-k", "1,3", "--rerank", tiny_cross_encoder, "--rerank-top", "6",
                  "--cascade", deberta)
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert {"dense", "dense+rerank"} <= set(m["recall"])
    assert m["recall"]["dense+rerank"]["n"] == m["recall"]["dense"]["n"] == len(EASY_IDS)
    assert "dense+rerank" in res.stdout
    curve = m["cascade_curve"]
    assert [r["fraction"] for r in curve] == [i / 10 for i in range(11)]
    assert curve[0]["sent"] == 0 and curve[-1]["sent"] == len(EASY_IDS)
    assert curve[0]["seconds"] < curve[-1]["seconds"]
    headline = next(r for r in curve if r["fraction"] == 0.3)
    assert m["map@3"] == pytest.approx(headline["map@3"], abs=1e-4)
    assert m["cascade"]["sent"] == math.ceil(0.3 * len(EASY_IDS))
    # the ends of the curve are the two stages alone, scored by predict on the same contexts
    alone = []
    for args in ([], ["--reader", deberta]):
        r = run_cli("predict", easy_questions, "--index", tiny_index, "--out",
                    tmp_path / f"p{len(args)}.csv", "--no-progress", "--max-length", "96",
                    "--rerank", tiny_cross_encoder, "--rerank-top", "6", *args)
        assert r.returncode == 0, r.stderr
        alone.append(float(r.stdout.split("MAP@3 = ")[1].split()[0]))
    assert curve[0]["map@3"] == pytest.approx(alone[0], abs=1e-4)
    assert curve[-1]["map@3"] == pytest.approx(alone[1], abs=1e-4)
    assert (out / "cascade.png").is_file() and "Confidence cascade" in (out / "report.md").read_text()
