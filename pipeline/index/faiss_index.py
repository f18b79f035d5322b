"""Choosing, training and searching the FAISS index, and the one set of IVF-PQ sizing rules.

``flat`` is exact inner-product search (vectors are normalised, so it is
cosine). ``ivfpq`` is an inverted file with product quantisation, trained on
a sample: ~``m`` bytes per vector instead of ``4 * dim`` (``np``: no polysemous
training, which we never search with and which made training ~25x slower). ``auto`` picks flat
up to :data:`AUTO_FLAT_MAX` passages, IVF-PQ above. With ``--max-index-memory``
the choice is :func:`pipeline.index.sizing.choose_by_budget` instead (OPQ and an
HNSW coarse quantiser in front, autofaiss's way); both take their numbers from
the four rules below, so a corpus gets the same lists, probes and training
sample with or without a budget.

Sizing rules, each one function:

* :func:`optimal_nlist`, IVF lists: autofaiss's first choice, which follows
  faiss's wiki ("Guidelines to choose an index"): ``4 * sqrt(n)`` rounded to a
  power of two below 1M vectors, 16,384 below 10M, 65,536 above, and never
  fewer than 39 vectors a list (faiss's k-means minimum). Carrying
  ``4 * sqrt(n)`` on past 1M would fall below the wiki's ``4..16 * sqrt(n)``
  range (4,096 lists at 2M vectors, where it starts at 5,657).
* :func:`train_size`, the training sample: 100 vectors per centroid of the
  largest k-means the index runs (the ``nlist`` lists, or the 256 codewords of
  each PQ sub-quantiser when there are fewer lists), at most ``n``:
  ``min(n, 100 * max(nlist, 256))``. faiss's k-means warns below 39 points a
  centroid and subsamples above 256, the wiki asks for 30 to 256 per list, and
  autofaiss trains on 100 (fewer when memory is short). 100 rather than 256
  keeps the sample (``4 * dim`` bytes a vector, all in RAM) and the k-means time
  2.56x smaller where it hurts: at 65,536 lists it is 6.6M vectors (10 GB at
  384-d) instead of 16.8M (26 GB).
* :func:`default_nprobe`, lists searched per query: ``nlist / 64``, so a query
  scans about ``n / 64`` codes whatever ``nlist`` is, at least 16 (below 1,024
  lists the scan is cheap and more lists buy recall; autofaiss's own nprobe
  search for IVF-HNSW starts at 16) and at most ``nlist``.
* :func:`pq_m`, PQ sub-quantisers (code bytes a vector): one byte per 8
  dimensions, the largest divisor of ``dim`` up to ``dim // 8`` (plain PQ splits
  the dimensions into ``m`` equal parts: 384-d -> 48). Under a budget the code
  size is what fits instead (:mod:`pipeline.index.sizing`), behind an OPQ
  rotation whose output is a multiple of ``m``.

An index keeps the parameters it was built with in ``meta.json``, so these
rules only decide new builds.

Example::

    >>> spec = choose_index(n=2_000_000, dim=384, index_type="auto")
    >>> spec.type, spec.factory, spec.nprobe, spec.train_size
    ('ivfpq', 'IVF16384,PQ48np', 256, 1638400)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline.errors import OpenbookError

log = logging.getLogger(__name__)

INDEX_TYPES = ("auto", "flat", "ivfpq")
#: ``auto`` keeps exact search up to this many passages (~0.75 GB at 384-d).
AUTO_FLAT_MAX = 500_000
#: IVF-PQ needs enough vectors to train its codebooks.
IVFPQ_MIN = 1_000


@dataclass(frozen=True)
class IndexSpec:
    """The index's type and parameters, recorded in ``meta.json``."""

    type: str
    factory: str
    nlist: int | None = None
    m: int | None = None
    nbits: int | None = None
    nprobe: int | None = None
    train_size: int | None = None
    opq: int | None = None  # OPQ output size when the factory starts with OPQ
    refine: int | None = None  # k_factor of an exact re-scoring stage (``,RFlat``), see with_refine

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def base_factory(self) -> str:
        """The factory without the refine stage (what is trained and added in memory)."""
        return self.factory.removesuffix(REFINE_SUFFIX)

    def bytes_per_vector(self, dim: int) -> int:
        """Bytes a vector keeps resident: with ``refine`` the full vectors stay memory-mapped
        on disk (``4 * dim`` more bytes of disk), only the codes and ids are in RAM."""
        return 4 * dim if self.type == "flat" else (self.m or 0) * (self.nbits or 8) // 8 + 8


#: The factory suffix of faiss's exact refine stage (``IndexRefineFlat``).
REFINE_SUFFIX = ",RFlat"


def check_refine(k_factor, index_type: str | None = None) -> int:
    """``k_factor`` (``--refine``) as an int, or an :class:`OpenbookError` naming the flag: it
    must be a whole number >= 1, and there is nothing to re-score in a flat index."""
    if isinstance(k_factor, bool) or not isinstance(k_factor, int) or k_factor < 1:
        raise OpenbookError(f"--refine {k_factor}: must be 1 or more (k x refine candidates are "
                            "re-scored)")
    if index_type == "flat":
        raise OpenbookError(f"--refine {k_factor}: a flat index is exact already; use "
                            "--index-type ivfpq (or auto, or --max-index-memory) with --refine")
    return int(k_factor)


def with_refine(spec: IndexSpec, k_factor: int | None) -> IndexSpec:
    """``spec`` with an exact re-scoring stage: IVF-PQ finds ``k * k_factor`` candidates, the
    full float32 vectors (stored after the codes in ``faiss.index`` and memory-mapped when it
    is loaded, so they cost disk and page cache, not resident memory) re-score them and the
    best ``k`` are kept: faiss's ``IndexRefineFlat``.

    >>> with_refine(choose_index(600_000, 384, "ivfpq"), 8).factory
    'IVF4096,PQ48np,RFlat'
    """
    if k_factor is None:
        return spec
    k_factor = check_refine(k_factor, spec.type)
    return replace(spec, factory=spec.base_factory + REFINE_SUFFIX, refine=k_factor)


def optimal_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors (see the module docstring), kept >= 39 vectors a list."""
    if n < 1_000_000:
        nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    elif n < 10_000_000:
        nlist = 16_384
    else:
        nlist = 65_536
    return int(max(1, min(nlist, n // 39)))


def train_size(n: int, nlist: int, nbits: int = 8) -> int:
    """Vectors to train on: 100 per centroid of the IVF or of a PQ sub-quantiser, at most ``n``."""
    return int(min(n, 100 * max(nlist, 2 ** nbits)))


def default_nprobe(nlist: int) -> int:
    """Lists searched per query: 1/64 of them, at least 16 (and at most all)."""
    return int(min(nlist, max(16, nlist // 64)))


def pq_m(dim: int, at_most: int | None = None) -> int:
    """PQ sub-quantisers for ``dim``-d vectors: the largest divisor of ``dim`` up to ``at_most``
    (default ``dim // 8``: one code byte per 8 dimensions)."""
    for m in range(max(1, dim // 8 if at_most is None else min(at_most, dim)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def choose_index(n: int, dim: int, index_type: str = "auto", *, nlist: int | None = None,
                 nprobe: int | None = None) -> IndexSpec:
    """Pick the index for ``n`` vectors of ``dim`` dimensions."""
    if index_type not in INDEX_TYPES:
        raise OpenbookError(f"--index-type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    if index_type == "auto":
        index_type = "flat" if n <= AUTO_FLAT_MAX else "ivfpq"
    if index_type == "flat":
        return IndexSpec(type="flat", factory="Flat")
    if n < IVFPQ_MIN:
        raise OpenbookError(
            f"--index-type ivfpq needs at least {IVFPQ_MIN} passages to train, this corpus has {n}; "
            "use --index-type flat (exact, and small enough here)")
    nlist = nlist or optimal_nlist(n)
    m = pq_m(dim)
    return IndexSpec(type="ivfpq", factory=f"IVF{nlist},PQ{m}np", nlist=nlist, m=m, nbits=8,
                     nprobe=nprobe or default_nprobe(nlist), train_size=train_size(n, nlist))


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def make_index(spec: IndexSpec, dim: int):
    """An empty (untrained) inner-product index for ``spec``, without its refine stage (the
    writer streams the exact vectors to disk instead: :func:`write_refine_streaming`)."""
    import faiss

    return faiss.index_factory(dim, spec.base_factory, faiss.METRIC_INNER_PRODUCT)


def train(index, sample: np.ndarray) -> None:
    """Train ``index`` on ``sample`` (on GPU when faiss has one)."""
    if index.is_trained:
        return
    import faiss

    log.info("training %s on %d vectors", type(index).__name__, len(sample))
    if gpu_count() > 0:
        ivf = faiss.extract_index_ivf(index)
        clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
        ivf.clustering_index = clustering_index
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def set_nprobe(index, nprobe: int | None) -> None:
    """Set the IVF lists searched per query, on a CPU or a GPU index; a no-op without IVF.

    Goes through faiss's parameter spaces, as its auto-tuning does:
    ``ParameterSpace`` on CPU indexes, ``GpuParameterSpace`` when a GPU index is
    involved (a ``GpuIndexIVF*`` is no ``IndexIVF``, so ``extract_index_ivf``
    cannot reach it); both walk ``IndexPreTransform`` (OPQ) and multi-GPU
    ``IndexReplicas``/``IndexShards``. The value is read back from every IVF part:
    an nprobe that cannot be set raises :class:`OpenbookError`, never passes silently.
    """
    if nprobe is None:
        return
    import faiss

    nprobe = int(nprobe)
    if nprobe < 1:
        raise OpenbookError(f"--nprobe must be 1 or more, got {nprobe}")
    ivfs = [leaf for leaf in _leaves(index) if "IVF" in type(leaf).__name__]
    if not ivfs:
        return  # exact (flat) search: there are no lists to probe
    on_gpu = any(type(leaf).__name__.startswith("Gpu") for leaf in ivfs)
    space = getattr(faiss, "GpuParameterSpace" if on_gpu else "ParameterSpace", None)
    what = f"--nprobe {nprobe}: cannot set it on the {'GPU ' if on_gpu else ''}index " \
           f"{type(index).__name__}"
    if space is None:
        raise OpenbookError(f"{what}: this faiss has no GpuParameterSpace; install a faiss "
                            "with GPU support (pip install '.[gpu]') or search on the CPU")
    try:
        space().set_index_parameter(index, "nprobe", nprobe)
    except RuntimeError as e:
        raise OpenbookError(f"{what} ({' '.join(str(e).split())[-200:]}); search it on the "
                            "CPU (unset CUDA_VISIBLE_DEVICES) or rebuild the index") from e
    for leaf in ivfs:
        got = _nprobe_of(leaf)
        if got != nprobe:
            raise OpenbookError(f"{what}: its {type(leaf).__name__} still probes {got} lists; "
                                "search it on the CPU (unset CUDA_VISIBLE_DEVICES)")


def _downcast(index):
    import faiss

    return faiss.downcast_index(index) if isinstance(index, faiss.Index) else index


def _leaves(index):
    """The indexes that do the search: through OPQ (``IndexPreTransform``) and multi-GPU
    wrappers (``IndexReplicas``, ``IndexShards``: anything with ``count()``/``at(i)``)."""
    index = _downcast(index)
    if type(index).__name__ == "IndexPreTransform":
        yield from _leaves(index.index)
    elif type(index).__name__.startswith("IndexRefine"):
        yield from _leaves(index.base_index)
    elif hasattr(index, "count") and hasattr(index, "at") and "IVF" not in type(index).__name__:
        for i in range(index.count()):
            yield from _leaves(index.at(i))
    else:
        yield index


def _nprobe_of(ivf) -> int | None:
    """An IVF index's nprobe (older faiss GPU indexes only have ``getNumProbes()``)."""
    if hasattr(ivf, "nprobe"):
        return int(ivf.nprobe)
    get = getattr(ivf, "getNumProbes", None)
    return int(get()) if get is not None else None


def _flat_header(dim: int, n: int) -> bytes:
    """The bytes faiss writes before the vectors of an ``IndexFlatIP`` of ``n`` ``dim``-d vectors."""
    import struct

    import faiss

    empty = faiss.serialize_index(faiss.IndexFlatIP(dim)).tobytes()
    # fourcc(4) d(4) ntotal(8) dummy(8) dummy(8) is_trained(1) metric(4) | n_floats(8) floats...
    head = bytearray(empty[:-8])
    head[8:16] = struct.pack("<q", n)
    return bytes(head) + struct.pack("<Q", n * dim)


def write_flat_streaming(f, dim: int, n: int, blocks) -> None:
    """Write an exact ``IndexFlatIP`` file of ``n`` vectors from ``blocks`` of float32 rows,
    without ever holding the index in memory (the file is what ``faiss.write_index`` writes)."""
    f.write(_flat_header(dim, n))
    seen = 0
    for b in blocks:
        f.write(np.ascontiguousarray(b, dtype=np.float32).tobytes())
        seen += len(b)
    if seen != n:
        raise ValueError(f"write_flat_streaming: {seen} vectors written, {n} announced")


def write_refine_streaming(f, base, dim: int, n: int, blocks, k_factor: int) -> None:
    """Write an ``IndexRefineFlat`` file (``base`` holding ``n`` vectors, then the same vectors
    exact) with the exact part streamed from ``blocks``, never held in memory. The bytes are
    what ``faiss.write_index`` writes for the same index (tested): faiss's own serialisation of
    a refine index over an empty ``base`` gives its header and trailer."""
    import struct

    import faiss

    empty_base = faiss.clone_index(base)
    empty_base.reset()
    shell = faiss.IndexRefineFlat(empty_base)
    shell.k_factor = float(k_factor)
    raw = faiss.serialize_index(shell).tobytes()
    base_empty = faiss.serialize_index(empty_base).tobytes()
    flat_empty = _flat_header(dim, 0)
    # fourcc + the Index header: the same fields a flat index writes before its vector count
    head = len(flat_empty) - 8
    if (raw[head:head + len(base_empty)] != base_empty
            or raw[head + len(base_empty):-4] != flat_empty):
        raise RuntimeError("this faiss writes IndexRefineFlat differently; build without --refine")
    prefix = bytearray(raw[:head])
    prefix[8:16] = struct.pack("<q", n)  # fourcc(4) d(4) ntotal(8)
    f.write(bytes(prefix))
    faiss.write_index(base, faiss.PyCallbackIOWriter(f.write))
    write_flat_streaming(f, dim, n, blocks)
    f.write(raw[-4:])  # k_factor (float32)


def set_refine(index, k_factor: int | None) -> None:
    """Set the candidates an ``IndexRefineFlat`` re-scores (``k * k_factor``); a no-op for
    ``None``; an error on an index without a refine stage."""
    if k_factor is None:
        return
    k_factor = check_refine(k_factor)
    index = _downcast(index)
    if not type(index).__name__.startswith("IndexRefine"):
        raise OpenbookError(f"--refine {k_factor}: this index ({type(index).__name__}) has no "
                            "exact re-scoring stage; rebuild it with build_index --refine")
    index.k_factor = float(k_factor)


def build_from_blocks(spec: IndexSpec, dim: int, sample: np.ndarray | None, blocks,
                      progress=None):
    """Train ``spec`` on ``sample`` (IVF only) and add ``blocks`` of vectors in order.

    ``progress``: called with the number of vectors added after each block.
    """
    index = make_index(spec, dim)
    if not index.is_trained:
        train(index, sample)
    for b in blocks:
        index.add(np.ascontiguousarray(b, dtype=np.float32))
        if progress is not None:
            progress(len(b))
    set_nprobe(index, spec.nprobe)
    return index


def for_search(index):
    """The index moved to the GPUs when faiss has them, else as it is (a refine index stays
    on the CPU: its exact vectors are memory-mapped from disk)."""
    if gpu_count() == 0:
        return index
    if type(_downcast(index)).__name__.startswith("IndexRefine"):
        log.info("the index re-scores with memory-mapped vectors: searching it on the CPU")
        return index
    import faiss

    return faiss.index_cpu_to_all_gpus(index)
