"""Rerank retrieved passages with a cross-encoder: the second stage of the retrieval cascade.

A first-stage retriever (dense, BM25 or hybrid, :mod:`pipeline.retrieval.retriever`) finds
candidates cheaply; a cross-encoder then reads each ``(query, passage)`` pair *together* and
gives it one relevance score, which orders the candidates far better than a cosine between
two separately computed vectors, at the price of one transformer pass per pair.

* the query is :func:`~pipeline.retrieval.retriever.make_query` of the question (prompt +
  the five options), the passage is ``"Title. text"``
  (:func:`~pipeline.index.chunking.with_title`), exactly as ``pipeline.train_reranker``
  trains it;
* the pairs of *all* questions are scored in one pass, in batches of similar length
  (longest first, so the first batch shows the memory peak), then put back in order;
* the score is the model's raw logit (no sigmoid: it never saturates into ties); each
  question keeps its ``top_k`` best-scored passages, ties in retrieval order.

A reranker is any sentence-transformers ``CrossEncoder`` with one output: a folder written
by ``python -m pipeline.train_reranker`` (it carries ``openbook_reranker.json``, checked on
load), another cross-encoder folder, or the hub name of one already installed in the
Hugging Face cache. Nothing is ever downloaded: a name that is neither raises
:class:`RerankerError` at once.

Example (shapes: ``questions`` and ``contexts`` have one entry per question; each returned
:class:`~pipeline.retrieval.retriever.Contexts` has ``min(top_k, len(candidates))``
passages)::

    >>> reranker = load_reranker("runs/rerankers/minilm")              # doctest: +SKIP
    >>> cands = retrieve(questions, store, emb, RetrievalConfig(top_k=20))  # doctest: +SKIP
    >>> best = reranker.rerank(questions, cands, top_k=3)              # doctest: +SKIP
    >>> best[0].titles, best[0].scores                                 # doctest: +SKIP
    (['Absolute zero', 'Kelvin', 'Temperature'], [7.1, 2.3, -0.4])
    >>> order_by_score([0.1, 0.9, 0.9, -2.0])   # best first, ties keep retrieval order
    [1, 2, 0, 3]
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.device import pick_device
from pipeline.errors import OpenbookError
from pipeline.index.chunking import with_title
from pipeline.retrieval.contexts import Contexts
from pipeline.retrieval.fusion import rrf_fuse
from pipeline.retrieval.query import make_query

log = logging.getLogger(__name__)

__all__ = ["RECORD_FILE", "RECORD_KIND", "Reranker", "RerankerError", "check_reranker_folder",
           "fuse_ranks", "hub_snapshot", "load_reranker", "local_model_folder", "order_by_score",
           "read_record", "resolve_reranker"]

#: The record ``pipeline.train_reranker`` writes beside the weights.
RECORD_FILE = "openbook_reranker.json"
RECORD_KIND = "reranker"
#: A multiple-choice reader's record (``pipeline.train``): such a folder is not a reranker.
READER_RECORD = "openbook_reader.json"
FIX = ("give a folder trained by python -m pipeline.train_reranker, or a cross-encoder folder "
       "(a sentence-transformers CrossEncoder with one output)")
#: Longest input a reranker is run with when neither the caller nor its record says.
MAX_LENGTH_CAP = 512


class RerankerError(OpenbookError):
    """The reranker cannot be found or is not one; the message names the flag and the fix."""


def _err(flag: str, name: str, problem: str, fix: str = FIX) -> RerankerError:
    return RerankerError(f"{flag} {name}: {problem}. Fix: {fix}")


def read_record(folder: str | Path, *, flag: str = "--rerank") -> dict | None:
    """``folder/openbook_reranker.json`` as a dict (``None`` when there is none); a file that is
    not a complete reranker record raises :class:`RerankerError`."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err(flag, str(folder), f"{RECORD_FILE} is unreadable ({e})",
                   "train the reranker again with python -m pipeline.train_reranker") from e
    if not isinstance(rec, dict) or rec.get("kind") != RECORD_KIND:
        kind = rec.get("kind") if isinstance(rec, dict) else type(rec).__name__
        raise _err(flag, str(folder), f"{RECORD_FILE} says kind {kind!r}, not {RECORD_KIND!r}")
    if rec.get("complete") is False:
        raise _err(flag, str(folder), "its training did not finish",
                   "rerun the same python -m pipeline.train_reranker command with --resume")
    return rec


def check_reranker_folder(folder: str | Path, name: str | None = None, *,
                          flag: str = "--rerank") -> dict | None:
    """Refuse a folder that is not a one-output cross-encoder (a reader, a bi-encoder, a
    classifier with several labels) before any weights are read; return its record."""
    folder = Path(folder)
    name = name or str(folder)
    rec = read_record(folder, flag=flag)
    if rec is None and (folder / READER_RECORD).is_file():
        raise _err(flag, name, f"is a multiple-choice reader ({READER_RECORD}, written by "
                   "python -m pipeline.train), not a reranker; give it as --reader")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _err(flag, name, "is not a model folder (no config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err(flag, name, f"config.json is unreadable ({e})") from e
    archs = config.get("architectures") or []
    if any("MultipleChoice" in a for a in archs):
        raise _err(flag, name, f"is a multiple-choice reader ({archs[0]}), not a reranker; "
                   "give it as --reader")
    if rec is None and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise _err(flag, name, f"is not a cross-encoder: config.json names {archs or 'no'} "
                   "architecture, a model without a trained scoring head (a sentence embedder "
                   "such as all-MiniLM-L6-v2 is one)",
                   f"fine-tune one from it with python -m pipeline.train_reranker --model "
                   f"{name}, or give a cross-encoder folder")
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 1)
    if labels != 1:
        raise _err(flag, name, f"scores {labels} labels per pair; a reranker gives one score")
    return rec


def hub_snapshot(name: str) -> Path | None:
    """The installed (cached) snapshot of hub model ``name``, never downloading."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not installed, or not a valid hub name: same answer
        return None


def local_model_folder(name_or_path: str) -> Path | None:
    """The local folder of a model: an existing folder, an alias or a model installed offline
    (``minilm``: :func:`pipeline.index.embedding.resolve_model`), or the installed snapshot of
    a hub name; ``None`` when there is none (nothing is downloaded)."""
    from pipeline.index.embedding import resolve_model

    path = Path(name_or_path).expanduser()
    target = path if path.is_dir() else Path(resolve_model(name_or_path)[1])
    return target.resolve() if target.is_dir() else hub_snapshot(name_or_path)


def resolve_reranker(name_or_path: str, *, flag: str = "--rerank") -> Path:
    """The local folder of a reranker (:func:`local_model_folder`), checked by
    :func:`check_reranker_folder`. Raises :class:`RerankerError`."""
    path = Path(name_or_path).expanduser()
    if path.exists() and not path.is_dir():
        raise _err(flag, name_or_path, "is a file, not a model folder")
    folder = local_model_folder(name_or_path)
    if folder is None:
        raise _err(flag, name_or_path, "no such folder, and no installed model of that name "
                   "(nothing is downloaded)")
    check_reranker_folder(folder, name_or_path, flag=flag)
    return folder


@dataclass
class Reranker:
    """A loaded cross-encoder that reorders retrieved passages (see the module docstring).

    Args:
        model: a ``sentence_transformers.CrossEncoder`` with one output.
        name: what the user gave (``--rerank NAME``), for reports.
        record: the folder's ``openbook_reranker.json``, if any.
        batch_size: pairs per forward pass.
    """

    model: Any
    name: str
    record: dict | None = None
    batch_size: int = 32
    folder: str | None = None

    def score(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False) -> np.ndarray:
        """Raw scores, shape ``(len(pairs),)`` float32, in the order of ``pairs``: batches
        are cut from the pairs sorted by length, longest first."""
        import torch
        from tqdm.auto import tqdm

        out = np.zeros(len(pairs), dtype=np.float32)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="rerank", unit="batch", disable=not progress,
                          dynamic_ncols=True):
            idx = order[start:start + self.batch_size]
            s = self.model.predict([pairs[i] for i in idx], batch_size=len(idx),
                                   show_progress_bar=False, activation_fn=torch.nn.Identity(),
                                   convert_to_numpy=True)
            out[idx] = np.asarray(s, dtype=np.float32).reshape(-1)
        return out

    def rerank(self, questions: Sequence, contexts: Sequence[Contexts], top_k: int, *,
               progress: bool = False, fuse: bool = False, rrf_k: float = 60) -> list[Contexts]:
        """Each question's passages reordered by the reranker, its best ``top_k`` kept.

        ``questions`` are anything with ``prompt`` and ``options``; ``contexts[i]`` are the
        candidates of ``questions[i]``, in retrieval order. Returns new :class:`Contexts`
        whose ``scores`` are the reranker's and whose ``focused`` is ``None`` (focus, if
        wanted, comes after). ``fuse``: order by the reciprocal-rank fusion of the retrieval
        rank and the reranker's rank instead (:func:`fuse_ranks`; the scores are then the
        fused ones), which keeps what the first stage was sure of when the reranker is
        weaker than it on some questions."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        pairs: list[tuple[str, str]] = []
        for q, c in zip(questions, contexts):
            query = make_query(q.prompt, q.options)
            pairs += [(query, with_title(t, x)) for t, x in zip(c.titles, c.texts)]
        log.info("reranking %d passages of %d questions with %s (keeping %d each)", len(pairs),
                 len(questions), self.name, top_k)
        scores = self.score(pairs, progress=progress)
        out, at = [], 0
        for c in contexts:
            n = len(c.passage_ids)
            s = scores[at:at + n].tolist()
            at += n
            if fuse:
                s = fuse_ranks(s, rrf_k)
            keep = order_by_score(s)[:max(top_k, 0)]
            out.append(c.take(keep, [s[j] for j in keep]))
        return out

    def describe(self) -> dict:
        """What a report records about this reranker."""
        rec = self.record or {}
        return {"name": self.name, "folder": self.folder, "max_length": self.model.max_seq_length,
                "base_model": (rec.get("base_model") or {}).get("name"),
                "trained_by_openbook": self.record is not None}


def order_by_score(scores: Sequence[float]) -> list[int]:
    """Indices by descending score; equal scores keep their original (retrieval) order."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))


def fuse_ranks(scores: Sequence[float], k: float = 60) -> list[float]:
    """Reciprocal-rank fusion of a candidate list's retrieval order (position ``j``) with the
    order of ``scores``: ``1 / (k + 1 + j) + 1 / (k + 1 + rank_by_score(j))``.

    >>> [round(x * 1000, 2) for x in fuse_ranks([0.5, 0.9, 0.1], k=0)]  # reranker ranks 2, 1, 3
    [1500.0, 1500.0, 666.67]
    """
    fused = dict(rrf_fuse([range(len(scores)), order_by_score(scores)], k=k))
    return [fused[j] for j in range(len(scores))]


_CACHE: dict[tuple, Reranker] = {}
_LOCK = threading.Lock()


def load_reranker(name_or_path: str, device: str | None = None, max_length: int | None = None,
                  *, batch_size: int | None = None, flag: str = "--rerank") -> Reranker:
    """The :class:`Reranker` of a folder or installed hub name, loaded once per
    ``(folder, device, max_length, batch_size)`` and then cached.

    ``max_length`` defaults to the one it was trained with (its record), else the
    tokenizer's, at most :data:`MAX_LENGTH_CAP`; ``device`` to :func:`pick_device`
    (fp16 on CUDA). Raises :class:`RerankerError` for anything but a one-output cross-encoder.
    """
    folder = resolve_reranker(name_or_path, flag=flag)
    device = pick_device(device)
    batch_size = batch_size or (128 if device.startswith("cuda") else 32)
    key = (str(folder), device, max_length, batch_size)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        rec = read_record(folder, flag=flag)
        from sentence_transformers import CrossEncoder

        length = max_length or (rec or {}).get("max_length")
        try:
            model = CrossEncoder(str(folder), device=device, max_length=length,
                                 local_files_only=True)
        except (OSError, ValueError) as e:
            raise _err(flag, name_or_path, f"cannot be loaded as a cross-encoder "
                       f"({' '.join(str(e).split())[:200]})") from e
        if length is None and (model.max_seq_length or 0) > MAX_LENGTH_CAP:
            model.max_seq_length = MAX_LENGTH_CAP
        if device.startswith("cuda"):
            model.half()
        log.info("reranker %s (%s) on %s, max_length %d", name_or_path, folder, device,
                 model.max_seq_length)
        _CACHE[key] = Reranker(model=model, name=name_or_path, record=rec,
                               batch_size=batch_size, folder=str(folder))
        return _CACHE[key]
