"""The index directory: its layout, ``meta.json`` checks, loading and searching it.

An index is a directory::

    index/NAME/
      meta.json          how it was built: embedder, dim, metric, normalised,
                         chunking, index type + params, counts, versions,
                         complete, file sizes + sha256
      faiss.index        vector i  <->  passage row i
      passages.parquet   passage_id, doc_id, doc_title, text
      vectors.f32        (with --keep-vectors) the raw float32 vectors, row i <-> passage row i
      bm25/              the lexical index (pipeline.index.bm25), listed in meta.json["bm25"]

It is written by :class:`pipeline.index.writer.IndexWriter` into
``.NAME.partial/`` beside the target and renamed into place only when
complete; :func:`read_meta` refuses anything else (no ``meta.json``,
``complete: false``, another format version, missing keys) with a message
that says what to do, and :func:`load_index` checks the files against it
(size, or sha256 with ``verify="full"``) before memory-mapping them.

Example::

    >>> store = load_index("index/demo")                    # doctest: +SKIP
    >>> scores, ids = store.search(query_vectors, k=5)      # doctest: +SKIP
    >>> store.passages(ids[0])[0]["text"]                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.errors import IndexMismatchError, OpenbookError
from pipeline.index import faiss_index
from pipeline.index.artifacts import META_FILE, check_files, meta_value
from pipeline.index.shards import PASSAGE_COLUMNS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "faiss.index"
PASSAGES_FILE = "passages.parquet"
VECTORS_FILE = "vectors.f32"


def read_meta(path: str | Path) -> dict:
    """``meta.json`` of an index directory, with errors that say what to do."""
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise OpenbookError(f"--index {path}: no such directory; build one with "
                            f"`python -m pipeline.build_index --out {path}`")
    if not meta_path.is_file():
        raise OpenbookError(f"--index {path}: no {META_FILE}, so this is not an openbook index "
                            "(or its build never finished); rebuild it with pipeline.build_index")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OpenbookError(f"--index {path}: {META_FILE} is unreadable ({e}); rebuild the index") from e
    source, fix = f"--index {path}", "rebuild the index"
    if not isinstance(meta, dict):
        raise OpenbookError(f"{source}: {META_FILE} holds a JSON {type(meta).__name__}, not an "
                            f"object (it was edited or damaged); {fix}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"--index {path}: format version {meta.get('format_version')} but this openbook "
            f"reads version {FORMAT_VERSION}; rebuild the index with this version")
    if not meta.get("complete"):
        raise OpenbookError(f"--index {path}: the build did not finish (complete=false); "
                            "run the same pipeline.build_index command again")
    # every field read anywhere, of the right type (a hostile meta.json is one line, no traceback)
    for key, kind, extra in (("embedder.name", str, {}), ("embedder.dim", int, {"minimum": 1}),
                             ("embedder.normalize", bool, {}),
                             ("counts.passages", int, {"minimum": 0}),
                             ("index.factory", str, {}),
                             ("index.nprobe", int, {"minimum": 1, "optional": True}),
                             ("index.refine", int, {"minimum": 1, "optional": True})):
        meta_value(meta, key, kind, source=source, fix=fix, **extra)
    return meta


@dataclass
class IndexStore:
    """A loaded index directory: FAISS index, passage table and ``meta``."""

    path: Path
    meta: dict
    index: object
    _passages: object = field(repr=False)  # pyarrow.parquet.ParquetFile
    verify: str = "size"  # how load_index checked it; its sentence vectors are checked the same

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.meta["embedder"]["dim"])

    def search(self, vectors: np.ndarray, k: int, *, nprobe: int | None = None,
               refine: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each query vector: ``(scores, ids)``, both ``(n, k)``; id -1 = none.

        ``nprobe``: IVF lists visited; ``refine``: candidates re-scored exactly
        (``k * refine``, an index built with ``--refine``); ``None``: the index's own.
        """
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IndexMismatchError(f"query vectors have shape {vectors.shape}, the index "
                                     f"{self.path} holds {self.dim}-d vectors")
        faiss_index.set_nprobe(self.index, nprobe)
        faiss_index.set_refine(self.index, refine)
        k = min(k, self.size)
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        if len(ids) and k and (np.isnan(scores[ids >= 0]).any() or (ids < 0).all()):
            what = "NaN scores" if (ids >= 0).any() else f"no passage for any of {len(ids)} queries"
            raise OpenbookError(
                f"--index {self.path}: the search gave {what}: the vectors in {INDEX_FILE} are "
                "damaged (a same-size change the default size check cannot see); check it with "
                "--verify-index full and rebuild the index")
        return scores, ids

    def passages(self, ids: Sequence[int]) -> list[dict]:
        """Rows ``ids`` of the passage table as dicts, in the order given.

        Only the row groups that hold the ids are read, so memory does not
        grow with the corpus.
        """
        import pyarrow as pa

        ids = [int(i) for i in ids]
        wanted = sorted({i for i in ids if i >= 0})
        rows: dict[int, dict] = {}
        pf = self._passages
        starts = self._group_starts()
        g = 0
        by_group: dict[int, list[int]] = {}
        import bisect

        for i in wanted:
            g = bisect.bisect_right(starts, i) - 1
            by_group.setdefault(g, []).append(i)
        for g, members in by_group.items():
            try:
                table = pf.read_row_group(g, columns=list(PASSAGE_COLUMNS))
            except (OSError, ValueError, pa.ArrowException) as e:
                raise OpenbookError(
                    f"--index {self.path}: {PASSAGES_FILE} is damaged (row group {g}: "
                    f"{_one_line(e)}); rebuild the index (--verify-index full checks every "
                    "file before any work)") from e
            local = [i - starts[g] for i in members]
            sub = table.take(local).to_pylist()
            rows.update(zip(members, sub))
        return [rows[i] for i in ids if i in rows]

    def _group_starts(self) -> list[int]:
        if not hasattr(self, "_starts"):
            md = self._passages.metadata
            starts, s = [], 0
            for g in range(md.num_row_groups):
                starts.append(s)
                s += md.row_group(g).num_rows
            self._starts = starts
        return self._starts


def passage_columns(parquet: Path, batch_rows: int = 2048) -> Iterator[tuple[list[str], list[str]]]:
    """``(titles, texts)`` of ``passages.parquet`` a batch of rows at a time, in row order
    (a missing value as ``""``): how the side builds (BM25, sentence vectors) stream it."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=batch_rows,
                                                      columns=["doc_title", "text"]):
        yield ([t or "" for t in batch.column("doc_title").to_pylist()],
               [x or "" for x in batch.column("text").to_pylist()])


def side_files(folder: Path, name: str) -> dict:
    """The ``files`` table (bytes, sha256) of a side folder being written at ``folder``, keyed
    as it will be published (``name/file``): ``bm25/``, ``sentences/``."""
    from pipeline.fileio import sha256_file

    return {f"{name}/{p.name}": {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.iterdir()) if p.is_file()}


def publish_side(index: Path, key: str, partial: Path, record: dict, started: float) -> None:
    """Put a finished side folder in place: forget the old one in ``meta.json[key]``, swap
    ``partial`` in as ``index/record["dir"]``, then record the new one (with its build
    ``seconds`` since ``started``). An interrupted publish leaves no record of a half folder."""
    import time

    from pipeline.fileio import publish_dir, write_json_atomic

    meta = read_meta(index)
    if meta.pop(key, None) is not None:
        write_json_atomic(index / META_FILE, meta)
    publish_dir(partial, index / record["dir"])
    record["seconds"] = round(time.perf_counter() - started, 2)
    meta[key] = record
    write_json_atomic(index / META_FILE, meta)  # meta.json is not checksummed


def _one_line(e: BaseException, limit: int = 200) -> str:
    """A library error as a short line (faiss's "Error in <signature> at <file>:<line>: " dropped)."""
    import re

    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", " ".join(str(e).split()))
    return (text[:limit] + ("..." if len(text) > limit else "")) or type(e).__name__


VERIFY_MODES = ("none", "size", "full")


def load_index(path: str | Path, *, mmap: bool = True, verify: str = "size",
               embedder: str | None = None) -> IndexStore:
    """Open an index directory after checking its ``meta.json``.

    Args:
        mmap: memory-map the FAISS index instead of reading it into RAM.
        verify: ``"size"`` (file sizes, instant), ``"full"`` (sha256) or ``"none"``.
        embedder: if given, the canonical embedder name the caller will use;
            an index built with another one is refused.
    """
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    path = Path(path)
    meta = read_meta(path)
    if embedder is not None and meta["embedder"]["name"] != embedder:
        raise IndexMismatchError(
            f"--index {path} was built with embedder {meta['embedder']['name']!r} but "
            f"{embedder!r} was asked for; drop --embedder to use the index's own, or rebuild "
            f"the index with --embedder {embedder}")
    check_files(path, meta, verify, source=f"--index {path}", fix="rebuild the index")
    damaged = ("the file is damaged or was not written completely; rebuild the index "
               "(--verify-index full checks every byte)")
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    if mmap and meta["index"].get("refine"):  # the exact vectors stay on disk, paged in
        if hasattr(faiss, "IO_FLAG_MMAP_IFC"):  # maps the whole file (faiss refuses both)
            flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
        else:
            log.warning("--index %s: this faiss (%s) cannot memory-map the exact vectors of a "
                        "refine index, so they are read into memory; faiss-cpu >= 1.11 maps "
                        "them", path, faiss.__version__)
    try:
        index = faiss.read_index(str(path / INDEX_FILE), flags)
    except RuntimeError as e:  # faiss reports unreadable files as RuntimeError
        raise OpenbookError(f"--index {path}: cannot read {INDEX_FILE} ({_one_line(e)}): "
                            f"{damaged}") from e
    faiss_index.set_nprobe(index, meta["index"].get("nprobe"))
    index = faiss_index.for_search(index)
    try:
        passages = pq.ParquetFile(path / PASSAGES_FILE, memory_map=mmap)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise OpenbookError(f"--index {path}: cannot read {PASSAGES_FILE} ({_one_line(e)}): "
                            f"{damaged}") from e
    n_pass = passages.metadata.num_rows
    if index.ntotal != n_pass or index.ntotal != meta["counts"]["passages"]:
        raise IndexMismatchError(
            f"--index {path}: {index.ntotal} vectors but {n_pass} passages "
            f"(meta.json says {meta['counts']['passages']}); rebuild the index")
    if index.d != meta["embedder"]["dim"]:
        raise IndexMismatchError(f"--index {path}: vectors are {index.d}-d but meta.json says "
                                 f"{meta['embedder']['dim']}; rebuild the index")
    log.info("index %s: %d passages, %s, embedder %s", path, index.ntotal,
             meta["index"]["factory"], meta["embedder"]["name"])
    return IndexStore(path=path, meta=meta, index=index, _passages=passages, verify=verify)
