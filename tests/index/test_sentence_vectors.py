"""Sentence vectors (pipeline.index.sentences, python -m pipeline.sentence_vectors): built once,
looked up by predict instead of embedding, the same answers, damage refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import predict_report, report_scores, run_cli
from pipeline.index.sentences import (_rows, keys_of, load_sentence_vectors,
                                      passage_sentence_texts)


@pytest.fixture(scope="module")
def sv_index(tmp_path_factory, tiny_index):
    """A copy of the tiny index with float32 sentence vectors."""
    out = tmp_path_factory.mktemp("sv") / "idx"
    shutil.copytree(tiny_index, out)
    res = run_cli("sentence_vectors", "--index", out, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "distinct sentences" in res.stdout
    return out


def _damaged_copy(sv_index, tmp_path):
    out = tmp_path / "idx"
    shutil.copytree(sv_index, out)
    return out


def test_every_passage_sentence_is_stored_with_its_live_vector(sv_index, minilm_path):
    table = pq.read_table(sv_index / "passages.parquet", columns=["doc_title", "text"])
    sents = sorted({s for t, x in zip(table.column("doc_title").to_pylist(),
                                      table.column("text").to_pylist())
                    for s in passage_sentence_texts(t, x)})
    meta = json.loads((sv_index / "meta.json").read_text())
    rec = meta["sentences"]
    assert rec["count"] == len(sents) and rec["passages"] == meta["counts"]["passages"]
    assert rec["embedder"]["name"] == meta["embedder"]["name"] and rec["dtype"] == "float32"
    sv = load_sentence_vectors(sv_index)
    found, rows = sv.lookup(sents + ["a sentence that is in no passage."])
    assert found[:-1].all() and not found[-1]
    assert len(set(rows[:-1].tolist())) == len(sents)  # one row each
    from pipeline.index.embedding import Embedder

    live = Embedder(minilm_path, device="cpu").encode(sents[:40])
    np.testing.assert_allclose(sv.vectors_of(rows[:40]), live, atol=2e-5)


def test_lookup_survives_equal_high_halves():
    keys = np.array([[1, 5], [2, 7], [2, 9], [3, 1]], dtype=np.uint64)
    query = np.array([[2, 9], [2, 7], [2, 8], [4, 0], [0, 0], [3, 1]], dtype=np.uint64)
    assert _rows(keys, query).tolist() == [2, 1, -1, -1, -1, 3]
    assert keys_of(["x"]).dtype == np.uint64 and keys_of(["x"]).shape == (1, 2)


def test_predict_looks_sentences_up_and_answers_as_live(sv_index, easy_questions, tmp_path):
    """Zero-shot with focused contexts: the context sentences come from the index (hits),
    only queries are embedded (misses), and the scores are those of embedding live."""
    args = ("--focus", "sentences")
    cached = predict_report(easy_questions, sv_index, tmp_path / "a.csv", *args)
    live = predict_report(easy_questions, sv_index, tmp_path / "b.csv", *args,
                          "--no-sentence-vectors")
    n = cached["n_questions"]
    sv = cached["sentence_vectors"]
    assert sv["used"] and sv["dtype"] == ["float32"]
    assert sv["hits"] >= 3 * n  # every context sentence
    assert sv["misses"] <= 13 * n  # the retrieval, focus and option queries only
    assert live["sentence_vectors"] == {"used": False, "indexes": [], "dtype": [], "hits": 0,
                                        "misses": 0}
    np.testing.assert_allclose(report_scores(cached), report_scores(live), atol=1e-3)
    assert [q["ranking"] for q in cached["per_question"]] == \
        [q["ranking"] for q in live["per_question"]]


def test_the_stored_vectors_are_what_predict_uses(sv_index, easy_questions, tmp_path):
    """Zeroed vectors of the right size change the zero-shot scores (so they are read), and
    --verify-index full refuses them by their sha256."""
    idx = _damaged_copy(sv_index, tmp_path)
    vec = np.load(idx / "sentences" / "vectors.npy", mmap_mode="r+")
    vec[:] = 0
    vec.flush()
    del vec
    good = predict_report(easy_questions, sv_index, tmp_path / "g.csv")
    bad = predict_report(easy_questions, idx, tmp_path / "z.csv")
    assert not np.allclose(report_scores(good), report_scores(bad), atol=1e-3)
    res = run_cli("predict", easy_questions, "--index", idx, "--out", tmp_path / "f.csv",
                  "--verify-index", "full", "--no-progress")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "sentences/vectors.npy fails its sha256 check" in res.stderr
    assert "pipeline.sentence_vectors --index" in res.stderr
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize("damage, message", [
    ("truncate", "sentences/vectors.npy has"),
    ("model", "not the index's embedder"),
    ("rule", "split by another rule"),
    ("count", "do not match meta.json"),
])
def test_damaged_sentence_vectors_are_one_line_errors(sv_index, easy_questions, tmp_path,
                                                      damage, message):
    idx = _damaged_copy(sv_index, tmp_path)
    meta = json.loads((idx / "meta.json").read_text())
    if damage == "truncate":
        with open(idx / "sentences" / "vectors.npy", "r+b") as f:
            f.truncate(1000)
    elif damage == "model":
        meta["sentences"]["embedder"]["name"] = "sentence-transformers/all-mpnet-base-v2"
    elif damage == "rule":
        meta["sentences"]["rule"] = "some older rule"
    else:
        meta["sentences"]["count"] += 1
    (idx / "meta.json").write_text(json.dumps(meta))
    res = run_cli("predict", easy_questions, "--index", idx, "--out", tmp_path / "p.csv",
                  "--no-progress")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert message in err and "pipeline.sentence_vectors --index" in err, err
    assert not (tmp_path / "p.csv").exists()
    ok = run_cli("predict", easy_questions, "--index", idx, "--out", tmp_path / "p.csv",
                 "--no-progress", "--no-sentence-vectors")
    assert ok.returncode == 0, ok.stderr  # the way round it


def test_cli_bad_input(tmp_path, tiny_index):
    res = run_cli("sentence_vectors", "--index", tmp_path / "nowhere", "--no-progress")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "nowhere" in res.stderr.strip().splitlines()[-1]
    res = run_cli("sentence_vectors", "--index", tiny_index, "--dtype", "int8")
    assert res.returncode == 2 and "--dtype" in res.stderr
    res = run_cli("sentence_vectors", "--index", tiny_index, "--batch-size", "0")
    assert res.returncode != 0 and "--batch-size must be >= 1" in res.stderr
    assert "sentences" not in json.loads((tiny_index / "meta.json").read_text())


def test_build_index_adds_them_in_float16(tiny_corpus, tmp_path):
    out = tmp_path / "idx16"
    res = run_cli("build_index", "--corpus", tiny_corpus, "--out", out, "--chunk-size", "96",
                  "--no-bm25", "--sentence-vectors", "float16", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "sentence vectors" in res.stdout
    sv = load_sentence_vectors(out, verify="full")
    assert sv.vectors.dtype == np.float16 and sv.record["dtype"] == "float16"
    norms = np.linalg.norm(sv.vectors_of(np.arange(len(sv))), axis=1)
    assert np.allclose(norms, 1.0, atol=2e-3)
