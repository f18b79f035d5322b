"""questions -> contexts -> option scores -> ranking -> submission (+ report).

The library behind ``python -m pipeline.predict``. The scorer is one or more
readers (multiple-choice encoders or causal LMs; probabilities averaged), or, with
none given, the zero-shot baseline of :mod:`pipeline.readers.zeroshot`; optionally a
confidence cascade sends the least confident questions on to stronger readers
(:mod:`pipeline.answering.scoring`).

Example::

    >>> result = predict(PredictConfig(questions="data/sample_questions.csv",
    ...                                index="index/demo", out="submissions/s.csv"))  # doctest: +SKIP
    >>> result.map3                                                                    # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.device import CPU_BATCH
from pipeline.errors import OpenbookError
from pipeline.fileio import check_output_file, write_files_atomic
from pipeline.metrics import accuracy_at_1, map_at_3, rank_letters
from pipeline.questions import LETTERS, has_answers, load_questions
from pipeline.readers.cascade import COMBINE, check_settings
from pipeline.readers.backends import check_backend
from pipeline.readers.kinds import KINDS
from pipeline.retrieval.indexes import IndexSet
from pipeline.retrieval.retriever import Contexts, RetrievalConfig
from pipeline.retrieval.setup import check_embed_backend, reader_retrieval, sentence_vector_report
from pipeline.answering.budget import CASCADE, ZERO_SHOT, TimeBudget, now as budget_now
from pipeline.answering.scoring import apply_stacker, check_llm_options, score_options  # noqa: F401 (apply_stacker: used by benchmarks)

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Everything ``predict`` needs. Recorded in the report."""

    questions: str
    index: str | list[str]  # one index directory, or several (fused by reciprocal rank)
    out: str = "submissions/submission.csv"
    report: str | None = None  # default: <out without .csv>.report.json
    readers: list[str] = field(default_factory=list)
    embedder: str | None = None  # default: the index's own
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    max_length: int | None = None
    batch_size: int | None = None  # None: 8, or from free GPU memory (pipeline.device)
    device: str | None = None
    overwrite: bool = False
    progress: bool = True
    verify_index: str = "size"  # none | size (file sizes) | full (sha256 of every file)
    time_budget: float | None = None  # seconds; see pipeline.answering.budget (fewer contexts, never overrun)
    reader_kind: str = "auto"  # auto | mc | llm (see pipeline.readers.kinds)
    reader_backend: str = "torch"  # torch | onnx | openvino (-int8): MC readers (pipeline.readers.backends)
    embed_backend: str = "torch"  # torch | onnx | openvino: the query / feature embedder (CPU)
    sentence_vectors: bool = True  # look context sentences up in the index's sentence vectors
    llm: dict = field(default_factory=dict)  # causal-LM options (pipeline.answering.scoring.LLM_OPTIONS)
    cascade: list[str] = field(default_factory=list)  # second-stage readers for the unsure questions
    cascade_fraction: float | None = None  # share sent on (default 0.3 when no margin)
    cascade_margin: float | None = None  # or: every question with a margin below this
    cascade_combine: str = "replace"  # or "mean" of both stages

    def __post_init__(self) -> None:
        if self.reader_kind not in KINDS:
            raise OpenbookError(f"--reader-kind must be one of {', '.join(KINDS)}, got "
                                f"{self.reader_kind!r}")
        check_llm_options(self.llm)
        check_backend(self.reader_backend, device=self.device or "cpu")
        check_embed_backend(self.embed_backend, self.device)
        check_settings(self.cascade_fraction, self.cascade_margin, self.cascade_combine)
        if not self.cascade and (self.cascade_fraction is not None
                                 or self.cascade_margin is not None):
            raise OpenbookError("--cascade-fraction / --cascade-margin route questions to a "
                                "second reader: add --cascade READER")
        if self.cascade_combine not in COMBINE:  # pragma: no cover - check_settings says it
            raise OpenbookError(f"--cascade-combine must be one of {', '.join(COMBINE)}")

    @property
    def indexes(self) -> list[str]:
        """The index directories, as a list (``index`` may be one path)."""
        return [str(self.index)] if isinstance(self.index, (str, Path)) else \
            [str(p) for p in self.index]

    @property
    def report_path(self) -> Path:
        if self.report:
            return Path(self.report)
        out = Path(self.out)
        return out.with_name(out.stem + ".report.json")


@dataclass
class PredictResult:
    """What ``predict`` produced."""

    ids: list[str]
    rankings: list[list[str]]
    scores: np.ndarray
    contexts: list[Contexts]
    scorer: str
    map3: float | None = None
    accuracy: float | None = None
    seconds: float = 0.0


def submission_csv(ids: Sequence[str], rankings: Sequence[Sequence[str]]) -> str:
    """``id,prediction`` with the top three letters space-separated."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "prediction"])
    for i, r in zip(ids, rankings):
        w.writerow([i, " ".join(r[:3])])
    return buf.getvalue()


def predict(cfg: PredictConfig) -> PredictResult:
    """Answer ``cfg.questions``; write the submission and the report."""
    t0 = time.perf_counter()
    budget_start = budget_now()
    out = Path(cfg.out)
    inputs = [("the questions file", cfg.questions), *(("--index", i) for i in cfg.indexes),
              *(("--reader", r) for r in cfg.readers)]
    check_output_file(out, cfg.overwrite, inputs=inputs)
    check_output_file(cfg.report_path, cfg.overwrite, "--report", inputs=inputs,
                      others=[("--out", out)])
    questions = load_questions(cfg.questions)
    log.info("%d questions from %s", len(questions), cfg.questions)
    indexes = IndexSet.open(cfg.indexes, embedder=cfg.embedder, device=cfg.device,
                            verify=cfg.verify_index, backend=cfg.embed_backend,
                            sentence_vectors=cfg.sentence_vectors)
    retrieval = indexes.resolved(reader_retrieval(cfg))  # BM25 asked, none: fail now
    if cfg.verify_index == "full" and retrieval.retriever in ("bm25", "hybrid"):
        indexes.verify_bm25("full")
    embedder = indexes.embedder  # loaded only now: a damaged index was refused before
    guard = None
    if cfg.time_budget is None:
        contexts = indexes.retrieve(questions, retrieval, progress=cfg.progress)
        scores, scorer, described = score_options(cfg, questions, contexts, embedder)
    else:  # chunk by chunk, with fewer contexts (or a cheaper scorer) if time runs short
        def answer(qs, level):
            ctx = indexes.retrieve(qs, replace(retrieval, top_k=level.top_k), progress=False)
            sub = replace(cfg, readers=[] if level.scorer == ZERO_SHOT else cfg.readers,
                          progress=False)
            return (ctx, *score_options(sub, qs, ctx, embedder, cascade=level.scorer == CASCADE))

        guard = TimeBudget(cfg.time_budget, len(questions), top_k=retrieval.top_k,
                           has_readers=bool(cfg.readers), has_cascade=bool(cfg.cascade),
                           batch_size=cfg.batch_size or CPU_BATCH, start=budget_start)
        contexts, scores, scorer, described = guard.run(questions, answer, progress=cfg.progress)
    rankings = rank_letters(scores)
    ids = [q.id for q in questions]
    result = PredictResult(ids=ids, rankings=rankings, scores=scores, contexts=contexts,
                           scorer=scorer)
    if has_answers(questions):
        answers = [q.answer for q in questions]
        result.map3 = map_at_3(rankings, answers)
        result.accuracy = accuracy_at_1(rankings, answers)
    result.seconds = time.perf_counter() - t0
    report = {
        "questions": str(cfg.questions), "submission": str(out),
        "index": str(cfg.index) if len(cfg.indexes) == 1 else cfg.indexes,
        "indexes": indexes.describe(),
        "scorer": scorer, "scorers": described, "baseline": not cfg.readers,
        "cascade": next((d for d in described if d.get("type") == "cascade"), None),
        "retrieval": retrieval.to_dict(), "embedder": embedder.name,
        "embed_backend": cfg.embed_backend,
        "sentence_vectors": sentence_vector_report(embedder),
        "n_questions": len(questions), "seconds": round(result.seconds, 2),
        "map@3": result.map3, "accuracy@1": result.accuracy,
        "time_budget": guard.report() if guard else None,
        "per_question": [
            {"id": q.id, "ranking": "".join(r), "answer": q.answer,
             "scores": {LETTERS[k]: round(float(s), 5) for k, s in enumerate(sc)},
             "passages": c.passage_ids}
            for q, r, sc, c in zip(questions, rankings, scores, contexts)],
    }
    # Both or neither: a failed report write (disk full) leaves the old submission too.
    # Without --overwrite nothing is replaced, even a file another run wrote meanwhile.
    write_files_atomic([(out, submission_csv(ids, rankings), "--out"),
                        (cfg.report_path, json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                         "--report")], overwrite=cfg.overwrite)
    log.info("wrote %s and %s in %.1f s", out, cfg.report_path, result.seconds)
    return result
