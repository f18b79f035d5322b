"""One document stream over the files of a corpus, and the ledger that lets a resumed build skip them.

:class:`DocumentStream` reads the files of a corpus one after the other (one
open reader at a time), applies ``--limit`` over all of them and keeps the
caller's :class:`CorpusStats` the total of every file. :meth:`~DocumentStream.peek`
reads the first document without consuming it (the build checks the corpus
before loading a model); :meth:`~DocumentStream.skip` drops the documents a
resumed build already holds.

:class:`FileLedger` records, in the unfinished build's folder
(``.NAME.partial/corpus_files.json``), how many documents each file gave once
it was read to its end, with the file's size and mtime. When a killed build is
rerun, ``skip`` passes over the finished files **without opening them** (their
counts come from the ledger) and re-reads only the file the build stopped in, up
to where it stopped. A ledger entry whose file changed since is ignored (the
build fingerprint refuses a changed corpus anyway).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterator

from tqdm.auto import tqdm

from pipeline.corpus.documents import CorpusStats, Document
from pipeline.corpus.files import CorpusFile
from pipeline.fileio import write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["DocumentStream", "FileLedger", "LEDGER_FILE"]

LEDGER_FILE = "corpus_files.json"
_LEDGER_VERSION = 1

Opener = Callable[[CorpusFile, CorpusStats], Iterator[Document]]


class FileLedger:
    """Documents given by each fully read corpus file (saved once :meth:`attach` ed)."""

    def __init__(self, key: dict):
        self.key = key  # what else decides the counts (the columns)
        self.path: Path | None = None
        self.entries: dict[str, dict] = {}

    @staticmethod
    def identity(f: CorpusFile) -> dict:
        st = f.path.stat()
        return {"path": str(f.path.resolve()), "format": f.format, "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns}

    def attach(self, path: str | Path) -> None:
        """Save to ``path`` from now on; entries already there (same key) are kept."""
        self.path = Path(path)
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if (isinstance(saved, dict) and saved.get("version") == _LEDGER_VERSION
                and saved.get("key") == self.key and isinstance(saved.get("files"), dict)):
            self.entries = saved["files"] | self.entries
        self._save()

    def record(self, f: CorpusFile, documents: int, stats: CorpusStats) -> None:
        self.entries[str(f.path.resolve())] = self.identity(f) | {
            "documents": documents, "stats": stats.as_dict()}
        self._save()

    def entry(self, f: CorpusFile) -> dict | None:
        """The entry of ``f`` if it is still the file that was counted, else None."""
        e = self.entries.get(str(f.path.resolve()))
        if e is None or any(e.get(k) != v for k, v in self.identity(f).items()):
            return None
        return e

    def remove(self) -> None:
        """Delete the saved ledger (before the build folder is published) and stop saving."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.path = None

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, {"version": _LEDGER_VERSION, "key": self.key,
                                          "files": self.entries})
        except OSError as e:  # only costs a re-read on resume
            logger.warning("could not save %s (%s); a resumed build will re-read the finished "
                           "corpus files", self.path, e.strerror or e)


class DocumentStream(Iterator[Document]):
    """The documents of ``files`` in order, opened one at a time by ``open_file(file, stats)``."""

    def __init__(self, files: list[CorpusFile], open_file: Opener, *, limit: int | None,
                 stats: CorpusStats, key: dict):
        self.files = files
        self.limit = limit
        self.stats = stats
        self.ledger = FileLedger(key)
        self._open_file = open_file
        self._base = CorpusStats()     # files finished or skipped
        self._current = CorpusStats()  # the file being read
        self._i = 0                    # the file being read (or next to open)
        self._here = 0                 # documents taken from it
        self.taken = 0                 # documents taken from all files (handed out or buffered)
        self._buffer: list[Document] = []
        self._closed = False
        self._reader: Iterator[Document] | None = open_file(files[0], self._current)

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> "DocumentStream":
        return self

    def __next__(self) -> Document:
        if self._buffer:
            return self._buffer.pop(0)
        doc = self._take()
        if doc is None:
            raise StopIteration
        return doc

    def peek(self) -> Document | None:
        """The next document without consuming it (None at the end)."""
        if not self._buffer:
            doc = self._take()
            if doc is None:
                return None
            self._buffer.append(doc)
        return self._buffer[0]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if not self._closed:
            self._closed = True
            self._sync()
            logger.debug("corpus: %s", self.stats.summary())

    def _take(self, open_next: bool = True) -> Document | None:
        """The next document from the readers; None at the end (or, with ``open_next``
        false, when a file has just ended: :meth:`skip` then consults the ledger)."""
        if self._closed:
            return None
        if self.limit is not None and self.taken >= self.limit:
            self.close()  # stop without reading the next record
            return None
        try:
            while True:
                if self._reader is None:
                    if self._i >= len(self.files):
                        self.close()
                        return None
                    self._reader = self._open_file(self.files[self._i], self._current)
                try:
                    doc = next(self._reader)
                except StopIteration:
                    self._finish_file()
                    if not open_next:
                        return None
                    continue
                except BaseException:  # a bad file: the stream ends here
                    self._reader = None
                    self._closed = True
                    raise
                self.taken += 1
                self._here += 1
                self._current.yielded += 1
                return doc
        finally:
            self._sync()

    def _finish_file(self) -> None:
        self.ledger.record(self.files[self._i], self._here, self._current)
        self._next_file(self._current)

    def _next_file(self, done: CorpusStats) -> None:
        self._reader = None
        self._base.add(done)
        self._current = CorpusStats()
        self._here = 0
        self._i += 1

    def _sync(self) -> None:
        self.stats.copy_from(self._base, plus=self._current)

    # -- resume -------------------------------------------------------------------------
    def skip(self, done: int, *, progress: bool = True) -> "DocumentStream":
        """Pass over the first ``done`` documents (a resumed build holds them): files the
        ledger counted are skipped unopened, the rest is read and dropped."""
        handed = self.taken - len(self._buffer)
        if done < handed:
            raise ValueError(f"cannot skip to document {done}: {handed} were handed out")
        remaining = done - handed
        if not remaining:
            return self
        logger.info("resuming: skipping the %d documents already embedded", remaining)
        drop = min(remaining, len(self._buffer))
        del self._buffer[:drop]
        remaining -= drop
        bar = tqdm(total=remaining, desc="skip", unit="doc", disable=not progress,
                   dynamic_ncols=True)
        reread = 0
        while remaining:
            remaining = self._skip_files(remaining, bar)
            if not remaining:
                break
            if self._take(open_next=False) is None:
                if self._closed:
                    break
                continue  # a file ended: the ledger may know the next one
            remaining -= 1
            reread += 1
            bar.update(1)
        bar.close()
        if reread:
            logger.info("resuming: re-read %d document(s) (read, not embedded), up to %s",
                        reread, self.files[min(self._i, len(self.files) - 1)].path)
        return self

    def _skip_files(self, remaining: int, bar) -> int:
        while remaining and self._i < len(self.files):
            f = self.files[self._i]
            entry = self.ledger.entry(f)
            left = None if entry is None else entry["documents"] - self._here
            if left is None or not 0 <= left <= remaining:
                break
            if self._reader is not None:
                self._reader.close()
            self.taken += left
            remaining -= left
            bar.update(left)
            self._next_file(CorpusStats(**entry["stats"]))
            logger.info("resuming: %s skipped unread (its %d documents are already embedded)",
                        f.path, entry["documents"])
        self._sync()
        return remaining
