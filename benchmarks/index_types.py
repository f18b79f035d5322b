"""Bytes per vector and recall@10 of each index type, against exact search on the same vectors.

Database: the real MiniLM vectors of a built flat index (default ``index/haystack``:
15,010 passages = the demo summaries + the shared questions' contexts; any flat
index works, ``--index``). Queries: the prompts of ``../shared/data/stem_1k.csv``
embedded with the index's own embedder (``--queries N``), so this is the real
query distribution of ``predict``. Without those files, ``--synthetic N`` uses
clustered synthetic 384-d vectors instead (say so when you quote the figures).

For every index: the bytes per vector it really takes (``faiss.serialize_index`` size /
n), ``R@10`` = mean overlap of its top 10 with the exact top 10 (10-recall@10), and
``1-R@10`` = share of queries whose exact nearest passage is in its top 10 (faiss's
usual "R@10"), at its default ``nprobe`` and at 4x that. The baseline is exact
inner-product search (``Flat``) in the same run.

Run::

    .venv/bin/python -m benchmarks.index_types                  # ~2-4 min on 2 busy cores
    .venv/bin/python -m benchmarks.index_types --synthetic 200000
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, SHARED, synthetic_vectors
from pipeline.index import faiss_index
from pipeline.index.sizing import default_nprobe, ivfpq_spec, optimal_nlist


def real_vectors(index_dir: Path, questions: Path, n_queries: int):
    import faiss

    from pipeline.index.embedding import Embedder
    from pipeline.index.store import read_meta

    meta = read_meta(index_dir)
    flat = faiss.read_index(str(index_dir / "faiss.index"))
    db = flat.reconstruct_n(0, flat.ntotal)
    with open(questions, encoding="utf-8") as f:
        prompts = [r["prompt"] for r in csv.DictReader(f)][:n_queries]
    q = Embedder(meta["embedder"]["name"]).encode(prompts)
    return db, q, f"{len(db):,} real MiniLM passage vectors ({index_dir}), {len(q)} stem_1k prompts"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, default=REPO / "index" / "haystack")
    ap.add_argument("--questions", type=Path, default=SHARED / "stem_1k.csv")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--synthetic", type=int, default=0, metavar="N")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    import faiss

    if args.synthetic:
        db, q, what = synthetic_vectors(args.synthetic, args.queries)
    else:
        db, q, what = real_vectors(args.index, args.questions, args.queries)
    n, dim = db.shape
    k = args.k
    exact = faiss.IndexFlatIP(dim)
    exact.add(db)
    t = time.perf_counter()
    _, truth = exact.search(q, k)
    flat_s = time.perf_counter() - t
    nlist = optimal_nlist(n)
    specs = [("Flat (exact baseline)", None),
             ("IVF,SQ8", f"IVF{nlist},SQ8"),
             ("IVF,PQ48 (--index-type ivfpq)", f"IVF{nlist},PQ48np"),
             ("OPQ48+IVF+PQ48 (budget pick)", ivfpq_spec(n, dim, 48).factory),
             ("OPQ56+IVF+PQ56", f"OPQ56_336,IVF{nlist},PQ56np"),
             ("IVF,PQ96x4fs", f"IVF{nlist},PQ96x4fs"),
             ("OPQ32+IVF+PQ32", ivfpq_spec(n, dim, 32).factory)]
    train = db[np.random.default_rng(0).choice(n, size=min(n, 100 * nlist), replace=False)]
    print(f"vectors: {what}; k={k}; nlist={nlist}; hardware: see README (2-core Xeon VM, no GPU)")
    print(f"{'index':34} {'factory':34} {'B/vec':>6} {'nprobe':>6} {'R@10':>6} {'1-R@10':>6} "
          f"{'search s':>8} {'vs flat':>7}")
    for label, factory in specs:
        if factory is None:
            index = exact
        else:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            index.train(train)
            index.add(db)
        size = faiss.serialize_index(index).size
        probes = [None] if factory is None else [default_nprobe(nlist), 4 * default_nprobe(nlist)]
        for nprobe in probes:
            faiss_index.set_nprobe(index, nprobe)
            t = time.perf_counter()
            _, got = index.search(q, k)
            s = time.perf_counter() - t
            r10 = np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)])
            r1 = np.mean([t0 in a for a, t0 in zip(got, truth[:, 0])])
            print(f"{label:34} {factory or 'Flat':34} {size / n:6.1f} {nprobe or '-':>6} "
                  f"{r10:6.3f} {r1:6.3f} {s:8.3f} {s / max(flat_s, 1e-9):6.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
