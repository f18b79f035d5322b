"""Recall@k of each question's source passage: dense vs BM25 vs hybrid vs per-option hybrid.

The haystack: every ``context`` of the question files (the passage each
question was written from; one document each, id ``ctx-N``, no title) mixed
among the 10,033 demo-corpus summaries (``--format demo``, ids ``demo-N``).
A question scores a hit at k when one of its first k retrieved passages is
its source by the rule of :mod:`pipeline.retrieval.sources` (the one
``pipeline.evaluate`` uses): a passage of its own context document (contexts
longer than a passage are chunked like any document, so any of their passages
counts), or any passage that shares at least half of the word 3-grams of the
shorter of (passage, context). stem_1k often has several questions, each with
its own context, from one Wikipedia page (ctx-0 to ctx-4 are all the UCF
College of Engineering); a passage from a sibling context counts when it
repeats most of the question's context and is a miss otherwise, though it may
answer the question, which is why every retriever scores lower at R@1 on
stem_1k than on extra_500.

The index is built once with the library (:func:`pipeline.index.build.build_index`,
default MiniLM embedder and chunking, BM25 included) under ``--work`` and
reused by later runs; BM25 is added to it if it lacks one. Every retriever
runs in the same process on the same index, and the table gives recall@1/3/5/10
and seconds per question (retrieval only: the models and indexes are loaded
before the clock starts).

Run (from the repository root; CPU-bound: on 2 busy cores ~15 min to build the index the
first time, then ~7 min)::

    nohup .venv/bin/python -m benchmarks.retrieval_recall > index/recall_bench.log 2>&1 &

    # quicker look: 200 questions per file
    .venv/bin/python -m benchmarks.retrieval_recall --limit 200
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from benchmarks.common import REPO
from pipeline.cli import setup_logging
from pipeline.corpus.stream import iter_documents
from pipeline.index.bm25 import add_bm25, has_bm25
from pipeline.index.build import BuildConfig, build_index
from pipeline.index.embedding import Embedder
from pipeline.index.store import META_FILE, load_index
from pipeline.retrieval.sources import Source, source_recall
from pipeline.retrieval.retriever import RetrievalConfig, retrieve

log = logging.getLogger("retrieval_recall")

DEFAULT_FILES = ("../shared/data/stem_1k.csv", "../shared/data/extra_500.csv")
KS = (1, 3, 5, 10)

#: name -> retrieval settings compared (all with top_k = max(KS)).
METHODS = {
    "dense": dict(retriever="dense"),
    "dense, query=prompt": dict(retriever="dense", query="prompt"),
    "bm25": dict(retriever="bm25"),
    "hybrid": dict(retriever="hybrid"),
    "hybrid per-option": dict(retriever="hybrid", per_option=True),
    "dense per-option": dict(retriever="dense", per_option=True),
}


@dataclass(frozen=True)
class Q:
    """A question as :func:`pipeline.retrieval.retriever.retrieve` wants it, plus its source:
    its context document in the haystack and the context's text."""

    prompt: str
    options: tuple[str, ...]
    doc_id: str
    context: str

    def source(self) -> Source | None:
        return Source.of(context=self.context, doc_id=self.doc_id)


def load_questions(files: Sequence[str]) -> tuple[dict[str, list[Q]], dict[str, str]]:
    """``({file stem: questions}, {context text: doc id})``; identical contexts share a document."""
    import pandas as pd

    sets: dict[str, list[Q]] = {}
    ctx_ids: dict[str, str] = {}
    for f in files:
        df = pd.read_csv(REPO / f if not Path(f).is_absolute() else f, keep_default_na=False)
        qs = []
        for r in df.itertuples(index=False):
            doc = ctx_ids.setdefault(r.context, f"ctx-{len(ctx_ids)}")
            qs.append(Q(str(r.prompt), tuple(str(getattr(r, c)) for c in "ABCDE"), doc, r.context))
        sets[Path(f).stem] = qs
    return sets, ctx_ids


def write_corpus(path: Path, ctx_ids: dict[str, str]) -> int:
    """The haystack as JSON Lines (contexts first, then the demo summaries); returns documents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for text, doc in ctx_ids.items():
            f.write(json.dumps({"id": doc, "title": "", "text": text}, ensure_ascii=False) + "\n")
            n += 1
        for k, d in enumerate(iter_documents(None, "demo")):
            f.write(json.dumps({"id": f"demo-{k}", "title": d.title, "text": d.text},
                               ensure_ascii=False) + "\n")
            n += 1
    return n


def ensure_index(work: Path, ctx_ids: dict[str, str], rebuild: bool) -> Path:
    """Build ``work/index`` (dense + BM25) unless an index of the same corpus is there."""
    corpus, out = work / "corpus.jsonl", work / "index"
    fresh = work / "corpus.new.jsonl"
    write_corpus(fresh, ctx_ids)
    same = corpus.exists() and corpus.read_bytes() == fresh.read_bytes()
    fresh.replace(corpus)
    if rebuild or not same or not (out / META_FILE).exists():
        log.info("building %s from %s", out, corpus)
        build_index(BuildConfig(corpus=str(corpus), format="jsonl", out=str(out), overwrite=True))
    elif not has_bm25(json.loads((out / META_FILE).read_text())):
        add_bm25(out)
    return out


def table(rows_out: list) -> list[str]:
    head = "| questions | n | retriever | " + " | ".join(f"R@{k}" for k in KS) + " | s/question |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for set_name, n, name, rec, sec in rows_out:
        lines.append(f"| {set_name} | {n} | {name} | "
                     + " | ".join(f"{rec[k]:.3f}" for k in KS) + f" | {sec:.4f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", nargs="+", default=list(DEFAULT_FILES),
                   help="question CSVs with a context column (default: %(default)s)")
    p.add_argument("--work", default="index/recall_bench", help="index + corpus folder")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--rebuild", action="store_true", help="rebuild the index even if present")
    args = p.parse_args(argv)
    setup_logging()
    sets, ctx_ids = load_questions(args.files)
    if args.limit:  # fewer questions, same haystack (every context stays in the corpus)
        sets = {name: qs[:args.limit] for name, qs in sets.items()}
    out = ensure_index(REPO / args.work, ctx_ids, args.rebuild)
    store = load_index(out)
    embedder = Embedder(store.meta["embedder"]["name"])
    bm = store.meta["bm25"]
    log.info("index %s: %d passages; bm25 %s", out, store.size,
             {k: bm[k] for k in ("params", "tokenizer", "vocab_size")})
    # Warm up (loads BM25 memory-mapped, first-call model overheads) before timing.
    retrieve(sets[next(iter(sets))][:2], store, embedder, RetrievalConfig(retriever="hybrid"),
             progress=False)
    top_k = max(KS)
    sources = {name: [q.source() for q in qs] for name, qs in sets.items()}
    rows_out = []
    for name in args.methods:
        cfg = RetrievalConfig(top_k=top_k, **METHODS[name])
        for set_name, qs in sets.items():
            t = time.perf_counter()
            ctx = retrieve(qs, store, embedder, cfg, progress=False)
            sec = (time.perf_counter() - t) / len(qs)
            rec = source_recall(ctx, sources[set_name], KS)
            rows_out.append((set_name, len(qs), name, rec, sec))
            log.info("%s %s: %s, %.3f s/question", set_name, name, rec, sec)
    lines = [f"index: {store.size} passages ({len(ctx_ids)} contexts + demo summaries), "
             f"embedder {store.meta['embedder']['name']}, bm25 {bm['params']} "
             f"stemmer={bm['tokenizer']['stemmer']} stopwords={bm['tokenizer']['stopwords']}, "
             f"top_k={top_k}, RRF k=60, equal weights", ""] + table(rows_out)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
