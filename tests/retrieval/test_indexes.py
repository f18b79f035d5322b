"""Several indexes searched as one (pipeline.retrieval.indexes): reciprocal-rank fusion, unique
prefixed ids, one candidate per passage text, and predict/evaluate with --index twice."""

from __future__ import annotations

import json

import pytest

from conftest import predict_report, run_cli
from pipeline.questions import load_questions
from pipeline.retrieval.contexts import Contexts
from pipeline.retrieval.indexes import IndexSet, fuse_contexts, unique_names
from pipeline.retrieval.retriever import RetrievalConfig, rrf_fuse


def ctx(*items: tuple[str, str]) -> Contexts:
    return Contexts(rows=list(range(len(items))), passage_ids=[p for p, _ in items],
                    titles=["T"] * len(items), texts=[t for _, t in items],
                    scores=[1.0] * len(items))


def test_fusion_sums_a_shared_text_once_and_prefixes_ids():
    a = ctx(("a0", "Mars is red."), ("a1", "Venus is hot."), ("a2", "Io is a moon."))
    b = ctx(("b0", "Salt is NaCl."), ("b1", "mars  is RED."))  # same text as a0, other spacing
    out = fuse_contexts([a, b], ["wiki", "stem"], k=60, top_k=3)
    # a0 is rank 1 in a and rank 2 in b: 1/61 + 1/62 beats every single-list passage
    assert out.passage_ids == ["wiki:a0", "stem:b0", "wiki:a1"]
    assert out.scores[0] == pytest.approx(1 / 61 + 1 / 62)
    assert out.scores[1:] == pytest.approx([1 / 61, 1 / 62])
    assert out.rows == [] and len(out.texts) == 3
    want = rrf_fuse([[0, 1, 2], [3, 0]], k=60)[:3]
    assert [round(s, 9) for _, s in want] == [round(s, 9) for s in out.scores]


def test_unique_names():
    assert unique_names(["x/idx", "y/idx", "z/idx", "w/other"]) == ["idx", "idx#2", "idx#3", "other"]


@pytest.fixture(scope="module")
def second_index(tmp_path_factory, tiny_corpus):
    """Three documents: one repeats the tiny corpus's first document word for word, two are
    new (one of them is the only source of a question below)."""
    first = json.loads(tiny_corpus.read_text(encoding="utf-8").splitlines()[0])
    docs = [dict(first, id="copy0"),
            {"id": "n1", "title": "Zyxtrolite",
             "text": "Zyxtrolite is a fictional blue mineral mined on the moon Quorvath. "
                     "It glows when heated above 900 degrees."},
            {"id": "n2", "title": "Plimber",
             "text": "A plimber is an imaginary tool used to tune harpsichords."}]
    corpus = tmp_path_factory.mktemp("c2") / "second.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    out = tmp_path_factory.mktemp("idx2") / "extra"
    res = run_cli("build_index", "--corpus", corpus, "--out", out, "--chunk-size", "96",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    return out


def _questions(tmp_path, easy_questions):
    rows = easy_questions.read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    extra = {h: "" for h in header}
    extra.update(id="zyx", prompt="Which mineral found on the moon Quorvath glows when heated?",
                 A="Zyxtrolite", B="Quartz", C="Feldspar", D="Mica", E="Pyrite", answer="A")
    path = tmp_path / "q.csv"
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(csv.DictReader(easy_questions.open(encoding="utf-8")))
        w.writerow(extra)
    return path


def test_predict_searches_both_indexes(tiny_index, second_index, easy_questions, tmp_path):
    qpath = _questions(tmp_path, easy_questions)
    rep = predict_report(qpath, tiny_index, tmp_path / "s.csv", "--index", second_index,
                         "--top-k", "3")
    assert [d["name"] for d in rep["indexes"]] == ["tiny", "extra"]
    assert rep["index"] == [str(tiny_index), str(second_index)]
    passages = {q["id"]: q["passages"] for q in rep["per_question"]}
    every = [p for ps in passages.values() for p in ps]
    assert all(p.split(":", 1)[0] in ("tiny", "extra") for p in every)
    # its only source is in the second index: fused in at rank 1 or 2 (the two lists' tops tie)
    assert "extra:n1:0" in passages["zyx"][:2], passages["zyx"]
    # the copied document is one candidate: its text never appears twice in a question's list
    ix = IndexSet.open([str(tiny_index), str(second_index)], device="cpu")
    qs = load_questions(qpath)
    for c in ix.retrieve(qs, RetrievalConfig(top_k=6), progress=False):
        assert len(set(c.texts)) == len(c.texts)
        assert len(set(c.passage_ids)) == len(c.passage_ids)
    # the two indexes share one embedder model
    assert ix.entries[0].embedder is ix.entries[1].embedder


def test_evaluate_with_two_indexes_finds_sources_in_either(tiny_index, second_index,
                                                           easy_questions, tmp_path):
    qpath = _questions(tmp_path, easy_questions)
    out = tmp_path / "report"
    res = run_cli("evaluate", qpath, "--index", tiny_index, "--index", second_index, "--out", out,
                  "--no-progress", "--no-plots", "--max-contexts", "0", "--recall-k", "1,3")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["indexes"]) == 2 and m["recall"]["dense"]["n"] == 5  # zyx names no source
    assert m["recall"]["dense"]["recall@k"]["3"] >= 0.8


def test_an_embedder_that_built_no_index_is_refused(tiny_index, second_index, easy_questions,
                                                    tmp_path, minilm_path):
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--index", second_index,
                  "--out", tmp_path / "s.csv", "--embedder", "no/such-model")
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "--embedder" in errors[0], res.stderr
