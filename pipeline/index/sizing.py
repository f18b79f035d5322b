"""Pick the FAISS index that fits a memory budget (``--max-index-memory 4G``), autofaiss's way.

The rules are those of autofaiss (``get_optimal_index_keys_v2`` with
``should_be_memory_mappable=True``, since openbook memory-maps its indexes,
so no HNSW over the vectors):

1. exact ``Flat`` when ``4 * dim`` bytes per vector fit the budget;
2. otherwise ``OPQ{m}_{y},IVF{nlist}[_HNSW32],PQ{m}x8np``: the largest ``m`` in
   ``256, 128, 64, 48, 32, 24, 16, 8, 4`` (``m < dim``) whose ``m + 8`` bytes per
   vector (PQ code + 8-byte id) plus the centroids fit the budget;
   ``y = (min(dim // m, 6) + 1) * m`` is the OPQ output size; an HNSW32 coarse
   quantiser from 1,000 lists on;
3. lists, probes and the training sample follow the rules every IVF-PQ build
   shares (:mod:`pipeline.index.faiss_index`: :func:`optimal_nlist` -- ``4 * sqrt(n)``
   rounded to a power of two below 1M vectors, 16,384 below 10M, 65,536 above --,
   :func:`default_nprobe` and :func:`train_size`, 100 vectors a list as autofaiss).

Nothing fits (or the corpus is too small to train a compressed index and
the flat one does not fit) -> :class:`~pipeline.errors.OpenbookError`
naming the smallest budget that would do.

Example::

    >>> spec = choose_by_budget(30_000_000, 384, parse_size("2G"))
    >>> spec.factory, spec.bytes_per_vector(384)
    ('OPQ48_336,IVF65536_HNSW32,PQ48x8np', 56)
    >>> choose_by_budget(10_000, 384, parse_size("1G")).factory
    'Flat'
"""

from __future__ import annotations

import math
import re

from pipeline.errors import OpenbookError
from pipeline.index.faiss_index import (IVFPQ_MIN, IndexSpec, default_nprobe, optimal_nlist, pq_m,
                                        train_size)

PQ_VALUES = (256, 128, 64, 48, 32, 24, 16, 8, 4)
ID_BYTES = 8
#: autofaiss's ``quantization_threshold``-like floor: fewer vectors cannot train PQ codebooks.
QUANT_MIN = IVFPQ_MIN
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str | int, flag: str = "--max-index-memory") -> int:
    """``"4G"`` -> bytes (K, M, G, T are powers of 1024; ``KB``/``GiB`` spellings accepted)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not m:
        raise OpenbookError(f"{flag} {text!r}: not a size; write e.g. 512M, 4G or 1.5T")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def opq_out(dim: int, m: int) -> int:
    return (min(dim // m, 6) + 1) * m


def index_bytes(spec: IndexSpec, n: int, dim: int) -> int:
    """Memory (and about the disk size) of ``spec`` holding ``n`` vectors."""
    if spec.type == "flat":
        return 4 * dim * n
    nlist = spec.nlist or 1
    d_in = spec.opq or dim
    extra = 4 * nlist * d_in + (4 * dim * d_in if spec.opq else 0) + 256 * 4 * d_in
    if "_HNSW" in spec.factory:  # HNSW32 coarse quantiser: 2 * 32 links of 4 bytes per centroid
        extra += nlist * 64 * 4
    return n * spec.bytes_per_vector(dim) + extra


def ivfpq_spec(n: int, dim: int, m: int, *, nlist: int | None = None, nprobe: int | None = None,
               opq: bool = True) -> IndexSpec:
    """``[OPQ{m}_{y},]IVF{nlist}[_HNSW32],PQ{m}x8np`` for ``n`` vectors (without OPQ, ``m`` is
    lowered to a divisor of ``dim``, as plain PQ needs)."""
    nlist = nlist or optimal_nlist(n)
    m = m if opq else pq_m(dim, at_most=m)
    y = opq_out(dim, m) if opq else None
    coarse = f"IVF{nlist}_HNSW32" if nlist >= 1000 else f"IVF{nlist}"
    factory = (f"OPQ{m}_{y}," if opq else "") + f"{coarse},PQ{m}x8np"  # np: see faiss_index
    return IndexSpec(type="ivfpq", factory=factory, nlist=nlist, m=m, nbits=8,
                     nprobe=nprobe or default_nprobe(nlist), train_size=train_size(n, nlist),
                     opq=y)


def choose_by_budget(n: int, dim: int, budget: int, *, index_type: str = "auto",
                     nlist: int | None = None, nprobe: int | None = None) -> IndexSpec:
    """The most accurate index for ``n`` ``dim``-d vectors within ``budget`` bytes."""
    flat = IndexSpec(type="flat", factory="Flat")
    flat_bytes = index_bytes(flat, n, dim)
    if index_type in ("auto", "flat") and flat_bytes <= budget:
        return flat
    if index_type == "flat":
        raise OpenbookError(
            f"--max-index-memory {human(budget)} cannot hold a flat index of {n:,} {dim}-d vectors "
            f"({human(flat_bytes)}); raise --max-index-memory to at least {human(flat_bytes)} or "
            "drop --index-type flat to get a compressed index")
    if n < QUANT_MIN:
        raise OpenbookError(
            f"--max-index-memory {human(budget)} cannot hold the {n:,} vectors of this corpus "
            f"even flat ({human(flat_bytes)}), and {n:,} vectors are too few to train a "
            f"compressed index (at least {QUANT_MIN:,}); raise --max-index-memory to "
            f"{human(flat_bytes)} or more")
    smallest = None
    for m in PQ_VALUES:
        if m >= dim:
            continue
        spec = ivfpq_spec(n, dim, m, nlist=nlist, nprobe=nprobe)
        need = index_bytes(spec, n, dim)
        if need <= budget:
            return spec
        smallest = (spec, need)
    spec, need = smallest
    raise OpenbookError(
        f"--max-index-memory {human(budget)} cannot hold even the smallest index for {n:,} "
        f"{dim}-d vectors ({spec.factory}: {human(need)}); raise --max-index-memory to at least "
        f"{human(need)} (e.g. {math.ceil(need / 2**30 * 10) / 10}G)")


def estimate(spec: IndexSpec, n: int, dim: int, *, keep_vectors: bool = False) -> dict:
    """Up-front memory/disk figures for a build of ``n`` passages with ``spec``."""
    idx = index_bytes(spec, n, dim)
    passages = n * 700  # zstd parquet of ~160-token passages: ~0.7 kB each
    shards = n * 4 * dim  # the raw vectors kept on disk while building
    train = 4 * dim * (spec.train_size or 0)
    exact = n * 4 * dim if spec.refine else 0  # refine: the exact vectors, on disk (mmap)
    return {"passages": n, "index_bytes": idx, "train_bytes": train,
            "peak_memory_bytes": idx + train,
            "disk_bytes_during_build": shards + passages * 2 + idx + exact,
            "disk_bytes_final": idx + exact + passages + (shards if keep_vectors else 0)}
