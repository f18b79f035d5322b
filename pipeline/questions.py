"""Load a question CSV (competition format) into :class:`Question` objects.

This is the only module that parses question files. The format is the Kaggle
"LLM Science Exam" one: columns ``id,prompt,A,B,C,D,E``, an optional
``answer`` (one of A-E) and an optional ``context``; other columns are ignored.

Text is kept exactly as written: an option reading ``None``, ``NA`` or ``nan``
is that text, not a missing value, and Unicode is not normalised. Every
problem a user can fix raises :class:`~pipeline.errors.InputError` naming the
file, the row (and physical line), the column and what to do.

>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "q.csv"
>>> _ = p.write_text('id,prompt,A,B,C,D,E,answer\\n7,"What is 2+2?",4,5,NA,None,nan,a\\n',
...                  encoding="utf-8")
>>> [q] = load_questions(p)
>>> q.id, q.options, q.answer, q.row
('7', ('4', '5', 'NA', 'None', 'nan'), 'A', 1)
>>> has_answers([q])
True
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from pipeline.errors import InputError

log = logging.getLogger(__name__)

LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "prompt") + LETTERS
OPTIONAL_COLUMNS: tuple[str, ...] = ("answer", "context")

_FORMAT_HINT = "the header must be id,prompt,A,B,C,D,E (optionally answer and context)"
_UTF8_FIX = ("re-save the file as UTF-8 (e.g. Excel: 'CSV UTF-8'; or "
             "`iconv -f cp1252 -t utf-8 in.csv > out.csv`)")


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``row`` is its 1-based data row in the file.

    >>> Question("q1", "Pick one", ("a", "b", "c", "d", "e"), None, None, 1).options[4]
    'e'
    """

    id: str
    prompt: str
    options: tuple[str, ...]
    answer: str | None
    context: str | None
    row: int


@dataclass(frozen=True)
class _RawRow:
    """A data row as parsed, before its values are checked."""

    row: int
    line: int
    cells: list[str]


def has_answers(questions: Iterable[Question]) -> bool:
    """True if there is at least one question and every question has an answer.

    >>> has_answers([Question("1", "p", tuple("abcde"), "B", None, 1)])
    True
    >>> has_answers([])
    False
    """
    qs = list(questions)
    return bool(qs) and all(q.answer is not None for q in qs)


def load_questions(path: str | os.PathLike[str], *, require_answer: bool = False) -> list[Question]:
    """Parse a question CSV; raise :class:`InputError` on anything malformed.

    ``require_answer=True`` (training, evaluation) makes a file without
    answers an error. Answers are normalised to upper case; all other text is
    returned verbatim. An empty ``context`` cell gives ``context=None``.
    Blank lines are skipped and not counted as rows. The file is only read.

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "q.csv"
    >>> _ = p.write_text("id,prompt,A,B,C,D,E\\n1,Hi?,a,b,c,d,e\\n", encoding="utf-8")
    >>> load_questions(p)[0].answer is None
    True
    >>> load_questions(p, require_answer=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.errors.InputError: ...q.csv: column 'answer': no answers: ...
    """
    _raise_field_size_limit()
    path = Path(path)
    text, bad_utf8 = _read_text(path)
    rows = _iter_rows(path, text, bad_utf8)
    header_line, header = _read_header(path, rows, bad_utf8)
    columns = _column_positions(path, header, header_line)
    raw = list(_data_rows(path, rows, header, bad_utf8))
    if bad_utf8 is not None:  # the bad byte was not inside any cell we could place
        raise _utf8_error(path, bad_utf8)
    if not raw:
        raise InputError(path, "the file has a header but no data rows", line=header_line,
                         fix="add one question per row below the header")

    labelled = "answer" in columns and any(r.cells[columns["answer"]].strip() for r in raw)
    if require_answer and not labelled:
        problem = ("no answers: the 'answer' column is empty in every row"
                   if "answer" in columns else "no answers: there is no 'answer' column")
        raise InputError(path, problem + " (answers are required for training and evaluation)",
                         column="answer",
                         fix="add an 'answer' column with the correct letter (A-E) for every row")

    questions = []
    seen: dict[str, _RawRow] = {}
    for r in raw:
        questions.append(_make_question(path, r, columns, labelled))
        key = r.cells[columns["id"]].strip()
        if key in seen:
            first = seen[key]
            raise InputError(
                path, f"duplicate id {key!r} (already used in row {first.row}, line {first.line})",
                row=r.row, line=r.line, column="id", fix="give every question a unique id")
        seen[key] = r
    log.info("loaded %d %s questions from %s", len(questions),
             "labelled" if labelled else "unlabelled", path)
    return questions


def load_question_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                        require_answer: bool = False) -> list[Question]:
    """The questions of one CSV, or of several one after the other.

    One file: exactly :func:`load_questions`. Several: each is checked on its own (errors
    name that file) and every id becomes ``<file stem>:<id>`` (``<n>.<file stem>:<id>``
    when two files share a stem), so files that each number their rows from 0 can be
    combined: ``pipeline.train stem_1k.csv extra_500.csv train_6k.csv``.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a", "b"):
    ...     _ = (d / f"{name}.csv").write_text("id,prompt,A,B,C,D,E\\n0,Hi?,a,b,c,d,e\\n",
    ...                                      encoding="utf-8")
    >>> [q.id for q in load_question_files([d / "a.csv", d / "b.csv"])]
    ['a:0', 'b:0']
    """
    from dataclasses import replace

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError(Path("."), "no question file given", fix="pass at least one CSV file")
    if len(paths) == 1:
        return load_questions(paths[0], require_answer=require_answer)
    stems = [p.stem for p in paths]
    out: list[Question] = []
    for n, p in enumerate(paths, start=1):
        prefix = p.stem if stems.count(p.stem) == 1 else f"{n}.{p.stem}"
        out += [replace(q, id=f"{prefix}:{q.id}")
                for q in load_questions(p, require_answer=require_answer)]
    log.info("%d questions from %d files", len(out), len(paths))
    return out


def _raise_field_size_limit() -> None:
    """Let a single cell be as large as the platform allows (huge prompts/contexts)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32-bit on some platforms
            limit //= 2


@dataclass(frozen=True)
class _BadUtf8:
    """Where the first byte that is not UTF-8 sits in the file."""

    offset: int  # 0-based byte offset in the file
    line: int  # 1-based physical line
    byte: int


#: The most read from something that is not a regular file (a pipe, ``<(...)``, a device).
MAX_STREAM_BYTES = 64 << 20


def _read_bounded(path: Path) -> bytes:
    """A regular file whole; a pipe or device at most :data:`MAX_STREAM_BYTES` (``/dev/zero``
    or ``/dev/urandom`` would otherwise be read until memory runs out)."""
    import stat

    if stat.S_ISREG(path.stat().st_mode):
        return path.read_bytes()
    with open(path, "rb") as f:
        data = f.read(MAX_STREAM_BYTES + 1)
    if len(data) > MAX_STREAM_BYTES:
        raise InputError(path, f"is not a regular file and gave more than "
                               f"{MAX_STREAM_BYTES >> 20} MiB without ending (a device?)",
                         fix="save the questions to a CSV file and pass its path")
    return data


def _read_text(path: Path) -> tuple[str, _BadUtf8 | None]:
    """Read the file as UTF-8 (BOM stripped).

    Undecodable bytes become lone surrogates (``surrogateescape``) so the
    parser can name the row and column they sit in; the second value says
    where the first one is (``None`` if the file is clean UTF-8).
    """
    if not path.exists():
        raise InputError(path, "file not found", fix="check the path (and the working directory)")
    if path.is_dir():
        raise InputError(path, "is a directory, not a CSV file", fix="pass the path of the CSV file")
    try:
        data = _read_bounded(path)
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})",
                         fix="check that the file exists and is readable") from e
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    body = data[skip:]
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as e:
        before = body[:e.start]
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
        bad = _BadUtf8(offset=skip + e.start, line=line, byte=body[e.start])
        return body.decode("utf-8", "surrogateescape"), bad


def _utf8_error(path: Path, bad: _BadUtf8, *, row: int | None = None,
                column: str | None = None) -> InputError:
    problem = (f"the file is not valid UTF-8: byte 0x{bad.byte:02x} at byte offset {bad.offset} "
               f"(line {bad.line}) cannot be decoded")
    return InputError(path, problem, row=row, line=bad.line, column=column, fix=_UTF8_FIX)


def _has_bad_bytes(cell: str) -> bool:
    """True if ``cell`` holds a byte that ``surrogateescape`` could not decode."""
    return any("\udc80" <= ch <= "\udcff" for ch in cell)


def _iter_rows(path: Path, text: str, bad_utf8: _BadUtf8 | None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(start_line, cells)`` for every non-blank CSV record."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last_line = 0
    records = 0  # non-blank records so far; the header is record 1, data row n is record n + 1
    while True:
        start = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if bad_utf8 is not None:
                raise _utf8_error(path, bad_utf8) from e
            raise InputError(path, f"malformed CSV: {e} (the parser stopped at line "
                                   f"{reader.line_num})",
                             row=records or None, line=start,
                             fix='quote any field that contains a comma, quote or line break, '
                                 'write a quote inside a quoted field as two quotes (""), '
                                 'and close every opening quote') from e
        last_line = reader.line_num
        if all(not c.strip() for c in cells):
            log.debug("%s: skipping blank line %d", path, start)
            continue
        records += 1
        yield start, cells


def _read_header(path: Path, rows: Iterator[tuple[int, list[str]]],
                 bad_utf8: _BadUtf8 | None) -> tuple[int, list[str]]:
    """Return ``(line, stripped column names)`` of the first non-blank record."""
    first = next(rows, None)
    if first is None:
        if bad_utf8 is not None:
            raise _utf8_error(path, bad_utf8)
        raise InputError(path, "the file is empty", fix=f"write a CSV file; {_FORMAT_HINT}")
    line, cells = first
    if bad_utf8 is not None and any(_has_bad_bytes(c) for c in cells):
        raise _utf8_error(path, bad_utf8)
    return line, [c.strip() for c in cells]


def _column_positions(path: Path, header: list[str], line: int) -> dict[str, int]:
    """Map each known column name to its position; check required ones are present."""
    positions: dict[str, int] = {}
    for i, name in enumerate(header):
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            continue
        if name in positions:
            raise InputError(path, f"the header names column {name!r} twice "
                                   f"(fields {positions[name] + 1} and {i + 1})",
                             line=line, column=name, fix="rename or delete one of them")
        positions[name] = i
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        found = ",".join(header)
        problem = (f"missing required column(s) {', '.join(repr(c) for c in missing)}; "
                   f"the header found is: {found!r}")
        lower = {h.lower(): h for h in header}
        near = [f"{lower[c.lower()]!r} for {c!r}" for c in missing if c.lower() in lower]
        if near:
            problem += f" (column names are case-sensitive: found {', '.join(near)})"
        elif len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            problem += " (the file seems to use another separator than ',')"
        raise InputError(path, problem, line=line, fix=f"{_FORMAT_HINT}; save it comma-separated")
    ignored = [h for h in header if h not in positions]
    if ignored:
        log.debug("%s: ignoring extra column(s) %s", path, ignored)
    return positions


def _data_rows(path: Path, rows: Iterator[tuple[int, list[str]]], header: list[str],
               bad_utf8: _BadUtf8 | None) -> Iterator[_RawRow]:
    """Number the data rows and check each has as many fields as the header."""
    for n, (line, cells) in enumerate(rows, start=1):
        if bad_utf8 is not None:
            for i, cell in enumerate(cells):
                if _has_bad_bytes(cell):
                    column = header[i] if i < len(header) else f"field {i + 1} (no header)"
                    raise _utf8_error(path, bad_utf8, row=n, column=column)
        if len(cells) < len(header):
            raise InputError(
                path, f"the row has {len(cells)} field(s) but the header has {len(header)} "
                      f"(missing from column {header[len(cells)]!r} on)",
                row=n, line=line, column=header[len(cells)],
                fix="add the missing fields, or quote any field that contains a comma or "
                    "line break")
        if len(cells) > len(header):
            raise InputError(
                path, f"the row has {len(cells)} fields but the header has {len(header)} "
                      f"(extra field {len(header) + 1}: {cells[len(header)][:40]!r}; "
                      f"last column is {header[-1]!r})",
                row=n, line=line,
                fix='quote fields that contain commas (e.g. "a, b"), or add a column name '
                    "to the header")
        yield _RawRow(row=n, line=line, cells=cells)


def _make_question(path: Path, r: _RawRow, columns: dict[str, int], labelled: bool) -> Question:
    """Check one row's values and build its :class:`Question`."""
    def cell(name: str) -> str:
        value = r.cells[columns[name]]
        if name in REQUIRED_COLUMNS and not value.strip():
            what = "option" if name in LETTERS else name
            raise InputError(path, f"{what} is empty", row=r.row, line=r.line, column=name,
                             fix=f"write the {what} text (every question needs an id, a prompt "
                                 "and five options)")
        return value

    qid, prompt = cell("id"), cell("prompt")
    options = tuple(cell(letter) for letter in LETTERS)
    answer = None
    if labelled:
        raw = r.cells[columns["answer"]]
        answer = raw.strip().upper()
        if not answer:
            raise InputError(path, "answer is empty, but other rows have answers", row=r.row,
                             line=r.line, column="answer",
                             fix="give every row an answer (A-E), or leave the column empty "
                                 "in every row")
        if answer not in LETTERS:
            raise InputError(path, f"answer {raw!r} is not one of A, B, C, D, E", row=r.row,
                             line=r.line, column="answer",
                             fix="write the letter of the correct option (A-E)")
    context = r.cells[columns["context"]] if "context" in columns else None
    return Question(id=qid, prompt=prompt, options=options, answer=answer,
                    context=context if context is not None and context.strip() else None,
                    row=r.row)
