"""--max-index-memory: autofaiss-style choice, recorded in meta.json, IVF memory-mapped, clear
errors up front; the flat index streamed to disk byte-identical to faiss's own."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from conftest import make_passage, run_cli
from pipeline.index import faiss_index
from pipeline.errors import OpenbookError
from pipeline.index.sizing import choose_by_budget, estimate, index_bytes, parse_size
from pipeline.index.store import load_index
from pipeline.index.writer import IndexWriter


def _vectors(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim))
    x = (centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_parse_size():
    assert parse_size("4G") == 4 * 2**30 and parse_size("512m") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("100") == 100
    with pytest.raises(OpenbookError, match="512M, 4G"):
        parse_size("lots")


def test_flat_when_it_fits_else_compressed_by_budget():
    assert choose_by_budget(100_000, 384, parse_size("1G")).factory == "Flat"
    big = choose_by_budget(30_000_000, 384, parse_size("4G"))
    small = choose_by_budget(30_000_000, 384, parse_size("2G"))
    assert big.type == small.type == "ivfpq" and big.factory.startswith("OPQ")
    assert big.nlist == small.nlist == 65_536 and "HNSW32" in big.factory
    assert small.m < big.m and index_bytes(small, 30_000_000, 384) <= parse_size("2G")
    assert small.bytes_per_vector(384) == small.m + 8
    assert small.train_size == 100 * small.nlist and small.nprobe >= 16
    e = estimate(small, 30_000_000, 384)
    assert e["index_bytes"] <= parse_size("2G") < e["disk_bytes_during_build"]


def test_budget_too_small_names_the_minimum():
    with pytest.raises(OpenbookError, match=r"cannot hold even the smallest index .* raise "
                                            r"--max-index-memory to at least"):
        choose_by_budget(60_000_000, 384, parse_size("100M"))
    with pytest.raises(OpenbookError, match="too few to train a compressed index"):
        choose_by_budget(500, 384, parse_size("10K"))
    with pytest.raises(OpenbookError, match="drop --index-type flat"):
        choose_by_budget(1_000_000, 384, parse_size("1G"), index_type="flat")


def test_streamed_flat_file_is_faiss_own():
    import faiss

    x = _vectors(1000, 24)
    ref = faiss.IndexFlatIP(24)
    ref.add(x)
    buf = io.BytesIO()
    faiss_index.write_flat_streaming(buf, 24, 1000, [x[:300], x[300:999], x[999:]])
    assert buf.getvalue() == faiss.serialize_index(ref).tobytes()


def test_budget_index_recorded_and_ivf_loaded_memory_mapped(tmp_path):
    import faiss

    n, dim = 2000, 8  # small: OPQ training is slow on a busy 2-core machine
    vecs = _vectors(n, dim)
    budget = 50_000  # flat needs 64,000 bytes
    spec = choose_by_budget(n, dim, budget)
    assert spec.type == "ivfpq" and spec.factory.startswith(f"OPQ{spec.m}_")
    w = IndexWriter(tmp_path / "idx", dim=dim)
    for s in range(0, n, 500):
        w.add([make_passage(f"d{i}:0", f"d{i}", "T", "x") for i in range(s, s + 500)], vecs[s:s + 500])
    meta = w.finish({"embedder": {"name": "fake", "dim": dim, "normalize": True}}, spec)
    rec = json.loads((tmp_path / "idx" / "meta.json").read_text())["index"]
    assert rec == meta["index"] and rec["factory"] == spec.factory
    assert rec["nlist"] == spec.nlist and rec["m"] == spec.m and rec["opq"] == spec.opq
    assert rec["nprobe"] == spec.nprobe and rec["bytes_per_vector"] == spec.m + 8
    assert meta["files"]["faiss.index"]["bytes"] <= budget

    store = load_index(tmp_path / "idx", mmap=True)
    lists = faiss.extract_index_ivf(store.index).invlists
    assert type(faiss.downcast_InvertedLists(lists)).__name__ == "OnDiskInvertedLists"
    assert faiss.extract_index_ivf(store.index).nprobe == spec.nprobe
    _, ids = store.search(vecs[:100], k=10, nprobe=spec.nlist)
    assert np.mean([i in row for i, row in enumerate(ids)]) > 0.5
    in_ram = load_index(tmp_path / "idx", mmap=False)
    lists = faiss.extract_index_ivf(in_ram.index).invlists
    assert type(faiss.downcast_InvertedLists(lists)).__name__ == "ArrayInvertedLists"


def test_cli_refuses_a_budget_that_cannot_hold_the_index_before_embedding(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"title": f"T{i}", "text": f"Text number {i}."}) + "\n"
                              for i in range(50)))
    out = tmp_path / "idx"
    res = run_cli("build_index", "--corpus", corpus, "--out", out, "--no-bm25", "--no-progress",
                  "--max-index-memory", "2K")
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: --max-index-memory 2.0 KB cannot hold")
    assert "raise --max-index-memory to" in err and "before any embedding" in err
    assert not out.exists() and not list(tmp_path.glob(".idx.*"))
    res = run_cli("build_index", "--corpus", corpus, "--out", out, "--max-index-memory", "lots")
    assert res.returncode == 2 and "not a size" in res.stderr
