"""corpus -> chunks -> vectors -> index directory (+ BM25), streamed in shards.

The library behind ``python -m pipeline.build_index``. Documents are read
one at a time, chunked in small batches and embedded a shard of passages at
a time; passages and vectors go to disk as they are made, so memory holds one
shard, not the corpus. Then, unless ``bm25=False``, :func:`pipeline.bm25.add_bm25`
builds the BM25 index from the written passages.

Example::

    >>> from pipeline.build import BuildConfig, build_index
    >>> meta = build_index(BuildConfig(format="demo", out="index/demo"))   # doctest: +SKIP
    >>> meta["counts"]["passages"]                                          # doctest: +SKIP
    10321
"""

from __future__ import annotations

import errno
import itertools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .chunking import ChunkConfig, Chunker
from .corpus import CorpusStats, iter_documents
from .embedding import DEFAULT_EMBEDDER, Embedder
from .errors import OpenbookError
from .faiss_index import choose_index
from .store import META_FILE, BuildLock, IndexWriter, check_output_dir, write_json_atomic

log = logging.getLogger(__name__)

#: OSErrors that mean "this output location cannot take the index": the user frees space
#: or chooses another --out.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM,
                          errno.EROFS, errno.ENOTDIR, errno.EEXIST})


def output_error(out: str | Path, e: OSError, *, where: str | Path | None = None,
                 old_kept: bool = False) -> OpenbookError:
    """An :class:`OpenbookError` for a failed write under ``--out``, saying what to do."""
    place = e.filename or where or out
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        problem = f"cannot write {place} ({e.strerror})"
        fix = "free some disk space (or raise the file-size limit) or choose another --out"
    elif e.errno in (errno.EEXIST, errno.ENOTDIR):
        problem = f"cannot create the folder {place} ({e.strerror}: a file is in the way)"
        fix = "choose another --out"
    else:
        problem = f"cannot write {place} ({e.strerror or e})"
        fix = "choose another --out, one you can write to"
    state = "; nothing was published" + (
        f" and the previous index at {out} is untouched" if old_kept else "")
    return OpenbookError(f"--out {out}: {problem}; {fix}{state}")


@dataclass
class BuildConfig:
    """Everything that decides what an index holds. Saved in its ``meta.json``."""

    out: str = "index/demo"
    corpus: str | None = None
    format: str | None = None
    title_column: str = "title"
    text_column: str = "text"
    id_column: str | None = None
    limit: int | None = None
    embedder: str = DEFAULT_EMBEDDER
    device: str | None = None
    batch_size: int | None = None
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    index_type: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    shard_size: int = 4096
    overwrite: bool = False
    keep_vectors: bool = False
    bm25: bool = True  # also build DIR/bm25/ (pipeline.bm25) after the FAISS index
    progress: bool = True


def build_index(cfg: BuildConfig) -> dict:
    """Build the index described by ``cfg``; return its ``meta.json`` contents."""
    if cfg.format != "demo" and cfg.corpus is None:
        raise OpenbookError("--corpus is required unless --format demo")
    if cfg.corpus is not None and cfg.format != "demo" and not Path(cfg.corpus).exists():
        raise OpenbookError(f"--corpus {cfg.corpus}: no such file")
    check_output_dir(Path(cfg.out), cfg.overwrite)  # fail before loading any model
    t0 = time.perf_counter()
    stats = CorpusStats()
    docs = iter_documents(cfg.corpus, cfg.format, title_column=cfg.title_column,
                          text_column=cfg.text_column, id_column=cfg.id_column,
                          limit=cfg.limit, stats=stats)
    first = next(docs, None)  # bad columns / unreadable file: fail before loading the model
    if first is None:
        raise OpenbookError(
            f"--corpus {cfg.corpus if cfg.format != 'demo' else 'demo'}: no passages to index: "
            f"no document has any text ({stats.summary()}); check --format, --text-column and "
            "--limit (a dump whose pages are empty, redirects or only templates gives nothing)")
    docs = itertools.chain([first], docs)
    out = Path(cfg.out)
    lock = BuildLock(out)  # held from here to the end: one build per --out, before any model
    try:
        lock.acquire()
    except OSError as e:
        raise output_error(cfg.out, e, where=lock.path) from e
    try:
        return _build(cfg, docs, stats, lock, t0)
    finally:
        lock.release()


def _build(cfg: BuildConfig, docs, stats: CorpusStats, lock: BuildLock, t0: float) -> dict:
    old_kept = (Path(cfg.out) / META_FILE).exists()  # an index the build may replace
    embedder = Embedder(cfg.embedder, device=cfg.device, batch_size=cfg.batch_size)
    if cfg.chunk.max_tokens > embedder.max_seq_length:
        raise OpenbookError(
            f"--chunk-size {cfg.chunk.max_tokens} is more than the embedder reads "
            f"({embedder.max_seq_length} tokens for {embedder.name}); the tail of every passage "
            f"would be ignored. Use --chunk-size {embedder.max_seq_length} or less")
    chunker = Chunker(embedder.tokenizer, cfg.chunk)
    partial = Path(cfg.out).with_name(f".{Path(cfg.out).name}.partial")
    try:
        writer = IndexWriter(cfg.out, dim=embedder.dim, overwrite=cfg.overwrite, lock=lock)
    except OSError as e:
        raise output_error(cfg.out, e, where=partial, old_kept=old_kept) from e
    embed_seconds = 0.0
    n_docs = 0
    try:
        bar = tqdm(desc="build", unit="doc", disable=not cfg.progress, dynamic_ncols=True)
        doc_batch, shard = [], []

        def embed_shard() -> None:
            nonlocal embed_seconds, shard
            if not shard:
                return
            t = time.perf_counter()
            vecs = embedder.encode([p.full_text for p in shard])
            embed_seconds += time.perf_counter() - t
            writer.add(shard, vecs)
            bar.set_postfix(passages=writer.count,
                            per_s=f"{writer.count / max(embed_seconds, 1e-9):.0f}")
            shard = []

        for doc in docs:
            doc_batch.append(doc)
            n_docs += 1
            if len(doc_batch) >= 256:
                shard.extend(chunker.chunk_many(doc_batch))
                bar.update(len(doc_batch))
                doc_batch = []
                if len(shard) >= cfg.shard_size:
                    embed_shard()
        shard.extend(chunker.chunk_many(doc_batch))
        bar.update(len(doc_batch))
        embed_shard()
        bar.close()
        spec = choose_index(writer.count, embedder.dim, cfg.index_type, nlist=cfg.nlist,
                            nprobe=cfg.nprobe)
        seconds = time.perf_counter() - t0
        config = asdict(cfg)
        config.pop("progress")
        meta = {
            "name": Path(cfg.out).name,
            "embedder": embedder.describe(),
            "chunking": cfg.chunk.to_dict() | {"tokenizer": embedder.name},
            "corpus": {"path": cfg.corpus, "format": cfg.format or "auto",
                       "title_column": cfg.title_column, "text_column": cfg.text_column},
            "counts": {"documents": n_docs, **asdict(stats)},
            "build": {"config": config, "device": embedder.device,
                      "embed_seconds": round(embed_seconds, 2)},
        }
        meta = writer.finish(meta, spec, keep_vectors=cfg.keep_vectors)
    except BaseException as e:
        writer.abort()
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            raise output_error(cfg.out, e, where=partial, old_kept=old_kept) from e
        raise
    total = time.perf_counter() - t0
    meta["build"]["seconds"] = round(total, 2)
    meta["build"]["passages_per_second"] = round(meta["counts"]["passages"] / max(total, 1e-9), 1)
    try:
        write_json_atomic(Path(cfg.out) / META_FILE, meta)  # meta.json is not checksummed
    except OSError as e:  # the index is published and whole; only the timings are lost
        log.warning("could not record the build timings in %s (%s)", cfg.out, e.strerror)
    if cfg.bm25:  # a separate stage: it reads the published passages.parquet
        from .bm25 import add_bm25

        try:
            meta["bm25"] = add_bm25(cfg.out, progress=cfg.progress)
        except BaseException as e:
            log.error("the dense index %s is complete, but its BM25 failed; add it later with "
                      "`python -m pipeline.bm25 --index %s`", cfg.out, cfg.out)
            if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
                raise OpenbookError(
                    f"--out {cfg.out}: the dense index is complete, but writing its BM25 failed "
                    f"({e.strerror}); free some disk space, then add it with "
                    f"`python -m pipeline.bm25 --index {cfg.out}`") from e
            raise
    n = meta["counts"]["passages"]
    log.info("built %s: %d documents -> %d passages in %.1f s (%.1f passages/s embedding, "
             "%.1f passages/s overall), index %s", cfg.out, n_docs, n, total,
             n / max(embed_seconds, 1e-9), n / max(total, 1e-9), spec.factory)
    return meta
