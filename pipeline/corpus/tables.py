"""Tabular corpora: parquet, JSON Lines and CSV (optionally ``.gz``/``.bz2``), streamed in batches.

Each reader holds at most one batch of rows (parquet batches, CSV chunks,
one JSON line) in memory. The title, text and id columns are chosen with
``--title-column``/``--text-column``/``--id-column``; a missing column, a
bad line or a truncated file raises :class:`CorpusError` with the place and
the fix.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import logging
from pathlib import Path
from typing import IO, Any, Iterator

from pipeline.errors import CorpusError
from pipeline.corpus.documents import CorpusStats, Document, _check_columns, _document

logger = logging.getLogger(__name__)

_PARQUET_BATCH_ROWS = 512
_CSV_CHUNK_ROWS = 1024


# -- parquet ---------------------------------------------------------------


def _read_parquet(path: Path, title_column: str, text_column: str, id_column: str | None,
                  stats: CorpusStats, id_prefix: str = "") -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"{path}: not a readable parquet file ({exc}). Fix: check the file, "
                          f"or pass --format if it is another format.") from exc
    id_col = _check_columns(path, names, title_column, text_column, id_column)
    return _parquet_rows(path, title_column, text_column, id_col, stats, id_prefix)


def _parquet_rows(path: Path, title_column: str, text_column: str, id_col: str | None,
                  stats: CorpusStats, id_prefix: str) -> Iterator[Document]:
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
                    doc = _document(f"{id_prefix}{ordinal}", doc_id, title, text, stats)
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
                stats: CorpusStats, id_prefix: str = "") -> Iterator[Document]:
    id_col: str | None = None
    checked = False
    warned = False
    line_no = 0
    ordinal = 0
    try:
        for line_no, record in _json_lines(path):
            if not checked:
                if len(record) == 1 and isinstance(record.get("index", record.get("create")),
                                                   dict):
                    raise CorpusError(
                        f"{path}: line {line_no}: an index line, as in a CirrusSearch dump "
                        f"(index and document lines alternate). Fix: pass --format cirrus.")
                id_col = _check_columns(path, record.keys(), title_column, text_column,
                                        id_column, where=f": line {line_no}")
                checked = True
            stats.read += 1
            if text_column not in record and not warned:
                logger.warning("%s: line %d has no %r key; such lines are skipped as empty",
                               path, line_no, text_column)
                warned = True
            doc = _document(f"{id_prefix}{ordinal}", record.get(id_col) if id_col else None,
                            record.get(title_column), record.get(text_column), stats)
            ordinal += 1
            if doc is not None:
                yield doc
    except (EOFError, OSError, UnicodeError) as exc:
        raise CorpusError(f"{path}: cannot read past line {line_no} ({type(exc).__name__}: "
                          f"{exc}). Fix: check that the file is complete UTF-8 JSON Lines, or "
                          f"re-download it.") from exc


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines file (.gz/.bz2 too)."""
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                yield line_no, _json_record(path, line, line_no)


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
              stats: CorpusStats, id_prefix: str = "") -> Iterator[Document]:
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
                    doc = _document(f"{id_prefix}{ordinal}", doc_id, title, text, stats)
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
