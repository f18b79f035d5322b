"""Questions -> ranked passages from an index (dense retrieval).

The query is the prompt followed by the five options by default (the
options name the things the question is about); ``query="prompt"`` uses
the prompt alone. All queries are embedded in one pass and searched in one
batched FAISS call. Duplicate passages (same text) are dropped and the
survivors kept in rank order.

Example::

    >>> store = load_index("index/demo"); emb = Embedder(store.meta["embedder"]["name"])  # doctest: +SKIP
    >>> ctx = retrieve(questions, store, emb, RetrievalConfig(top_k=3))                   # doctest: +SKIP
    >>> ctx[0].titles, ctx[0].joined()[:80]                                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Sequence

from .chunking import with_title
from .errors import OpenbookError

log = logging.getLogger(__name__)

QUERY_MODES = ("prompt+options", "prompt")


@dataclass(frozen=True)
class RetrievalConfig:
    """How contexts are found. Saved in reports (and in trained readers).

    Args:
        top_k: passages kept per question after de-duplication.
        query: ``prompt+options`` or ``prompt``.
        fetch_k: candidates searched before de-duplication (default ``3 * top_k``).
        nprobe: IVF lists visited per query (default: the index's own).
    """

    top_k: int = 5
    query: str = "prompt+options"
    fetch_k: int | None = None
    nprobe: int | None = None

    def __post_init__(self) -> None:
        if self.query not in QUERY_MODES:
            raise OpenbookError(f"--query must be one of {', '.join(QUERY_MODES)}, got {self.query!r}")
        if self.top_k < 0:
            raise OpenbookError(f"--top-k must be >= 0, got {self.top_k}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Contexts:
    """The passages retrieved for one question, best first."""

    rows: list[int] = field(default_factory=list)
    passage_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def joined(self, sep: str = "\n") -> str:
        """The passages (title first) joined in rank order: the reader's context."""
        return sep.join(with_title(t, x) for t, x in zip(self.titles, self.texts))


def make_query(prompt: str, options: Sequence[str], mode: str = "prompt+options") -> str:
    """The text embedded to search for one question."""
    if mode == "prompt":
        return prompt
    return " ".join([prompt, *options])


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def retrieve(questions: Sequence, store, embedder, config: RetrievalConfig = RetrievalConfig(),
             *, progress: bool = True) -> list[Contexts]:
    """Top passages for each question (anything with ``prompt`` and ``options``)."""
    if config.top_k == 0 or len(questions) == 0:
        return [Contexts() for _ in questions]
    queries = [make_query(q.prompt, q.options, config.query) for q in questions]
    log.info("retrieving top %d of %d passages for %d questions", config.top_k, store.size,
             len(queries))
    vecs = embedder.encode(queries, progress=progress)
    fetch = max(config.top_k, config.fetch_k or 3 * config.top_k)
    scores, ids = store.search(vecs, fetch, nprobe=config.nprobe)
    uniq = sorted({int(i) for i in ids.ravel() if i >= 0})
    by_row = dict(zip(uniq, store.passages(uniq)))
    out = []
    for qs, qi in zip(scores, ids):
        ctx, seen = Contexts(), set()
        for s, i in zip(qs, qi):
            if i < 0:
                continue
            p = by_row[int(i)]
            key = _norm(p["text"])
            if key in seen:
                continue
            seen.add(key)
            ctx.rows.append(int(i))
            ctx.passage_ids.append(p["passage_id"])
            ctx.titles.append(p["doc_title"])
            ctx.texts.append(p["text"])
            ctx.scores.append(float(s))
            if len(ctx.rows) == config.top_k:
                break
        out.append(ctx)
    return out
