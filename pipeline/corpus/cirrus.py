"""CirrusSearch dumps (``*-cirrussearch-content.json.gz``) streamed line by line.

Wikimedia's CirrusSearch dumps are Elasticsearch bulk files: an action line
``{"index": {"_id": "12", ...}}``, then the page's document line with
``namespace``, ``title``, ``text`` (the whole article as plain text, markup
already rendered away), ``opening_text`` (the lead section), ``heading``,
``auxiliary_text``, ... Only namespace 0 (articles) becomes documents: the
``_id`` (the page id) as the id, ``title`` (``--title-column``) and ``text``
(``--text-column``; ``--text-column opening_text`` keeps only the lead
sections). A field holding a list is joined with newlines.

A truncated ``.gz`` (or an action line with no document after it) raises
:class:`CorpusError` naming the file and the documents already read: a short
corpus is never taken silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

from pipeline.corpus.documents import CorpusStats, Document, _document
from pipeline.corpus.tables import _json_lines
from pipeline.errors import CorpusError

logger = logging.getLogger(__name__)

#: Bulk actions that carry a document line after them.
_ACTIONS = ("index", "create")


def _read_cirrus(path: Path, title_column: str, text_column: str, stats: CorpusStats,
                 id_prefix: str = "") -> Iterator[Document]:
    line_no = 0
    action_line = 0  # line of the action whose document is expected next (0: none)
    page_id: Any = None
    documents = 0  # document lines read (all namespaces)
    checked = False
    try:
        for line_no, record in _json_lines(path):
            if not action_line:
                page_id = _action_id(path, record, line_no)
                action_line = line_no
                continue
            action_line = 0
            documents += 1
            stats.read += 1
            if record.get("namespace", 0) != 0:
                stats.skipped_namespace += 1
                continue
            if not checked:
                _check_fields(path, record, line_no, title_column, text_column)
                checked = True
            doc = _document(f"{id_prefix}{documents - 1}", page_id,
                            _field(record.get(title_column)),
                            _field(record.get(text_column)), stats)
            if doc is not None:
                yield doc
    except (EOFError, OSError, UnicodeError) as exc:
        raise CorpusError(
            f"{path}: the CirrusSearch dump is truncated or damaged after {documents} "
            f"document(s) (line {line_no}; {type(exc).__name__}: {' '.join(str(exc).split())}). "
            f"Fix: re-download the dump and check its size/checksum (or use --limit to stop "
            f"before the fault).") from exc
    if action_line:
        raise CorpusError(
            f"{path}: line {action_line}: an index line with no document after it (the dump is "
            f"truncated after {documents} document(s)). Fix: re-download the dump.")


def _action_id(path: Path, record: dict, line_no: int) -> Any:
    """The ``_id`` of a bulk action line; a document where an action belongs is an error."""
    for action in _ACTIONS:
        meta = record.get(action)
        if isinstance(meta, dict):
            return meta.get("_id")
    keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
    raise CorpusError(
        f"{path}: line {line_no}: expected an index line such as {{\"index\": {{\"_id\": ...}}}} "
        f"(CirrusSearch dumps alternate index and document lines), got keys {keys}. Fix: pass "
        f"a *-cirrussearch-content.json.gz dump, or --format jsonl for one JSON document a line.")


def _check_fields(path: Path, record: dict, line_no: int, title_column: str,
                  text_column: str) -> None:
    for field, flag in ((title_column, "--title-column"), (text_column, "--text-column")):
        if field not in record:
            shown = ", ".join(repr(k) for k in list(record)[:30])
            raise CorpusError(
                f"{path}: line {line_no}: the document has no field {field!r} (it has {shown}). "
                f"Fix: pass {flag} naming one of them (e.g. --text-column opening_text for the "
                f"lead sections only).")


def _field(value: Any) -> Any:
    """A document field as text: lists (``heading``, ``auxiliary_text``) joined by newlines."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value if v is not None)
    return value
