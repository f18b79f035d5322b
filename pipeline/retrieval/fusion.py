"""Reciprocal-rank fusion (RRF): the one home of the rule that merges ranked lists.

``score(id) = sum over lists of weight / (k + rank of id in the list)``, ranks from 1.
It merges dense and BM25 lists (:mod:`pipeline.retrieval.retriever`), the lists of several
indexes (:mod:`pipeline.retrieval.indexes`) and a reranker's order with the retrieval order
(:mod:`pipeline.retrieval.rerank`, ``--rerank-fusion rrf``).

Example::

    >>> rrf_fuse([[7, 3, 5], [3, 9]], k=60)[0]
    (3, 0.03252247488101534)
"""

from __future__ import annotations

from typing import Sequence


def rrf_fuse(rankings: Sequence[Sequence[int]], *, k: float = 60,
             weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of ranked id lists -> ``[(id, score)]``, best first.

    ``score(id) = sum_l weights[l] / (k + rank_l(id))`` with ranks from 1;
    negative ids (padding) and repeats within a list are skipped. Ties go to
    the id with the better best rank, then to the earlier list.

    >>> rrf_fuse([[1, 2], [2, 1]], weights=[2.0, 1.0])[0][0]
    1
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    score: dict[int, float] = {}
    best: dict[int, tuple[int, int]] = {}
    for li, (ranking, w) in enumerate(zip(rankings, weights)):
        seen: set[int] = set()
        rank = 0
        for i in ranking:
            i = int(i)
            if i < 0 or i in seen:
                continue
            seen.add(i)
            rank += 1
            score[i] = score.get(i, 0.0) + w / (k + rank)
            best[i] = min(best.get(i, (rank, li)), (rank, li))
    return sorted(score.items(), key=lambda kv: (-kv[1], best[kv[0]]))
