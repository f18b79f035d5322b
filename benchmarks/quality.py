"""Answer quality, all measured in one run: baselines, trained readers, stacked readers, recall.

On a held-out split of ``../shared/data`` (``benchmarks.shared_split``: the
``test`` part is never trained on), with contexts retrieved from an index in
which the questions' source passages sit among distractors
(``benchmarks.haystack``: the 10,033 demo summaries), and on the demo
questions (``data/sample_questions.csv`` against ``index/demo``), it prints
MAP@3 / accuracy@1 / seconds per question of

* the longest option (no context);
* the zero-shot scorer (``predict`` without ``--reader``);
* each ``--reader``: the reader alone, and the reader with its stacker
  (``openbook_stack.json``, what ``predict --reader`` does);
* a mean-probability ensemble of all readers (as ``predict --reader A --reader B``);

and recall@1/3/5/10 of the source passage for the dense, BM25 and hybrid
retrievers on the test split (a passage is the source by the rule of
:mod:`pipeline.retrieval.sources`, the one ``pipeline.evaluate`` uses: here its
haystack document, or any passage that repeats most of the question's
``context``). Every scorer sees the same retrieved contexts.
Each MAP@3 comes with its standard error over the questions (``se``); with
``--versus SCORER`` every row also gets its difference from that scorer with a
95% paired-bootstrap interval (``vs``), which is what says whether a change is
more than the luck of which questions are in the split.

    python -m benchmarks.shared_split --out runs/split
    python -m benchmarks.haystack --out runs/haystack.jsonl
    python -m pipeline.build_index --corpus runs/haystack.jsonl --out index/haystack
    python -m pipeline.train runs/split/train.csv --valid runs/split/valid.csv \\
        --index index/haystack --out runs/readers/minilm ...
    python -m benchmarks.quality --index index/haystack --test runs/split/test.csv \\
        --readers runs/readers/minilm [runs/readers/mpnet] --json runs/quality.json \\
        [--versus "minilm + stacker"]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import cached_probabilities, markdown, source_doc_id
from pipeline.answering.predictor import PredictConfig, apply_stacker
from pipeline.retrieval.setup import open_embedder, reader_retrieval
from pipeline.cli import setup_logging
from pipeline.index.store import load_index
from pipeline.metrics import (accuracy_at_1, average_precisions, paired_bootstrap, rank_letters,
                              standard_error)
from pipeline.questions import load_questions
from pipeline.retrieval.sources import Source, source_recall
from pipeline.retrieval.retriever import RetrievalConfig, retrieve

log = logging.getLogger("quality")
KS = (1, 3, 5, 10)


def figures(scores: np.ndarray, answers: list[str], seconds: float) -> tuple[dict, np.ndarray]:
    """MAP@3 with its standard error over questions, accuracy@1, seconds per question; and
    the per-question average precisions ``(n,)`` they come from."""
    r = rank_letters(scores)
    ap = average_precisions(r, answers)
    return {"map@3": round(float(ap.mean()), 4),
            "se": round(standard_error(ap), 4) if len(ap) > 1 else None,
            "accuracy@1": round(accuracy_at_1(r, answers), 4),
            "s/question": round(seconds / len(answers), 4)}, ap


def compare(rows: list[dict], aps: list[np.ndarray], versus: str) -> None:
    """Add to each row ``vs``: its MAP@3 minus that of the first row whose scorer contains
    ``versus``, with a 95% paired-bootstrap interval over the questions (same questions,
    so the interval is much narrower than the two standard errors would suggest).
    ``aps[i]`` holds row i's per-question average precisions."""
    match = [i for i, r in enumerate(rows) if versus in r["scorer"]]
    if not match:
        raise SystemExit(f"--versus {versus!r} matches no scorer of this set; the scorers are: "
                         + "; ".join(r["scorer"] for r in rows))
    for row, ap in zip(rows, aps):
        d, lo, hi = paired_bootstrap(ap, aps[match[0]])
        row["vs"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def subset_ensembles(names: list[str], probs: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The mean-probability ensemble of every group of 2 .. len-1 readers: ``(label, (n, 5))``."""
    return [("ensemble " + " + ".join(names[i] for i in combo),
             np.mean([probs[i] for i in combo], axis=0))
            for size in range(2, len(names)) for combo in itertools.combinations(range(len(names)), size)]


def score_set(name: str, questions_csv: str, index: str, readers: list[str], top_k: int | None,
              with_zero_shot: bool = True, cache: str | None = None,
              max_length: int | None = None, versus: str | None = None,
              subsets: bool = False) -> list[dict]:
    """Every scorer on one question set; rows of the results table. ``max_length`` scores
    every reader at that many tokens instead of the length it was trained with; ``versus``
    names the scorer every row is compared with (see :func:`compare`); ``subsets`` adds the
    ensemble of every smaller group of two or more readers."""
    from pipeline.readers.multiple_choice import MultipleChoiceReader
    from pipeline.readers.zeroshot import ZeroShotScorer

    qs = load_questions(questions_csv, require_answer=True)
    answers = [q.answer for q in qs]
    store = load_index(index)
    emb = open_embedder(store, None, None)
    prompts, options, rows = [q.prompt for q in qs], [list(q.options) for q in qs], [q.row for q in qs]
    found: dict[str, tuple] = {}  # retrieval settings -> (contexts, seconds, stacker evidence)

    def contexts_for(reader: str | None) -> tuple[RetrievalConfig, list[str], float, dict]:
        """The contexts ``reader`` is scored with: its own saved settings, as predict would
        give it alone (``--top-k`` overrides); retrieved once per distinct settings."""
        cfg = PredictConfig(questions=questions_csv, index=index, readers=[reader] if reader else [],
                            progress=False)
        retrieval = reader_retrieval(cfg)
        if top_k:
            retrieval = replace(retrieval, top_k=top_k)
        retrieval = retrieval.resolved(store.meta, index)
        key = json.dumps(retrieval.to_dict(), sort_keys=True)
        if key not in found:
            t = time.perf_counter()
            ctx = [c.joined() for c in retrieve(qs, store, emb, retrieval, progress=False)]
            found[key] = (ctx, time.perf_counter() - t, {})
        return (retrieval, *found[key])

    retrieval, ctx, t_ret, _ = contexts_for(readers[0] if readers else None)
    tag = f"{name} ({len(qs)} q, top-{retrieval.top_k} {retrieval.retriever}" + \
        (f", focus {retrieval.focus}" if retrieval.focus != "none" else "") + ")"
    out, aps = [], []

    def add(scorer: str, scores: np.ndarray, seconds: float, **extra) -> np.ndarray:
        fig, ap = figures(scores, answers, seconds)
        row = {"set": tag, "scorer": scorer, **fig, **extra}
        log.info("%s", row)
        out.append(row)
        aps.append(ap)
        return scores

    lengths = np.array([[len(o) for o in opts] for opts in options], dtype=float)
    add("longest option (no context)", lengths, 0.0)
    if with_zero_shot:
        t = time.perf_counter()
        add("zero-shot (dense + lexical)", ZeroShotScorer(emb).score(prompts, options, ctx,
                                                                     progress=False),
            time.perf_counter() - t + t_ret)
    probs = []
    for path in readers:
        r_retrieval, ctx, t_ret, evidence = contexts_for(path)
        own = "" if r_retrieval == retrieval else \
            f" (top-{r_retrieval.top_k}, focus {r_retrieval.focus})"
        own += f" at {max_length} tokens" if max_length else ""
        t = time.perf_counter()
        p = cached_probabilities(cache, path, questions_csv, ctx,
                    lambda: MultipleChoiceReader.from_pretrained(path, max_length=max_length)
                    .probabilities(prompts, options, ctx, rows, progress=False), max_length)
        add(f"reader {Path(path).name}{own}", p, time.perf_counter() - t + t_ret)
        t = time.perf_counter()
        stacked, described = apply_stacker(path, p, prompts, options, ctx, emb, evidence)
        if described:
            add(f"reader {Path(path).name}{own} + stacker", stacked,
                time.perf_counter() - t + t_ret, weights=described["features"])
        probs.append(stacked)
    if len(readers) > 1:
        add("ensemble of all readers (mean probability)", np.mean(probs, axis=0), 0.0)
    if subsets:
        for label, p in subset_ensembles([Path(r).name for r in readers], probs):
            add(label, p, 0.0)
    if versus:
        compare(out, aps, versus)
    return out


def split_sources(questions) -> list[Source | None]:
    """Each split question's source: its haystack document (``benchmarks.haystack`` writes
    the ``context`` of ``stem-12`` as document ``stem_1k-12``) and its ``context`` text."""
    return [Source.of(context=q.context, doc_id=source_doc_id(q.id)) for q in questions]


def recall_rows(test_csv: str, index: str) -> list[dict]:
    """Recall@k of each test question's source passage per retriever
    (:func:`pipeline.retrieval.sources.source_recall` of :func:`split_sources`)."""
    qs = load_questions(test_csv)
    gold = split_sources(qs)
    store = load_index(index)
    emb = open_embedder(store, None, None)
    rows = []
    for method in ("dense", "bm25", "hybrid"):
        cfg = RetrievalConfig(top_k=max(KS), retriever=method)
        try:
            cfg = cfg.resolved(store.meta, index)
        except Exception as e:  # noqa: BLE001 - an index without BM25: say so in the table
            rows.append({"retriever": method, "error": str(e)})
            continue
        t = time.perf_counter()
        ctx = retrieve(qs, store, emb, cfg, progress=False)
        sec = (time.perf_counter() - t) / len(qs)
        rows.append({"retriever": method, **{f"R@{k}": round(r, 4) for k, r in
                                              source_recall(ctx, gold, KS).items()},
                     "s/question": round(sec, 4)})
        log.info("%s", rows[-1])
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default="index/haystack", help="index holding the test sources")
    p.add_argument("--test", default="runs/split/test.csv", help="held-out labelled questions")
    p.add_argument("--demo-index", default="index/demo")
    p.add_argument("--demo-questions", default="data/sample_questions.csv")
    p.add_argument("--readers", nargs="*", default=[], help="trained reader folders")
    p.add_argument("--top-k", type=int, default=None,
                   help="contexts per question (default: the first reader's, else 5)")
    p.add_argument("--limit", type=int, default=None, help="first N test questions only")
    p.add_argument("--no-recall", action="store_true")
    p.add_argument("--no-zero-shot", dest="zero_shot", action="store_false",
                   help="skip the zero-shot row (readers and ensemble only)")
    p.add_argument("--recall-only", action="store_true", help="only the recall table")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep each reader's probabilities here, so that a rerun (another ensemble, "
                        "another stacker) does not score again")
    p.add_argument("--max-length", type=int, default=None,
                   help="score the readers at this many tokens (default: each its own training "
                        "length), as predict --max-length does")
    p.add_argument("--versus", default=None, metavar="SCORER",
                   help="compare every row with the first scorer whose name contains this text "
                        "(e.g. 'minilm_6k_s2 + stacker'): difference in MAP@3 with a 95%% "
                        "paired-bootstrap interval over the same questions")
    p.add_argument("--subsets", action="store_true",
                   help="with three or more readers, also the ensemble of every smaller group of "
                        "two or more (the stacked probabilities are reused, nothing is rescored)")
    args = p.parse_args()
    if args.max_length is not None and args.max_length < 1:
        p.error(f"--max-length must be a positive number of tokens, got {args.max_length}")
    setup_logging(False)
    for name in ("quality", "benchmarks"):
        logging.getLogger(name).setLevel(logging.INFO)
    test = args.test
    if args.limit:
        import pandas as pd

        test = str(Path(args.json or "runs/quality.json").with_suffix(".test.csv"))
        pd.read_csv(args.test, keep_default_na=False, dtype=str).head(args.limit).to_csv(test, index=False)
    t0 = time.perf_counter()
    rows = [] if args.recall_only else score_set("shared test split", test, args.index,
                                                 args.readers, args.top_k, args.zero_shot,
                                                 cache=args.cache, max_length=args.max_length,
                                                 versus=args.versus, subsets=args.subsets)
    if args.demo_index and Path(args.demo_index).is_dir() and not args.recall_only:
        rows += score_set("demo questions", args.demo_questions, args.demo_index, args.readers,
                          args.top_k, args.zero_shot, cache=args.cache,
                          max_length=args.max_length, versus=args.versus,
                          subsets=args.subsets)
    recall = [] if args.no_recall else recall_rows(test, args.index)
    if rows:
        sys.stdout.write(markdown(rows, ["set", "scorer", "map@3", "se", "accuracy@1", "s/question"]
                                  + (["vs"] if args.versus else [])) + "\n\n")
    if recall:
        sys.stdout.write(markdown(recall, ["retriever", *[f"R@{k}" for k in KS], "s/question",
                                           "error"]) + "\n")
    sys.stdout.write(f"\n{time.perf_counter() - t0:.0f} s in all\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"scores": rows, "recall": recall, "args": vars(args)},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
