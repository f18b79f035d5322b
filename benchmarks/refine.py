"""IVF-PQ with exact re-scoring (``build_index --refine``): recall, resident memory, disk, time.

Every variant is an index directory written by :class:`pipeline.index.writer.IndexWriter` (as
``build_index`` writes it) and measured in a fresh process that loads it with
:func:`pipeline.index.store.load_index` (memory-mapped, as ``predict`` does) and searches all
queries in one batched call, as ``predict`` does:

* ``Flat``: exact search, the baseline of every ratio (recall 1 by definition);
* ``IVF-PQ``: ``IVF{nlist},PQ48np`` alone (what ``--index-type ivfpq`` builds);
* ``IVF-PQ + refine K``: the same codes plus the exact vectors in ``faiss.index``
  (faiss ``IndexRefineFlat``), ``k * K`` candidates re-scored, for several ``K``.

Reported per variant, at the index's default ``nprobe`` and at 4x: ``R@10`` (mean overlap of
its top 10 with the exact top 10), resident memory per vector after the load (``RssAnon``
growth of the process from before the load, divided by the vectors: what the index costs in
RAM the kernel cannot take back), the search's working memory (``RssAnon`` growth during the
searches: buffers per query, not per vector), the file pages touched (``RssFile`` growth: page
cache, shared and evictable), the bytes on disk, and the search time against flat in the
same run.

Vectors: the real MiniLM vectors of a flat index (default ``index/haystack``, 15,010
passages) with the prompts of ``../shared/data/*.csv`` as queries (up to ``--queries``), or
``--synthetic N`` clustered 384-d unit vectors (the figures then say so).

Run::

    .venv/bin/python -m benchmarks.refine                          # haystack, ~3 min
    .venv/bin/python -m benchmarks.refine --synthetic 1000000      # ~20 min, ~5 GB of /tmp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, SHARED, markdown, synthetic_vectors

REFINES = (4, 8, 16)


def rss_bytes() -> dict:
    """``RssAnon`` and ``RssFile`` of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def measure(index_dir: str, queries: str, k: int, refine: int | None, nprobe: int | None,
            out: str) -> dict:
    """In a fresh process: load, search every query once (one batched call), RSS at each step."""
    import faiss  # noqa: F401  (imported before the first reading: libraries are not the index)
    import pyarrow.parquet  # noqa: F401

    from pipeline.index.store import load_index

    q = np.load(queries)
    before = rss_bytes()
    t = time.perf_counter()
    store = load_index(index_dir, mmap=True)
    load_s = time.perf_counter() - t
    loaded = rss_bytes()
    t = time.perf_counter()
    _, ids = store.search(q, k, refine=refine, nprobe=nprobe)
    search_s = time.perf_counter() - t
    after = rss_bytes()
    np.save(out, ids)
    return {"load_s": load_s, "search_s": search_s,
            "anon_load": loaded["RssAnon"] - before["RssAnon"],
            "anon_search": after["RssAnon"] - before["RssAnon"],
            "file_search": after["RssFile"] - before["RssFile"]}


def real_vectors(index_dir: Path, n_queries: int) -> tuple[np.ndarray, np.ndarray, str]:
    import faiss

    from pipeline.index.embedding import Embedder
    from pipeline.index.store import read_meta

    meta = read_meta(index_dir)
    db = faiss.read_index(str(index_dir / "faiss.index")).reconstruct_n(0, meta["counts"]["passages"])
    prompts = []
    for path in sorted(SHARED.glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            prompts += [r["prompt"] for r in csv.DictReader(f)]
    q = Embedder(meta["embedder"]["name"]).encode(prompts[:n_queries])
    return db, q, (f"{len(db):,} real MiniLM passage vectors ({index_dir}), {len(q):,} "
                   "shared-data prompts as queries")


def write(out: Path, db: np.ndarray, spec) -> int:
    """An index directory of ``db`` with ``spec``; its bytes on disk."""
    from pipeline.index.chunking import Passage
    from pipeline.index.writer import IndexWriter

    w = IndexWriter(out, dim=db.shape[1])
    for s in range(0, len(db), 50_000):
        part = db[s:s + 50_000]
        w.add([Passage(str(i), str(i), "", "", 0) for i in range(s, s + len(part))], part)
    meta = w.finish({"embedder": {"name": "benchmark", "dim": db.shape[1], "normalize": True}},
                    spec)
    return int(meta["files"]["faiss.index"]["bytes"])


def run_measure(index_dir: Path, queries: Path, k: int, refine: int | None,
                nprobe: int | None, tmp: Path):
    ids_path = tmp / f"ids-{index_dir.name}-{refine}-{nprobe}.npy"
    cmd = [sys.executable, "-m", "benchmarks.refine", "--measure", str(index_dir),
           "--query-file", str(queries), "--k", str(k), "--ids", str(ids_path)]
    if refine:
        cmd += ["--refine", str(refine)]
    if nprobe:
        cmd += ["--nprobe", str(nprobe)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(ids_path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, default=REPO / "index" / "haystack")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N")
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nlist", type=int, default=None,
                    help="IVF lists (default: the build's rule; 4096 for 1M here, where the "
                         "rule's 16,384 takes too long to train on 2 cores)")
    ap.add_argument("--refines", type=int, nargs="+", default=list(REFINES),
                    help="k_factors searched (default: %(default)s)")
    ap.add_argument("--nprobes", type=int, nargs="+", default=None,
                    help="nprobe values (default: the index's own and 4x)")
    ap.add_argument("--tmp", default=None, help="where the indexes are written (default /tmp)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--query-file", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    ap.add_argument("--refine", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nprobe", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.query_file, args.k, args.refine, args.nprobe,
                                 args.ids)))
        return 0

    from pipeline.index.faiss_index import choose_index, with_refine

    if args.synthetic:
        db, q, what = synthetic_vectors(args.synthetic, args.queries, query_seed=1)
    else:
        db, q, what = real_vectors(args.index, args.queries)
    n, dim = db.shape
    nlist = args.nlist or (4096 if n >= 1_000_000 else None)
    ivf = choose_index(n, dim, "ivfpq", nlist=nlist)
    ivf = replace(ivf, train_size=min(ivf.train_size, 200_000))
    load = os.getloadavg()
    print(f"vectors: {what}; k={args.k}; {ivf.factory}, nprobe {ivf.nprobe}; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        qf = tmp / "queries.npy"
        np.save(qf, q.astype(np.float32))
        disk = {"flat": write(tmp / "flat", db, choose_index(n, dim, "flat")),
                "ivfpq": write(tmp / "ivfpq", db, ivf),
                "refine": write(tmp / "refine", db, with_refine(ivf, 8))}
        del db
        variants = [("Flat (exact)", "flat", None, None)]
        for nprobe in args.nprobes or (ivf.nprobe, 4 * ivf.nprobe):
            variants += [("IVF-PQ", "ivfpq", None, nprobe)]
            variants += [(f"IVF-PQ + refine {r}", "refine", r, nprobe) for r in args.refines]
        truth = None
        for label, folder, refine, nprobe in variants:
            m, ids = run_measure(tmp / folder, qf, args.k, refine, nprobe, tmp)
            if truth is None:
                truth, flat_s = ids, m["search_s"]
            r10 = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, truth)])
            rows.append({
                "index": label, "nprobe": nprobe or "-", "R@10": f"{r10:.3f}",
                "resident after load": f"{m['anon_load'] / n:.0f} B/vector",
                "search working memory": f"{(m['anon_search'] - m['anon_load']) / 2**20:.0f} MB",
                "page cache touched": f"{m['file_search'] / 2**20:.0f} MB",
                "disk": f"{disk[folder] / n:.0f} B/vector",
                f"{len(q):,} queries": f"{m['search_s']:.2f} s",
                "vs flat": f"{m['search_s'] / max(flat_s, 1e-9):.2f}x"})
            print(rows[-1], flush=True)
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(markdown(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
