"""Which files ``--corpus`` names: one file, a directory of shards, or a glob.

A **directory** means the corpus files directly in it (not its sub-directories):
hidden files (``.gitattributes``) and names that imply no corpus format
(``README.md``, ``_SUCCESS``) are skipped; the rest must all be of one format,
else the build stops and says which (``--format X`` then takes only the files
of format X). A **glob** (``'data/train-*.parquet'``, quoted so the shell
passes it as is; ``**`` recurses) means every file it matches, each of one
format by its name, or all read as ``--format``. Either way the files are read
in natural order (``...articles2...`` before ``...articles10...``) and each
gets a label, its name without the corpus suffix (``train-00000-of-00041``;
the path from the glob's common folder when two names clash): documents
without an id column get ``LABEL/ROW`` ids, stable however many shards there are.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.corpus.formats import file_stem, format_of, matches_format
from pipeline.errors import CorpusError

logger = logging.getLogger(__name__)

__all__ = ["CorpusFile", "is_sharded", "corpus_files", "sharded_identity"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_told: set[str] = set()  # folders whose skipped files were logged


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus: its path, format and label (the prefix of row-number ids)."""

    path: Path
    format: str
    label: str = ""


def is_sharded(corpus: str | os.PathLike[str]) -> bool:
    """True if ``corpus`` names a directory or a glob (several files), not one file."""
    path = Path(corpus)
    return path.is_dir() or (not path.exists() and bool(_GLOB_CHARS.search(str(corpus))))


def _natural(path: Path) -> list:
    """Sort key: digit runs compare as numbers, then the plain name breaks ties."""
    text = str(path)
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)] + [
        (2, 0, text)]


def corpus_files(corpus: str | os.PathLike[str], fmt: str | None = None) -> list[CorpusFile]:
    """The files of a directory or glob ``corpus``, in reading order, each with its format.

    ``fmt``: ``--format`` (``None``: each file's from its name). Raises
    :class:`CorpusError` for an empty directory, a glob matching nothing, mixed
    formats without ``--format``, or a file that cannot be opened.
    """
    path = Path(corpus)
    if path.is_dir():
        files = _directory_files(path, fmt)
    else:
        files = _glob_files(str(corpus), fmt)
    for f in files:
        check_readable(f.path)
    logger.debug("corpus %s: %d %s file(s), %s ... %s", corpus, len(files),
                "/".join(sorted({f.format for f in files})), files[0].path.name,
                files[-1].path.name)
    return files


def check_readable(path: Path) -> None:
    """Raise :class:`CorpusError` unless ``path`` is a file that can be opened for reading."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise CorpusError(f"{path}: cannot read this corpus file ({e.strerror or e}). Fix: "
                          f"check its permissions, or move it out of the corpus directory "
                          f"(or narrow the glob).") from e


def _directory_files(folder: Path, fmt: str | None) -> list[CorpusFile]:
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith((".", "_"))),
                     key=_natural)
    files = [p for p in entries if p.is_file()]
    known = [p for p in files if format_of(p) is not None]
    if fmt is not None:
        chosen = [p for p in known if matches_format(p, fmt)]
        if not chosen:
            raise CorpusError(
                f"{folder}: no {fmt} corpus files in this directory ({_shown(files, entries)}). "
                f"Fix: pass the directory that holds them, a glob such as '{folder}/*.EXT', or "
                f"the right --format.")
        return _labelled([(p, fmt) for p in chosen])
    if not known:
        raise CorpusError(
            f"{folder}: no corpus files in this directory ({_shown(files, entries)}). Fix: pass "
            f"the directory that holds the .parquet/.jsonl/.csv/.xml(.bz2)/cirrus .json.gz "
            f"shards, or a glob such as '{folder}/*.parquet'.")
    by_format: dict[str, list[Path]] = defaultdict(list)
    for p in known:
        by_format[format_of(p)].append(p)
    if len(by_format) > 1:
        kinds = ", ".join(f"{len(ps)} {f} ({ps[0].name}{', ...' if len(ps) > 1 else ''})"
                          for f, ps in sorted(by_format.items(), key=lambda kv: -len(kv[1])))
        main = max(by_format, key=lambda f: len(by_format[f]))
        raise CorpusError(
            f"{folder}: holds corpus files of several formats: {kinds}. Fix: pass --format "
            f"{main} to read only those, or a glob that matches one kind "
            f"(mixed formats are not read as one corpus).")
    skipped = [p.name for p in files if format_of(p) is None]
    if skipped and str(folder) not in _told:  # once: the build lists the files more than once
        _told.add(str(folder))
        logger.info("%s: ignoring %d file(s) that are no corpus file: %s", folder, len(skipped),
                    ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return _labelled([(p, format_of(p)) for p in known])


def _glob_files(pattern: str, fmt: str | None) -> list[CorpusFile]:
    if not _GLOB_CHARS.search(pattern):
        raise CorpusError(f"{pattern}: no such file or directory. Fix: check the --corpus path.")
    paths = sorted((Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()),
                   key=_natural)
    if not paths:
        raise CorpusError(
            f"{pattern}: the glob matches no file. Fix: check the pattern (quote it so the "
            f"shell passes it as is, e.g. --corpus 'data/train-*.parquet'), or pass the "
            f"directory itself.")
    if fmt is not None:
        return _labelled([(p, fmt) for p in paths])
    unknown = [p for p in paths if format_of(p) is None]
    if unknown:
        raise CorpusError(
            f"{unknown[0]}: matched by the glob {pattern}, but its name implies no corpus "
            f"format. Fix: narrow the glob (e.g. end it in .parquet) or pass --format.")
    formats = sorted({format_of(p) for p in paths})
    if len(formats) > 1:
        raise CorpusError(
            f"{pattern}: matches corpus files of several formats ({', '.join(formats)}). Fix: "
            f"narrow the glob to one kind, or pass --format to read them all as one.")
    return _labelled([(p, formats[0]) for p in paths])


def _labelled(paths: list[tuple[Path, str]]) -> list[CorpusFile]:
    """Labels: the file stems, or (when two clash) the paths from the common folder."""
    stems = [file_stem(p) for p, _ in paths]
    if len(set(stems)) < len(stems):
        root = Path(os.path.commonpath([str(p.parent.resolve()) for p, _ in paths]))
        stems = [(p.resolve().parent.relative_to(root) / file_stem(p)).as_posix()
                 for p, _ in paths]
    return [CorpusFile(p, f, s) for (p, f), s in zip(paths, stems)]


def _shown(files: list[Path], entries: list[Path]) -> str:
    if not entries:
        return "it is empty"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:6]]
    more = f" and {len(entries) - 6} more" if len(entries) > 6 else ""
    return f"it holds {', '.join(names)}{more}"


def sharded_identity(corpus: str | os.PathLike[str], fmt: str | None) -> dict:
    """What the build fingerprint compares on resume: the files, their sizes and mtimes."""
    rows = []
    for f in corpus_files(corpus, fmt):
        st = f.path.stat()
        rows.append([f.label, f.format, st.st_size, int(st.st_mtime)])
    return {"format": fmt, "path": os.path.abspath(corpus), "files": len(rows),
            "bytes": sum(r[2] for r in rows),
            "listing": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]}
