"""Several indexes searched as one: each with its own embedder, fused by reciprocal rank.

Winning systems searched several corpora at once (several chunkings of a dump; a BM25
index of every paragraph beside a dense index of a STEM subset). An :class:`IndexSet` opens
one or more index directories, each with the embedder that built it (one model per
distinct embedder), and retrieves from all of them:

1. each index's first stage (dense / BM25 / hybrid, as configured) gives its candidates
   (``top_k``, or ``rerank_top`` when a reranker follows);
2. the lists are fused by reciprocal rank (``rrf_k``); a passage whose text is in several
   indexes is one candidate, its RRF scores summed; passage ids become
   ``INDEX_NAME:passage_id`` so they stay unique (the name is the directory's, made unique);
3. the shared tail, :func:`~pipeline.retrieval.retriever.finish`: the reranker, then
   sentence focus (with the first index's embedder, which also serves the readers'
   evidence features and the zero-shot baseline).

With one index it is exactly :func:`~pipeline.retrieval.retriever.retrieve` (ids unprefixed).

Example::

    >>> ix = IndexSet.open(["index/enwiki", "index/stem"], device="cpu")     # doctest: +SKIP
    >>> ctx = ix.retrieve(questions, RetrievalConfig(top_k=5))               # doctest: +SKIP
    >>> ctx[0].passage_ids[:2]                                               # doctest: +SKIP
    ['stem:doc17-2', 'enwiki:doc9031-0']
    >>> unique_names(["index/a", "other/a", "index/b"])
    ['a', 'a#2', 'b']
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pipeline.errors import OpenbookError
from pipeline.index.bm25 import has_bm25, load_bm25
from pipeline.index.embedding import Embedder, resolve_model
from pipeline.index.store import IndexStore, load_index
from pipeline.retrieval.contexts import Contexts
from pipeline.retrieval.fusion import rrf_fuse
from pipeline.retrieval.retriever import RetrievalConfig, finish, first_stage, retrieve
from pipeline.retrieval.setup import attach_sentence_vectors, open_embedder

log = logging.getLogger(__name__)


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """Each index's directory name, ``#2``, ``#3``... appended to repeats."""
    names: list[str] = []
    for p in paths:
        base = Path(p).name or str(p)
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}#{k}"
        names.append(name)
    return names


@dataclass
class IndexEntry:
    """One opened index of an :class:`IndexSet`."""

    name: str
    path: str
    store: IndexStore
    embedder: Embedder | None = None  # loaded on first use (IndexSet._load_embedders)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def fuse_contexts(lists: Sequence[Contexts], names: Sequence[str], *, k: float = 60,
                  top_k: int | None = None) -> Contexts:
    """One question's candidates from several indexes -> one ranked :class:`Contexts`.

    Reciprocal-rank fusion of the lists (a passage text found in several lists is one
    candidate); ids are prefixed ``name:``; ``rows`` are left empty (they belong to different
    indexes); ``scores`` are the fused RRF scores; at most ``top_k`` are kept.
    """
    keys: dict[str, int] = {}
    where: list[tuple[int, int]] = []  # key -> (list, position) of its first occurrence
    rankings = []
    for li, c in enumerate(lists):
        ranking = []
        for j, text in enumerate(c.texts):
            key = _norm(text)
            if key not in keys:
                keys[key] = len(where)
                where.append((li, j))
            ranking.append(keys[key])
        rankings.append(ranking)
    fused = rrf_fuse(rankings, k=k)[:top_k]
    out = Contexts()
    for key, score in fused:
        li, j = where[key]
        c = lists[li]
        out.passage_ids.append(f"{names[li]}:{c.passage_ids[j]}")
        out.titles.append(c.titles[j])
        out.texts.append(c.texts[j])
        out.scores.append(float(score))
    return out


class IndexSet:
    """One or more opened indexes (see the module docstring); ``embedder`` is the first's."""

    def __init__(self, entries: Sequence[IndexEntry], *, embedder: str | None = None,
                 device: str | None = None, backend: str = "torch",
                 sentence_vectors: bool = True):
        if not entries:
            raise OpenbookError("give at least one --index DIR")
        self.entries = list(entries)
        self.requested = embedder  # --embedder: where the model of the indexes it built is
        self.device = device
        self.backend = backend  # --embed-backend
        self.sentence_vectors = sentence_vectors  # --no-sentence-vectors turns it off

    @classmethod
    def open(cls, paths: str | Sequence[str], *, embedder: str | None = None,
             device: str | None = None, verify: str = "size",
             stores: Sequence[IndexStore] | None = None,
             backend: str = "torch", sentence_vectors: bool = True) -> "IndexSet":
        """Load each index (checked with ``verify``; or take the already loaded ``stores``).
        The embedders that built them are loaded on first use (:attr:`embedder`,
        :meth:`retrieve`), so a damaged index is refused before any model is read; indexes
        built by the same embedder share one model. ``embedder`` (``--embedder``) is where
        that model is for the indexes it built; one that built none of them is refused.
        ``backend`` (``--embed-backend``) runs the embedders for queries; with
        ``sentence_vectors`` each embedder looks texts up in the sentence vectors of the
        indexes it built (:mod:`pipeline.index.sentences`) before embedding them."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        stores = list(stores) if stores is not None else [load_index(p, verify=verify)
                                                          for p in paths]
        wanted = resolve_model(embedder)[0] if embedder else None
        if embedder and not any(s.meta["embedder"]["name"] == wanted for s in stores):
            open_embedder(stores[0], embedder, device)  # raises before loading: names the fix
        return cls([IndexEntry(name, str(path), store)
                    for name, path, store in zip(unique_names(paths), paths, stores)],
                   embedder=embedder, device=device, backend=backend,
                   sentence_vectors=sentence_vectors)

    def _load_embedders(self) -> None:
        """Open the embedder of every index (once; one model per embedder name)."""
        if all(e.embedder is not None for e in self.entries):
            return
        wanted = resolve_model(self.requested)[0] if self.requested else None
        models: dict[str, Embedder] = {}
        for e in self.entries:
            built = e.store.meta["embedder"]["name"]
            if built not in models:
                models[built] = open_embedder(e.store, self.requested if built == wanted else None,
                                              self.device, self.backend, self.sentence_vectors)
            else:
                check_same_embedder(e.store, models[built])
                if self.sentence_vectors:
                    attach_sentence_vectors(e.store, models[built])
            e.embedder = models[built]
        if len(self.entries) > 1:
            log.info("%d indexes, fused by reciprocal rank: %s", len(self.entries),
                     ", ".join(f"{e.name} ({e.store.size} passages, {e.embedder.name})"
                               for e in self.entries))

    @property
    def embedder(self) -> Embedder:
        """The first index's embedder (loaded now if it was not yet)."""
        self._load_embedders()
        return self.entries[0].embedder

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.entries]

    def has_bm25(self) -> bool:
        """Every index has its BM25 side (so bm25 and hybrid can be asked of the set)."""
        return all(has_bm25(e.store.meta) for e in self.entries)

    def verify_bm25(self, verify: str) -> None:
        """Load and check (``verify="full"``: sha256) every index's BM25 now, not mid-run."""
        for e in self.entries:
            e.store._bm25 = load_bm25(e.store.path, e.store.meta, verify=verify)

    def resolved(self, config: RetrievalConfig) -> RetrievalConfig:
        """``config`` checked against every index before any work (BM25 present, reranker)."""
        for e in self.entries:
            config = config.resolved(e.store.meta, e.path)
        return config

    def retrieve(self, questions: Sequence, config: RetrievalConfig = RetrievalConfig(), *,
                 progress: bool = True, device: str | None = None) -> list[Contexts]:
        """Top passages per question from all indexes (see the module docstring)."""
        self._load_embedders()
        if len(self.entries) == 1:
            e = self.entries[0]
            return retrieve(questions, e.store, e.embedder, config, progress=progress,
                            device=device)
        config = self.resolved(config)
        if config.top_k == 0 or len(questions) == 0:
            return [Contexts() for _ in questions]
        first = config.candidates()
        per_index = [first_stage(questions, e.store, e.embedder, first, progress=progress)
                     for e in self.entries]
        names = [e.name for e in self.entries]
        fused = [fuse_contexts([lists[i] for lists in per_index], names, k=config.rrf_k,
                               top_k=first.top_k) for i in range(len(questions))]
        return finish(questions, fused, self.embedder, config, progress=progress, device=device)

    def describe(self) -> list[dict]:
        """Per index: name, path, embedder, passages (for reports and reader records)."""
        return [{"name": e.name, "path": e.path, "embedder": e.embedder.name,
                 "passages": e.store.size} for e in self.entries]


def check_same_embedder(store: IndexStore, embedder: Embedder) -> None:
    """An index built by ``embedder``'s model must hold its vectors (dimension, normalised)."""
    built = store.meta["embedder"]
    if built["dim"] != embedder.dim or built["normalize"] is not True:
        raise OpenbookError(f"--index {store.path} holds {built['dim']}-d vectors "
                            f"(normalize={built['normalize']}) but {embedder.name} gives "
                            f"{embedder.dim}-d normalised ones; rebuild the index")
