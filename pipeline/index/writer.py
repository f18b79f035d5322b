"""Writing an index directory: shards into ``.NAME.partial/``, then the index, then publish.

:class:`IndexWriter` is the one way an index directory comes to be: it holds
the build lock (:mod:`pipeline.index.lock`), refuses to replace an existing
index without ``--overwrite`` (:func:`check_output_dir`), streams checkpointed
shards (:mod:`pipeline.index.shards`), resumes a killed build with the same
fingerprint, builds the FAISS index from the shards, writes ``meta.json``
(complete, with file sizes and sha256) and renames the folder into place, so
a crash never leaves a half index under the real name. The layout it writes
is described in :mod:`pipeline.index.store`, which reads it.

Example::

    >>> w = IndexWriter("index/x", dim=384)                     # doctest: +SKIP
    >>> w.add(passages, vectors, documents=10)                  # doctest: +SKIP
    >>> meta = w.finish({"embedder": {...}}, spec)              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import fileio
from pipeline.errors import OpenbookError
from pipeline.fileio import sha256_file, write_json_atomic
from pipeline.index import faiss_index
from pipeline.index.lock import BuildLock
from pipeline.index.shards import CHECKPOINT_FILE, ShardSet
from pipeline.index.store import (FORMAT_VERSION, INDEX_FILE, META_FILE, PASSAGES_FILE,
                                  VECTORS_FILE)

log = logging.getLogger(__name__)


def library_versions() -> dict:
    """Versions of Python, the libraries that shape an index, and openbook (for ``meta.json``)."""
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


def is_index_dir(folder: Path) -> bool:
    """Whether ``folder`` holds an openbook index (complete or not): a ``meta.json`` that is
    a JSON object with a ``format_version``. Only such a folder is replaced by --overwrite."""
    import json

    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "format_version" in meta


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing, non-empty directory unless it is an index and
    ``overwrite``; refuse a folder of other files even with ``overwrite``."""
    fileio.check_output_dir(
        out, overwrite, ours=is_index_dir,
        is_file=f"--out {out} exists and is not a directory; choose another --out",
        not_empty=f"--out {out} already holds an index; pass --overwrite to replace it "
                  "(the old index stays until the new one is complete), or choose another --out",
        not_ours=f"--out {out} is a non-empty folder that holds no index (no openbook "
                 "meta.json); build_index never replaces other files, even with --overwrite: "
                 "choose another --out (a new or empty folder)")


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
                if spec.refine:  # the exact vectors follow the codes, streamed from the shards
                    faiss_index.write_refine_streaming(f, index, self.dim, s.count,
                                                       s.iter_vectors(add_batch), spec.refine)
                else:
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
