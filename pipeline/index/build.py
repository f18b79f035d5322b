"""corpus -> chunks -> vectors -> index directory (+ BM25), streamed in checkpointed shards.

The library behind ``python -m pipeline.build_index``. Documents are read
one at a time, chunked in small batches and embedded a shard of passages at
a time; each shard's passages and vectors go to disk (temp, then rename) and
are checkpointed (:mod:`pipeline.index.shards`), so memory holds one shard, not the
corpus, and a killed build, run again with the same settings, resumes after
its last finished shard. The FAISS index is then built from the shards block
by block (a flat index is streamed straight to disk), the choice sized by
``max_index_memory`` when given (:mod:`pipeline.index.sizing`). With
``engine="ray"`` the chunk+embed stage runs on a Ray cluster
(:mod:`pipeline.index.ray_engine`). Then, unless ``bm25=False``,
:func:`pipeline.index.bm25.add_bm25` builds the BM25 index from the written passages, and
with ``sentence_vectors`` :func:`pipeline.index.sentences.add_sentence_vectors` embeds their
sentences for answer-time lookups.

Example::

    >>> from pipeline.index.build import BuildConfig, build_index
    >>> meta = build_index(BuildConfig(format="demo", out="index/demo"))   # doctest: +SKIP
    >>> meta["counts"]["passages"]                                          # doctest: +SKIP
    10321
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from pipeline.index.bm25 import DEFAULT_MEMORY as BM25_MEMORY, add_bm25, parse_memory
from pipeline.index.sentences import add_sentence_vectors
from pipeline.index.chunking import ChunkConfig, Chunker
from pipeline.corpus.documents import CorpusStats
from pipeline.corpus.files import corpus_files, is_sharded, sharded_identity
from pipeline.corpus.multifile import LEDGER_FILE
from pipeline.corpus.stream import iter_documents, skip_documents
from pipeline.index.embedding import DEFAULT_EMBEDDER, Embedder
from pipeline.errors import OpenbookError
from pipeline.index.faiss_index import check_refine, choose_index, with_refine
from pipeline.index.sizing import choose_by_budget, estimate, human, parse_size
from pipeline.index.shards import ShardSet
from pipeline.index.lock import BuildLock
from pipeline.index.store import META_FILE
from pipeline.index.writer import IndexWriter, check_output_dir
from pipeline.fileio import write_json_atomic

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
    backend: str = "torch"  # embedding runtime: torch | onnx | openvino (pipeline.index.embedding)
    quantize: str | None = None  # None/"none" or "int8" (onnx/openvino)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    index_type: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    max_index_memory: str | None = None  # e.g. "4G": pick the index that fits (autofaiss rules)
    refine: int | None = None  # IVF-PQ + exact re-scoring of k * refine candidates (mmap vectors)
    shard_size: int = 4096  # passages per checkpointed shard
    engine: str = "local"  # or "ray"
    ray_address: str | None = None
    overwrite: bool = False
    keep_vectors: bool = False
    bm25: bool = True  # also build DIR/bm25/ (pipeline.index.bm25) after the FAISS index
    bm25_memory: str = BM25_MEMORY  # the BM25 build's working memory beyond its vocabulary
    sentence_vectors: str | None = None  # "float32"/"float16": also DIR/sentences/ (index.sentences)
    progress: bool = True

    @property
    def doc_batch(self) -> int:
        """Documents chunked together; shards end on a batch boundary (so they can resume)."""
        return max(1, min(256, self.shard_size // 4))


def fingerprint(cfg: BuildConfig, embedder) -> dict:
    """What decides the passages and vectors of a build: a resumed build must match it."""
    corpus = {"format": cfg.format, "path": None}
    if cfg.format != "demo" and cfg.corpus is not None and is_sharded(cfg.corpus):
        corpus = sharded_identity(cfg.corpus, cfg.format)  # every file's size and mtime
    elif cfg.format != "demo" and cfg.corpus is not None:
        st = Path(cfg.corpus).stat()
        corpus = {"format": cfg.format, "path": str(Path(cfg.corpus).resolve()),
                  "bytes": st.st_size, "mtime": int(st.st_mtime)}
    return {"corpus": corpus, "columns": [cfg.title_column, cfg.text_column, cfg.id_column],
            "limit": cfg.limit, "embedder": embedder.name, "dim": embedder.dim,
            "normalize": embedder.normalize, "chunking": cfg.chunk.to_dict(),
            "backend": [cfg.backend, cfg.quantize],
            "shard_size": cfg.shard_size}


def estimate_passages(cfg: BuildConfig) -> int:
    """A rough passage count from the corpus files' sizes (for the up-front estimate only)."""
    from pipeline.corpus.demo import demo_corpus_path

    if cfg.format == "demo":
        paths = [demo_corpus_path()]
    elif is_sharded(cfg.corpus):
        paths = [f.path for f in corpus_files(cfg.corpus, cfg.format)]
    else:
        paths = [Path(cfg.corpus)]
    text = 0.0
    for path in paths:
        name = path.name.lower()
        text += path.stat().st_size * (2.5 if name.endswith(".bz2") else 3.0 if name.endswith(".gz")
                                       else 2.0 if name.endswith(".parquet") else 0.8)
    chars = 4 * max(16, cfg.chunk.max_tokens - cfg.chunk.overlap_tokens)
    n = max(1, int(text / chars))
    return n if cfg.limit is None else min(n, max(1, 5 * cfg.limit))


def pick_index(cfg: BuildConfig, n: int, dim: int):
    """The index spec for ``n`` passages: by budget when ``max_index_memory`` is set; with
    ``refine``, the exact re-scoring stage of :func:`~pipeline.index.faiss_index.with_refine`."""
    if cfg.max_index_memory:
        spec = choose_by_budget(n, dim, parse_size(cfg.max_index_memory),
                                index_type=cfg.index_type, nlist=cfg.nlist, nprobe=cfg.nprobe)
    else:
        spec = choose_index(n, dim, cfg.index_type, nlist=cfg.nlist, nprobe=cfg.nprobe)
    return with_refine(spec, cfg.refine)


def build_index(cfg: BuildConfig) -> dict:
    """Build the index described by ``cfg``; return its ``meta.json`` contents."""
    if cfg.format != "demo" and cfg.corpus is None:
        raise OpenbookError("--corpus is required unless --format demo")
    if cfg.shard_size < 1:
        raise OpenbookError(f"--shard-size must be 1 or more, got {cfg.shard_size}")
    if cfg.refine is not None:  # before any embedding (auto -> flat is refused after it)
        check_refine(cfg.refine, cfg.index_type)
    if cfg.engine not in ("local", "ray"):
        raise OpenbookError(f"--engine must be local or ray, got {cfg.engine!r}")
    if cfg.max_index_memory:
        parse_size(cfg.max_index_memory)  # a bad size fails before any work
    if cfg.bm25:
        parse_memory(cfg.bm25_memory, "--bm25-memory")
    check_output_dir(Path(cfg.out), cfg.overwrite)  # fail before loading any model
    t0 = time.perf_counter()
    stats = CorpusStats()
    docs = iter_documents(cfg.corpus, cfg.format, title_column=cfg.title_column,
                          text_column=cfg.text_column, id_column=cfg.id_column,
                          limit=cfg.limit, stats=stats)
    first = docs.peek()  # bad columns / unreadable file: fail before loading the model
    if first is None:
        raise OpenbookError(
            f"--corpus {cfg.corpus if cfg.format != 'demo' else 'demo'}: no passages to index: "
            f"no document has any text ({stats.summary()}); check --format, --text-column and "
            "--limit (a dump whose pages are empty, redirects or only templates gives nothing)")
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


def _check_budget(cfg: BuildConfig, dim: int, partial: Path) -> None:
    """Log the up-front estimate; refuse a budget that cannot hold even the smallest index."""
    n = estimate_passages(cfg)
    ck = ShardSet.read_checkpoint(partial)
    if ck is not None:
        n = max(n, int(ck.get("passages", 0)))
    try:
        spec = pick_index(cfg, n, dim)  # with a budget: OpenbookError when nothing fits
    except OpenbookError as e:
        if cfg.max_index_memory:
            raise OpenbookError(f"{e} (checked before any embedding, for the ~{n:,} passages "
                                "estimated from the corpus size)") from e
        return  # e.g. --index-type ivfpq on what looks small: decided on the real count later
    e = estimate(spec, n, dim, keep_vectors=cfg.keep_vectors)
    log.info("estimate (rough, from the corpus size): ~%s passages -> %s; index %s in memory, "
             "peak ~%s while training/adding; disk ~%s while building, ~%s at the end",
             f"{n:,}", spec.factory, human(e["index_bytes"]), human(e["peak_memory_bytes"]),
             human(e["disk_bytes_during_build"]), human(e["disk_bytes_final"]))


def _build(cfg: BuildConfig, docs, stats: CorpusStats, lock: BuildLock, t0: float) -> dict:
    old_kept = (Path(cfg.out) / META_FILE).exists()  # an index the build may replace
    embedder = Embedder(cfg.embedder, device=cfg.device, batch_size=cfg.batch_size,
                        backend=cfg.backend, quantize=cfg.quantize)
    if cfg.chunk.max_tokens > embedder.max_seq_length:
        raise OpenbookError(
            f"--chunk-size {cfg.chunk.max_tokens} is more than the embedder reads "
            f"({embedder.max_seq_length} tokens for {embedder.name}); the tail of every passage "
            f"would be ignored. Use --chunk-size {embedder.max_seq_length} or less")
    partial = Path(cfg.out).with_name(f".{Path(cfg.out).name}.partial")
    _check_budget(cfg, embedder.dim, partial)
    try:
        writer = IndexWriter(cfg.out, dim=embedder.dim, overwrite=cfg.overwrite, lock=lock,
                             fingerprint=fingerprint(cfg, embedder))
    except OSError as e:
        raise output_error(cfg.out, e, where=partial, old_kept=old_kept) from e
    try:
        docs.ledger.attach(writer.partial / LEDGER_FILE)  # finished corpus files: skipped on resume
        if cfg.engine == "ray":
            from pipeline.index.ray_engine import embed_shards_ray

            n_docs, embed_seconds = embed_shards_ray(cfg, docs, embedder, writer)
        else:
            n_docs, embed_seconds = _embed_shards(cfg, docs, embedder, writer)
        try:
            spec = pick_index(cfg, writer.count, embedder.dim)
        except OpenbookError as e:
            raise KeptShardsError(
                f"{e}; the {writer.count:,} embedded passages are kept in {partial}: rerun with "
                "the new setting to build the index without embedding again") from e
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
            "build": {"config": config, "device": embedder.device, "engine": cfg.engine,
                      "embed_seconds": round(embed_seconds, 2), "resumed": writer.resumed,
                      "seconds_before_index": round(seconds, 2)},
        }
        if cfg.max_index_memory:
            meta["build"]["max_index_memory_bytes"] = parse_size(cfg.max_index_memory)
        add_ivf = None
        if cfg.engine == "ray":
            import functools

            from pipeline.index.ray_engine import add_ivf_ray

            add_ivf = functools.partial(add_ivf_ray, address=cfg.ray_address)
        docs.ledger.remove()  # not part of the published index
        meta = writer.finish(meta, spec, keep_vectors=cfg.keep_vectors, progress=cfg.progress,
                             add_ivf=add_ivf)
    except (KeyboardInterrupt, KeptShardsError) as e:
        writer.abort(remove=False)  # the finished shards stay: the same command resumes them
        if writer.count:
            log.warning("%d finished shards (%d passages) are kept in %s; run the same command "
                        "again to resume", writer.shards.shards, writer.count, partial)
        if isinstance(e, KeptShardsError):
            raise OpenbookError(str(e)) from e
        raise
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
        try:
            meta["bm25"] = add_bm25(cfg.out, progress=cfg.progress,
                                    memory_mb=parse_memory(cfg.bm25_memory, "--bm25-memory"))
        except BaseException as e:
            log.error("the dense index %s is complete, but its BM25 failed; add it later with "
                      "`python -m pipeline.bm25 --index %s`", cfg.out, cfg.out)
            if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
                raise OpenbookError(
                    f"--out {cfg.out}: the dense index is complete, but writing its BM25 failed "
                    f"({e.strerror}); free some disk space, then add it with "
                    f"`python -m pipeline.bm25 --index {cfg.out}`") from e
            raise
    if cfg.sentence_vectors:  # also a separate stage over the published passages
        try:
            meta["sentences"] = add_sentence_vectors(
                cfg.out, dtype=cfg.sentence_vectors, backend=cfg.backend, device=cfg.device,
                batch_size=cfg.batch_size, progress=cfg.progress)
        except BaseException:
            log.error("the index %s is complete, but its sentence vectors failed; add them later "
                      "with `python -m pipeline.sentence_vectors --index %s`", cfg.out, cfg.out)
            raise
    n = meta["counts"]["passages"]
    log.info("built %s: %d documents -> %d passages in %.1f s (%.1f passages/s embedding, "
             "%.1f passages/s overall), index %s", cfg.out, n_docs, n, total,
             n / max(embed_seconds, 1e-9), n / max(total, 1e-9), spec.factory)
    return meta


class KeptShardsError(OpenbookError):
    """The build stopped after embedding; its shards are kept for a rerun."""


def _embed_shards(cfg: BuildConfig, docs, embedder, writer: IndexWriter) -> tuple[int, float]:
    """Read -> chunk -> embed -> write shards, one shard in memory. Returns (documents, seconds)."""
    chunker = Chunker(embedder.tokenizer, cfg.chunk)
    n_docs = writer.documents
    docs = skip_documents(docs, n_docs, progress=cfg.progress)
    embed_seconds = 0.0
    on = dict(disable=not cfg.progress, dynamic_ncols=True)
    read_bar = tqdm(desc="read", unit="doc", position=0, **on)
    embed_bar = tqdm(desc="embed", unit="passage", position=1, initial=writer.count, **on)
    doc_batch, shard = [], []

    def embed_shard() -> None:
        nonlocal embed_seconds, shard
        if not shard:
            return
        t = time.perf_counter()
        vecs = embedder.encode([p.full_text for p in shard])
        embed_seconds += time.perf_counter() - t
        writer.add(shard, vecs, documents=n_docs)
        embed_bar.update(len(shard))
        shard = []

    for doc in docs:
        doc_batch.append(doc)
        n_docs += 1
        if len(doc_batch) >= cfg.doc_batch:
            shard.extend(chunker.chunk_many(doc_batch))
            read_bar.update(len(doc_batch))
            doc_batch = []
            if len(shard) >= cfg.shard_size:
                embed_shard()
    shard.extend(chunker.chunk_many(doc_batch))
    read_bar.update(len(doc_batch))
    embed_shard()
    read_bar.close()
    embed_bar.close()
    return n_docs, embed_seconds
