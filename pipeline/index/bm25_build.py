"""Build bm25s's score matrix in bounded memory: spill sorted runs, then write the CSC by term ranges.

``bm25s.BM25.index`` needs every passage's term ids in memory at once, plus
three arrays of (term, passage) pairs and their sorted copy: ~4 B a token +
~24 B a pair, which grows with the corpus (tens of GB for English Wikipedia).
This module writes **the same files** (``data/indices/indptr.csc.index.npy``,
``vocab.index.json``, ``params.index.json`` and, for BM25L/BM25+,
``nonoccurrence_array.index.npy``; byte-equal arrays, tested) so
``bm25s.BM25.load(mmap=True)`` reads them as before, with memory bounded by
``memory_mb`` plus the vocabulary:

1. **Runs.** The passage table is streamed and tokenised (the caller's
   ``bm25s`` tokenizer); (term, passage) pairs are gathered in two int32 arrays
   until a run holds ``memory_mb / 48`` tokens, then counted (``np.unique``:
   term frequency per pair, sorted by term then passage) and spilled to
   ``runs/run-NNNNN.npy`` as int32 rows ``(term, passage, tf, passage
   length)``. Per-term document frequency, the token count and the passage
   count are kept as we go.
2. **Global statistics.** With every run written, document frequencies give
   the IDF (bm25s's own per-term functions) and the CSC column pointers
   (``indptr``); the token count gives the average passage length. The
   tokenizer's word dicts are dropped; only the vocabulary stays.
3. **Columns by ranges.** Terms are cut into consecutive ranges whose buffer
   (8 B a pair) takes half of ``memory_mb``. For each range, each run's slice
   for it (runs are term-sorted: one contiguous slice, found by binary search)
   is read in blocks that the other half bounds, scored with bm25s's
   term-frequency function and scattered into the buffer after the pairs of
   earlier runs (runs are in passage order, so each column's passages stay
   ascending, as bm25s has them); the buffer is then appended to the two
   output arrays.

What stays in memory whatever the corpus size: the vocabulary (the tokenizer's
word -> id and stem -> id dicts, ~200-300 B a distinct term) and 16 B a term for
document frequencies and pointers. Temporary disk:
16 B a (term, passage) pair, removed at the end. The arithmetic is bm25s's,
done with the same operand types, so the scores are bit-identical to an
in-memory ``bm25s.BM25(...).index((ids, vocab))``.

Example::

    >>> from pipeline.index.bm25 import TermTokenizer                   # doctest: +SKIP
    >>> stats = build_streaming(Path("index/demo/passages.parquet"), Path("/tmp/bm25"),
    ...                         TermTokenizer.from_config(), k1=1.2, b=0.75, method="lucene",
    ...                         memory_mb=256)                          # doctest: +SKIP
    >>> stats.num_docs, stats.nnz                                       # doctest: +SKIP
    (10033, 512345)
"""

from __future__ import annotations

import json
import logging
import shutil
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from pipeline.index.chunking import with_title

log = logging.getLogger(__name__)

#: Bytes a token costs while a run is gathered and counted (two int32 lists, an int64 key,
#: its sorted copy, np.unique's flags and counts, the int32 rows written).
BYTES_PER_RUN_TOKEN = 48
#: Bytes a pair costs in a column range's buffer (float32 score, int32 passage) ...
BYTES_PER_RANGE_PAIR = 8
#: ... and while a block of a run's slice is scored (its rows, int64 terms and positions,
#: float64 intermediates of bm25s's formula).
BYTES_PER_BLOCK_PAIR = 96
NONOCCURRENCE_METHODS = ("bm25l", "bm25+")
FILES = {"data": "data.csc.index.npy", "indices": "indices.csc.index.npy",
         "indptr": "indptr.csc.index.npy", "vocab": "vocab.index.json",
         "params": "params.index.json", "nonoccurrence": "nonoccurrence_array.index.npy"}


@dataclass(frozen=True)
class BuildStats:
    """What a streaming build counted: passages, tokens, vocabulary, (term, passage) pairs, runs."""

    num_docs: int
    n_tokens: int  # bm25s's passage lengths summed: an empty passage counts its "" term
    n_empty: int  # passages with no term but that placeholder
    vocab_size: int
    nnz: int
    runs: int
    ranges: int


def passage_texts(parquet: Path, batch_rows: int = 2048) -> Iterator[list[str]]:
    """Batches of ``with_title(title, text)``, in row order: exactly what is embedded."""
    from pipeline.index.store import passage_columns

    for titles, texts in passage_columns(parquet, batch_rows):
        yield [with_title(t, x) for t, x in zip(titles, texts)]


class _RunWriter:
    """Gathers (term, passage) pairs; spills each full run counted and sorted by term."""

    def __init__(self, folder: Path, run_tokens: int):
        self.folder, self.run_tokens = folder, max(int(run_tokens), 1)
        folder.mkdir(parents=True, exist_ok=True)
        self.terms, self.docs = array("i"), array("i")  # 4 B a token each, no per-passage objects
        self.lengths = array("i")  # passage lengths of the open run
        self.first_doc = self.n_docs = self.n_tokens = self.n_empty = 0
        self.df = np.zeros(1024, dtype=np.int64)
        self.paths: list[Path] = []

    def add(self, ids: list[int]) -> None:
        self.terms.extend(ids)
        self.docs.extend([self.n_docs - self.first_doc] * len(ids))
        self.lengths.append(len(ids))
        self.n_docs += 1
        self.n_tokens += len(ids)
        self.n_empty += ids == [0]  # "" (id 0) stands in for an empty passage
        if len(self.terms) >= self.run_tokens:
            self.spill()

    def spill(self) -> None:
        if not self.lengths:
            return
        keys = np.frombuffer(self.terms, dtype=np.int32).astype(np.int64) << 32
        keys |= np.frombuffer(self.docs, dtype=np.int32)
        self.terms, self.docs = array("i"), array("i")
        keys, tf = np.unique(keys, return_counts=True)
        rows = np.empty((len(keys), 4), dtype=np.int32)
        rows[:, 0] = keys >> 32
        local = (keys & 0xFFFFFFFF).astype(np.int64)
        del keys
        rows[:, 1] = local + self.first_doc
        rows[:, 2] = tf
        rows[:, 3] = np.frombuffer(self.lengths, dtype=np.int32)[local]
        del local, tf
        top = int(rows[-1, 0]) + 1
        if top > len(self.df):
            self.df = np.concatenate([self.df, np.zeros(max(top, 2 * len(self.df)) - len(self.df),
                                                        dtype=np.int64)])
        self.df[:top] += np.bincount(rows[:, 0], minlength=top)
        path = self.folder / f"run-{len(self.paths):05d}.npy"
        np.save(path, rows)
        self.paths.append(path)
        self.first_doc, self.lengths = self.n_docs, array("i")


def _idf64(df: np.ndarray, n_docs: int, method: str) -> np.ndarray:
    """bm25s's per-term IDF function (``math.log``, float64); 0 for a term in no passage."""
    from bm25s.scoring import _select_idf_scorer

    f = _select_idf_scorer(method)
    return np.fromiter((f(int(d), N=n_docs) if d else 0.0 for d in df), dtype=np.float64,
                       count=len(df))


def _nonoccurrence(idf64: np.ndarray, df: np.ndarray, avg: np.float64, *, method: str,
                   k1: float, b: float, delta: float, dtype: str) -> np.ndarray:
    """bm25s's ``_build_nonoccurrence_array`` (BM25L/BM25+): idf × tfc(tf=0), a double stored as dtype."""
    from bm25s.scoring import _select_tfc_scorer

    tfc = _select_tfc_scorer(method)(tf_array=0, l_d=avg, l_avg=avg, k1=k1, b=b, delta=delta)
    out = np.zeros(len(df), dtype=dtype)
    out[df > 0] = idf64[df > 0] * tfc
    return out


def _ranges(indptr: np.ndarray, cap: int) -> list[tuple[int, int]]:
    """Consecutive term ranges ``[lo, hi)`` each holding <= ``cap`` pairs (a bigger column alone)."""
    n_terms, out, lo = len(indptr) - 1, [], 0
    while lo < n_terms:
        hi = int(np.searchsorted(indptr, indptr[lo] + cap, side="right")) - 1
        hi = min(max(hi, lo + 1), n_terms)
        out.append((lo, hi))
        lo = hi
    return out


def _npy_writer(path: Path, dtype, n: int):
    """An open ``.npy`` file with the header ``np.save`` writes for a 1-d ``(n,)`` array."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": (int(n),)})
    return f


def build_streaming(parquet: Path, out: Path, tokenizer, *, k1: float, b: float, method: str,
                    memory_mb: float, delta: float = 0.5, dtype: str = "float32",
                    int_dtype: str = "int32", texts: Iterable[list[str]] | None = None,
                    total: int | None = None, progress: bool = True) -> BuildStats:
    """Write bm25s's index files for the passages of ``parquet`` into ``out`` (created).

    Args:
        tokenizer: a :class:`~pipeline.index.bm25.TermTokenizer`.
        k1, b, method, delta: bm25s's scoring parameters (``delta`` for BM25L/BM25+).
        memory_mb: the size of a run and of a column range (see the module doc).
        texts: batches of passage texts to index instead of reading ``parquet`` (tests).
        total: the number of passages, for the progress bar.
    """
    import bm25s
    from bm25s.utils import json_functions

    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer.bm25s_tokenizer()
    budget = memory_mb * 2**20
    runs = _RunWriter(out / "runs", budget / BYTES_PER_RUN_TOKEN)
    cap = max(int(budget / 2 / BYTES_PER_RANGE_PAIR), 1)  # half for the range buffer,
    block = max(int(budget / 2 / BYTES_PER_BLOCK_PAIR), 1)  # half for scoring a block
    try:
        bar = tqdm(total=total, desc="bm25 tokenise", unit="passage", disable=not progress,
                   dynamic_ncols=True)
        for batch in (texts if texts is not None else passage_texts(parquet)):
            for ids in tok.streaming_tokenize(batch, update_vocab=True, allow_empty=True):
                runs.add(ids)
            # bm25s looks a word up in word_to_id first; word_to_stem is only its stemming
            # cache for unseen words, so emptying it changes no id and saves ~1/3 of the dicts
            getattr(tok, "word_to_stem", {}).clear()
            bar.update(len(batch))
        bar.close()
        runs.spill()
        vocab = tok.get_vocab_dict()
        del tok  # its word -> stem / word -> id dicts are not needed any more
        n_docs, n_vocab = runs.n_docs, len(vocab)
        df = np.zeros(n_vocab, dtype=np.int64)
        df[:min(len(runs.df), n_vocab)] = runs.df[:n_vocab]
        indptr = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        nnz = int(indptr[-1])
        avg = np.float64(runs.n_tokens) / n_docs if n_docs else np.float64(0)
        idf64 = _idf64(df, n_docs, method)
        idf = idf64.astype(dtype)
        nonocc = (_nonoccurrence(idf64, df, avg, method=method, k1=k1, b=b, delta=delta, dtype=dtype)
                  if method in NONOCCURRENCE_METHODS else None)
        ranges = _ranges(indptr, cap)
        log.info("bm25: %d passages, %d tokens, vocabulary %d, %d pairs; %d run(s), %d column "
                 "range(s) of <= %d pairs", n_docs, runs.n_tokens, n_vocab, nnz, len(runs.paths),
                 len(ranges), cap)
        _write_columns(out, runs.paths, ranges, block, indptr, idf, nonocc, avg, k1=k1, b=b,
                       delta=delta, method=method, dtype=dtype, int_dtype=int_dtype,
                       progress=progress)
    finally:
        shutil.rmtree(out / "runs", ignore_errors=True)
    np.save(out / FILES["indptr"], indptr)
    if nonocc is not None:
        np.save(out / FILES["nonoccurrence"], nonocc)
    (out / FILES["vocab"]).write_text(json_functions.dumps(vocab, ensure_ascii=False),
                                      encoding="utf-8")  # as bm25s writes it
    params = dict(k1=k1, b=b, delta=delta, method=method, idf_method=method, dtype=dtype,
                  int_dtype=int_dtype, num_docs=n_docs, version=bm25s.__version__, backend="numpy")
    (out / FILES["params"]).write_text(json.dumps(params, indent=4), encoding="utf-8")
    return BuildStats(num_docs=n_docs, n_tokens=runs.n_tokens, n_empty=runs.n_empty,
                      vocab_size=n_vocab, nnz=nnz,
                      runs=len(runs.paths), ranges=len(ranges))


def _write_columns(out: Path, run_paths: list[Path], ranges: list[tuple[int, int]], block: int,
                   indptr: np.ndarray, idf: np.ndarray, nonocc: np.ndarray | None, avg: np.float64,
                   *, k1: float, b: float, delta: float, method: str, dtype: str, int_dtype: str,
                   progress: bool) -> None:
    """Phase 3: the CSC's ``data`` and ``indices``, one term range at a time, runs in order."""
    from bm25s.scoring import _select_tfc_scorer

    tfc_of = _select_tfc_scorer(method)
    nnz = int(indptr[-1])
    with _npy_writer(out / FILES["data"], dtype, nnz) as fd, \
            _npy_writer(out / FILES["indices"], int_dtype, nnz) as fi:
        for lo, hi in tqdm(ranges, desc="bm25 columns", unit="range", disable=not progress,
                           dynamic_ncols=True):
            base = int(indptr[lo])
            size = int(indptr[hi]) - base
            data = np.empty(size, dtype=dtype)
            docs = np.empty(size, dtype=int_dtype)
            cursor = indptr[lo:hi] - base  # next free slot of each column in the buffer
            for path in run_paths:
                for part in _run_slice(path, lo, hi, block):
                    _scatter(part, lo, cursor, data, docs, idf, nonocc, tfc_of, avg, k1=k1, b=b,
                             delta=delta, dtype=dtype)
            if not np.array_equal(cursor, indptr[lo + 1:hi + 1] - base):
                raise RuntimeError(f"bm25: the runs do not fill terms {lo}..{hi} "
                                   "(a run file changed during the build)")
            fd.write(data)  # buffer protocol: no copy
            fi.write(docs)


def _run_slice(path: Path, lo: int, hi: int, block: int) -> Iterator[np.ndarray]:
    """The rows of run ``path`` for terms ``[lo, hi)``, ``block`` rows at a time.

    The binary search reads a few pages through a memory map; the rows are read into
    ordinary memory (so the peak is one block, not the mapped pages of a whole slice).
    """
    run = np.load(path, mmap_mode="r")
    a, z = (int(x) for x in np.searchsorted(run[:, 0], [lo, hi], side="left"))
    offset, row_bytes = run.offset, run.strides[0]
    del run
    for start in range(a, z, block):
        n = min(block, z - start)
        yield np.fromfile(path, dtype=np.int32, count=4 * n,
                          offset=offset + start * row_bytes).reshape(n, 4)


def _scatter(part: np.ndarray, lo: int, cursor: np.ndarray, data: np.ndarray, docs: np.ndarray,
             idf: np.ndarray, nonocc: np.ndarray | None, tfc_of, avg: np.float64, *, k1: float,
             b: float, delta: float, dtype: str) -> None:
    """Score a block of run rows ``(term, passage, tf, length)`` into the range buffers.

    Each row goes to its column's next free slot (``cursor``, advanced); blocks come in
    run order and, within a run, in (term, passage) order, so columns fill in passage order.
    """
    terms = part[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.diff(terms, prepend=-1))
    counts = np.diff(np.append(starts, len(terms)))
    cols = terms[starts] - lo
    pos = np.repeat(cursor[cols] - starts, counts) + np.arange(len(terms))
    cursor[cols] += counts
    # bm25s's arithmetic: float32 tf, int length, float64 average, float32 idf
    score = idf[terms] * tfc_of(tf_array=part[:, 2].astype(dtype), l_d=part[:, 3], l_avg=avg,
                                k1=k1, b=b, delta=delta)
    if nonocc is not None:
        score -= nonocc[terms]
    data[pos] = score
    docs[pos] = part[:, 1]
