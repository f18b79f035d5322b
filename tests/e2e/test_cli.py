"""End to end through ``python -m``: build a tiny index with the real MiniLM, predict, check outputs."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import EASY_IDS, REPO, _sample_rows, _tiny_reader, run_cli

SAMPLE = REPO / "data" / "sample_questions.csv"


def test_build_writes_a_self_describing_index(tiny_index, tiny_corpus):
    meta = json.loads((tiny_index / "meta.json").read_text())
    assert meta["complete"] is True
    assert meta["embedder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["embedder"]["dim"] == 384 and meta["embedder"]["normalize"] is True
    assert meta["chunking"]["max_tokens"] == 96
    assert meta["index"]["type"] == "flat"
    assert meta["counts"]["documents"] == 40
    assert meta["counts"]["passages"] >= 40
    assert set(meta["files"]) == {"faiss.index", "passages.parquet"}
    assert not (tiny_index.parent / ".tiny.partial").exists()
    import pyarrow.parquet as pq

    table = pq.read_table(tiny_index / "passages.parquet")
    assert table.column_names == ["passage_id", "doc_id", "doc_title", "text"]
    assert table.num_rows == meta["counts"]["passages"]
    ids = table.column("passage_id").to_pylist()
    assert len(set(ids)) == len(ids) and ids[0] == "doc0:0"


def test_predict_answers_easy_questions(tiny_index, easy_questions, tmp_path):
    out = tmp_path / "sub" / "submission.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", out, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "MAP@3 = " in res.stdout and "baseline" in res.stdout
    with open(out, encoding="utf-8", newline="") as f:
        sub = list(csv.DictReader(f))
    assert [r["id"] for r in sub] == list(EASY_IDS)
    for r in sub:
        letters = r["prediction"].split(" ")
        assert len(letters) == 3 and len(set(letters)) == 3 and set(letters) <= set("ABCDE")
    answers = {r["id"]: r["answer"] for r in _sample_rows()}
    right = sum(r["prediction"][0] == answers[r["id"]] for r in sub)
    assert right >= 3, sub
    report = json.loads(out.with_name("submission.report.json").read_text())
    assert report["baseline"] is True and report["map@3"] > 0.6
    q0 = report["per_question"][0]
    assert len(q0["passages"]) == 5 and sorted(q0["ranking"]) == list("ABCDE")


def test_predict_refuses_to_overwrite(tiny_index, easy_questions, tmp_path):
    out = tmp_path / "submission.csv"
    out.write_text("keep me\n")
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", out)
    assert res.returncode == 2
    assert "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert out.read_text() == "keep me\n"


def test_predict_bad_questions_writes_nothing(tiny_index, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt,A,B,C,D,E\n1,What?,a,b,,d,e\n", encoding="utf-8")
    out = tmp_path / "submission.csv"
    res = run_cli("predict", bad, "--index", tiny_index, "--out", out)
    assert res.returncode == 2
    assert "bad.csv" in res.stderr and "row 1" in res.stderr and "'C'" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() and not out.with_name("submission.report.json").exists()


def test_predict_refuses_mismatched_embedder(tiny_index, easy_questions, tmp_path):
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", tmp_path / "s.csv",
                  "--embedder", "sentence-transformers/all-mpnet-base-v2")
    assert res.returncode == 2
    assert "all-MiniLM-L6-v2" in res.stderr and "rebuild" in res.stderr
    assert not (tmp_path / "s.csv").exists()


def test_predict_missing_index(easy_questions, tmp_path):
    res = run_cli("predict", easy_questions, "--index", tmp_path / "nope", "--out", tmp_path / "s.csv")
    assert res.returncode == 2 and "build_index" in res.stderr and "Traceback" not in res.stderr


def test_build_refuses_existing_index_without_overwrite(tiny_index, tiny_corpus):
    before = (tiny_index / "meta.json").read_text()
    res = run_cli("build_index", "--corpus", tiny_corpus, "--out", tiny_index)
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert (tiny_index / "meta.json").read_text() == before


def test_build_missing_column_names_the_flag(tmp_path):
    corpus = tmp_path / "c.csv"
    corpus.write_text("page,body\nWater,Water is wet.\n", encoding="utf-8")
    res = run_cli("build_index", "--corpus", corpus, "--out", tmp_path / "idx")
    assert res.returncode == 2 and "--title-column" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "idx").exists()


def test_help_shows_examples():
    for mod in ("build_index", "predict"):
        res = run_cli(mod, "--help")
        assert res.returncode == 0 and "examples:" in res.stdout and "python -m pipeline." in res.stdout


@pytest.mark.parametrize("kind", ["deberta-v2", "longformer"])
def test_predict_with_tiny_random_reader(kind, tiny_index, easy_questions, tmp_path, minilm_path):
    reader = _tiny_reader(kind, tmp_path / kind, minilm_path)
    out = tmp_path / "submission.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", reader,
                  "--out", out, "--max-length", "128", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "MAP@3 = " in res.stdout and "baseline" not in res.stdout
    with open(out, encoding="utf-8", newline="") as f:
        sub = list(csv.DictReader(f))
    assert len(sub) == len(EASY_IDS)
    for r in sub:
        letters = r["prediction"].split(" ")
        assert len(letters) == 3 and len(set(letters)) == 3 and set(letters) <= set("ABCDE")
    report = json.loads(out.with_name("submission.report.json").read_text())
    assert report["baseline"] is False and report["scorers"][0]["max_length"] == 128
