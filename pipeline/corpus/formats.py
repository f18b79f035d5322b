"""Corpus formats and how a file name implies one.

``FORMATS`` are the values of ``--format``; :func:`detect_format` reads the
format from a file name (``.xml.bz2`` -> ``xml``, ``...-cirrussearch-content.json.gz``
-> ``cirrus``, ...), :func:`format_of` is its quiet variant (``None`` for a
name that is no corpus file, e.g. a README beside parquet shards), and
:func:`file_stem` is a file's name without its corpus suffix (the prefix of
row-number document ids in a sharded corpus).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import CorpusError

__all__ = ["FORMATS", "detect_format", "format_of", "file_stem", "matches_format"]

#: ``demo`` stays fifth: older messages list the formats up to it.
FORMATS = ("xml", "parquet", "jsonl", "csv", "demo", "cirrus")

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
#: A JSON file whose name says "cirrussearch" is a CirrusSearch dump
#: (``enwiki-20240101-cirrussearch-content.json.gz``).
_CIRRUS_MARK = "cirrussearch"


def _match(name: str) -> tuple[str, str] | None:
    """``(suffix, format)`` for a lower-case file name, or None."""
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            if fmt == "jsonl" and _CIRRUS_MARK in name:
                return suffix, "cirrus"
            if suffix == ".bz2" and ".txt" in name:  # a multistream dump's index
                return None
            return suffix, fmt
    return None


def format_of(path: str | os.PathLike[str]) -> str | None:
    """The format implied by the file name, or None when the name implies none.

    >>> format_of("train-00000-of-00041.parquet"), format_of("README.md")
    ('parquet', None)
    >>> format_of("enwiki-20240101-pages-articles-multistream-index1.txt-p1p41242.bz2") is None
    True
    """
    found = _match(Path(path).name.lower())
    return found[1] if found else None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The corpus format implied by the file name.

    >>> detect_format("enwiki-latest-pages-articles.xml.bz2"), detect_format("a.JSONL.gz")
    ('xml', 'jsonl')
    >>> detect_format("enwiki-20240101-cirrussearch-content.json.gz")
    'cirrus'
    """
    fmt = format_of(path)
    if fmt is None:
        raise CorpusError(
            f"{path}: cannot tell the corpus format from the file name. Fix: pass --format "
            f"with one of xml, parquet, jsonl, csv, cirrus (.xml/.xml.bz2, .parquet, "
            f".jsonl/.jsonl.gz, .csv/.csv.gz and *cirrussearch*.json.gz are recognized).")
    return fmt


def matches_format(path: str | os.PathLike[str], fmt: str) -> bool:
    """True if the name suits ``--format fmt`` (a cirrus dump may be any ``.json(.gz)``)."""
    found = format_of(path)
    return found == fmt or (fmt == "cirrus" and found == "jsonl")


def file_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its corpus suffix.

    >>> file_stem("data/train-00000-of-00003.parquet"), file_stem("x.jsonl.gz")
    ('train-00000-of-00003', 'x')
    """
    name = Path(path).name
    found = _match(name.lower())
    return name[:-len(found[0])] if found and len(found[0]) < len(name) else name
