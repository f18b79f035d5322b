"""Streamed corpus readers: MediaWiki XML dumps, CirrusSearch dumps, parquet, JSON Lines, CSV, demo.

This module picks the format (from ``--format`` or the file name,
:mod:`pipeline.corpus.formats`), the files (one file, or a directory / glob of
shards: :mod:`pipeline.corpus.files`), checks them and hands each to its
reader: :mod:`pipeline.corpus.mediawiki` (XML dumps), :mod:`pipeline.corpus.cirrus`
(CirrusSearch dumps), :mod:`pipeline.corpus.tables` (parquet, JSON Lines, CSV) or
:mod:`pipeline.corpus.demo`. The files are read as one stream
(:class:`pipeline.corpus.multifile.DocumentStream`), which applies ``--limit``
and skips the documents a resumed build already holds.

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
from pipeline.corpus.cirrus import _read_cirrus
from pipeline.corpus.demo import _read_demo, demo_corpus_path
from pipeline.corpus.documents import CorpusStats, Document
from pipeline.corpus.files import CorpusFile, check_readable, corpus_files, is_sharded
from pipeline.corpus.formats import FORMATS, detect_format
from pipeline.corpus.mediawiki import _read_xml
from pipeline.corpus.multifile import DocumentStream
from pipeline.corpus.tables import _read_csv, _read_jsonl, _read_parquet

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "detect_format", "iter_documents", "skip_documents", "DocumentStream"]


def iter_documents(path: str | os.PathLike[str] | None, fmt: str | None = None, *,
                   title_column: str = "title", text_column: str = "text",
                   id_column: str | None = None, limit: int | None = None,
                   stats: CorpusStats | None = None) -> DocumentStream:
    """Stream the documents of a corpus: one file, or a directory or glob of files.

    ``fmt`` is one of :data:`FORMATS` (``None``: from each file's name;
    ``"demo"`` ignores ``path``). The id is the ``id_column`` value (or a column
    named ``id``), the page id for XML and CirrusSearch dumps, else the 0-based
    row number (``FILE/ROW`` with a directory or glob, ``FILE`` the file's name
    without its suffix). Rows whose text is empty are skipped; ``limit`` caps the
    number of documents yielded over all files; ``stats``, if given, is updated
    as the stream is consumed.

    The files, the format and (for parquet) the columns are checked at call
    time; problems found while streaming raise :class:`CorpusError` from the
    iterator, after the documents already read.

    >>> docs = iter_documents(None, "demo", limit=2)
    >>> [d.doc_id for d in docs]
    ['0', '1']
    """
    if limit is not None and limit < 0:
        raise CorpusError(f"--limit must be 0 or more, got {limit}. "
                          f"Fix: pass --limit N with N >= 0.")
    files = _files(path, _checked_format(fmt))
    stats = stats if stats is not None else CorpusStats()

    def open_file(f: CorpusFile, file_stats: CorpusStats) -> Iterator[Document]:
        prefix = f"{f.label}/" if f.label else ""
        if f.format == "demo":
            return _read_demo(f.path, file_stats)
        logger.info("reading %s as %s", f.path, f.format)
        if f.format == "xml":
            return _read_xml(f.path, file_stats)
        if f.format == "cirrus":
            return _read_cirrus(f.path, title_column, text_column, file_stats, prefix)
        reader = {"parquet": _read_parquet, "jsonl": _read_jsonl, "csv": _read_csv}[f.format]
        return reader(f.path, title_column, text_column, id_column, file_stats, prefix)

    if len(files) > 1 or files[0].label:
        logger.info("corpus %s: %d %s file(s), %s ... %s", path, len(files),
                    "/".join(sorted({f.format for f in files})), files[0].path.name,
                    files[-1].path.name)
    for f in files if len(files) > 1 else []:  # every shard's columns, before any embedding
        if f.format == "parquet":
            _read_parquet(f.path, title_column, text_column, id_column, CorpusStats()).close()
    return DocumentStream(files, open_file, limit=limit, stats=stats,
                          key={"columns": [title_column, text_column, id_column]})


def skip_documents(docs: Iterable[Document], done: int, *, progress: bool = True) -> Iterator[Document]:
    """Skip the first ``done`` documents of ``docs`` (a resumed build already holds them:
    they are not embedded again) and return the rest. A :class:`DocumentStream` passes
    over the files its ledger counted without opening them; other iterables are read."""
    if isinstance(docs, DocumentStream):
        return docs.skip(done, progress=progress)
    it = iter(docs)
    if not done:
        return it
    logger.info("resuming: skipping the %d documents already embedded", done)
    for _ in tqdm(itertools.islice(it, done), total=done, desc="skip", unit="doc",
                  disable=not progress, dynamic_ncols=True):
        pass
    return it


def _checked_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}. Fix: pass --format with one of "
                          f"{', '.join(FORMATS)}.")
    return fmt


def _files(path: str | os.PathLike[str] | None, fmt: str | None) -> list[CorpusFile]:
    """The checked files of the corpus (the demo's JSON file for ``demo``)."""
    if fmt == "demo":
        if path is not None:
            logger.debug("--format demo ignores the corpus path %s", path)
        return [CorpusFile(demo_corpus_path(), "demo")]
    if path is None:
        raise CorpusError("no corpus file given. Fix: pass a corpus path, or --format demo "
                          "for the built-in demo corpus.")
    if is_sharded(path):
        return corpus_files(path, fmt)
    file = Path(path)
    if not file.exists():
        raise CorpusError(f"{file}: no such file or directory. Fix: check the --corpus path.")
    fmt = fmt if fmt is not None else detect_format(file)
    check_readable(file)
    return [CorpusFile(file, fmt)]
