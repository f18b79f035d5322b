"""Questions -> ranked passages from an index: dense, BM25, or both fused.

Retrievers (``RetrievalConfig.retriever``):

* ``dense``: the query embedded with the index's embedder, searched in FAISS;
* ``bm25``: the query's terms scored by the index's BM25 (:mod:`pipeline.index.bm25`);
* ``hybrid``: both ranked lists merged by reciprocal-rank fusion (RRF).

The default is ``dense`` (the recall comparison behind that choice is in
docs/results.md, "Real questions"). ``bm25`` and ``hybrid`` need the index's
BM25, which ``build_index`` writes unless ``--no-bm25`` and
``python -m pipeline.bm25 --index DIR`` adds later; asked of an index without
it they raise :class:`~pipeline.index.bm25.Bm25MissingError` before any search.

The query is the prompt followed by the five options by default (the
options name the things the question is about); ``query="prompt"`` uses
the prompt alone. With ``per_option=True`` a question is searched with five
queries instead, ``prompt + option`` for each option, and their ranked
lists (x2 for hybrid) are fused by RRF, so a passage about any one option
can surface. RRF sums, so a passage that matches the prompt (and hence
sits in all five lists) outranks one that tops a single option's list: the
question's own source passage is favoured, option-specific ones fill the
rest. All queries of all questions go through one embedding pass, one
FAISS search and one ``bm25s`` call.

RRF: ``score(p) = sum over lists of weight / (rrf_k + rank of p in the list)``
(rank from 1; ``dense_weight`` / ``bm25_weight`` per list kind). Passages
with the same text are dropped after ranking, first kept; ``Contexts.scores``
holds the fused score, or the raw score (cosine or BM25) when only one list
was searched.

Example::

    >>> store = load_index("index/demo"); emb = Embedder(store.meta["embedder"]["name"])  # doctest: +SKIP
    >>> ctx = retrieve(questions, store, emb, RetrievalConfig(top_k=3, retriever="hybrid"))  # doctest: +SKIP
    >>> ctx[0].titles, ctx[0].scores, ctx[0].joined()[:80]                                  # doctest: +SKIP
    >>> rrf_fuse([[7, 3, 5], [3, 9]], k=60)
    [(3, 0.03252247488101534), (7, 0.01639344262295082), (9, 0.016129032258064516), (5, 0.015873015873015872)]
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, replace
from typing import Sequence

from pipeline.errors import OpenbookError
from pipeline.index.faiss_index import check_refine
from pipeline.retrieval.contexts import Contexts
from pipeline.retrieval.focus import FOCUS_MODES, focus_contexts
from pipeline.retrieval.fusion import rrf_fuse
from pipeline.retrieval.query import make_query, option_queries
from pipeline.retrieval.rerank import load_reranker, resolve_reranker

log = logging.getLogger(__name__)

QUERY_MODES = ("prompt+options", "prompt")
RETRIEVERS = ("dense", "bm25", "hybrid")
RERANK_FUSIONS = ("none", "rrf")


@dataclass(frozen=True)
class RetrievalConfig:
    """How contexts are found. Saved in reports (and in trained readers).

    Args:
        top_k: passages kept per question after de-duplication.
        query: ``prompt+options`` or ``prompt``.
        fetch_k: candidates taken from each ranked list, and kept after fusion,
            before de-duplication (default ``max(3 * top_k, 30)``).
        nprobe: IVF lists visited per query (default: the index's own).
        refine: IVF-PQ candidates re-scored exactly, ``top * refine`` (an index built with
            ``--refine``; default: the index's own).
        retriever: ``dense``, ``bm25`` or ``hybrid`` (RRF of both).
        per_option: search ``prompt + option`` for each option and fuse the lists.
        rrf_k: the RRF constant (larger = flatter rank weights).
        dense_weight, bm25_weight: RRF weight of each dense / BM25 list.
        focus: ``none`` (the passages in rank order) or ``sentences`` (their sentences
            best first, see :mod:`pipeline.retrieval.focus`); needs the embedder.
        rerank: a cross-encoder (folder or installed hub name, see
            :mod:`pipeline.retrieval.rerank`) that reorders the first ``rerank_top``
            candidates before the best ``top_k`` are kept; ``None``: no reranking, and
            ``"none"`` says so explicitly (a trained reader's saved reranker is not applied).
        rerank_top: first-stage candidates per question the reranker reads.
        rerank_fusion: ``none`` (the reranker's order) or ``rrf`` (reciprocal-rank fusion of
            the retrieval order and the reranker's, :func:`~pipeline.retrieval.rerank.fuse_ranks`).
    """

    top_k: int = 5
    query: str = "prompt+options"
    fetch_k: int | None = None
    nprobe: int | None = None
    refine: int | None = None
    retriever: str = "dense"
    per_option: bool = False
    rrf_k: int = 60
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    focus: str = "none"
    rerank: str | None = None
    rerank_top: int = 20
    rerank_fusion: str = "none"

    def __post_init__(self) -> None:
        if self.query not in QUERY_MODES:
            raise OpenbookError(f"--query must be one of {', '.join(QUERY_MODES)}, got {self.query!r}")
        if self.top_k < 0:
            raise OpenbookError(f"--top-k must be >= 0, got {self.top_k}")
        if self.retriever not in RETRIEVERS:
            raise OpenbookError(f"--retriever must be one of {', '.join(RETRIEVERS)}, "
                                f"got {self.retriever!r}")
        if self.per_option and self.query == "prompt":
            raise OpenbookError("--per-option-queries searches the prompt with each option; "
                                "drop --query prompt (or drop --per-option-queries)")
        if self.rrf_k < 0 or self.dense_weight < 0 or self.bm25_weight < 0:
            raise OpenbookError("rrf_k and the RRF weights must be >= 0")
        if self.focus not in FOCUS_MODES:
            raise OpenbookError(f"--focus must be one of {', '.join(FOCUS_MODES)}, got {self.focus!r}")
        if self.fetch_k is not None and self.fetch_k < 1:
            raise OpenbookError(f"fetch_k must be >= 1, got {self.fetch_k}")
        if self.rerank_top < 1:
            raise OpenbookError(f"--rerank-top must be >= 1, got {self.rerank_top}")
        if self.refine is not None:
            check_refine(self.refine)
        if self.rerank_fusion not in RERANK_FUSIONS:
            raise OpenbookError(f"--rerank-fusion must be one of {', '.join(RERANK_FUSIONS)}, "
                                f"got {self.rerank_fusion!r}")
        if self.rerank is not None and not str(self.rerank).strip():
            raise OpenbookError("--rerank needs a cross-encoder folder or installed model name")

    @property
    def reranker(self) -> str | None:
        """The reranker to apply, or None (``rerank`` unset or ``"none"``)."""
        return None if self.rerank is None or self.rerank.lower() == "none" else self.rerank

    def candidates(self) -> "RetrievalConfig":
        """The first stage's settings: ``rerank_top`` (at least ``top_k``) passages for the
        reranker when there is one, else ``top_k``; no focus (it comes after)."""
        if self.reranker:
            return replace(self, top_k=max(self.rerank_top, self.top_k), rerank=None,
                           focus="none")
        return replace(self, focus="none")

    @property
    def fetch(self) -> int:
        return max(self.top_k, self.fetch_k or max(3 * self.top_k, 30))

    def resolved(self, meta: dict, index: str = "the index") -> "RetrievalConfig":
        """This config, checked against an index's ``meta.json`` before any work.

        Raises :class:`~pipeline.index.bm25.Bm25MissingError` if BM25 is asked of
        an index without it.
        """
        from pipeline.index.bm25 import Bm25MissingError, has_bm25, missing_message

        if self.retriever in ("bm25", "hybrid") and not has_bm25(meta):
            raise Bm25MissingError(f"--retriever {self.retriever}: " + missing_message(index))
        if self.refine is not None and not meta.get("index", {}).get("refine"):
            raise OpenbookError(f"--refine {self.refine}: --index {index} has no exact "
                                "re-scoring stage; drop --refine or rebuild the index with "
                                "build_index --index-type ivfpq --refine K_FACTOR")
        if self.reranker:
            resolve_reranker(self.reranker)  # a missing or wrong folder fails before any work
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def make_queries(prompt: str, options: Sequence[str], config: RetrievalConfig) -> list[str]:
    """All queries of one question: one, or ``prompt + option`` per option with ``per_option``."""
    if config.per_option:
        return option_queries(prompt, options)
    return [make_query(prompt, options, config.query)]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _ranked_lists(questions: Sequence, store, embedder, config: RetrievalConfig, *,
                  progress: bool) -> list[list[tuple[float, list[int], list[float]]]]:
    """Per question: its ranked lists as ``(weight, rows, scores)``, all queries batched."""
    owner: list[int] = []
    queries: list[str] = []
    for qi, q in enumerate(questions):
        qs = make_queries(q.prompt, q.options, config)
        queries.extend(qs)
        owner.extend([qi] * len(qs))
    lists: list[list[tuple[float, list[int], list[float]]]] = [[] for _ in questions]
    fetch = config.fetch
    log.info("retrieving top %d of %d passages for %d questions (%s, %d queries%s)", config.top_k,
             store.size, len(questions), config.retriever, len(queries),
             ", per option" if config.per_option else "")
    if config.retriever in ("dense", "hybrid"):
        if embedder is None:
            raise ValueError(f"retriever {config.retriever!r} needs an embedder")
        vecs = embedder.encode(queries, progress=progress)
        scores, ids = store.search(vecs, fetch, nprobe=config.nprobe, refine=config.refine)
        for qi, s, i in zip(owner, scores.tolist(), ids.tolist()):
            lists[qi].append((config.dense_weight, i, s))
    if config.retriever in ("bm25", "hybrid"):
        from pipeline.index.bm25 import bm25_for

        scores, ids = bm25_for(store).search(queries, fetch, progress=progress)
        for qi, s, i in zip(owner, scores.tolist(), ids.tolist()):
            lists[qi].append((config.bm25_weight, i, s))
    return lists


def retrieve(questions: Sequence, store, embedder, config: RetrievalConfig = RetrievalConfig(),
             *, progress: bool = True, device: str | None = None) -> list[Contexts]:
    """Top passages for each question (anything with ``prompt`` and ``options``).

    The first stage (dense, BM25 or hybrid) finds ``top_k`` passages, or ``rerank_top``
    candidates that ``config.rerank``'s cross-encoder reorders before the best ``top_k`` are
    kept (on ``device``, default the embedder's); sentence focus comes last (:func:`finish`).
    ``embedder`` may be ``None`` when the retriever is ``bm25`` and there is no focus. Raises
    :class:`~pipeline.index.bm25.Bm25MissingError` if BM25 is asked of an index without it,
    :class:`~pipeline.retrieval.rerank.RerankerError` for a reranker that is not one.
    """
    config = config.resolved(store.meta, str(store.path))
    if config.top_k == 0 or len(questions) == 0:
        return [Contexts() for _ in questions]
    candidates = first_stage(questions, store, embedder, config.candidates(), progress=progress)
    return finish(questions, candidates, embedder, config, progress=progress, device=device)


def finish(questions: Sequence, candidates: list[Contexts], embedder, config: RetrievalConfig,
           *, progress: bool = True, device: str | None = None) -> list[Contexts]:
    """The stages after the first: ``config.rerank``'s cross-encoder keeps the best ``top_k``
    of each question's ``candidates`` (as :meth:`RetrievalConfig.candidates` fetched them),
    then sentence focus with ``embedder``."""
    out = candidates
    if config.reranker:
        reranker = load_reranker(config.reranker, device or getattr(embedder, "device", None))
        out = reranker.rerank(questions, candidates, config.top_k, progress=progress,
                              fuse=config.rerank_fusion == "rrf", rrf_k=config.rrf_k)
    if config.focus == "sentences":
        focus_contexts(questions, out, embedder, progress=progress)
    return out


def first_stage(questions: Sequence, store, embedder, config: RetrievalConfig, *,
                progress: bool = True) -> list[Contexts]:
    """The ``config.top_k`` best passages of each question by the first-stage retriever, text
    duplicates dropped (no reranking, no focus)."""
    fetch = config.fetch
    ranked: list[list[tuple[int, float]]] = []
    for lists in _ranked_lists(questions, store, embedder, config, progress=progress):
        if len(lists) == 1:
            _, rows, scores = lists[0]
            ranked.append([(r, s) for r, s in zip(rows, scores) if r >= 0])
        else:
            fused = rrf_fuse([rows for _, rows, _ in lists], k=config.rrf_k,
                             weights=[w for w, _, _ in lists])
            ranked.append(fused[:fetch])
    uniq = sorted({r for rs in ranked for r, _ in rs})
    by_row = dict(zip(uniq, store.passages(uniq)))
    out = []
    for rs in ranked:
        ctx, seen = Contexts(), set()
        for i, s in rs:
            p = by_row[i]
            key = _norm(p["text"])
            if key in seen:
                continue
            seen.add(key)
            ctx.rows.append(i)
            ctx.passage_ids.append(p["passage_id"])
            ctx.titles.append(p["doc_title"])
            ctx.texts.append(p["text"])
            ctx.scores.append(float(s))
            if len(ctx.rows) == config.top_k:
                break
        out.append(ctx)
    return out
