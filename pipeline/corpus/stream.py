"""Streamed corpus readers: MediaWiki XML dumps, parquet, JSON Lines, CSV and a demo set.

This module picks the format (from ``--format`` or the file name), checks
the file and hands it to its reader: :mod:`pipeline.corpus.mediawiki` (XML
dumps), :mod:`pipeline.corpus.tables` (parquet, JSON Lines, CSV) or
:mod:`pipeline.corpus.demo`; it also applies ``--limit`` and skips the
documents a resumed build already holds.

Every reader is a generator that holds at most one batch of rows (or one
page) in memory, so multi-gigabyte dumps can be indexed on a laptop.
Problems the user can fix (missing file, unknown extension, a missing
column, a bad line, a truncated dump) raise :class:`CorpusError` with the
file, the place and the flag to use.

>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
>>> _ = path.write_text(json.dumps({"id": "a1", "title": "Water", "text": "H2O."}) + "\\n")
>>> stats = CorpusStats()
>>> list(iter_documents(path, stats=stats))
[Document(doc_id='a1', title='Water', text='H2O.')]
>>> stats.yielded
1
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from pipeline.errors import CorpusError
from pipeline.corpus.demo import _read_demo, demo_corpus_path
from pipeline.corpus.documents import CorpusStats, Document
from pipeline.corpus.mediawiki import _read_xml
from pipeline.corpus.tables import _read_csv, _read_jsonl, _read_parquet

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "detect_format", "iter_documents", "skip_documents"]

FORMATS = ("xml", "parquet", "jsonl", "csv", "demo")

# Checked in order: the bare ".bz2" (split dumps such as "...xml-p1p41242.bz2") comes
# last so that ".jsonl.bz2" and ".csv.bz2" win over it.
_SUFFIXES = (
    (".xml.bz2", "xml"), (".xml.gz", "xml"), (".xml", "xml"),
    (".parquet", "parquet"), (".pq", "parquet"),
    (".jsonl.gz", "jsonl"), (".jsonl.bz2", "jsonl"), (".json.gz", "jsonl"),
    (".json.bz2", "jsonl"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
    (".csv.gz", "csv"), (".csv.bz2", "csv"), (".csv", "csv"),
    (".bz2", "xml"),
)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The corpus format implied by the file name.

    >>> detect_format("enwiki-latest-pages-articles.xml.bz2"), detect_format("a.JSONL.gz")
    ('xml', 'jsonl')
    """
    name = Path(path).name.lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise CorpusError(
        f"{path}: cannot tell the corpus format from the file name. Fix: pass --format "
        f"with one of {', '.join(FORMATS[:-1])} (.xml/.xml.bz2, .parquet, .jsonl/.jsonl.gz, "
        f".csv/.csv.gz are recognized).")


def iter_documents(path: str | os.PathLike[str] | None, fmt: str | None = None, *,
                   title_column: str = "title", text_column: str = "text",
                   id_column: str | None = None, limit: int | None = None,
                   stats: CorpusStats | None = None) -> Iterator[Document]:
    """Stream the documents of a corpus file.

    ``fmt`` is one of :data:`FORMATS` (``None``: from the extension; ``"demo"``
    ignores ``path``). The id is the ``id_column`` value (or a column named
    ``id``), the page id for XML, else the 0-based row ordinal. Rows whose text
    is empty are skipped; ``limit`` caps the number of documents yielded;
    ``stats``, if given, is updated as the stream is consumed.

    The file, the format and (for parquet) the columns are checked at call
    time; problems found while streaming raise :class:`CorpusError` from the
    iterator, after the documents already read.

    >>> docs = iter_documents(None, "demo", limit=2)
    >>> [d.doc_id for d in docs]
    ['0', '1']
    """
    if limit is not None and limit < 0:
        raise CorpusError(f"--limit must be 0 or more, got {limit}. "
                          f"Fix: pass --limit N with N >= 0.")
    fmt, file = _resolve(path, fmt)
    stats = stats if stats is not None else CorpusStats()
    if file is None:  # fmt == "demo"
        if path is not None:
            logger.debug("--format demo ignores the corpus path %s", path)
        source = _read_demo(demo_corpus_path(), stats)
    else:
        logger.info("reading %s as %s", file, fmt)
        if fmt == "xml":
            source = _read_xml(file, stats)
        elif fmt == "parquet":
            source = _read_parquet(file, title_column, text_column, id_column, stats)
        elif fmt == "jsonl":
            source = _read_jsonl(file, title_column, text_column, id_column, stats)
        else:
            source = _read_csv(file, title_column, text_column, id_column, stats)
    return _limited(source, limit, stats)


def skip_documents(docs: Iterable[Document], done: int, *, progress: bool = True) -> Iterator[Document]:
    """Skip the first ``done`` documents of ``docs`` (a resumed build already holds them:
    they are read, not embedded) and return the rest."""
    it = iter(docs)
    if not done:
        return it
    logger.info("resuming: skipping the %d documents already embedded", done)
    for _ in tqdm(itertools.islice(it, done), total=done, desc="skip", unit="doc",
                  disable=not progress, dynamic_ncols=True):
        pass
    return it


def _resolve(path: str | os.PathLike[str] | None, fmt: str | None) -> tuple[str, Path | None]:
    """The checked format and file (``None`` for the demo corpus)."""
    if fmt is not None:
        fmt = fmt.strip().lower()
        if fmt not in FORMATS:
            raise CorpusError(f"unknown corpus format {fmt!r}. Fix: pass --format with one of "
                              f"{', '.join(FORMATS)}.")
        if fmt == "demo":
            return fmt, None
    if path is None:
        raise CorpusError("no corpus file given. Fix: pass a corpus path, or --format demo "
                          "for the built-in demo corpus.")
    file = Path(path)
    if not file.exists():
        raise CorpusError(f"{file}: no such file. Fix: check the corpus path.")
    if file.is_dir():
        raise CorpusError(f"{file}: is a directory, not a corpus file. Fix: pass one file "
                          f"(index each shard separately or concatenate them).")
    return (fmt if fmt is not None else detect_format(file)), file


def _limited(source: Iterator[Document], limit: int | None,
             stats: CorpusStats) -> Iterator[Document]:
    """Count yields and stop after ``limit`` without reading the next record."""
    if limit == 0:
        source.close()
        return
    try:
        for doc in source:
            stats.yielded += 1
            yield doc
            if limit is not None and stats.yielded >= limit:
                return
    finally:
        source.close()
        logger.debug("corpus: %s", stats.summary())
