"""The bounded-memory BM25 build writes exactly what bm25s's in-memory build writes.

Many runs and many column ranges are forced with a tiny ``memory_mb``; the files are
compared byte for byte with ``bm25s.BM25.index`` + ``save`` on the same term ids.
"""

from __future__ import annotations

import filecmp
import json
import random
import shutil
from array import array
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from reliability.reliability_helpers import assert_user_error
from pipeline.index.bm25 import TermTokenizer, load_bm25
from pipeline.index.bm25_build import _ranges, build_streaming, passage_texts


def _texts(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ("atom cell energy force gravity light mass orbit planet quantum river species "
             "theory velocity wave acid enzyme fossil Schrödinger H₂O 3.14 1,000").split()
    out = []
    for _ in range(n):  # some empty and some stop-word-only passages, a skewed vocabulary
        k = rng.choice([0, 0, 1, 3, 12, 40])
        out.append(" ".join(rng.choice(words[: rng.randint(1, len(words))])
                            + (str(rng.randint(0, 300)) if rng.random() < 0.3 else "")
                            for _ in range(k)) if rng.random() > 0.05 else "the of and")
    return out


def _in_memory(texts: list[str], tok: TermTokenizer, folder: Path, method: str) -> None:
    """What pipeline.index.bm25 did before the streaming build: bm25s on every passage's ids."""
    import bm25s

    t = tok.bm25s_tokenizer()
    docs = [array("i", ids) for ids in t.streaming_tokenize(texts, update_vocab=True,
                                                             allow_empty=True)]
    model = bm25s.BM25(k1=1.2, b=0.75, method=method)
    model.index((docs, t.get_vocab_dict()), create_empty_token=False, show_progress=False)
    model.save(str(folder), show_progress=False)


@pytest.mark.parametrize("method", ["lucene", "bm25+", "bm25l", "atire", "robertson"])
def test_streaming_files_equal_bm25s_in_memory(tmp_path, method):
    texts = _texts()
    tok = TermTokenizer.from_config("en_plus", "english")
    _in_memory(texts, tok, tmp_path / "ref", method)
    stats = build_streaming(None, tmp_path / "new", tok, k1=1.2, b=0.75, method=method,
                            memory_mb=0.004, texts=[texts[i:i + 50] for i in range(0, 600, 50)],
                            progress=False)
    assert stats.runs > 5 and stats.ranges > 5 and stats.num_docs == 600  # really out of core
    assert stats.n_empty == sum(not t for t in tok.terms(texts)) > 0
    ref = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ref  # runs/ removed
    for name in ref:
        assert filecmp.cmp(tmp_path / "ref" / name, tmp_path / "new" / name, shallow=False), name


def test_one_run_one_range_is_the_same_as_many(tmp_path):
    texts = _texts(300, seed=3)
    tok = TermTokenizer.from_config("en", "none")
    for name, mb in (("big", 64), ("small", 0.002)):
        build_streaming(None, tmp_path / name, tok, k1=0.9, b=0.4, method="lucene",
                        memory_mb=mb, texts=[texts], progress=False)
    for f in ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"):
        assert filecmp.cmp(tmp_path / "big" / f, tmp_path / "small" / f, shallow=False)
    indptr = np.load(tmp_path / "big" / "indptr.csc.index.npy")
    assert indptr[-1] > 0 and np.all(np.diff(indptr) >= 0)


def test_ranges_cover_every_term_once_and_respect_the_cap():
    indptr = np.concatenate([[0], np.cumsum([3, 0, 9, 1, 1, 1, 0, 2, 5])])
    got = _ranges(indptr, cap=4)
    assert got[0][0] == 0 and got[-1][1] == 9
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))  # consecutive, no gaps
    for lo, hi in got:  # within the cap, or a single column that alone exceeds it
        assert indptr[hi] - indptr[lo] <= 4 or hi - lo == 1
    assert (2, 3) in got  # the 9-pair column stands alone


def test_cli_rebuild_with_little_memory_gives_the_same_bm25(tmp_path, tiny_index):
    index = tmp_path / "idx"
    shutil.copytree(tiny_index, index)
    before = json.loads((index / "meta.json").read_text())["bm25"]
    texts = [t for batch in passage_texts(index / "passages.parquet") for t in batch]
    tok = TermTokenizer.from_config("en_plus", before["tokenizer"]["stemmer"])
    res = run_cli("bm25", "--index", index, "--memory", "1M", "--no-progress")
    assert res.returncode == 0, res.stderr
    after = json.loads((index / "meta.json").read_text())["bm25"]
    assert after["build"]["memory_mb"] == 1.0 and after["nnz"] == before["nnz"] > 0
    assert {k: v["sha256"] for k, v in after["files"].items()} == \
        {k: v["sha256"] for k, v in before["files"].items()}
    assert not (index / "bm25" / "runs").exists() and not (index / ".bm25.partial").exists()
    _in_memory(texts, tok, tmp_path / "ref", "lucene")  # and the same as bm25s in memory
    assert filecmp.cmp(tmp_path / "ref" / "data.csc.index.npy",
                       index / "bm25" / "data.csc.index.npy", shallow=False)
    scores, rows = load_bm25(index).search(["photosynthesis in plants"], k=3)
    assert rows.shape == (1, 3)


@pytest.mark.parametrize("cmd,flag,value", [("bm25", "--memory", "lots"),
                                            ("bm25", "--memory", "10K"),
                                            ("build_index", "--bm25-memory", "0.5K")])
def test_bad_memory_flag_is_one_line_before_any_work(tmp_path, tiny_index, tiny_corpus, cmd,
                                                     flag, value):
    if cmd == "bm25":
        index = tmp_path / "idx"
        shutil.copytree(tiny_index, index)
        meta_before = (index / "meta.json").read_bytes()
        res = run_cli("bm25", "--index", index, flag, value)
        assert (index / "meta.json").read_bytes() == meta_before
    else:
        res = run_cli("build_index", "--corpus", tiny_corpus, "--out", tmp_path / "new", flag, value)
        assert not (tmp_path / "new").exists()
    assert_user_error(res, flag, value)
