"""Is this retrieved passage the question's source? One rule, for ``evaluate`` and every benchmark.

A question may say where it comes from in up to three ways (its :class:`Source`):
the id of its source document (``source_id``), that document's title
(``source_title``), or the passage it was written from (``context``). A retrieved
passage is the source when **any** of them matches (:func:`source_rule` says it in
words, and reports print that sentence):

* **id**: ``source_id`` equals the passage id or its document id (the passage id
  before the last ``:``, as :mod:`pipeline.index.chunking` writes ``"{doc_id}:{k}"``);
* **title**: the passage's title equals ``source_title``, case and spacing ignored;
* **text**: at least :data:`MATCH_THRESHOLD` of the word :data:`SHINGLE`-grams of the
  shorter of (passage text, ``context``) occur in the other (lower-cased ``\\w+``
  words). So every chunk of a gold passage split while indexing counts, a chunk that
  holds a short gold passage counts, and so does another passage that repeats most of
  the gold one (a sibling passage of the same page, a duplicate document).

Recall@k of the source is then the share of the questions *with a known source* whose
first source passage is ranked k or better (:func:`source_rank`, :func:`source_recall`);
questions whose source is unknown (``None``) are left out of the denominator.

Example (runnable: ``python -m doctest pipeline/retrieval/sources.py``)::

    >>> from pipeline.retrieval.retriever import Contexts
    >>> gold = Source.of(context="Water boils at 100 degrees Celsius at sea level.")
    >>> ctx = Contexts(passage_ids=["iron:0", "water:2"], titles=["Iron", "Water"],
    ...                texts=["Iron is a metal.", "Water boils at 100 degrees Celsius at sea level. "
    ...                       "Ice melts at 0 degrees."])
    >>> source_rank(ctx, gold)
    2
    >>> source_rank(ctx, Source.of(doc_id="iron")), source_rank(ctx, Source.of(title="  IRON "))
    (1, 1)
    >>> source_recall([ctx, ctx], [gold, None], ks=(1, 2))  # the unknown source is left out
    {1: 0.0, 2: 1.0}
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # only attributes are read: no retrieval stack imported at run time
    from pipeline.questions import Question
    from pipeline.retrieval.retriever import Contexts

#: Text rule: word n-grams of this n ...
SHINGLE = 3
#: ... of which at least this share of the shorter text's must occur in the other.
MATCH_THRESHOLD = 0.5


def source_rule() -> str:
    """How a retrieved passage is recognised as a question's source (also written in reports)."""
    return (f"a passage is the question's source if its document id (the part of the passage id "
            f"before ':') or passage id equals the `source_id` cell, or its title equals the "
            f"`source_title` cell (case and spacing ignored), or at least {MATCH_THRESHOLD:.0%} of "
            f"the word {SHINGLE}-grams of the shorter of (passage text, `context` cell) occur in "
            f"the other (lower-cased words), so every chunk of a gold passage that was split "
            f"while indexing counts, and so does a chunk that holds a short gold passage")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def shingles(text: str, n: int = SHINGLE) -> frozenset:
    """Word n-grams of ``text`` (single words if it has fewer than ``n``).

    >>> sorted(shingles("The cat sat on it"))[:2]
    [('cat', 'sat', 'on'), ('sat', 'on', 'it')]
    """
    w = _words(text)
    if len(w) < n:
        return frozenset((x,) for x in w)
    return frozenset(tuple(w[i:i + n]) for i in range(len(w) - n + 1))


def norm_title(t: str) -> str:
    """A title as the rule compares it: spacing collapsed, case folded.

    >>> norm_title("  Absolute   ZERO ")
    'absolute zero'
    """
    return " ".join(t.split()).casefold()


@dataclass(frozen=True)
class Source:
    """What is known about one question's source passage (any of the three).

    ``shingles`` are those of the ``context`` cell (:func:`shingles`); ``title`` is kept
    normalised (:func:`norm_title`); empty strings count as unknown. :meth:`of` builds
    one from the raw cells."""

    shingles: frozenset | None = None
    title: str | None = None
    doc_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "title", (norm_title(self.title) or None) if self.title else None)
        object.__setattr__(self, "doc_id", self.doc_id or None)
        object.__setattr__(self, "shingles", self.shingles or None)

    @classmethod
    def of(cls, context: str | None = None, title: str | None = None,
           doc_id: str | None = None) -> Source | None:
        """The source given by a ``context`` text, a ``title`` and/or a document ``doc_id``;
        ``None`` when all are empty (the question's source is unknown)."""
        src = cls(shingles=shingles(context) if context else None, title=title, doc_id=doc_id)
        return src if (src.shingles or src.title or src.doc_id) else None


def is_source(passage_id: str, title: str, text: str, src: Source) -> bool:
    """True if the passage is ``src`` by :func:`source_rule`.

    >>> s = Source(shingles=shingles("Water boils at 100 degrees at sea level."))
    >>> is_source("d1:3", "Water", "Water boils at 100 degrees at sea level. Ice melts at 0.", s)
    True
    >>> is_source("d9:0", "Iron", "Iron is a metal.", s)
    False
    >>> is_source("stem:d9:0", "Iron", "Iron is a metal.", Source(doc_id="d9"))
    True
    """
    if src.doc_id is not None:
        doc = passage_id.rsplit(":", 1)[0]
        # "INDEX:doc:chunk" when several indexes are fused (pipeline.retrieval.indexes)
        if src.doc_id in (passage_id, doc) or doc.endswith(":" + src.doc_id):
            return True
    if src.title is not None and norm_title(title) == src.title:
        return True
    if src.shingles:
        p = shingles(text)
        if p and len(p & src.shingles) >= MATCH_THRESHOLD * min(len(p), len(src.shingles)):
            return True
    return False


def source_rank(ctx: Contexts, src: Source | None) -> int | None:
    """1-based rank of the first source passage in ``ctx``, ``None`` if absent or unknown."""
    if src is None:
        return None
    for r, (pid, title, text) in enumerate(zip(ctx.passage_ids, ctx.titles, ctx.texts), start=1):
        if is_source(pid, title, text, src):
            return r
    return None


def recall_from_ranks(ranks: Sequence[int | None], ks: Sequence[int]) -> dict[int, float]:
    """``{k: share of ranks <= k}`` over ``ranks`` (``None``: the source was not retrieved).

    >>> recall_from_ranks([1, 3, None, 2], ks=(1, 3))
    {1: 0.25, 3: 0.75}
    """
    if not ranks:
        raise ValueError("recall of no questions: no question has a known source")
    return {k: sum(r is not None and r <= k for r in ranks) / len(ranks) for k in ks}


def source_recall(contexts: Sequence[Contexts], sources: Sequence[Source | None],
                  ks: Sequence[int]) -> dict[int, float]:
    """Recall@k of the source passage, per k in ``ks``: over the questions whose source is
    known, the share whose first source passage ranks k or better in their ``contexts``."""
    if len(contexts) != len(sources):
        raise ValueError(f"{len(contexts)} questions' contexts but {len(sources)} sources")
    return recall_from_ranks([source_rank(c, s) for c, s in zip(contexts, sources)
                              if s is not None], ks)


def load_sources(path: str | Path, questions: Sequence[Question]) -> list[Source | None]:
    """Per question its :class:`Source` from the ``context``, ``source_title`` and ``source_id``
    columns (``None`` where all are empty). The file was already validated by
    :func:`~pipeline.questions.load_questions`; only the two extra columns are read here."""
    extra: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        cols = {c: header.index(c) for c in ("source_title", "source_id") if c in header}
        if cols:
            for cells in reader:
                if len(cells) == len(header):
                    extra[cells[header.index("id")]] = {c: cells[i].strip() for c, i in cols.items()}
    out: list[Source | None] = []
    for q in questions:
        e = extra.get(q.id, {})
        out.append(Source.of(context=q.context, title=e.get("source_title"),
                             doc_id=e.get("source_id")))
    return out
