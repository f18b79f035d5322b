"""Evaluate a scorer on labelled questions: metrics, a per-question table, plots, one report folder.

The library behind ``python -m pipeline.evaluate``. It answers the questions
with the very building blocks of :func:`pipeline.answering.predictor.predict` (same
retrieval settings, including a reader's saved ones; same
:func:`~pipeline.answering.predictor.score_options`), so its headline MAP@3 is the one
``predict`` prints on the same input. On top of that it measures:

* **MAP@3 vs number of contexts**: retrieval runs once with the largest k; the
  scorer then sees the first k passages, for k on :data:`CONTEXT_STEPS` (up to
  ``max_contexts``) plus the headline ``top_k``.
* **score margins** (top score minus the second) of right and wrong top-1 answers.
* **recall@k of the source passage** per retriever (dense; bm25 and hybrid when
  the index has BM25), when the questions say where they come from (the rule:
  :mod:`pipeline.retrieval.sources`).

Output (``out``, written into a temp folder beside it, renamed into place when
complete; an existing non-empty folder is only replaced with ``overwrite``)::

    report.md  metrics.json  per_question.csv  *.png

Example::

    >>> res = evaluate(EvaluateConfig(questions="data/sample_questions.csv",
    ...                               index="index/demo", out="/tmp/eval_demo"))  # doctest: +SKIP
    >>> res.map3, res.out / "report.md"                                          # doctest: +SKIP
    (0.93, PosixPath('/tmp/eval_demo/report.md'))
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.answering.predictor import PredictConfig
from pipeline.answering.scoring import cascade_outcome, score_options, score_readers
from pipeline.readers import cascade as C
from pipeline.retrieval.indexes import IndexSet
from pipeline.retrieval.setup import reader_retrieval, sentence_vector_report
from pipeline.errors import OpenbookError
from pipeline.fileio import check_output_dir, check_parent_writable, publish_dir
from pipeline.retrieval.focus import focus_contexts
from pipeline.metrics import accuracy_at_1, average_precision_at_3, map_at_3, margins, rank_letters
from pipeline.questions import LETTERS, load_questions
from pipeline.retrieval.sources import load_sources, source_rank, source_rule
from pipeline.retrieval.retriever import Contexts, RetrievalConfig

log = logging.getLogger(__name__)

#: Numbers of contexts tried for the MAP@3-vs-contexts curve (those <= ``max_contexts``).
CONTEXT_STEPS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)


@dataclass
class EvaluateConfig:
    """Everything ``evaluate`` needs. Recorded in ``metrics.json``."""

    questions: str
    index: str | list[str]  # one index directory, or several (fused by reciprocal rank)
    out: str
    readers: list[str] = field(default_factory=list)
    embedder: str | None = None
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    max_contexts: int = 10
    recall_k: tuple[int, ...] = (1, 3, 5, 10, 20)
    limit: int | None = None
    plots: bool = True
    max_length: int | None = None
    batch_size: int | None = None  # None: 8, or from free GPU memory (pipeline.device)
    device: str | None = None
    overwrite: bool = False
    progress: bool = True
    verify_index: str = "size"
    reader_kind: str = "auto"
    reader_backend: str = "torch"
    embed_backend: str = "torch"
    sentence_vectors: bool = True
    llm: dict = field(default_factory=dict)
    cascade: list[str] = field(default_factory=list)
    cascade_fraction: float | None = None
    cascade_margin: float | None = None
    cascade_combine: str = "replace"

    def __post_init__(self) -> None:
        self.predict_config()  # the reader, LLM and cascade settings are checked as predict does
        if self.max_contexts < 0:
            raise OpenbookError(f"--max-contexts must be >= 0, got {self.max_contexts}")
        if not self.recall_k or any(k < 1 for k in self.recall_k):
            raise OpenbookError(f"--recall-k must list positive integers, got {self.recall_k}")
        if self.limit is not None and self.limit < 1:
            raise OpenbookError(f"--limit must be >= 1, got {self.limit}")

    def predict_config(self) -> PredictConfig:
        """The :class:`PredictConfig` that ``predict`` would get with the same flags."""
        return PredictConfig(questions=self.questions, index=self.index, readers=list(self.readers),
                             embedder=self.embedder, retrieval=self.retrieval,
                             max_length=self.max_length, batch_size=self.batch_size,
                             device=self.device, progress=self.progress,
                             verify_index=self.verify_index, reader_kind=self.reader_kind,
                             reader_backend=self.reader_backend,
                             embed_backend=self.embed_backend,
                             sentence_vectors=self.sentence_vectors,
                             llm=dict(self.llm), cascade=list(self.cascade),
                             cascade_fraction=self.cascade_fraction,
                             cascade_margin=self.cascade_margin,
                             cascade_combine=self.cascade_combine)


@dataclass
class EvaluateResult:
    """What ``evaluate`` measured; ``metrics`` is what ``metrics.json`` holds."""

    out: Path
    map3: float
    accuracy: float
    n: int
    scorer: str
    metrics: dict
    files: list[str]


# ---------------------------------------------------------------- helpers

def first_k(ctx: Contexts, k: int) -> Contexts:
    """The first ``k`` passages of ``ctx`` (what ``retrieve`` with ``top_k=k`` gives, when the
    candidate lists were the same)."""
    return Contexts(rows=ctx.rows[:k], passage_ids=ctx.passage_ids[:k], titles=ctx.titles[:k],
                    texts=ctx.texts[:k], scores=ctx.scores[:k])


def first_k_all(questions, contexts: Sequence[Contexts], k: int, retrieval: RetrievalConfig,
                embedder) -> list[Contexts]:
    """:func:`first_k` of each question's contexts, focused as ``retrieval`` says."""
    out = [first_k(c, k) for c in contexts]
    if retrieval.focus == "sentences":
        focus_contexts(questions, out, embedder)
    return out


def context_steps(top_k: int, max_contexts: int) -> list[int]:
    """The k's of the MAP@3-vs-contexts curve: :data:`CONTEXT_STEPS` up to ``max_contexts``,
    plus ``top_k``.

    >>> context_steps(5, 10), context_steps(4, 3), context_steps(5, 0)
    ([1, 2, 3, 5, 8, 10], [1, 2, 3, 4], [5])
    """
    return sorted({top_k, *(k for k in CONTEXT_STEPS if k <= max_contexts)})


def _rounded(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``--out`` without ``overwrite``, and a file; before any work."""
    check_output_dir(
        out, overwrite, ours=lambda d: (d / "metrics.json").is_file(),
        is_file=f"--out {out} is a file; give a folder for the report, e.g. {out.with_suffix('')}_report",
        not_empty=f"--out {out} already holds files; pass --overwrite to replace the folder (the old "
                  "one stays until the new report is complete), or choose another --out")
    check_parent_writable(out)


# ---------------------------------------------------------------- the run

def _retrieve_wide(questions, indexes: IndexSet, retrieval: RetrievalConfig, k_max: int,
                   progress: bool) -> tuple[list[Contexts], list[Contexts]]:
    """``(headline contexts, contexts with k_max passages)`` with one retrieval when possible:
    the wide search keeps the headline's candidate lists, so its first ``top_k`` passages are
    exactly what ``predict`` retrieves."""
    if k_max <= retrieval.top_k:
        ctx = indexes.retrieve(questions, retrieval, progress=progress)
        return ctx, ctx
    # the wide contexts are cut to each k of the curve, then focused (if asked) at that k
    if retrieval.reranker:  # same candidates (rerank_top >= k_max): the same reranked order
        wide = replace(retrieval, top_k=k_max, focus="none")
        same = max(retrieval.rerank_top, k_max) == max(retrieval.rerank_top, retrieval.top_k)
    else:
        wide = replace(retrieval, top_k=k_max, fetch_k=retrieval.fetch, focus="none")
        same = wide.fetch == retrieval.fetch
    wide_ctx = indexes.retrieve(questions, wide, progress=progress)
    if same:
        return first_k_all(questions, wide_ctx, retrieval.top_k, retrieval,
                           indexes.embedder), wide_ctx
    return indexes.retrieve(questions, retrieval, progress=progress), wide_ctx


def _context_curve(pcfg: PredictConfig, questions, wide_ctx, embedder, steps,
                   retrieval: RetrievalConfig, headline: tuple[float, float]) -> list[dict]:
    """MAP@3 and accuracy@1 for each k in ``steps``, all k's scored in one call."""
    answers = [q.answer for q in questions]
    others = [k for k in steps if k != retrieval.top_k]
    curve = {retrieval.top_k: headline}
    if others:
        log.info("scoring with %s contexts for the MAP@3-vs-contexts curve", others)
        qs = [q for _ in others for q in questions]
        ctx = [c for k in others
               for c in first_k_all(questions, wide_ctx, k, retrieval, embedder)]
        scores, _, _ = score_options(pcfg, qs, ctx, embedder)
        n = len(questions)
        for i, k in enumerate(others):
            r = rank_letters(scores[i * n:(i + 1) * n])
            curve[k] = (map_at_3(r, answers), accuracy_at_1(r, answers))
    return [{"k": k, "map@3": _rounded(m), "accuracy@1": _rounded(a)}
            for k, (m, a) in sorted(curve.items())]


def _recall(questions, sources, indexes: IndexSet, retrieval: RetrievalConfig,
            ks: Sequence[int], progress: bool) -> tuple[dict, dict[str, list[int | None]]]:
    """``({retriever: {"n", "recall@k": {k: r}}}, {retriever: source rank per question})``;
    with a reranker, each retriever is measured without it and with it (``"dense+rerank"``)."""
    retrievers = ["dense"] + (["bm25", "hybrid"] if indexes.has_bm25() else [])
    runs = [(name, name, None) for name in retrievers]
    if retrieval.reranker:
        runs += [(f"{name}+rerank", name, retrieval.reranker) for name in retrievers]
    known = [i for i, s in enumerate(sources) if s is not None]
    qs = [questions[i] for i in known]
    table, ranks = {}, {}
    for name, retriever, rerank in runs:
        cfg = replace(retrieval, retriever=retriever, top_k=max(ks), fetch_k=None, focus="none",
                      rerank=rerank)
        ctx = indexes.retrieve(qs, cfg, progress=progress)
        found = [source_rank(c, sources[i]) for c, i in zip(ctx, known)]
        table[name] = {"n": len(known), "recall@k": {
            str(k): _rounded(sum(r is not None and r <= k for r in found) / len(known))
            for k in ks}}
        per_q: list[int | None] = [None] * len(questions)
        for i, r in zip(known, found):
            per_q[i] = r
        ranks[name] = per_q
    return table, ranks


def _cascade_headline(pcfg: PredictConfig, questions, contexts, embedder, answers
                      ) -> tuple[np.ndarray, str, list[dict], list[dict]]:
    """The cascade's scores as ``predict`` gives them, plus its curve: both stages score every
    question (timed), so MAP@3 and the projected seconds are known for each fraction sent on
    (:func:`pipeline.readers.cascade.curve`)."""
    t0 = time.perf_counter()
    first, label, described = score_options(pcfg, questions, contexts, embedder, cascade=False)
    first = C.as_probabilities(first)
    seconds_first = time.perf_counter() - t0
    t1 = time.perf_counter()
    second, second_label, second_desc = score_readers(pcfg, pcfg.cascade, questions, contexts,
                                                      embedder)
    second = C.as_probabilities(second)
    seconds_second = time.perf_counter() - t1
    sent = C.route(first, fraction=pcfg.cascade_fraction, margin=pcfg.cascade_margin)
    final, name, info = cascade_outcome(
        pcfg, first, second, sent, first_label=label, second_label=second_label,
        second_desc=second_desc, seconds_first=seconds_first,
        seconds_second=seconds_second * int(sent.sum()) / max(len(questions), 1))
    info["seconds_second_all"] = round(seconds_second, 3)
    curve = C.curve(first, second, answers, seconds_first=seconds_first,
                    seconds_second=seconds_second, mode=pcfg.cascade_combine)
    return final, name, described + [info], curve


def evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Score ``cfg.questions`` like ``predict`` and write the report folder ``cfg.out``."""
    from pipeline.reporting import plots

    t0 = time.perf_counter()
    out = Path(cfg.out)
    check_out_dir(out, cfg.overwrite)
    questions = load_questions(cfg.questions, require_answer=True)
    if cfg.limit is not None:
        questions = questions[:cfg.limit]
    sources = load_sources(cfg.questions, questions)
    answers = [q.answer for q in questions]
    log.info("evaluating %d questions from %s", len(questions), cfg.questions)

    pcfg = cfg.predict_config()
    indexes = IndexSet.open(pcfg.indexes, embedder=cfg.embedder, device=cfg.device,
                            verify=cfg.verify_index, backend=cfg.embed_backend,
                            sentence_vectors=cfg.sentence_vectors)
    retrieval = indexes.resolved(reader_retrieval(pcfg))
    embedder = indexes.embedder
    steps = context_steps(retrieval.top_k, cfg.max_contexts)
    contexts, wide_ctx = _retrieve_wide(questions, indexes, retrieval, max(steps), cfg.progress)
    cascade_curve = None
    if pcfg.cascade:
        scores, scorer, described, cascade_curve = _cascade_headline(pcfg, questions, contexts,
                                                                     embedder, answers)
    else:
        scores, scorer, described = score_options(pcfg, questions, contexts, embedder)
    rankings = rank_letters(scores)
    map3, acc = map_at_3(rankings, answers), accuracy_at_1(rankings, answers)
    seconds_headline = time.perf_counter() - t0
    curve = _context_curve(pcfg, questions, wide_ctx, embedder, steps, retrieval, (map3, acc))

    recall, ranks = None, {}
    if any(s is not None for s in sources):
        recall, ranks = _recall(questions, sources, indexes, retrieval, cfg.recall_k,
                                cfg.progress)
    else:
        log.info("no context, source_title or source_id column in %s: no recall@k", cfg.questions)

    marg = margins(scores)
    correct = np.array([r[0] == a for r, a in zip(rankings, answers)])
    src_rank = ranks.get(retrieval.retriever + ("+rerank" if retrieval.reranker else ""))
    rows = []
    for i, (q, r, sc, c) in enumerate(zip(questions, rankings, scores, contexts)):
        row = {"id": q.id, "answer": q.answer, "ranking": "".join(r),
               "correct@1": int(correct[i]), "ap@3": round(average_precision_at_3(r, q.answer), 4),
               "margin": round(float(marg[i]), 5)}
        row.update({f"score_{L}": round(float(s), 5) for L, s in zip(LETTERS, sc)})
        row["passage_ids"] = " ".join(c.passage_ids)
        row["source_known"] = int(sources[i] is not None)
        row["source_rank"] = "" if src_rank is None or src_rank[i] is None else src_rank[i]
        rows.append(row)

    config = asdict(cfg)
    config["retrieval"] = cfg.retrieval.to_dict()
    metrics = {
        "questions": str(cfg.questions), "n": len(questions),
        "index": str(cfg.index) if len(pcfg.indexes) == 1 else pcfg.indexes,
        "indexes": indexes.describe(),
        "map@3": _rounded(map3), "accuracy@1": _rounded(acc),
        "scorer": scorer, "scorers": described, "baseline": not cfg.readers,
        "retrieval": retrieval.to_dict(), "embedder": embedder.name,
        "sentence_vectors": sentence_vector_report(embedder),
        "map@3_vs_contexts": curve,
        "cascade": next((d for d in described if d.get("type") == "cascade"), None),
        "cascade_curve": cascade_curve,
        "margin": {"right_median": _rounded(np.median(marg[correct])) if correct.any() else None,
                   "wrong_median": _rounded(np.median(marg[~correct])) if (~correct).any() else None},
        "recall": recall, "source_rule": source_rule() if recall else None,
        "seconds_headline": round(seconds_headline, 2),
        "config": config,
    }

    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        images = {}
        if cfg.plots:
            images = plots.write_all(partial, curve=curve, top_k=retrieval.top_k, margins=marg,
                                     correct=correct, recall=recall, scorer=scorer,
                                     cascade=cascade_curve)
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        (partial / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False)
                                              + "\n", encoding="utf-8")
        (partial / "per_question.csv").write_text(_csv(rows), encoding="utf-8")
        (partial / "report.md").write_text(plots.report_markdown(metrics, images), encoding="utf-8")
        files = sorted(p.name for p in partial.iterdir())
        publish_dir(partial, out)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise OpenbookError(f"--out {out}: cannot write the report ({e.strerror or e}); free some "
                            "disk space or choose another --out. Nothing was replaced") from e
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("wrote %s (%s) in %.1f s", out, ", ".join(files), metrics["seconds"])
    return EvaluateResult(out=out, map3=map3, accuracy=acc, n=len(questions), scorer=scorer,
                          metrics=metrics, files=files)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
