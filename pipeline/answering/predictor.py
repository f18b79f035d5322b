"""questions -> contexts -> option scores -> ranking -> submission (+ report).

The library behind ``python -m pipeline.predict``. The scorer is one or more
multiple-choice readers (probabilities averaged), or, with none given, the
zero-shot baseline of :mod:`pipeline.readers.zeroshot`.

Example::

    >>> result = predict(PredictConfig(questions="data/sample_questions.csv",
    ...                                index="index/demo", out="submissions/s.csv"))  # doctest: +SKIP
    >>> result.map3                                                                    # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.index.embedding import Embedder
from pipeline.errors import OpenbookError
from pipeline.fileio import check_parent_writable, write_files_atomic
from pipeline.metrics import accuracy_at_1, map_at_3, rank_letters, softmax
from pipeline.questions import LETTERS, Question, has_answers, load_questions
from pipeline.retrieval.retriever import Contexts, RetrievalConfig, retrieve
from pipeline.retrieval.setup import open_embedder, reader_retrieval
from pipeline.index.store import load_index
from pipeline.answering.budget import TimeBudget, now as budget_now

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Everything ``predict`` needs. Recorded in the report."""

    questions: str
    index: str
    out: str = "submissions/submission.csv"
    report: str | None = None  # default: <out without .csv>.report.json
    readers: list[str] = field(default_factory=list)
    embedder: str | None = None  # default: the index's own
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    max_length: int | None = None
    batch_size: int = 8
    device: str | None = None
    overwrite: bool = False
    progress: bool = True
    verify_index: str = "size"  # none | size (file sizes) | full (sha256 of every file)
    time_budget: float | None = None  # seconds; see pipeline.answering.budget (fewer contexts, never overrun)

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


def check_writable(path: Path, overwrite: bool, flag: str = "--out") -> None:
    """Fail before any work if ``path`` exists (without ``overwrite``) or can't be written."""
    if path.exists() and path.is_dir():
        raise OpenbookError(f"{flag} {path} is a directory; give a file path such as "
                            f"{path / 'submission.csv'}")
    if path.exists() and not overwrite:
        raise OpenbookError(f"{flag} {path} already exists; pass --overwrite to replace it, "
                            f"or choose another {flag}")
    check_parent_writable(path, flag)


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


def score_options(cfg: PredictConfig, questions: Sequence[Question], contexts: Sequence[Contexts],
                  embedder: Embedder) -> tuple[np.ndarray, str, list[dict]]:
    """(scores ``(n, 5)``, scorer name, scorer descriptions)."""
    prompts = [q.prompt for q in questions]
    options = [list(q.options) for q in questions]
    ctx = [c.joined() for c in contexts]
    rows = [q.row for q in questions]
    if not cfg.readers:
        from pipeline.readers.zeroshot import ZeroShotScorer

        scorer = ZeroShotScorer(embedder)
        log.info("no --reader given: using the %s", scorer.name)
        return scorer.score(prompts, options, ctx, rows, progress=cfg.progress), \
            scorer.name, [scorer.describe()]

    probs, described = [], []
    evidence: dict[str, np.ndarray] = {}  # stacker features, computed once for all readers
    for name in cfg.readers:
        reader = _load_reader(name, _stamp(name), cfg.device, cfg.max_length, cfg.batch_size)
        p = reader.probabilities(prompts, options, ctx, rows, progress=cfg.progress)
        info = {"type": "reader", "name": name, "max_length": reader.max_length}
        p, stacked = apply_stacker(name, p, prompts, options, ctx, embedder, evidence,
                                   progress=cfg.progress)
        if stacked:
            info["stacker"] = stacked
        probs.append(p)
        described.append(info)
    label = "reader " + " + ".join(cfg.readers) if len(cfg.readers) == 1 else \
        f"ensemble of {len(cfg.readers)} readers (mean probability)"
    return np.mean(probs, axis=0), label, described


def apply_stacker(name: str, probs: np.ndarray, prompts: Sequence[str],
                  options: Sequence[Sequence[str]], contexts: Sequence[str], embedder: Embedder,
                  evidence: dict[str, np.ndarray] | None = None,
                  progress: bool = False) -> tuple[np.ndarray, dict | None]:
    """Combine reader ``name``'s probabilities ``(n, 5)`` with its stacker, if it has one.

    Returns (probabilities ``(n, 5)``, the stacker's description or None when the folder has
    no ``openbook_stack.json``). ``evidence`` caches the context features between readers.
    """
    from pipeline.readers.stacking import Stacker, context_features, reader_feature

    stacker = Stacker.load(name)
    if stacker is None:
        return probs, None
    evidence = {} if evidence is None else evidence
    want = [f for f in stacker.features if f != "reader" and f not in evidence]
    evidence.update(context_features(want, prompts, options, contexts, embedder, progress=progress))
    fitted_with = stacker.info.get("embedder")
    if fitted_with and fitted_with != embedder.name and {"dense", "consensus"} & set(stacker.features):
        log.warning("the stacker of %s was fitted with embedder %s, this index uses %s: "
                    "its dense/consensus features may be off", name, fitted_with, embedder.name)
    log.info("%s: reader combined with %s", name,
             ", ".join(f for f in stacker.features if f != "reader"))
    scores = stacker.score({"reader": reader_feature(probs), **evidence})
    return softmax(scores), stacker.describe()


def _stamp(name: str) -> tuple:
    """Modification times of a reader folder's files: a retrained reader is loaded afresh."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=4)
def _load_reader(name: str, stamp: tuple, device: str | None, max_length: int | None,
                 batch_size: int):
    """A reader loaded once per process and folder state (``--time-budget`` scores chunk by
    chunk)."""
    from pipeline.readers.multiple_choice import MultipleChoiceReader

    return MultipleChoiceReader.from_pretrained(name, device=device, max_length=max_length,
                                                batch_size=batch_size)


def predict(cfg: PredictConfig) -> PredictResult:
    """Answer ``cfg.questions``; write the submission and the report."""
    t0 = time.perf_counter()
    budget_start = budget_now()
    out = Path(cfg.out)
    check_writable(out, cfg.overwrite)
    check_writable(cfg.report_path, True, "--report")
    questions = load_questions(cfg.questions)
    log.info("%d questions from %s", len(questions), cfg.questions)
    store = load_index(cfg.index, verify=cfg.verify_index)
    retrieval = reader_retrieval(cfg).resolved(store.meta, cfg.index)  # BM25 asked, none: fail now
    if cfg.verify_index == "full" and retrieval.retriever in ("bm25", "hybrid"):
        from pipeline.index.bm25 import load_bm25

        store._bm25 = load_bm25(store.path, store.meta, verify="full")  # what bm25_for caches
    embedder = open_embedder(store, cfg.embedder, cfg.device)
    guard = None
    if cfg.time_budget is None:
        contexts = retrieve(questions, store, embedder, retrieval, progress=cfg.progress)
        scores, scorer, described = score_options(cfg, questions, contexts, embedder)
    else:  # chunk by chunk, with fewer contexts (or a cheaper scorer) if time runs short
        def answer(qs, top_k, zero_shot):
            ctx = retrieve(qs, store, embedder, replace(retrieval, top_k=top_k), progress=False)
            sub = replace(cfg, readers=[] if zero_shot else cfg.readers, progress=False)
            return (ctx, *score_options(sub, qs, ctx, embedder))

        guard = TimeBudget(cfg.time_budget, len(questions), top_k=retrieval.top_k,
                           has_readers=bool(cfg.readers), batch_size=cfg.batch_size,
                           start=budget_start)
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
        "questions": str(cfg.questions), "index": str(cfg.index), "submission": str(out),
        "scorer": scorer, "scorers": described, "baseline": not cfg.readers,
        "retrieval": retrieval.to_dict(), "embedder": embedder.name,
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
    write_files_atomic([(out, submission_csv(ids, rankings), "--out"),
                        (cfg.report_path, json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                         "--report")])
    log.info("wrote %s and %s in %.1f s", out, cfg.report_path, result.seconds)
    return result
