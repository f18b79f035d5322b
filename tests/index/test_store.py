"""The index directory: written atomically, loaded with checks, flat and IVF-PQ."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_passage
from pipeline.index import faiss_index
from pipeline.errors import IndexMismatchError, OpenbookError
from pipeline.index.store import load_index, read_meta
from pipeline.index.writer import IndexWriter


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write(out, n=300, dim=16, index_type="flat", **kw):
    vecs = _vectors(n, dim)
    w = IndexWriter(out, dim=dim, **kw)
    for s in range(0, n, 128):  # several shards
        w.add([make_passage(f"d{i}:0", f"d{i}", f"T{i}", f"text {i}")
               for i in range(s, min(n, s + 128))],
              vecs[s:s + 128])
    spec = faiss_index.choose_index(n, dim, index_type)
    meta = w.finish({"embedder": {"name": "fake", "dim": dim, "normalize": True}}, spec)
    return vecs, meta


def test_flat_roundtrip_exact_search(tmp_path):
    vecs, meta = _write(tmp_path / "idx")
    store = load_index(tmp_path / "idx")
    assert store.size == 300 and meta["complete"] and meta["index"]["type"] == "flat"
    scores, ids = store.search(vecs[[5, 250]], k=3)
    assert ids[:, 0].tolist() == [5, 250]
    rows = store.passages([250, 5, 250])
    assert [r["passage_id"] for r in rows] == ["d250:0", "d5:0", "d250:0"]
    assert rows[1]["doc_title"] == "T5" and rows[1]["text"] == "text 5"
    assert not list(tmp_path.glob(".idx.*"))  # nothing left beside it


def test_ivfpq_is_compressed_and_mmap_loads(tmp_path):
    n, dim = 4000, 32
    vecs, meta = _write(tmp_path / "ivf", n=n, dim=dim, index_type="ivfpq")
    assert meta["index"]["type"] == "ivfpq" and meta["index"]["nlist"] >= 1
    assert meta["files"]["faiss.index"]["bytes"] < n * dim * 4 / 2
    store = load_index(tmp_path / "ivf", mmap=True)
    _, ids = store.search(vecs[:50], k=10, nprobe=meta["index"]["nlist"])
    hits = np.mean([i in row for i, row in zip(range(50), ids)])
    assert hits > 0.8


def test_ivfpq_refuses_tiny_corpus():
    with pytest.raises(OpenbookError, match="--index-type flat"):
        faiss_index.choose_index(100, 32, "ivfpq")


def test_auto_picks_flat_then_ivfpq():
    assert faiss_index.choose_index(10_000, 384).type == "flat"
    spec = faiss_index.choose_index(2_000_000, 384)
    assert spec.type == "ivfpq" and spec.m == 48 and spec.bytes_per_vector(384) < 64


def test_existing_index_kept_until_overwrite(tmp_path):
    _write(tmp_path / "idx", n=100)
    with pytest.raises(OpenbookError, match="--overwrite"):
        IndexWriter(tmp_path / "idx", dim=16)
    _write(tmp_path / "idx", n=200, overwrite=True)
    assert load_index(tmp_path / "idx").size == 200


def test_incomplete_index_refused(tmp_path):
    w = IndexWriter(tmp_path / "idx", dim=16)
    w.add([make_passage("a:0", "a", "A", "x")], _vectors(1, 16))
    partial = w.partial
    with pytest.raises(OpenbookError, match="did not finish"):
        read_meta(partial)
    w.abort()
    assert not partial.exists()


def test_damaged_file_and_dim_mismatch_refused(tmp_path):
    _write(tmp_path / "idx", n=100)
    store = load_index(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="16-d"):
        store.search(_vectors(2, 8), k=1)
    with pytest.raises(IndexMismatchError, match="--embedder"):
        load_index(tmp_path / "idx", embedder="other-model")
    with open(tmp_path / "idx" / "passages.parquet", "ab") as f:
        f.write(b"junk")
    with pytest.raises(OpenbookError, match="damaged"):
        load_index(tmp_path / "idx")


def test_not_an_index(tmp_path):
    with pytest.raises(OpenbookError, match="build_index"):
        load_index(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(OpenbookError, match="meta.json"):
        load_index(tmp_path / "x")
    (tmp_path / "x" / "meta.json").write_text(json.dumps({"format_version": 99, "complete": True}))
    with pytest.raises(IndexMismatchError, match="version"):
        load_index(tmp_path / "x")


def test_second_build_refused_while_first_runs_and_stale_lock_taken_over(tmp_path):
    import subprocess
    import sys

    lock = tmp_path / ".idx.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(sleeper.pid))
        with pytest.raises(OpenbookError, match=f"another process \\(pid {sleeper.pid}\\)"):
            IndexWriter(tmp_path / "idx", dim=16)
        assert lock.exists()  # the running build's lock is left alone
    finally:
        sleeper.kill()
        sleeper.wait()
    # the builder died without cleaning up: its lock is stale and taken over
    _write(tmp_path / "idx", n=50)
    assert load_index(tmp_path / "idx").size == 50
    assert not lock.exists()
