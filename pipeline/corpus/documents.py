"""What a corpus document is, and how a reader turns one raw record into one.

:class:`Document` is what every reader yields and :class:`CorpusStats` the
counts they keep while streaming. The readers (:mod:`pipeline.corpus.mediawiki`,
:mod:`pipeline.corpus.tables`, :mod:`pipeline.corpus.demo`) share the two
helpers here: ``_document`` builds a document from raw values (an empty text
is counted, not yielded) and ``_check_columns`` raises :class:`CorpusError`
naming the flag to pass when a requested column is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from pipeline.errors import CorpusError

__all__ = ["Document", "CorpusStats"]


@dataclass(frozen=True)
class Document:
    """One corpus document: a stable id, a title (may be ``""``) and plain text."""

    doc_id: str
    title: str
    text: str


@dataclass
class CorpusStats:
    """Counts a reader updates while streaming, so the caller can log what was skipped.

    ``read`` counts source records (pages, rows, lines) seen, ``yielded`` the
    documents handed out; the ``skipped_*`` counts say why the rest were not.
    Counts accumulate, so one instance can total several files.

    >>> s = CorpusStats(read=3, yielded=1, skipped_redirect=1, skipped_empty=1)
    >>> s.summary()
    'read 3, yielded 1, skipped 1 redirect(s), 0 non-article page(s), 1 empty'
    """

    read: int = 0
    yielded: int = 0
    skipped_redirect: int = 0
    skipped_namespace: int = 0
    skipped_empty: int = 0

    def summary(self) -> str:
        """One line for the log."""
        return (f"read {self.read}, yielded {self.yielded}, skipped {self.skipped_redirect} "
                f"redirect(s), {self.skipped_namespace} non-article page(s), "
                f"{self.skipped_empty} empty")

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for JSON manifests)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def add(self, other: "CorpusStats") -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy_from(self, a: "CorpusStats", plus: "CorpusStats") -> None:
        """Set these counts to ``a + plus`` (the total over files, kept in the caller's object)."""
        for f in fields(self):
            setattr(self, f.name, getattr(a, f.name) + getattr(plus, f.name))


def _document(ordinal: int | str, doc_id: Any, title: Any, text: Any,
              stats: CorpusStats) -> Document | None:
    """Build a Document from raw values, or count an empty one and return None.

    ``ordinal``: the id when ``doc_id`` is empty (the row number, ``LABEL/ROW`` in a
    sharded corpus)."""
    if text is None or (isinstance(text, float) and text != text):  # None / NaN
        text = ""
    text = text if isinstance(text, str) else str(text)
    if not text.strip():
        stats.skipped_empty += 1
        return None
    title = "" if title is None or (isinstance(title, float) and title != title) else title
    doc_id = "" if doc_id is None else str(doc_id).strip()
    return Document(doc_id=doc_id or str(ordinal),
                    title=title if isinstance(title, str) else str(title), text=text)


def _check_columns(path: Path, available: Iterable[str], title_column: str, text_column: str,
                   id_column: str | None, where: str = "") -> str | None:
    """Raise if a requested column is missing; return the id column to use (or None)."""
    have = list(available)
    for column, flag in ((title_column, "--title-column"), (text_column, "--text-column"),
                         (id_column, "--id-column")):
        if column is not None and column not in have:
            shown = ", ".join(repr(c) for c in have[:50]) or "none"
            raise CorpusError(
                f"{path}{where}: no column {column!r}; the file has columns {shown}. Fix: pass "
                f"--title-column/--text-column (and --id-column) naming the right columns "
                f"(the missing one is {flag}).")
    if id_column is not None:
        return id_column
    return "id" if "id" in have else None
