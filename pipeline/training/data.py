"""A training run's questions and contexts: the held-out split and the retrieved contexts.

Without ``--valid``, :func:`held_out_splits` holds a seeded ``--valid-split`` of TRAIN.csv
out (:func:`split_holdout`, at most :data:`~pipeline.training.config.MAX_HOLDOUT`), writes it
to ``OUT/valid_holdout.csv`` and validates on it. :func:`load_contexts` gives every
question its context: the CSV's ``context`` column, or the passages
:func:`pipeline.retrieval.retriever.retrieve` finds in ``--index`` with the index's own
embedder (as ``predict`` does), cached in ``OUT/contexts.jsonl`` under a key of the
settings, the question ids and the index, so a resumed run does not retrieve again.

Example::

    >>> train, held = split_holdout(questions, 0.1, seed=42)           # doctest: +SKIP
    >>> contexts, settings = load_contexts(cfg, {"train": train, "valid": held}, "cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import OpenbookError
from pipeline.fileio import write_text_atomic
from pipeline.index.store import load_index
from pipeline.questions import LETTERS, Question, load_questions
from pipeline.retrieval.indexes import IndexSet
from pipeline.retrieval.retriever import RetrievalConfig
from pipeline.training.config import (CONTEXTS_FILE, HOLDOUT_FILE, MAX_HOLDOUT, MIN_HOLDOUT,
                                      TrainConfig, index_paths)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- held-out questions
def holdout_size(n: int, fraction: float) -> int:
    """How many of ``n`` training questions ``--valid-split fraction`` holds out: 0 when that
    would be fewer than :data:`MIN_HOLDOUT`, at most :data:`MAX_HOLDOUT`.

    >>> holdout_size(1000, 0.1), holdout_size(100, 0.1), holdout_size(9000, 0.1)
    (100, 0, 500)
    """
    k = min(MAX_HOLDOUT, round(n * fraction))
    return k if k >= MIN_HOLDOUT and n - k >= k else 0


def split_holdout(qs: Sequence[Question], fraction: float, seed: int
                  ) -> tuple[list[Question], list[Question]]:
    """``(train, held_out)``: a seeded random ``holdout_size`` of ``qs`` held out, both in
    file order. The same questions, fraction and seed always give the same split."""
    k = holdout_size(len(qs), fraction)
    held = set(random.Random(seed).sample(range(len(qs)), k)) if k else set()
    return ([q for i, q in enumerate(qs) if i not in held],
            [q for i, q in enumerate(qs) if i in held])


def write_questions(path: Path, qs: Sequence[Question]) -> None:
    """``qs`` as a labelled CSV (``id,prompt[,context],A..,answer``) that
    :func:`~pipeline.questions.load_questions` reads back; written atomically."""
    letters = list(LETTERS[:max(len(q.options) for q in qs)])
    with_ctx = any(q.context for q in qs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "prompt", *(["context"] if with_ctx else []), *letters, "answer"])
    for q in qs:
        w.writerow([q.id, q.prompt, *([q.context or ""] if with_ctx else []), *q.options, q.answer])
    write_text_atomic(path, buf.getvalue(), "--out")


def held_out_splits(cfg: TrainConfig, out: Path, train_qs: list[Question],
                    valid_qs: list[Question] | None = None) -> dict:
    """The run's ``{"train": ..., "valid": ...}`` questions. With ``--valid``, that file
    (``valid_qs``, its questions, when already loaded).
    Without it, ``--valid-split`` of TRAIN.csv is held out, written to ``OUT/valid_holdout.csv``
    and set as ``cfg.valid`` (so that the best checkpoint is chosen and the stacker fitted
    on questions the reader did not train on, and ``pipeline.stack`` finds them); a resumed
    run leaves the same questions out."""
    holdout = out / HOLDOUT_FILE
    if cfg.valid and Path(cfg.valid).resolve() == holdout.resolve():  # --resume of such a run
        valid = load_questions(holdout, require_answer=True)
        ids = {q.id for q in valid}
        return {"train": [q for q in train_qs if q.id not in ids], "valid": valid}
    if cfg.valid:
        return {"train": train_qs,
                "valid": valid_qs or load_questions(cfg.valid, require_answer=True)}
    train, held = split_holdout(train_qs, cfg.valid_split, cfg.seed)
    if not held:
        if cfg.valid_split > 0:
            log.warning("no --valid and only %d training questions: holding none out, so the "
                        "last checkpoint is kept and no stacker is fitted", len(train_qs))
        return {"train": train}
    write_questions(holdout, held)
    cfg.valid = str(holdout)
    log.info("no --valid: holding out %d of %d training questions (--valid-split %g) in %s for "
             "checkpoint choice and the stacker; --valid-split 0 trains on all", len(held),
             len(train_qs), cfg.valid_split, holdout)
    return {"train": train, "valid": held}


# ---------------------------------------------------------------- contexts
def load_contexts(cfg: TrainConfig, splits: dict[str, list[Question]], device: str,
                  write_cache: bool = True):
    """``({split: [context, ...]}, retrieval settings)``, cached in ``OUT/contexts.jsonl``
    (read when its key matches; rewritten after a retrieval unless ``write_cache`` is false)."""
    paths = index_paths(cfg.index)
    resolved = [str(Path(p).resolve()) for p in paths]
    settings: dict[str, Any] = {"source": "context column" if cfg.use_context_column else "index",
                                "query": cfg.query, "focus": cfg.focus, "top_k": cfg.contexts_infer,
                                "top_k_train": cfg.contexts_train, "embedder": None,
                                "rerank": cfg.rerank, "rerank_top": cfg.rerank_top,
                                "index": (resolved[0] if len(resolved) == 1 else resolved) or None}
    stores = [load_index(p) for p in paths]
    if stores:
        settings["embedder"] = stores[0].meta["embedder"]["name"]
    if cfg.use_context_column:
        for name, qs in splits.items():
            if not any(q.context for q in qs):
                files = cfg.train if name == "train" else [cfg.valid]
                raise OpenbookError(f"--use-context-column: {', '.join(map(str, files))} has no "
                                    "'context' column (or it is empty); drop the flag to retrieve contexts")
            missing = sum(not q.context for q in qs)
            if missing:
                log.warning("--use-context-column: %d of %d %s questions have no context and "
                            "are read without one", missing, len(qs), name)
        return {n: [q.context or "" for q in qs] for n, qs in splits.items()}, settings

    common = dict(query=cfg.query, focus=cfg.focus, rerank=cfg.rerank, rerank_top=cfg.rerank_top)
    rcfg = {"train": RetrievalConfig(top_k=cfg.contexts_train, **common),
            "valid": RetrievalConfig(top_k=cfg.contexts_infer, **common)}
    for name, split in (("train", "retrieval_train"), ("valid", "retrieval_infer")):
        for store, path in zip(stores, paths):
            rcfg[name] = rcfg[name].resolved(store.meta, path)  # BM25, reranker: fail now
        settings[split] = rcfg[name].to_dict()
    metas = [{k: st.meta.get(k) for k in ("embedder", "counts", "created")} for st in stores]
    key = {"settings": settings, "ids": {n: [q.id for q in qs] for n, qs in splits.items()},
           "index_meta": metas[0] if len(metas) == 1 else metas}
    cache = Path(cfg.out) / CONTEXTS_FILE
    if cache.is_file():
        lines = cache.read_text(encoding="utf-8").splitlines()
        if lines and json.loads(lines[0]).get("key") == json.loads(json.dumps(key)):
            got: dict[str, list[str]] = {n: [] for n in splits}
            for line in lines[1:]:
                r = json.loads(line)
                got[r["split"]].append(r["context"])
            log.info("contexts from the cache %s", cache)
            return got, settings
        log.info("%s was made with other settings: retrieving again", cache)
    indexes = IndexSet.open(paths, embedder=cfg.embedder, device=device, stores=stores)
    got, rows = {}, [{"key": key}]
    for name, qs in splits.items():
        ctx = indexes.retrieve(qs, rcfg[name], progress=cfg.progress)
        got[name] = [c.joined() for c in ctx]
        rows += [{"split": name, "id": q.id, "passages": c.passage_ids, "context": c.joined()}
                 for q, c in zip(qs, ctx)]
    if write_cache:
        write_text_atomic(cache, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    del indexes
    return got, settings
