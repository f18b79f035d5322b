"""--engine ray on a local Ray (2 CPUs): the same passages as the single-process build, and the
IVF codes encoded in Ray tasks and appended in order equal to adding them in one process."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install '.[distributed]'")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")

from pipeline.index import faiss_index  # noqa: E402
from pipeline.index.build import BuildConfig, build_index  # noqa: E402
from pipeline.index.chunking import ChunkConfig  # noqa: E402
from pipeline.index.shards import ShardSet  # noqa: E402
from conftest import make_passage  # noqa: E402

# In `make test` (issue #22): a local Ray with 2 CPUs, a 40-document corpus.


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _corpus(path, n=40):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            extra = " It is long. " * (i % 3) * 12  # some documents give several passages
            f.write(json.dumps({"id": f"d{i}", "title": f"Topic {i}",
                                "text": f"Topic {i} is about the number {i * 7919 % 10007}.{extra}"})
                    + "\n")
    return path


def test_ray_build_equals_local_build(local_ray, tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl")
    common = dict(corpus=str(corpus), chunk=ChunkConfig(max_tokens=64, overlap_tokens=16),
                  shard_size=8, bm25=False, progress=False, keep_vectors=True)
    local = build_index(BuildConfig(out=str(tmp_path / "local"), **common))
    dist = build_index(BuildConfig(out=str(tmp_path / "ray"), engine="ray", **common))
    assert dist["build"]["engine"] == "ray" and dist["counts"]["shards"] > 3
    a = pq.read_table(tmp_path / "local" / "passages.parquet").to_pylist()
    b = pq.read_table(tmp_path / "ray" / "passages.parquet").to_pylist()
    assert len(a) == local["counts"]["passages"] > 40 and a == b
    va = np.fromfile(tmp_path / "local" / "vectors.f32", dtype=np.float32)
    vb = np.fromfile(tmp_path / "ray" / "vectors.f32", dtype=np.float32)
    np.testing.assert_allclose(va, vb, atol=1e-4)


def test_ivf_codes_from_shards_equal_single_process(local_ray, tmp_path):
    """The tasks return codes only; appended in order they give the very index (byte for
    byte) that adding every vector in one process gives."""
    import faiss

    from pipeline.index.ray_engine import add_ivf_ray

    dim, rng = 16, np.random.default_rng(0)
    x = rng.standard_normal((3000, dim)).astype(np.float32)
    shards = ShardSet.create(tmp_path / ".p", dim=dim, fingerprint={})
    for s in range(0, 3000, 700):
        part = x[s:s + 700]
        shards.write([make_passage(str(i), str(i), "", "") for i in range(len(part))], part)
    spec = faiss_index.IndexSpec(type="ivfpq", factory="IVF32,PQ4np", nlist=32, m=4, nbits=8,
                                 nprobe=8)
    sample = shards.sample(3000)
    one = faiss_index.build_from_blocks(spec, dim, sample, shards.iter_vectors(1000))
    trained = faiss_index.build_from_blocks(spec, dim, sample, [])
    merged = add_ivf_ray(trained, shards, in_flight=2)  # 5 shards through a window of 2
    assert merged.ntotal == one.ntotal == 3000
    assert faiss.serialize_index(merged).tobytes() == faiss.serialize_index(one).tobytes()
    faiss_index.set_nprobe(merged, 8)
    d1, i1 = one.search(x[:50], 5)
    d2, i2 = merged.search(x[:50], 5)
    np.testing.assert_array_equal(i1, i2)
