"""BM25 + hybrid retrieval on a tiny index built here with the real MiniLM."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from pipeline.index.bm25 import (Bm25MissingError, TermTokenizer, bm25_for, has_bm25, load_bm25,
                           stemmer_available)
from pipeline.retrieval.retriever import RetrievalConfig, make_queries, retrieve, rrf_fuse

#: Made-up documents: words and numbers that occur nowhere else in the corpus.
DOCS = {
    "zorb": ("Zorblaxite", "Zorblaxite is a blue mineral first described in 1897 by the geologist "
             "Henrietta Quall. Its hardness is 7741.3 on the extended Quall scale, and it only "
             "dissolves in H2O at pressures above 3.14 atmospheres."),
    "quen": ("Quentarium", "Quentarium is a metallic element with atomic number 187. It glows green "
             "when heated and was isolated from meteorite dust in Tromsø."),
    "velm": ("Velmorine", "Velmorine is an alkaloid found in the bark of the Pellucid oak. It slows "
             "the heart rate of frogs and tastes of aniseed."),
    "velm2": ("Velmorine (copy)", "Velmorine is an alkaloid found in the bark of the Pellucid oak. "
              "It slows the heart rate of frogs and tastes of aniseed."),
    "drask": ("Draskel pondweed", "Draskel pondweed is an aquatic plant of alpine lakes that fixes "
              "nitrogen with the help of cyanobacteria living in its hollow stems."),
    "opal": ("Opalith nebula", "The Opalith nebula is a planetary nebula in the constellation Lyra, "
             "shaped like a ring and lit by a white dwarf of 0.6 solar masses."),
}


@dataclass(frozen=True)
class Q:
    prompt: str
    options: tuple[str, ...]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_summaries) -> Path:
    path = tmp_path_factory.mktemp("rcorpus") / "docs.jsonl"
    others = sorted(demo_summaries)[::400][:25]
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
        for k, t in enumerate(others):
            f.write(json.dumps({"id": f"demo{k}", "title": t,
                                "text": demo_summaries[t]["extract"]}) + "\n")
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory, corpus) -> Path:
    from pipeline.index.build import BuildConfig, build_index
    from pipeline.index.chunking import ChunkConfig

    out = tmp_path_factory.mktemp("ridx") / "tiny"
    meta = build_index(BuildConfig(corpus=str(corpus), out=str(out), chunk=ChunkConfig(96),
                                   progress=False))
    assert has_bm25(meta)
    return out


@pytest.fixture(scope="module")
def store(index):
    from pipeline.index.store import load_index

    return load_index(index, verify="full")


@pytest.fixture(scope="module")
def embedder():
    from pipeline.index.embedding import Embedder

    return Embedder()


def _doc(store, ctx) -> list[str]:
    return [p["doc_id"] for p in store.passages(ctx.rows)]


def test_bm25_saved_in_index_and_mmap_loaded(index, store):
    meta = json.loads((index / "meta.json").read_text())
    assert set(meta["files"]) == {"faiss.index", "passages.parquet"}  # top level unchanged
    bm = meta["bm25"]
    assert bm["params"] == {"k1": 1.2, "b": 0.75, "method": "lucene"}
    assert bm["tokenizer"]["stopwords"] == "en_plus" and bm["tokenizer"]["n_stopwords"] > 100
    assert bm["tokenizer"]["stemmer"] == ("english" if stemmer_available() else None)
    assert bm["num_docs"] == meta["counts"]["passages"] and bm["vocab_size"] > 100
    for name, rec in bm["files"].items():
        assert name.startswith("bm25/") and (index / name).stat().st_size == rec["bytes"]
    assert {"bm25/data.csc.index.npy", "bm25/vocab.index.json", "bm25/tokenizer.json"} <= set(bm["files"])
    assert not (index / ".bm25.partial").exists()
    loaded = load_bm25(index, verify="full")
    assert isinstance(loaded.model.scores["data"], np.memmap)
    assert loaded.size == store.size
    assert bm25_for(store) is bm25_for(store)  # cached on the store


def test_damaged_bm25_file_is_reported(index, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    with open(copy / "bm25" / "indices.csc.index.npy", "ab") as f:
        f.write(b"\0")
    with pytest.raises(Exception, match="python -m pipeline.bm25 --index"):
        load_bm25(copy)


def test_tokenizer_keeps_numbers_drops_stopwords():
    tok = TermTokenizer.from_config("en_plus", "none")
    terms = tok.terms(["The H₂O of Schrödinger boils at 3.14 or 1,000 K in 1905."])[0]
    assert terms == ["h2o", "schrodinger", "boils", "3.14", "1000", "k", "1905"]
    if stemmer_available():
        assert TermTokenizer.from_config("en_plus", "english").terms(["proteins folding"]) == [
            ["protein", "fold"]]


def test_exact_number_found_by_bm25_at_rank_1(store):
    q = Q("Which mineral has a hardness of 7741.3?", ("quartz", "talc", "gypsum", "topaz", "mica"))
    ctx = retrieve([q], store, None, RetrievalConfig(top_k=3, retriever="bm25"), progress=False)[0]
    assert _doc(store, ctx)[0] == "zorb"
    assert ctx.scores == sorted(ctx.scores, reverse=True) and ctx.scores[0] > 0
    scores, rows = bm25_for(store).search(["7741.3", "qwzxv unknownword"], k=4)
    assert store.passages([rows[0, 0]])[0]["doc_id"] == "zorb"
    assert rows[0, 1] == -1  # no other passage shares the term
    assert (rows[1] == -1).all() and (scores[1] == 0).all()  # no known term


def test_rrf_fusion_on_hand_made_rankings():
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]], k=60)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    # weights: the second list counts double
    assert [i for i, _ in rrf_fuse([[1, 2], [2, 1]], weights=[1.0, 2.0])] == [2, 1]
    # padding (-1) and repeats within a list are skipped; ranks count real items only
    assert rrf_fuse([[-1, 5, 5, 6]], k=0) == [(5, 1.0), (6, 0.5)]
    # ties: better best rank first, then the earlier list
    assert [i for i, _ in rrf_fuse([[7, 8], [9, 7]])][:1] == [7]
    assert [i for i, _ in rrf_fuse([[1], [2]])] == [1, 2]
    assert rrf_fuse([]) == []
    with pytest.raises(ValueError):
        rrf_fuse([[1]], weights=[1.0, 2.0])


def test_hybrid_no_duplicates_at_most_top_k(store, embedder):
    q = Q("Which alkaloid from oak bark slows the heart rate of frogs?",
          ("Velmorine", "caffeine", "quinine", "nicotine", "morphine"))
    for k in (1, 3, 6):
        ctx = retrieve([q], store, embedder, RetrievalConfig(top_k=k, retriever="hybrid"),
                       progress=False)[0]
        assert 1 <= len(ctx.rows) <= k
        assert len(set(ctx.rows)) == len(ctx.rows)
        assert len({t.lower() for t in ctx.texts}) == len(ctx.texts)  # same text twice: once
        assert ctx.scores == sorted(ctx.scores, reverse=True)
        assert _doc(store, ctx)[0] in ("velm", "velm2")
        assert not {"velm", "velm2"} <= set(_doc(store, ctx))
        # the fused score: at most one rank-1 hit in each of the two lists
        assert ctx.scores[0] <= 2 / 61 + 1e-9


def test_config_defaults_and_checks(store):
    assert RetrievalConfig().retriever == "dense" and RetrievalConfig().per_option is False
    assert RetrievalConfig(retriever="hybrid").resolved(store.meta).retriever == "hybrid"
    meta = {k: v for k, v in store.meta.items() if k != "bm25"}
    assert RetrievalConfig().resolved(meta).retriever == "dense"
    with pytest.raises(Bm25MissingError, match="--retriever hybrid"):
        RetrievalConfig(retriever="hybrid").resolved(meta, "index/x")
    with pytest.raises(Exception, match="--per-option-queries"):
        RetrievalConfig(query="prompt", per_option=True)
    with pytest.raises(Exception, match="--retriever"):
        RetrievalConfig(retriever="sparse")


def test_per_option_queries_batched_and_fused(store, embedder, monkeypatch):
    # A prompt of stop words only: each option's own passage tops its own lists.
    q = Q("Which of these is it?",
          ("Zorblaxite", "Quentarium", "Velmorine", "Draskel pondweed", "Opalith nebula"))
    cfg = RetrievalConfig(top_k=6, retriever="hybrid", per_option=True)
    assert make_queries(q.prompt, q.options, cfg) == [f"{q.prompt} {o}" for o in q.options]
    calls = {"dense": [], "bm25": []}
    dense_search, bm = store.search, bm25_for(store)
    bm_search = bm.search
    monkeypatch.setattr(store, "search", lambda v, k, **kw: calls["dense"].append(len(v))
                        or dense_search(v, k, **kw))
    monkeypatch.setattr(bm, "search", lambda qs, k, **kw: calls["bm25"].append(len(qs))
                        or bm_search(qs, k, **kw))
    ctx = retrieve([q, q], store, embedder, cfg, progress=False)
    assert calls == {"dense": [10], "bm25": [10]}  # one call each, 2 questions x 5 options
    docs = set(_doc(store, ctx[0]))
    assert len(docs & {"zorb", "quen", "velm", "velm2", "drask", "opal"}) >= 5
    assert ctx[0].rows == ctx[1].rows and ctx[0].scores == sorted(ctx[0].scores, reverse=True)
    assert ctx[0].scores[0] <= 10 / 61 + 1e-9  # fused over 10 lists


def test_top_k_zero_and_no_questions(store, embedder):
    assert retrieve([], store, embedder, RetrievalConfig(retriever="hybrid")) == []
    q = Q("x", ("a", "b", "c", "d", "e"))
    assert retrieve([q], store, embedder, RetrievalConfig(top_k=0))[0].rows == []


def _questions_csv(path: Path) -> Path:
    rows = [
        {"id": "z", "prompt": "What is the hardness of Zorblaxite on the extended Quall scale?",
         "A": "7741.3", "B": "12", "C": "3.5", "D": "1897", "E": "0.6", "answer": "A"},
        {"id": "q", "prompt": "What is the atomic number of Quentarium?",
         "A": "92", "B": "187", "C": "26", "D": "7", "E": "118", "answer": "B"},
    ]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_predict_retriever_bm25_recorded_in_report(index, tmp_path):
    qs = _questions_csv(tmp_path / "q.csv")
    out = tmp_path / "s.csv"
    res = run_cli("predict", qs, "--index", index, "--out", out, "--retriever", "bm25",
                  "--top-k", "2", "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.with_name("s.report.json").read_text())
    assert report["retrieval"]["retriever"] == "bm25" and report["retrieval"]["per_option"] is False
    assert all(len(q["passages"]) == 2 for q in report["per_question"])
    assert report["per_question"][0]["passages"][0] == "zorb:0"
    res = run_cli("predict", qs, "--index", index, "--out", out, "--overwrite",
                  "--retriever", "hybrid", "--per-option-queries", "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.with_name("s.report.json").read_text())
    assert report["retrieval"]["retriever"] == "hybrid"
    assert report["retrieval"]["per_option"] is True and report["retrieval"]["rrf_k"] == 60


def test_no_bm25_build_then_add_bm25_stage(corpus, tmp_path):
    idx = tmp_path / "dense"
    res = run_cli("build_index", "--corpus", corpus, "--out", idx, "--chunk-size", "96",
                  "--no-bm25", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "no bm25" in res.stdout and not (idx / "bm25").exists()
    meta = json.loads((idx / "meta.json").read_text())
    assert "bm25" not in meta
    from pipeline.index.store import load_index

    store = load_index(idx)
    q = Q("What is 7741.3?", ("a", "b", "c", "d", "e"))
    for r in ("bm25", "hybrid"):
        with pytest.raises(Bm25MissingError, match=r"python -m pipeline.bm25 --index .*--no-bm25"):
            retrieve([q], store, None, RetrievalConfig(retriever=r))
    qs = _questions_csv(tmp_path / "q.csv")
    res = run_cli("predict", qs, "--index", idx, "--out", tmp_path / "s.csv", "--retriever", "bm25")
    assert res.returncode == 2 and "python -m pipeline.bm25 --index" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "s.csv").exists()
    # the BM25 stage alone, twice (re-runnable), then bm25 retrieval works
    for _ in range(2):
        res = run_cli("bm25", "--index", idx, "--stemmer", "none", "--no-progress")
        assert res.returncode == 0, res.stderr
        assert "vocabulary" in res.stdout
    meta = json.loads((idx / "meta.json").read_text())
    assert meta["bm25"]["tokenizer"]["stemmer"] is None
    store = load_index(idx)
    ctx = retrieve([q], store, None, RetrievalConfig(top_k=1, retriever="bm25"), progress=False)
    assert _doc(store, ctx[0]) == ["zorb"]


def test_bm25_stage_respects_the_build_lock(index, monkeypatch):
    import os

    from pipeline import bm25 as bm25_mod
    from pipeline.index.lock import BuildLock

    lock = BuildLock(index)
    lock.acquire()  # held by this process, as build_index holds it around add_bm25
    try:
        bm25_mod.add_bm25(index, progress=False)
        assert lock.path.exists() and lock.path.read_text() == str(os.getpid())
    finally:
        lock.release()
    assert not lock.path.exists()
    lock.path.write_text(str(os.getppid()))  # another live builder (our parent process)
    try:
        with pytest.raises(Exception, match="another process"):
            bm25_mod.add_bm25(index, progress=False)
    finally:
        lock.path.unlink()


def test_embedder_embeds_a_repeated_text_once(embedder, monkeypatch):
    texts = ["Quartz is hard.", "Talc is soft.", "Quartz is hard.", "Gypsum.", "Talc is soft."]
    expected = embedder.encode(list(dict.fromkeys(texts)))
    seen = []
    real = embedder.model.encode
    monkeypatch.setattr(embedder.model, "encode", lambda xs, **kw: seen.append(list(xs)) or real(xs, **kw))
    got = embedder.encode(texts)
    assert sorted(seen[0]) == sorted(set(texts)) and len(seen) == 1
    assert got.shape == (5, embedder.dim)
    np.testing.assert_allclose(got[[0, 1, 3]], expected, atol=1e-6)
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_array_equal(got[1], got[4])


def test_focus_puts_the_answering_sentence_first(store, embedder):
    from pipeline.retrieval.focus import passage_sentences

    q = Q("Above what pressure does Zorblaxite dissolve in water?",
          ("3.14 atmospheres", "1 atmosphere", "7741.3 atmospheres", "0.6 atmospheres", "never"))
    plain = retrieve([q], store, embedder, RetrievalConfig(top_k=3), progress=False)[0]
    focused = retrieve([q], store, embedder, RetrievalConfig(top_k=3, focus="sentences"),
                       progress=False)[0]
    assert focused.rows == plain.rows and plain.focused is None
    assert _doc(store, plain)[0] == "zorb"
    assert plain.joined().startswith("Zorblaxite")  # the passage as it is: title, first sentence
    first = focused.joined().split("\n")[0]
    assert "dissolves in H2O at pressures above 3.14" in first, focused.joined()
    # nothing added, nothing lost: the same sentences in another order
    every = [s for t, x in zip(plain.titles, plain.texts) for s in passage_sentences(t, x)]
    assert sorted(focused.joined().split("\n")) == sorted(every)


def test_focus_checks_and_empty_contexts(store, embedder):
    with pytest.raises(Exception, match="--focus must be one of none, sentences"):
        RetrievalConfig(focus="paragraphs")
    q = Q("x", ("a", "b", "c", "d", "e"))
    assert retrieve([q], store, embedder, RetrievalConfig(top_k=0, focus="sentences"),
                    progress=False)[0].joined() == ""
    with pytest.raises(ValueError, match="embedder"):
        retrieve([q], store, None, RetrievalConfig(retriever="bm25", focus="sentences"),
                 progress=False)
