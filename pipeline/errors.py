"""Errors a user can fix.

Every error that is the user's to fix (bad input file, wrong flag, an index
built with another embedder) is an :class:`OpenbookError`. The CLIs print its
message on one line, without a traceback, and exit with status 2. Messages
say *where* (file, row, column or flag) and *what to do*.
"""

from __future__ import annotations


class OpenbookError(Exception):
    """Base class: a problem the user can fix. The message says how."""


class InputError(OpenbookError):
    """A bad input file, naming the file, the row and the column.

    ``row`` is the 1-based data row (the header is not counted), ``line`` the
    1-based physical line in the file where that row starts.

    >>> str(InputError("q.csv", "option is empty", row=3, line=4, column="B",
    ...                fix="write the option text"))
    "q.csv: row 3 (line 4), column 'B': option is empty. Fix: write the option text."
    """

    def __init__(self, path, problem: str, *, row: int | None = None, line: int | None = None,
                 column: str | None = None, fix: str | None = None):
        self.path, self.problem, self.row, self.line, self.column, self.fix = (
            str(path), problem, row, line, column, fix)
        where = [self.path]
        loc = []
        if row is not None:
            loc.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        elif line is not None:
            loc.append(f"line {line}")
        if column is not None:
            loc.append(f"column {column!r}")
        head = where[0] + (": " + ", ".join(loc) if loc else "")
        msg = f"{head}: {problem}"
        if fix:
            msg += f". Fix: {fix.rstrip('.')}."
        super().__init__(msg)


class IndexMismatchError(OpenbookError):
    """An index (or checkpoint) was built differently from how it is being used."""


class CorpusError(OpenbookError):
    """A corpus file cannot be read (missing, wrong format, missing columns)."""


class EmbedderError(OpenbookError):
    """The embedder cannot be found or loaded."""
