"""Rerank and cascade on the held-out test questions: recall, MAP@3 and seconds, one run.

Every figure goes through ``pipeline.evaluate`` (the library behind the CLI), so it is what
``predict`` would give with the same flags:

* recall@1/3/5 of the source passage for dense, BM25 and hybrid retrieval, each without and
  with the reranker (``--rerank``, over the first ``--rerank-top`` candidates), on all test
  questions and on the ``stem_1k`` ones (ids ``stem-*``), with seconds per question;
* MAP@3 of the zero-shot scorer and of each ``--readers`` folder on top-k contexts, without
  and with reranked contexts;
* with ``--cascade FIRST SECOND``: MAP@3 and seconds against the fraction of questions the
  first scorer (``zero-shot`` or a reader folder) sends on to the second
  (:func:`pipeline.readers.cascade.curve`).

Set-up (docs/results.md, "Rerank and cascade")::

    python -m benchmarks.shared_split --out runs/split
    python -m benchmarks.haystack --out runs/haystack.jsonl
    python -m pipeline.build_index --corpus runs/haystack.jsonl --out index/haystack
    python -m pipeline.train_reranker runs/split/train.csv --valid runs/split/valid.csv \\
        --index index/haystack --out runs/rerankers/minilm --epochs 1
    python -m benchmarks.rerank_cascade --index index/haystack --test runs/split/test.csv \\
        --rerank runs/rerankers/minilm --readers runs/readers/minilm \\
        --cascade zero-shot runs/readers/minilm
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import markdown
from pipeline.reporting.evaluation import EvaluateConfig, evaluate
from pipeline.retrieval.retriever import RetrievalConfig

log = logging.getLogger("rerank_cascade")


def subset(test_csv: str, prefix: str, out: Path) -> Path:
    """The rows of ``test_csv`` whose id starts with ``prefix``, written to ``out``."""
    with open(test_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["id"].startswith(prefix))
    return out


def run(questions: Path, index: str, work: Path, name: str, **kw) -> tuple[dict, float]:
    """``(metrics.json, seconds)`` of one evaluate run (no plots, no context curve)."""
    t = time.perf_counter()
    res = evaluate(EvaluateConfig(questions=str(questions), index=index, out=str(work / name),
                                  max_contexts=0, recall_k=(1, 3, 5), plots=False,
                                  progress=False, **kw))
    return res.metrics, time.perf_counter() - t


def table(cols: list[str], rows: list[list]) -> str:
    return markdown([dict(zip(cols, r)) for r in rows], cols)


def recall_rows(label: str, m: dict) -> list[list]:
    return [[label, name, r["n"], *(r["recall@k"][k] for k in ("1", "3", "5"))]
            for name, r in m["recall"].items()]


def fusion_rows(test_csv: str, index: str, rerank: str, top: int, first: str) -> list[list]:
    """Source recall@1/3/5 of the ``first`` retriever's order, the reranker's and their RRF
    (``--rerank-fusion rrf``), from one scoring pass over the same ``top`` candidates; all
    test questions and the ``stem-`` ones."""
    from pipeline.questions import load_questions
    from pipeline.retrieval.indexes import IndexSet
    from pipeline.retrieval.rerank import fuse_ranks, load_reranker, order_by_score
    from pipeline.retrieval.sources import load_sources, recall_from_ranks, source_rank

    qs = load_questions(test_csv)
    sources = load_sources(test_csv, qs)
    cands = IndexSet.open(index).retrieve(qs, RetrievalConfig(top_k=top, retriever=first),
                                          progress=False)
    reranker = load_reranker(rerank)
    t = time.perf_counter()
    scored = reranker.rerank(qs, cands, top_k=top)  # every candidate, in the reranker's order
    secs = (time.perf_counter() - t) / max(1, len(qs))
    by_id = [dict(zip(c.passage_ids, c.scores)) for c in scored]
    orders = {"retrieval": lambda c, s: c,
              "reranker": lambda c, s: c.take(order_by_score(s)),
              "rrf(retrieval, reranker)": lambda c, s: c.take(order_by_score(fuse_ranks(s)))}
    rows = []
    for label, keep in (("all test", lambda q: True), ("stem_1k test", lambda q: q.id.startswith("stem-"))):
        idx = [i for i, q in enumerate(qs) if keep(q) and sources[i] is not None]
        for name, order in orders.items():
            ranks = [source_rank(order(cands[i], [by_id[i][p] for p in cands[i].passage_ids]),
                                 sources[i]) for i in idx]
            r = recall_from_ranks(ranks, (1, 3, 5))
            rows.append([label, f"{first} top {top}, {name}", len(idx),
                         *(round(r[k], 3) for k in (1, 3, 5))])
    print(f"reranker: {secs:.3f} s/question for {top} candidates", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--rerank", required=True)
    p.add_argument("--rerank-top", type=int, default=20)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--readers", nargs="*", default=[])
    p.add_argument("--cascade", nargs=2, metavar=("FIRST", "SECOND"))
    p.add_argument("--fusion-only", action="store_true",
                   help="only the table of retrieval order vs reranker vs their RRF")
    p.add_argument("--first", default="dense", help="first stage of the fusion table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(f"2-core x86_64 VM, no GPU; load average at start {os.getloadavg()}")
    fusion = fusion_rows(args.test, args.index, args.rerank, args.rerank_top, args.first)
    print("\nSource recall, one scoring pass, three orders of the same candidates:\n")
    print(table(["questions", "order", "n", "R@1", "R@3", "R@5"], fusion), flush=True)
    if args.fusion_only:
        return 0
    work = Path(tempfile.mkdtemp(prefix="rerank_cascade."))
    stem = subset(args.test, "stem-", work / "stem.csv")
    plain = RetrievalConfig(top_k=args.top_k)
    rr = RetrievalConfig(top_k=args.top_k, rerank=args.rerank, rerank_top=args.rerank_top)

    rows, maps = [], []
    for label, qs in (("all test", Path(args.test)), ("stem_1k test", stem)):
        m, secs = run(qs, args.index, work, f"recall-{label[:3]}", retrieval=rr)
        rows += recall_rows(label, m)
        n = m["n"]
        if label == "all test":
            maps.append(["zero-shot", "reranked", m["map@3"], round(m["seconds_headline"] / n, 3)])
        print(f"{label}: recall run {secs:.0f} s for {n} questions", flush=True)
    m, _ = run(Path(args.test), args.index, work, "zs-plain", retrieval=plain)
    maps.append(["zero-shot", "retrieved", m["map@3"], round(m["seconds_headline"] / m["n"], 3)])
    for reader in args.readers:
        for how, retrieval in (("retrieved", plain), ("reranked", rr)):
            m, _ = run(Path(args.test), args.index, work, f"rd-{how}", retrieval=retrieval,
                       readers=[reader])
            maps.append([reader, how, m["map@3"], round(m["seconds_headline"] / m["n"], 3)])
    print("\nRecall of the source passage (reranker over the first "
          f"{args.rerank_top} candidates):\n")
    print(table(["questions", "retriever", "n", "R@1", "R@3", "R@5"], rows))
    print(f"\nMAP@3 on {args.test} (top-{args.top_k} contexts):\n")
    print(table(["scorer", "contexts", "MAP@3", "s/question"], maps))
    if args.cascade:
        first, second = args.cascade
        readers = [] if first == "zero-shot" else [first]
        m, _ = run(Path(args.test), args.index, work, "cascade", retrieval=plain,
                   readers=readers, cascade=[second])
        n = m["n"]
        print(f"\nCascade {first} -> {second} (MAP@3 and seconds/question against the "
              "fraction sent on; fraction 0 = the first alone, 1 = the second alone):\n")
        print(table(["fraction sent", "questions", "MAP@3", "s/question"],
                       [[r["fraction"], r["sent"], r["map@3"], round(r["seconds"] / n, 3)]
                        for r in m["cascade_curve"]]))
    print(f"\nload average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
