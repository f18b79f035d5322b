"""The index directory: write it safely, load it, check it.

An index is a directory::

    index/NAME/
      meta.json          how it was built: embedder, dim, metric, normalised,
                         chunking, index type + params, counts, versions,
                         complete, file sizes + sha256
      faiss.index        vector i  <->  passage row i
      passages.parquet   passage_id, doc_id, doc_title, text

It is written into ``.NAME.partial/`` beside the target and renamed into
place only when complete, so a crash never leaves a half index under the
real name, and an existing index is replaced only after the new one is whole.

Example::

    >>> store = load_index("index/demo")                    # doctest: +SKIP
    >>> scores, ids = store.search(query_vectors, k=5)      # doctest: +SKIP
    >>> store.passages(ids[0])[0]["text"]                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import fileio
from pipeline.fileio import sha256_file, write_json_atomic
from pipeline.index import faiss_index
from pipeline.errors import IndexMismatchError, OpenbookError
from pipeline.index.shards import CHECKPOINT_FILE, ShardSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "faiss.index"
PASSAGES_FILE = "passages.parquet"
VECTORS_FILE = "vectors.f32"
ROW_GROUP = 2048
PASSAGE_COLUMNS = ("passage_id", "doc_id", "doc_title", "text")


def library_versions() -> dict:
    import platform

    out = {"python": platform.python_version()}
    for mod in ("faiss", "numpy", "pyarrow", "torch", "transformers", "sentence_transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            out[mod] = None
    from pipeline import __version__

    out["openbook"] = __version__
    return out


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing, non-empty directory unless ``overwrite``."""
    what = "a complete index" if (out / META_FILE).exists() else "files"
    fileio.check_output_dir(
        out, overwrite,
        is_file=f"--out {out} exists and is not a directory; choose another --out",
        not_empty=f"--out {out} already holds {what}; pass --overwrite to replace it "
                  "(the old index stays until the new one is complete), or choose another --out")


class BuildLock:
    """``.NAME.lock`` beside an index: one build per output directory at a time.

    The file holds the builder's pid. A lock whose process is gone (a crash,
    SIGKILL) is stale and taken over, so no manual clean-up is ever needed.
    """

    def __init__(self, out: Path):
        self.path = out.with_name(f".{out.name}.lock")
        self.held = False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and self._alive(pid):
                    raise OpenbookError(
                        f"--out {self.path.parent / self.path.name[1:-5]} is being built by "
                        f"another process (pid {pid}); wait for it to finish or stop it, or "
                        "choose another --out") from None
                if pid and pid != os.getpid():
                    log.warning("taking over the stale build lock %s (its builder, pid %d, is "
                                "gone)", self.path, pid)
                self.path.unlink(missing_ok=True)  # stale: its builder is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise OpenbookError(f"cannot take the build lock {self.path}; remove it if no build runs")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class IndexWriter:
    """Streams checkpointed shards into ``.NAME.partial/``, then builds the index and publishes.

    Each :meth:`add` writes one shard (passages parquet + raw float32 vectors,
    see :mod:`pipeline.index.shards`) and checkpoints it, so memory holds one shard
    and a killed build resumes after its last shard. :meth:`finish` builds the
    FAISS index from the shards (streamed block by block), concatenates the
    passages, and renames the directory into place.

    ``fingerprint``: what decides the passages (corpus, embedder, chunking,
    shard size). With one, a ``.partial`` left by a killed build with the same
    fingerprint is resumed (:attr:`resumed` is then true and :attr:`documents`
    says how many corpus documents its shards hold); one with another
    fingerprint is refused unless ``overwrite``. Without one, any leftover
    ``.partial`` is discarded.
    """

    def __init__(self, out: str | Path, *, dim: int, overwrite: bool = False,
                 lock: BuildLock | None = None, fingerprint: dict | None = None):
        """``lock``: the build lock of ``out``, already held by the caller (who releases
        it); by default the writer takes it and releases it when published or aborted."""
        self.out = Path(out)
        self._own_lock = lock is None
        self.lock = BuildLock(self.out) if lock is None else lock
        if self._own_lock:
            self.lock.acquire()
        self.partial = self.out.with_name(f".{self.out.name}.partial")
        self.dim = dim
        self.resumed = False
        try:
            check_output_dir(self.out, overwrite)
            ck = ShardSet.read_checkpoint(self.partial) if fingerprint is not None else None
            if ck is not None and ck["fingerprint"] == fingerprint and ck["dim"] == dim:
                self.shards = ShardSet.resume(self.partial, ck)
                self.resumed = True
                log.info("resuming the unfinished build in %s: %d shards, %d passages, %d "
                         "documents already done", self.partial, self.shards.shards,
                         self.shards.count, self.shards.documents)
            else:
                if ck is not None and ck.get("shards") and not overwrite:
                    raise OpenbookError(
                        f"--out {self.out}: {self.partial} holds an unfinished build made with "
                        f"other settings ({describe_difference(ck['fingerprint'], fingerprint)}); "
                        "rerun with its settings to resume it, or pass --overwrite to discard "
                        "it and start over")
                if self.partial.exists():
                    log.info("discarding the unfinished build in %s", self.partial)
                    shutil.rmtree(self.partial)
                self._fresh = True
                self.partial.mkdir(parents=True)
                write_json_atomic(self.partial / META_FILE, {"format_version": FORMAT_VERSION,
                                                             "complete": False})
                self.shards = ShardSet.create(self.partial, dim=dim, fingerprint=fingerprint)
        except BaseException:
            if getattr(self, "_fresh", False):  # a partial this writer just started
                shutil.rmtree(self.partial, ignore_errors=True)
            if self._own_lock:
                self.lock.release()
            raise

    @property
    def count(self) -> int:
        return self.shards.count

    @property
    def documents(self) -> int:
        return self.shards.documents

    def add(self, passages: Sequence, vectors: np.ndarray, *, documents: int | None = None
            ) -> None:
        """Write passages (with ``passage_id, doc_id, title, text``) and their vectors as the
        next shard, then checkpoint it; ``documents``: corpus documents consumed so far."""
        self.shards.write(passages, vectors, documents=documents)

    def finish(self, meta: dict, spec: faiss_index.IndexSpec, *, keep_vectors: bool = False,
               add_batch: int = 65536, progress: bool = False, add_ivf=None) -> dict:
        """Build the FAISS index, write ``meta.json`` (complete) and move into place.

        ``add_ivf(trained_index, shards) -> index``: how an IVF index gets the shards'
        vectors (default: added here block by block; the Ray engine merges per-shard parts).
        """
        import faiss
        from tqdm.auto import tqdm

        s = self.shards
        if s.count == 0:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise OpenbookError("the corpus produced no passages (every document was empty or "
                                "skipped); check --format and --text-column")
        bar = tqdm(total=s.count, desc="add", unit="passage", disable=not progress,
                   dynamic_ncols=True)
        with open(self.partial / INDEX_FILE, "wb") as f:
            if spec.type == "flat":  # streamed straight to disk: never the whole index in RAM
                def blocks():
                    for b in s.iter_vectors(add_batch):
                        yield b
                        bar.update(len(b))

                faiss_index.write_flat_streaming(f, self.dim, s.count, blocks())
            else:
                sample = s.sample(spec.train_size or s.count)
                if add_ivf is None:
                    index = faiss_index.build_from_blocks(spec, self.dim, sample,
                                                          s.iter_vectors(add_batch), bar.update)
                else:
                    index = faiss_index.build_from_blocks(spec, self.dim, sample, [])
                    index = add_ivf(index, s)
                    faiss_index.set_nprobe(index, spec.nprobe)
                    bar.update(index.ntotal)
                del sample
                # Through a Python file: faiss.write_index(index, path) only prints a failed
                # write/close (disk full) and would leave a truncated faiss.index behind.
                faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))
                del index
            f.flush()
            os.fsync(f.fileno())
        bar.close()
        s.write_passages(self.partial / PASSAGES_FILE)
        if keep_vectors:
            s.write_vectors(self.partial / VECTORS_FILE)
        files = {}
        for name in (INDEX_FILE, PASSAGES_FILE) + ((VECTORS_FILE,) if keep_vectors else ()):
            p = self.partial / name
            files[name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        meta = dict(meta)
        meta.update({
            "format_version": FORMAT_VERSION,
            "complete": True,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "index": spec.to_dict() | {"bytes_per_vector": spec.bytes_per_vector(self.dim)},
            "metric": "inner_product",
            "files": files,
            "versions": library_versions(),
        })
        meta.setdefault("counts", {})["passages"] = s.count
        meta["counts"]["shards"] = s.shards
        write_json_atomic(self.partial / META_FILE, meta)
        shutil.rmtree(s.folder)
        (self.partial / CHECKPOINT_FILE).unlink(missing_ok=True)
        self._publish()
        return meta

    def _publish(self) -> None:
        fileio.publish_dir(self.partial, self.out)
        if self._own_lock:
            self.lock.release()

    def abort(self, *, remove: bool = True) -> None:
        """Give up: remove the partial directory (``remove=False``: keep its finished shards,
        so the same command resumes them; a build with no finished shard is removed anyway)."""
        if remove or self.shards.count == 0:
            shutil.rmtree(self.partial, ignore_errors=True)
        if self._own_lock:
            self.lock.release()


def describe_difference(old: dict, new: dict | None) -> str:
    """``"embedder: 'a' there, 'b' now; ..."`` for the keys where two fingerprints differ."""
    new = new or {}
    diffs = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(diffs[:3]) or "no fingerprint"


def read_meta(path: str | Path) -> dict:
    """``meta.json`` of an index directory, with errors that say what to do."""
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise OpenbookError(f"--index {path}: no such directory; build one with "
                            f"`python -m pipeline.build_index --out {path}`")
    if not meta_path.exists():
        raise OpenbookError(f"--index {path}: no {META_FILE}, so this is not an openbook index "
                            "(or its build never finished); rebuild it with pipeline.build_index")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OpenbookError(f"--index {path}: {META_FILE} is unreadable ({e}); rebuild the index") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"--index {path}: format version {meta.get('format_version')} but this openbook "
            f"reads version {FORMAT_VERSION}; rebuild the index with this version")
    if not meta.get("complete"):
        raise OpenbookError(f"--index {path}: the build did not finish (complete=false); "
                            "run the same pipeline.build_index command again")
    for keys in (("embedder", "name"), ("embedder", "dim"), ("embedder", "normalize"),
                 ("counts", "passages"), ("index", "factory")):
        node = meta
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is None:
            raise OpenbookError(f"--index {path}: {META_FILE} has no {'.'.join(keys)!r} (it was "
                                "edited or damaged); rebuild the index")
    return meta


@dataclass
class IndexStore:
    """A loaded index directory: FAISS index, passage table and ``meta``."""

    path: Path
    meta: dict
    index: object
    _passages: object = field(repr=False)  # pyarrow.parquet.ParquetFile

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.meta["embedder"]["dim"])

    def search(self, vectors: np.ndarray, k: int, *, nprobe: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each query vector: ``(scores, ids)``, both ``(n, k)``; id -1 = none."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IndexMismatchError(f"query vectors have shape {vectors.shape}, the index "
                                     f"{self.path} holds {self.dim}-d vectors")
        faiss_index.set_nprobe(self.index, nprobe)
        k = min(k, self.size)
        return self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)

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
    for name, rec in meta.get("files", {}).items():
        p = path / name
        if not p.exists():
            raise OpenbookError(f"--index {path}: {name} is missing; rebuild the index")
        if verify in ("size", "full") and p.stat().st_size != rec["bytes"]:
            raise OpenbookError(f"--index {path}: {name} has {p.stat().st_size} bytes, meta.json "
                                f"says {rec['bytes']}: the file is damaged; rebuild the index")
        if verify == "full" and sha256_file(p) != rec["sha256"]:
            raise OpenbookError(f"--index {path}: {name} fails its sha256 check: the file is "
                                "damaged; rebuild the index")
    damaged = ("the file is damaged or was not written completely; rebuild the index "
               "(--verify-index full checks every byte)")
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
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
    return IndexStore(path=path, meta=meta, index=index, _passages=passages)
