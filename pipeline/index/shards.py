"""The checkpointed shards of a build in progress (``.NAME.partial/``).

A build writes its passages and vectors one shard at a time, each shard as
two files written to a temp name, fsynced and renamed::

    .NAME.partial/
      meta.json          {"complete": false}: predict refuses this directory
      checkpoint.json    the build's fingerprint (what decides the passages: corpus,
                         embedder, chunking, shard size), shards done, documents read,
                         passages written; rewritten atomically after every shard
      shards/000000.parquet   passage_id, doc_id, doc_title, text of shard 0
      shards/000000.f32       its vectors, float32 (rows x dim), row i <-> passage row i

A killed build leaves whole shards plus at most one orphan file (written after
the last checkpoint); :meth:`ShardSet.open` drops anything beyond the
checkpoint, so a rerun continues with shard ``checkpoint["shards"]`` and
skips the ``checkpoint["documents"]`` documents already done.

Example::

    >>> s = ShardSet.create(Path("/tmp/.x.partial"), dim=4, fingerprint={"k": 1})  # doctest: +SKIP
    >>> s.write(0, passages, vectors, documents=10)                             # doctest: +SKIP
    >>> s.count, s.documents                                                    # doctest: +SKIP
    (3, 10)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.errors import OpenbookError
from pipeline.fileio import write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
SHARDS_DIR = "shards"
PASSAGE_COLUMNS = ("passage_id", "doc_id", "doc_title", "text")
CHECKPOINT_VERSION = 1


def _fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def passage_table(passages: Sequence):
    """A pyarrow table of passages (objects with ``passage_id, doc_id, title, text``)."""
    import pyarrow as pa

    return pa.table({
        "passage_id": [p.passage_id for p in passages],
        "doc_id": [p.doc_id for p in passages],
        "doc_title": [p.title for p in passages],
        "text": [p.text for p in passages],
    }, schema=pa.schema([(c, pa.string()) for c in PASSAGE_COLUMNS]))


def write_shard_files(folder: Path, shard: int, table, vectors: np.ndarray) -> None:
    """Write one shard's ``NNNNNN.parquet`` and ``NNNNNN.f32`` (temp, fsync, rename).

    Used by the single-process build and by Ray workers alike.
    """
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{shard:06d}"
    tmp = folder / f".{stem}.f32.tmp"
    with open(tmp, "wb") as f:
        f.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    _fsync_rename(tmp, folder / f"{stem}.f32")
    tmp = folder / f".{stem}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd", row_group_size=2048)
    _fsync_rename(tmp, folder / f"{stem}.parquet")


class ShardSet:
    """The shards written so far and the checkpoint that vouches for them."""

    def __init__(self, partial: Path, dim: int, fingerprint: dict, shards: int = 0,
                 documents: int = 0, count: int = 0):
        self.partial = Path(partial)
        self.folder = self.partial / SHARDS_DIR
        self.dim = dim
        self.fingerprint = fingerprint
        self.shards = shards        # shards done (checkpointed)
        self.documents = documents  # documents of the corpus fully consumed by those shards
        self.count = count          # passages in those shards

    # -- create / resume ------------------------------------------------------------------
    @classmethod
    def create(cls, partial: Path, *, dim: int, fingerprint: dict) -> "ShardSet":
        s = cls(partial, dim, fingerprint)
        s.folder.mkdir(parents=True, exist_ok=True)
        s._checkpoint()
        return s

    @staticmethod
    def read_checkpoint(partial: Path) -> dict | None:
        """The checkpoint of a partial build, or ``None`` if there is none (or it is unreadable)."""
        try:
            ck = json.loads((Path(partial) / CHECKPOINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return ck if ck.get("version") == CHECKPOINT_VERSION else None

    @classmethod
    def resume(cls, partial: Path, ck: dict) -> "ShardSet":
        """Reopen a killed build's shards at its last checkpoint; drop anything after it."""
        s = cls(partial, ck["dim"], ck["fingerprint"], ck["shards"], ck["documents"],
                ck["passages"])
        s.folder.mkdir(parents=True, exist_ok=True)
        for p in s.folder.iterdir():  # temp files and shards written after the checkpoint
            stem = p.name.split(".")[0]
            if p.name.startswith(".") or not stem.isdigit() or int(stem) >= s.shards:
                p.unlink()
        have = sum(s.rows(i) for i in range(s.shards))
        if have != s.count:
            raise OpenbookError(
                f"{partial}: the checkpoint says {s.count} passages but its shards hold {have} "
                "(files were removed or damaged); pass --overwrite to start the build over")
        return s

    def _checkpoint(self) -> None:
        write_json_atomic(self.partial / CHECKPOINT_FILE, {
            "version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint, "dim": self.dim,
            "shards": self.shards, "documents": self.documents, "passages": self.count})

    # -- write ----------------------------------------------------------------------------
    def write(self, passages: Sequence, vectors: np.ndarray, *, documents: int | None = None
              ) -> None:
        """Add the next shard and checkpoint it. ``documents``: corpus documents consumed so far."""
        if len(passages) != len(vectors) or (len(vectors) and vectors.shape[1] != self.dim):
            raise ValueError(f"{len(passages)} passages vs vectors of shape {vectors.shape}")
        write_shard_files(self.folder, self.shards, passage_table(passages), vectors)
        self.record(len(passages), documents)

    def record(self, n: int, documents: int | None) -> None:
        """Checkpoint one more shard (of ``n`` passages) whose files are already in place."""
        self.shards += 1
        self.count += n
        self.documents = documents if documents is not None else self.documents
        self._checkpoint()

    # -- read -----------------------------------------------------------------------------
    def vector_path(self, i: int) -> Path:
        return self.folder / f"{i:06d}.f32"

    def passage_path(self, i: int) -> Path:
        return self.folder / f"{i:06d}.parquet"

    def rows(self, i: int) -> int:
        p = self.vector_path(i)
        return p.stat().st_size // (4 * self.dim) if p.exists() else -1

    def vectors(self, i: int) -> np.ndarray:
        """Shard ``i``'s vectors, memory-mapped ``(rows, dim)``."""
        n = self.rows(i)
        if n <= 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.vector_path(i), dtype=np.float32, mode="r", shape=(n, self.dim))

    def iter_vectors(self, chunk: int = 65536) -> Iterator[np.ndarray]:
        """All vectors in order, in blocks of at most ``chunk`` rows (memory: one block)."""
        for i in range(self.shards):
            v = self.vectors(i)
            for s in range(0, len(v), chunk):
                yield np.ascontiguousarray(v[s:s + chunk])
            del v

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` rows drawn uniformly without replacement from all shards, ``(n, dim)``."""
        n = min(n, self.count)
        rows = np.sort(np.random.default_rng(seed).choice(self.count, size=n, replace=False))
        out = np.empty((n, self.dim), dtype=np.float32)
        start, k = 0, 0
        for i in range(self.shards):
            m = self.rows(i)
            hi = np.searchsorted(rows, start + m)
            if hi > k:
                v = self.vectors(i)
                out[k:hi] = v[rows[k:hi] - start]
                del v
            k, start = hi, start + m
        return out

    def write_passages(self, dest: Path) -> None:
        """Concatenate the shards' passages into one parquet (row group by row group)."""
        import pyarrow.parquet as pq

        writer = None
        try:
            for i in range(self.shards):
                pf = pq.ParquetFile(self.passage_path(i))
                for g in range(pf.metadata.num_row_groups):
                    table = pf.read_row_group(g)
                    if writer is None:
                        writer = pq.ParquetWriter(dest, table.schema, compression="zstd")
                    writer.write_table(table, row_group_size=2048)
            if writer is None:
                import pyarrow as pa

                writer = pq.ParquetWriter(dest, pa.schema([(c, pa.string())
                                                           for c in PASSAGE_COLUMNS]))
        finally:
            if writer is not None:
                writer.close()

    def write_vectors(self, dest: Path, block: int = 1 << 24) -> None:
        """Concatenate the shards' raw vectors into one ``float32`` file."""
        with open(dest, "wb") as out:
            for i in range(self.shards):
                with open(self.vector_path(i), "rb") as f:
                    while b := f.read(block):
                        out.write(b)
            out.flush()
            os.fsync(out.fileno())
