"""Retrieval set up for a run: the index's own embedder, and the settings a trained reader asks for.

Shared by answering (``predict``, ``evaluate``) and training (``pipeline.train``,
``pipeline.stack``), so that all of them embed queries with the embedder that built
the index and refuse another one the same way.

Example::

    >>> store = load_index("index/demo")                           # doctest: +SKIP
    >>> embedder = open_embedder(store, None, "cpu")               # the index's own
    >>> reader_retrieval(PredictConfig(..., readers=["readers/minilm"]))  # doctest: +SKIP
    RetrievalConfig(top_k=5, query='prompt+options', ...)
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pipeline.errors import IndexMismatchError
from pipeline.index.embedding import Embedder, resolve_model
from pipeline.index.sentences import has_sentences, load_sentence_vectors
from pipeline.index.store import IndexStore
from pipeline.readers.record import ReaderError, load_reader_record
from pipeline.retrieval.retriever import RetrievalConfig

log = logging.getLogger(__name__)


def open_embedder(store: IndexStore, requested: str | None, device: str | None,
                  backend: str = "torch", sentence_vectors: bool = True) -> Embedder:
    """The embedder that built ``store``; refuse one that differs from it.

    ``backend`` (``--embed-backend``) is what runs it for queries: torch, or on the CPU
    an export run by ONNX Runtime or OpenVINO (:mod:`pipeline.index.export`). With
    ``sentence_vectors`` the index's sentence vectors, when it has them
    (:mod:`pipeline.index.sentences`), are looked up before anything is embedded.
    """
    built = store.meta["embedder"]
    name = requested or built["name"]
    if requested is not None and resolve_model(requested)[0] != built["name"]:
        raise IndexMismatchError(
            f"--embedder {requested} differs from the embedder that built --index {store.path} "
            f"({built['name']}); drop --embedder, or rebuild the index with it")
    if built["normalize"] is not True:  # queries are always L2-normalised: no model needed to tell
        raise IndexMismatchError(
            f"--index {store.path} holds vectors with normalize={built['normalize']} but predict "
            "searches with L2-normalised query vectors (normalize=True); rebuild the index with "
            "pipeline.build_index")
    emb = Embedder(name, device=device, backend=backend)
    if emb.dim != built["dim"] or emb.normalize != built["normalize"]:
        raise IndexMismatchError(
            f"embedder {emb.name} gives {emb.dim}-d vectors (normalize={emb.normalize}) but "
            f"--index {store.path} holds {built['dim']}-d (normalize={built['normalize']}); "
            "use the index's embedder or rebuild the index")
    if sentence_vectors:
        attach_sentence_vectors(store, emb)
    return emb


def attach_sentence_vectors(store: IndexStore, embedder: Embedder) -> None:
    """Give ``embedder`` the sentence vectors of ``store`` if it has them (checked as the
    index was: ``store.verify``)."""
    if has_sentences(store.meta):
        embedder.add_sentence_vectors(load_sentence_vectors(store.path, store.meta,
                                                            verify=store.verify))


def sentence_vector_report(embedder: Embedder) -> dict:
    """What a run's report says of the sentence vectors: which were used, hits and misses
    (texts found in them, texts embedded while they were attached)."""
    return {"used": bool(embedder.sentence_vectors),
            "indexes": [str(v.path.parent) for v in embedder.sentence_vectors],
            "dtype": [v.record.get("dtype") for v in embedder.sentence_vectors],
            **embedder.cache_stats}


def check_embed_backend(backend: str, device: str | None) -> None:
    """Refuse, in one line naming ``--embed-backend`` and the fix, what cannot run
    (:func:`pipeline.index.embedding.check_backend` on the device the run will use)."""
    from pipeline.device import pick_device
    from pipeline.index.embedding import check_backend

    if backend == "torch":
        return  # any device; pick_device would import torch for nothing
    check_backend(backend, None, pick_device(device), flag="--embed-backend")


#: Retrieval settings a trained reader's openbook_reader.json supplies (saved by pipeline.train).
READER_RETRIEVAL_KEYS = ("top_k", "query", "focus", "rerank", "rerank_top")


def reader_retrieval(cfg) -> RetrievalConfig:
    """``cfg.retrieval``, with each of :data:`READER_RETRIEVAL_KEYS` still at its default
    taken from the first reader's ``openbook_reader.json`` ``"retrieval"`` (a reader trained
    with ``--contexts-infer 8`` gets 8 passages unless ``--top-k`` says otherwise).

    ``cfg`` is a :class:`~pipeline.answering.predictor.PredictConfig` (anything with
    ``readers`` and ``retrieval``)."""
    default = RetrievalConfig()
    for name in cfg.readers:
        try:
            record = load_reader_record(name)
        except ReaderError:
            continue  # the reader itself reports a broken file
        if record is None:
            continue  # no settings saved
        saved = record.section("retrieval")
        taken = {k: saved[k] for k in READER_RETRIEVAL_KEYS if saved.get(k) is not None
                 and getattr(cfg.retrieval, k) == getattr(default, k)}
        if taken:
            log.info("retrieval settings from %s: %s (--top-k/--query/--focus/--rerank override them)",
                     record.path, taken)
        return replace(cfg.retrieval, **taken)
    return cfg.retrieval
