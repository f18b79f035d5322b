"""Zero-shot baseline and dense retrieval on the labelled questions of ../shared/data.

Figures, all measured in the same run on the same questions:

* longest-option baseline (no context);
* zero-shot scorer with the *gold* passage each question was written from;
* zero-shot scorer with *retrieved* contexts (top-k from an index where the gold
  passages sit among the 10,033 demo summaries: see ``benchmarks.haystack``);
* recall@k of the gold passage for that retrieval (a passage is the gold one by the
  rule of :mod:`pipeline.retrieval.sources`, as in ``pipeline.evaluate``: its haystack
  document, or any passage that repeats most of the question's ``context``).

    python -m benchmarks.haystack --out /tmp/haystack.jsonl
    python -m pipeline.build_index --corpus /tmp/haystack.jsonl --out index/haystack
    python -m benchmarks.zeroshot_shared --index index/haystack [--limit 300]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED, needle_id


def main() -> int:
    from pipeline.retrieval.setup import open_embedder
    from pipeline.index.chunking import with_title
    from pipeline.metrics import map_at_3, rank_letters
    from pipeline.questions import load_questions
    from pipeline.retrieval.sources import Source, source_recall
    from pipeline.retrieval.retriever import RetrievalConfig, retrieve
    from pipeline.index.store import load_index
    from pipeline.readers.zeroshot import ZeroShotScorer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default="index/haystack")
    p.add_argument("--files", nargs="+", default=["stem_1k.csv", "extra_500.csv"])
    p.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    p.add_argument("--top-k", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    store = load_index(args.index)
    emb = open_embedder(store, None, None)
    scorer = ZeroShotScorer(emb)
    rows = []
    for name in args.files:
        qs = load_questions(SHARED / name)[: args.limit]
        ans = [q.answer for q in qs]
        stem = Path(name).stem
        lengths = np.array([[len(o) for o in q.options] for q in qs], dtype=float)
        t = time.perf_counter()
        ctx = retrieve(qs, store, emb, RetrievalConfig(top_k=max(10, args.top_k)), progress=False)
        t_ret = (time.perf_counter() - t) / len(qs)
        gold = [Source.of(context=q.context, doc_id=needle_id(stem, q.id)) for q in qs]
        recall = source_recall(ctx, gold, (1, 3, 5, 10))
        prompts = [q.prompt for q in qs]
        options = [list(q.options) for q in qs]
        t = time.perf_counter()
        s_gold = scorer.score(prompts, options, [q.context or "" for q in qs], progress=False)
        t_gold = (time.perf_counter() - t) / len(qs)
        top = ["\n".join(with_title(t, x) for t, x in zip(c.titles[: args.top_k], c.texts[: args.top_k]))
               for c in ctx]  # exactly what predict reads with --top-k
        s_ret = scorer.score(prompts, options, top, progress=False)
        rows.append((name, len(qs), map_at_3(rank_letters(lengths), ans),
                     map_at_3(rank_letters(s_gold), ans), map_at_3(rank_letters(s_ret), ans),
                     recall, t_ret, t_gold))
    out = sys.stdout
    out.write(f"index {args.index}: {store.size} passages, embedder {emb.name}, top-k {args.top_k}\n\n")
    out.write("| file | questions | longest option | zero-shot, gold passage | zero-shot, retrieved "
              "| recall@1 | @3 | @5 | @10 | s/question retrieval | s/question scoring |\n")
    out.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
    for name, n, lo, zg, zr, rc, tr, tg in rows:
        out.write(f"| {name} | {n} | {lo:.3f} | {zg:.3f} | {zr:.3f} | {rc[1]:.3f} | {rc[3]:.3f} "
                  f"| {rc[5]:.3f} | {rc[10]:.3f} | {tr:.3f} | {tg:.3f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
