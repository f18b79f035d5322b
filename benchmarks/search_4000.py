"""Competition-scale search: 4,000 queries x K=20 against 1M 384-d vectors with IVF-PQ.

``predict`` embeds all its queries and makes one batched ``IndexStore.search`` call
(:func:`pipeline.retrieval.retriever._ranked_lists`); this times that call on an index of the
kind ``--max-index-memory`` picks for 1M vectors, built from synthetic clustered
384-d unit vectors (real MiniLM vectors of 1M passages would take hours to embed
here), written to disk and loaded memory-mapped with :func:`pipeline.index.store.load_index`
like ``predict`` does. The baseline, in the same run: exact flat search of the same
queries over a subset (``--flat-subset``, default 100k vectors), scaled linearly to 1M
(flat search is linear in the vectors). Recall@20 of IVF-PQ against exact search is
measured on that subset too.

Run (~5-10 min on 2 busy cores, mostly training and adding)::

    .venv/bin/python -m benchmarks.search_4000
    .venv/bin/python -m benchmarks.search_4000 --n 200000   # quicker look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import clustered
from pipeline.index.chunking import Passage
from pipeline.index.sizing import choose_by_budget, parse_size
from pipeline.index.store import load_index
from pipeline.index.writer import IndexWriter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--budget", default="80M", help="--max-index-memory for the index choice "
                    "(80M at 1M vectors: OPQ48+IVF+PQ48, 56 B/vector)")
    ap.add_argument("--nlist", type=int, default=4096,
                    help="IVF lists (default 4096 = autofaiss's 4*sqrt(n) rule; its >=1M rule "
                         "says 16384, which takes too long to train here)")
    ap.add_argument("--train", type=int, default=200_000, help="training sample cap")
    ap.add_argument("--flat-subset", type=int, default=100_000)
    ap.add_argument("--nprobe", type=int, default=None, help="default: the index's own")
    ap.add_argument("--no-opq", action="store_true", help="IVF-PQ without the OPQ rotation "
                    "(OPQ training is the slow part on 2 cores; search cost is the same)")
    args = ap.parse_args()
    import faiss

    dim, rng = 384, np.random.default_rng(0)
    centers = rng.standard_normal((2000, dim)).astype(np.float32)
    spec = choose_by_budget(args.n, dim, parse_size(args.budget), nprobe=args.nprobe,
                            nlist=args.nlist)
    if spec.train_size:  # a flat index (the budget fits it) trains nothing
        spec = replace(spec, train_size=min(spec.train_size, args.train))
    if args.no_opq and spec.opq:
        from pipeline.index.sizing import ivfpq_spec

        spec = replace(ivfpq_spec(args.n, dim, spec.m, nlist=spec.nlist, nprobe=args.nprobe,
                                  opq=False), train_size=spec.train_size)
    print(f"{args.n:,} synthetic clustered 384-d vectors; {args.queries} queries x K={args.k}; "
          f"index {spec.factory} (--max-index-memory {args.budget}), nprobe {spec.nprobe}; "
          f"faiss threads {faiss.omp_get_max_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "idx"
        t = time.perf_counter()
        w = IndexWriter(out, dim=dim)
        block = 50_000
        for s in range(0, args.n, block):
            m = min(block, args.n - s)
            w.add([Passage(str(i), str(i), "", "", 0) for i in range(s, s + m)], clustered(m, centers, rng))
        w.finish({"embedder": {"name": "synthetic", "dim": dim, "normalize": True}}, spec)
        build_s = time.perf_counter() - t
        store = load_index(out, mmap=True)
        q = clustered(args.queries, centers, np.random.default_rng(1))
        t = time.perf_counter()
        _, ids = store.search(q, args.k)  # one batched call, as predict does
        ivf_s = time.perf_counter() - t
        # baseline: exact search over the first flat_subset vectors, same queries
        sub = min(args.flat_subset, args.n)
    rng = np.random.default_rng(0)  # regenerate the same first vectors for the subset
    centers = rng.standard_normal((2000, dim)).astype(np.float32)
    xs = np.concatenate([clustered(min(block, sub - s), centers, rng) for s in range(0, sub, block)])
    flat = faiss.IndexFlatIP(dim)
    flat.add(xs)
    t = time.perf_counter()
    _, truth = flat.search(q, args.k)
    flat_s = time.perf_counter() - t
    sub_ivf = faiss.index_factory(dim, spec.factory.replace(f"IVF{spec.nlist}", f"IVF{min(spec.nlist, sub // 39)}"),
                                  faiss.METRIC_INNER_PRODUCT)
    sub_ivf.train(xs[:min(sub, args.train, 100 * min(spec.nlist, sub // 39))])
    sub_ivf.add(xs)
    faiss.extract_index_ivf(sub_ivf).nprobe = spec.nprobe
    _, got = sub_ivf.search(q, args.k)
    recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, truth)])
    scaled = flat_s * args.n / sub
    print(f"build (train + add + write) {build_s:.1f} s")
    print(f"IVF-PQ, {args.n:,} vectors: {args.queries} queries in {ivf_s:.2f} s "
          f"({1000 * ivf_s / args.queries:.2f} ms/query)  goal <= 20 s")
    print(f"flat (exact) baseline, {sub:,} vectors: {flat_s:.2f} s -> ~{scaled:.1f} s scaled to "
          f"{args.n:,}; IVF-PQ is {scaled / max(ivf_s, 1e-9):.1f}x faster")
    print(f"recall@{args.k} of the same IVF-PQ settings vs exact on the {sub:,} subset: {recall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
