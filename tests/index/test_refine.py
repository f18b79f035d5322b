"""IVF-PQ with exact re-scoring (``build_index --refine``): faiss's ``IndexRefineFlat``, its
exact part streamed to disk by the writer and memory-mapped at search time.

Proves: the streamed file is byte for byte what ``faiss.write_index`` writes for the same
index built in memory; a refine index finds the exact top-k far better than its IVF-PQ base
(and exactly, when every vector is a candidate); ``--refine`` at search time changes the
candidates; the flags' misuse is one line naming the flag and the fix.
"""

from __future__ import annotations

import io

import faiss
import numpy as np
import pytest

from conftest import make_passage, run_cli
from pipeline.errors import OpenbookError
from pipeline.index import faiss_index
from pipeline.index.store import load_index
from pipeline.index.writer import IndexWriter


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres: near-ties that PQ codes confuse."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _overlap(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)]))


def test_streamed_refine_file_is_what_faiss_writes():
    dim, n = 32, 2000
    x = _clustered(n, dim)
    base = faiss.index_factory(dim, "IVF16,PQ4np", faiss.METRIC_INNER_PRODUCT)
    base.train(x)
    ref = faiss.IndexRefineFlat(faiss.clone_index(base))
    ref.k_factor = 6.0
    ref.add(x)
    base.add(x)
    buf = io.BytesIO()
    faiss_index.write_refine_streaming(buf, base, dim, n, [x[:700], x[700:]], 6)
    assert buf.getvalue() == faiss.serialize_index(ref).tobytes()
    back = faiss.deserialize_index(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    assert type(back).__name__ == "IndexRefineFlat" and back.ntotal == n
    assert back.k_factor == 6.0


def _write(out, x: np.ndarray, refine: int | None):
    n, dim = x.shape
    w = IndexWriter(out, dim=dim)
    for s in range(0, n, 1000):
        w.add([make_passage(f"d{i}:0", f"d{i}", f"T{i}", f"text {i}")
               for i in range(s, min(n, s + 1000))], x[s:s + 1000])
    spec = faiss_index.with_refine(faiss_index.choose_index(n, dim, "ivfpq"), refine)
    return w.finish({"embedder": {"name": "fake", "dim": dim, "normalize": True}}, spec)


def test_refine_index_finds_the_exact_neighbours(tmp_path):
    dim, n = 64, 3000
    x = _clustered(n, dim)
    q = _clustered(200, dim, seed=1)
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    _, want = exact.search(q, 10)
    meta = _write(tmp_path / "rf", x, refine=8)
    plain_meta = _write(tmp_path / "pq", x, refine=None)
    assert meta["index"]["refine"] == 8 and meta["index"]["factory"].endswith(",RFlat")
    # resident bytes are the codes'; the exact vectors are on disk
    assert meta["index"]["bytes_per_vector"] == plain_meta["index"]["bytes_per_vector"]
    assert meta["files"]["faiss.index"]["bytes"] > plain_meta["files"]["faiss.index"]["bytes"] \
        + n * dim * 4
    store = load_index(tmp_path / "rf")  # memory-mapped, as predict loads it
    plain = load_index(tmp_path / "pq")
    assert type(faiss.downcast_index(store.index)).__name__ == "IndexRefineFlat"
    _, pq_ids = plain.search(q, 10)
    s8, rf_ids = store.search(q, 10)
    assert _overlap(rf_ids, want) >= 0.95 > _overlap(pq_ids, want) + 0.1, (
        _overlap(rf_ids, want), _overlap(pq_ids, want))
    # the scores of a refine index are exact inner products, best first
    assert np.allclose(s8, np.einsum("qd,qkd->qk", q, x[rf_ids]), atol=1e-5)
    assert (np.diff(s8, axis=1) <= 1e-6).all()
    # --refine at search time: 1 re-scores only IVF-PQ's own top 10 (its set, exact order)
    _, one = store.search(q, 10, refine=1)
    assert [set(a) for a in one] == [set(a) for a in pq_ids]
    # every vector a candidate (and every list probed): exactly the flat search
    _, full = store.search(q, 10, nprobe=meta["index"]["nlist"], refine=n // 10)
    assert (full == want).mean() > 0.999
    with pytest.raises(OpenbookError, match="no exact re-scoring stage"):
        plain.search(q, 10, refine=4)


def test_with_refine_refuses_flat_and_bad_factors():
    with pytest.raises(OpenbookError, match="a flat index is exact already"):
        faiss_index.with_refine(faiss_index.choose_index(10, 8, "flat"), 4)
    with pytest.raises(OpenbookError, match="1 or more"):
        faiss_index.with_refine(faiss_index.choose_index(5000, 8, "ivfpq"), -2)
    spec = faiss_index.choose_index(5000, 8, "ivfpq")
    assert faiss_index.with_refine(spec, None) == spec


@pytest.mark.parametrize("args, says", [
    (["--index-type", "flat", "--refine", "4"], "a flat index is exact already"),
    (["--refine", "0"], "must be 1 or more"),
])
def test_build_index_refine_flag_errors(tmp_path, args, says):
    out = tmp_path / "idx"
    res = run_cli("build_index", "--format", "demo", "--limit", "5", "--out", out,
                  "--no-progress", "--no-bm25", *args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr
    assert "--refine" in errors[0] and says in errors[0]
    assert not out.exists()


def test_predict_refine_on_an_index_without_it(tiny_index, easy_questions, tmp_path):
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", tmp_path / "s.csv",
                  "--no-progress", "--refine", "4")
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert "--refine 4" in errors[0] and "no exact re-scoring stage" in errors[0]
    assert not (tmp_path / "s.csv").exists()
