"""``--engine ray``: chunk + embed the corpus's shards on a Ray cluster with Ray Data.

The driver (the ``build_index`` process) reads the corpus in order and cuts it into
shards of documents; a window of shards at a time becomes a Ray Dataset whose
``map_batches`` runs :class:`ShardEmbedder` actors (one shard per call; a GPU each
when the cluster has GPUs, else one CPU). Each actor chunks and embeds its shard and
writes the shard's files itself (``shards/NNNNNN.parquet`` + ``.f32``, temp then
rename, :func:`pipeline.index.shards.write_shard_files`) into the build's ``.partial``
folder, which must therefore be on a filesystem every node sees (NFS, a shared
volume). The driver checkpoints the window's shards in corpus order, so a killed
Ray build resumes like a local one, and the passages (ids, order, text) are exactly
those of a local build. The index is then built from the shards as usual; for IVF
indexes :func:`add_ivf_ray` encodes the shards in Ray tasks (codes only, a bounded number
in flight) and appends the codes in order with faiss's own ``IndexIVF.add_sa_codes``.

Needs ``pip install '.[distributed]'`` (``ray[data]``).

Example::

    python -m pipeline.build_index --corpus enwiki.parquet --engine ray \\
        --ray-address auto --max-index-memory 4G --out /shared/index/enwiki
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipeline.corpus.stream import skip_documents
from pipeline.errors import OpenbookError

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise OpenbookError("--engine ray needs Ray Data: pip install '.[distributed]' "
                            "(or pip install 'ray[data]'), or drop --engine ray") from e
    return ray


def connect(address: str | None):
    """Join the cluster at ``address`` (``None``: $RAY_ADDRESS or a new local Ray)."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise OpenbookError(f"--ray-address {address}: cannot join the Ray cluster ({e}); "
                                "check the address (e.g. ray://head:10001 or auto) or drop "
                                "--ray-address to run on a local Ray") from e
    return ray


class ShardEmbedder:
    """A Ray Data actor: ``{"shard", "docs", "folder"}`` rows -> shard files + ``{"shard", "passages"}``."""

    def __init__(self, embedder: str, device: str | None, batch_size: int | None, chunk: dict,
                 backend: str = "torch", quantize: str | None = None):
        from pipeline.index.chunking import ChunkConfig, Chunker
        from pipeline.index.embedding import Embedder

        self.embedder = Embedder(embedder, device=device, batch_size=batch_size,
                                 backend=backend, quantize=quantize)
        self.chunker = Chunker(self.embedder.tokenizer, ChunkConfig(**chunk))

    def __call__(self, batch: dict) -> dict:
        from pipeline.corpus.documents import Document
        from pipeline.index.shards import passage_table, write_shard_files

        shards, counts, seconds = [], [], []
        for shard, docs, folder in zip(batch["shard"], batch["docs"], batch["folder"]):
            t = time.perf_counter()
            documents = [Document(*d) for d in json.loads(docs)]
            passages = self.chunker.chunk_many(documents)
            vecs = self.embedder.encode([p.full_text for p in passages])
            write_shard_files(Path(folder), int(shard), passage_table(passages), vecs)
            shards.append(int(shard))
            counts.append(len(passages))
            seconds.append(time.perf_counter() - t)
        return {"shard": np.array(shards), "passages": np.array(counts),
                "seconds": np.array(seconds)}


def embed_shards_ray(cfg, docs, embedder, writer) -> tuple[int, float]:
    """The Ray counterpart of ``pipeline.index.build._embed_shards``: returns (documents, seconds)."""
    ray = connect(cfg.ray_address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = max(1, gpus or int(resources.get("CPU", 1)) - 1)
    device = cfg.device or ("cuda" if gpus else "cpu")
    docs_per_shard = max(1, cfg.shard_size // 2)  # ~1-2 passages per document
    window = 4 * actors
    log.info("Ray: %d %s actor(s), %d documents per shard, %d shards per window", actors,
             "GPU" if gpus else "CPU", docs_per_shard, window)
    shards = writer.shards
    n_docs = writer.documents
    docs = iter(skip_documents(docs, n_docs, progress=cfg.progress))
    bar = tqdm(desc="embed (ray)", unit="passage", initial=writer.count,
               disable=not cfg.progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    done = False
    while not done:
        items, ends = [], []
        for _ in range(window):
            chunk = []
            for d in docs:
                chunk.append([d.doc_id, d.title, d.text])
                if len(chunk) >= docs_per_shard:
                    break
            if not chunk:
                done = True
                break
            n_docs += len(chunk)
            items.append({"shard": shards.shards + len(items), "docs": json.dumps(chunk),
                          "folder": str(shards.folder)})
            ends.append(n_docs)
        if not items:
            break
        ds = ray.data.from_items(items).map_batches(
            ShardEmbedder, batch_size=1, concurrency=min(actors, len(items)),
            num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
            fn_constructor_kwargs={"embedder": embedder.path, "device": device,
                                   "batch_size": cfg.batch_size,
                                   "chunk": cfg.chunk.to_dict(),
                                   "backend": cfg.backend, "quantize": cfg.quantize})
        results = {int(r["shard"]): int(r["passages"]) for r in ds.take_all()}
        for item, end in zip(items, ends):  # checkpoint in corpus order
            n = results[item["shard"]]
            shards.record(n, end)
            bar.update(n)
    bar.close()
    return n_docs, time.perf_counter() - t0


def add_ivf_ray(index, shards, *, address: str | None = None, in_flight: int | None = None):
    """Add every shard to the trained IVF ``index``: Ray tasks encode the shards
    (``sa_encode``: coarse assignment + PQ codes, through an OPQ rotation when there is one)
    and return only the codes, ``sa_code_size`` bytes a vector; the driver appends them in
    shard order with ``IndexIVF.add_sa_codes`` (ids = passage rows). At most ``in_flight``
    tasks (default: twice the cluster's CPUs) are pending at a time, so the driver holds a
    bounded number of shards' codes, never a copy of the index per shard. Equal to adding
    the vectors in one process (tested).
    """
    from collections import deque

    import faiss

    ray = connect(address)

    @ray.remote
    def encode(trained: bytes, path: str, dim: int) -> np.ndarray:
        import faiss as f

        idx = f.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
        return idx.sa_encode(np.fromfile(path, dtype=np.float32).reshape(-1, dim))

    ref = ray.put(faiss.serialize_index(index).tobytes())  # quantiser + codebooks, once
    limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    ivf = faiss.extract_index_ivf(index)
    pending: deque = deque()

    def append_oldest() -> None:  # in order: shard i's ids follow shard i-1's
        first, fut = pending.popleft()
        codes = ray.get(fut)
        ivf.add_sa_codes(codes, np.arange(first, first + len(codes), dtype=np.int64))
        index.ntotal = ivf.ntotal

    start = 0
    for i in range(shards.shards):
        if len(pending) >= limit:
            append_oldest()
        pending.append((start, encode.remote(ref, str(shards.vector_path(i)), shards.dim)))
        start += shards.rows(i)
    while pending:
        append_oldest()
    return index
