"""What retrieval hands to the readers: one question's passages, best first.

Its own module so that every retrieval step (first-stage search in
:mod:`pipeline.retrieval.retriever`, the cross-encoder in :mod:`pipeline.retrieval.rerank`,
sentence focus) can build and reorder :class:`Contexts` without importing another step.

Example::

    >>> c = Contexts(rows=[4, 9], passage_ids=["d1-0", "d7-2"], titles=["Water", ""],
    ...              texts=["It boils at 100 C.", "Ice melts at 0 C."], scores=[0.8, 0.5])
    >>> c.joined()
    'Water. It boils at 100 C.\\nIce melts at 0 C.'
    >>> c.take([1]).passage_ids
    ['d7-2']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from pipeline.index.chunking import with_title


@dataclass
class Contexts:
    """The passages retrieved for one question, best first (all lists have one entry per
    passage; ``rows`` are the passages' rows in the index)."""

    rows: list[int] = field(default_factory=list)
    passage_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    focused: str | None = None  # set by focus="sentences": the passages' best sentences

    def joined(self, sep: str = "\n") -> str:
        """The reader's context: the focused sentences when set, else the passages (title
        first) joined in rank order."""
        if self.focused is not None:
            return self.focused
        return sep.join(with_title(t, x) for t, x in zip(self.titles, self.texts))

    def take(self, order: Sequence[int], scores: Sequence[float] | None = None) -> "Contexts":
        """The passages at positions ``order`` (in that order), with ``scores`` (one per kept
        passage) instead of the current ones when given; ``focused`` is dropped."""
        rows = [self.rows[j] for j in order] if len(self.rows) == len(self.passage_ids) \
            else list(self.rows)
        return Contexts(rows=rows, passage_ids=[self.passage_ids[j] for j in order],
                        titles=[self.titles[j] for j in order],
                        texts=[self.texts[j] for j in order],
                        scores=list(scores) if scores is not None
                        else [self.scores[j] for j in order])
