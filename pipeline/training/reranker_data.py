"""Reranker training data: labelled questions, their held-out split, mined ranking lists.

The data half of :mod:`pipeline.training.reranker`: questions whose source passage is known
(the one rule of :mod:`pipeline.retrieval.sources`) are split into training and held-out
questions, and the index is searched for each one's candidates: the source is the positive,
the best other candidates are the hard negatives.

Example::

    >>> holdout_count(36, 0.25), holdout_count(5, 0.1), holdout_count(5, 0.0)
    (9, 1, 0)
"""

from __future__ import annotations

import csv
import logging
import random
from collections import Counter
from typing import TYPE_CHECKING, Sequence

from pipeline.errors import InputError
from pipeline.index.chunking import with_title
from pipeline.questions import Question, load_question_files, load_questions
from pipeline.retrieval.query import make_query
from pipeline.retrieval.rerank import Reranker, order_by_score
from pipeline.retrieval.retriever import RetrievalConfig, retrieve
from pipeline.retrieval.sources import Source, is_source, load_sources, recall_from_ranks

if TYPE_CHECKING:
    from pipeline.training.reranker import RerankerConfig

log = logging.getLogger(__name__)

#: Held-out source recall is reported at these ranks.
KS = (1, 3)
SOURCE_FIX = ("add a 'context' column (the passage each question was written from) or a "
              "'source_title' / 'source_id' column naming its source document")


# ---------------------------------------------------------------- questions and sources
def load_labelled(paths: Sequence[str], flag: str = "QUESTIONS.csv"
                  ) -> list[tuple[Question, Source]]:
    """The questions of ``paths`` whose source is known, with it; the others are skipped with
    a warning. None known raises :class:`InputError` naming the file, its columns and the fix."""
    qs = load_question_files(paths)
    sources: list[Source | None] = []
    for p in paths:
        sources += load_sources(p, load_questions(p))
    items = [(q, s) for q, s in zip(qs, sources) if s is not None]
    if not items:
        with open(paths[0], encoding="utf-8-sig", newline="") as f:
            header = ",".join(next(csv.reader(f), []))
        where = paths[0] if len(paths) == 1 else ", ".join(map(str, paths))
        raise InputError(where, f"{flag}: no question names its source passage (the header is "
                         f"{header!r}; the source columns read are context, source_title, "
                         "source_id)", fix=SOURCE_FIX)
    if len(items) < len(qs):
        log.warning("%s: %d of %d questions name no source passage and are skipped", flag,
                    len(qs) - len(items), len(qs))
    return items


def holdout_count(n: int, fraction: float) -> int:
    """How many of ``n`` questions ``valid_fraction`` holds out: at least 1 when the fraction
    is positive and there are 2 questions or more, never all."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


def split_questions(cfg: "RerankerConfig", items: list) -> tuple[list, list]:
    """``(train, held_out)``: the ``valid`` file's questions (training questions with the same
    prompt dropped), else a seeded ``valid_fraction`` of ``items``."""
    if cfg.valid:
        held = load_labelled([cfg.valid], "--valid")
        prompts = {" ".join(q.prompt.split()).casefold() for q, _ in held}
        train = [it for it in items if " ".join(it[0].prompt.split()).casefold() not in prompts]
        if len(train) < len(items):
            log.warning("%d training questions are also in --valid %s: not trained on",
                        len(items) - len(train), cfg.valid)
        return train, held
    k = holdout_count(len(items), cfg.valid_fraction)
    chosen = set(random.Random(cfg.seed).sample(range(len(items)), k))
    return ([it for i, it in enumerate(items) if i not in chosen],
            [it for i, it in enumerate(items) if i in chosen])


# ---------------------------------------------------------------- mining
def mine(items: list, split: str, store, embedder, cfg: "RerankerConfig", retriever: str,
         stats: Counter) -> list[dict]:
    """One list per question: ``{"split", "id", "query", "passage_ids", "docs", "labels"}``.

    ``train``: ``docs[0]`` is the positive (``passage_ids[0]`` None when it is the context
    text), then up to ``negatives`` hard negatives. ``valid``: all candidates in retrieval
    order, ``labels[j] = 1`` where candidate j is the source."""
    ctxs = retrieve([q for q, _ in items], store, embedder,
                    RetrievalConfig(top_k=cfg.candidates, retriever=retriever),
                    progress=cfg.progress)
    rows = []
    for (q, src), c in zip(items, ctxs):
        flags = [is_source(p, t, x, src) for p, t, x in zip(c.passage_ids, c.titles, c.texts)]
        docs = [with_title(t, x) for t, x in zip(c.titles, c.texts)]
        row = {"split": split, "id": q.id, "query": make_query(q.prompt, q.options)}
        if split == "valid":
            stats["held_out_source_retrieved"] += any(flags)
            rows.append({**row, "passage_ids": list(c.passage_ids), "docs": docs,
                         "labels": [int(f) for f in flags]})
            continue
        if any(flags):
            j = flags.index(True)
            pos, kind = (c.passage_ids[j], docs[j]), "positive_from_index"
        elif q.context:
            pos, kind = (None, q.context), "positive_from_context"
        else:
            stats["skipped_source_not_retrieved"] += 1
            continue
        negs = [(p, d) for p, d, f in zip(c.passage_ids, docs, flags) if not f][:cfg.negatives]
        if not negs:
            stats["skipped_no_negative"] += 1
            continue
        stats[kind] += 1
        stats["negatives"] += len(negs)
        rows.append({**row, "passage_ids": [pos[0]] + [p for p, _ in negs],
                     "docs": [pos[1]] + [d for _, d in negs], "labels": [1] + [0] * len(negs)})
    return rows


def source_recall(reranker: Reranker | None, rows: list[dict], ks: Sequence[int] = KS) -> dict:
    """``{"recall@k": share}`` over the held-out ``rows``: the source ranked k or better among
    its candidates, ordered by ``reranker`` (``None``: in retrieval order)."""
    if not rows:
        return {}
    scores = (reranker.score([(r["query"], d) for r in rows for d in r["docs"]]).tolist()
              if reranker is not None else None)
    ranks, at = [], 0
    for r in rows:
        n = len(r["docs"])
        labels = [r["labels"][j] for j in (order_by_score(scores[at:at + n]) if scores is not None
                                           else range(n))]
        at += n
        ranks.append(labels.index(1) + 1 if 1 in labels else None)
    return {f"recall@{k}": v for k, v in recall_from_ranks(ranks, ks).items()}
