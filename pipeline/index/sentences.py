"""Sentence vectors: every passage sentence embedded once, at index time, inside the index.

``predict`` embeds the sentences of each question's contexts for the stacker's
``dense`` feature, the zero-shot scorer and ``--focus sentences``: ~15 sentences a
question, a third of a MiniLM run on a CPU (docs/throughput.md). Those sentences
are sentences of indexed passages, so they can be embedded when the index is
built, once for all runs, and looked up by their text at answer time::

    index/NAME/
      meta.json          ... + "sentences": embedder, dtype, counts, rule, files (bytes, sha256)
      sentences/
        keys.npy         (n, 2) uint64: the 128-bit BLAKE2b digest of each sentence's text
                         (UTF-8), rows sorted; memory-mapped
        vectors.npy      (n, dim) float32 (or float16): row i is the unit vector of key i;
                         memory-mapped

Which sentences: those :func:`pipeline.index.chunking.split_sentences` gives for
``with_title(title, text)`` (how the scorers split a joined context) and those of
:func:`pipeline.index.chunking.passage_sentences` (the title on the first
sentence, how focus splits). A text is embedded once however often it occurs.

At answer time :meth:`pipeline.index.embedding.Embedder.encode` looks every text
up first and embeds only the misses (option queries, sentences of edited text),
so answers are those of embedding live; the vectors were computed by the
index's embedder (``meta.json["sentences"]["embedder"]`` says with which backend
and precision), and loading refuses vectors of another model. ``predict
--no-sentence-vectors`` embeds everything live.

Cost, on the haystack index of Wikipedia summaries: 3.7 distinct sentences and 5.8 KB
(float32, 384-d) per passage, and about the time embedding the passages took; float16
halves the disk. A build that stops starts over (it is not resumable as ``build_index``
is). Building runs beside the live files (``sentences/`` is replaced only when whole,
``meta.json["sentences"]`` written last) and can be re-run on its own:
``python -m pipeline.sentence_vectors --index DIR``.

Example::

    >>> add_sentence_vectors("index/demo")                              # doctest: +SKIP
    >>> sv = load_sentence_vectors("index/demo")                         # doctest: +SKIP
    >>> found, rows = sv.lookup(["Neon. It is a noble gas.", "not indexed"])  # doctest: +SKIP
    >>> found.tolist(), sv.vectors_of(rows[found]).shape                 # doctest: +SKIP
    ([True, False], (1, 384))
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.errors import IndexMismatchError, OpenbookError
from pipeline.index.artifacts import check_files, short_error
from pipeline.index.chunking import passage_sentences, split_sentences, with_title

log = logging.getLogger(__name__)

SENTENCES_DIR = "sentences"
KEYS_FILE = "keys.npy"
VECTORS_FILE = "vectors.npy"
DTYPES = ("float32", "float16")
#: How a passage becomes sentences; bumped when that changes (old vectors are refused).
RULE = "split_sentences(with_title) + passage_sentences, v1"
_BLOCK = 4096  # sentences embedded per call while building


def sentence_key(text: str) -> tuple[int, int]:
    """The 128-bit BLAKE2b digest of ``text`` as two unsigned 64-bit ints (the row key).

    >>> sentence_key("Neon.") == sentence_key("Neon.") != sentence_key("Neon")
    True
    """
    d = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def keys_of(texts: Sequence[str]) -> np.ndarray:
    """``(len(texts), 2)`` uint64 keys of ``texts``."""
    out = np.empty((len(texts), 2), dtype=np.uint64)
    for i, t in enumerate(texts):
        out[i] = sentence_key(t)
    return out


def passage_sentence_texts(title: str, text: str) -> list[str]:
    """The distinct sentences the answer-time scorers can make of one passage.

    >>> passage_sentence_texts("Neon", "It is a noble gas. It glows red.")
    ['Neon.', 'It is a noble gas.', 'It glows red.', 'Neon. It is a noble gas.']
    """
    joined = with_title(title, text)
    out = [joined[a:b] for a, b in split_sentences(joined)] + passage_sentences(title, text)
    return list(dict.fromkeys(out))


def has_sentences(meta: dict) -> bool:
    """Whether an index's ``meta.json`` records finished sentence vectors."""
    return isinstance(meta.get("sentences"), dict) and bool(meta["sentences"].get("files"))


def _sentence_batches(parquet: Path, total: int, progress: bool, desc: str) -> Iterator[list[str]]:
    from tqdm.auto import tqdm

    from pipeline.index.store import passage_columns

    with tqdm(total=total, desc=desc, unit="passage", disable=not progress) as bar:
        for titles, texts in passage_columns(parquet):
            yield [s for t, x in zip(titles, texts) for s in passage_sentence_texts(t, x)]
            bar.update(len(texts))


def add_sentence_vectors(index: str | Path, *, dtype: str = "float32", backend: str = "torch",
                         device: str | None = None, batch_size: int | None = None,
                         progress: bool = True) -> dict:
    """Embed every sentence of a finished index's passages into ``index/sentences/``.

    Returns the ``meta.json["sentences"]`` record. Uses the index's own embedder
    (``backend`` runs it: torch, or an onnx/openvino export on the CPU). The old
    ``sentences/`` (if any) stays usable until the new one is complete; holds the
    index's build lock as :func:`pipeline.index.bm25.add_bm25` does.
    """
    from pipeline.index.lock import BuildLock

    if dtype not in DTYPES:
        raise OpenbookError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    with BuildLock(Path(index)).holding():
        return _add(Path(index), dtype, backend, device, batch_size, progress)


def _add(index: Path, dtype: str, backend: str, device: str | None, batch_size: int | None,
         progress: bool) -> dict:
    from numpy.lib.format import open_memmap

    from pipeline.index.embedding import Embedder
    from pipeline.index.store import PASSAGES_FILE, publish_side, read_meta, side_files

    meta = read_meta(index)
    t0 = time.perf_counter()
    built = meta["embedder"]
    # Opened first: a backend that cannot run here is refused before any passage is read.
    emb = Embedder(built["name"], device=device, batch_size=batch_size, backend=backend)
    if emb.dim != built["dim"] or not built.get("normalize", True):
        raise IndexMismatchError(f"--index {index}: its embedder {built['name']} gives "
                                 f"{emb.dim}-d unit vectors here, the index holds "
                                 f"{built['dim']}-d (normalize={built.get('normalize')}); "
                                 "rebuild the index")
    n_passages = meta["counts"]["passages"]
    parquet = index / PASSAGES_FILE
    # Pass 1: the distinct sentence keys, sorted (16 B a sentence occurrence at most).
    parts, occurrences = [], 0
    for sents in _sentence_batches(parquet, n_passages, progress, "sentence keys"):
        occurrences += len(sents)
        parts.append(np.unique(keys_of(sents), axis=0))
    keys = np.unique(np.concatenate(parts), axis=0) if parts else np.zeros((0, 2), np.uint64)
    del parts
    n = len(keys)
    log.info("sentence vectors for %s: %d sentences (%d distinct) in %d passages", index,
             occurrences, n, n_passages)
    partial = index / f".{SENTENCES_DIR}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        np.save(partial / KEYS_FILE, keys)
        vecs = open_memmap(partial / VECTORS_FILE, mode="w+", dtype=dtype, shape=(n, emb.dim))
        done = np.zeros(n, dtype=bool)
        todo_rows: list[int] = []
        todo_texts: list[str] = []

        def flush() -> None:
            if todo_texts:
                vecs[np.asarray(todo_rows)] = emb.encode(todo_texts).astype(dtype)
                todo_rows.clear()
                todo_texts.clear()

        # Pass 2: embed each distinct sentence once, where its key sorts.
        for sents in _sentence_batches(parquet, n_passages, progress, "sentence vectors"):
            rows = _rows(keys, keys_of(sents))
            for r, s in zip(rows.tolist(), sents):
                if not done[r]:
                    done[r] = True
                    todo_rows.append(r)
                    todo_texts.append(s)
            if len(todo_texts) >= _BLOCK:
                flush()
        flush()
        vecs.flush()
        del vecs
        if not done.all():
            raise OpenbookError(f"--index {index}: passages.parquet changed while its sentence "
                                "vectors were built; run it again")
        record = {
            "dir": SENTENCES_DIR,
            "rule": RULE,
            "embedder": emb.describe(),
            "dtype": dtype,
            "count": n,
            "occurrences": occurrences,
            "passages": n_passages,
            "files": side_files(partial, SENTENCES_DIR),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        publish_side(index, "sentences", partial, record, t0)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("sentence vectors for %s: %d x %d %s, %.1f s", index, n, emb.dim, dtype,
             record["seconds"])
    return record


def _rows(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of each ``query`` key in the sorted ``keys``, or -1."""
    rows = np.full(len(query), -1, dtype=np.int64)
    if len(keys) == 0 or len(query) == 0:
        return rows
    hi = keys[:, 0]
    pos = np.minimum(np.searchsorted(hi, query[:, 0]), len(keys) - 1)
    hit = (hi[pos] == query[:, 0]) & (keys[pos, 1] == query[:, 1])
    rows[hit] = pos[hit]
    for i in np.flatnonzero(~hit & (hi[pos] == query[:, 0])):  # equal high halves: ~never
        j = int(pos[i]) + 1
        while j < len(keys) and hi[j] == query[i, 0]:
            if keys[j, 1] == query[i, 1]:
                rows[i] = j
                break
            j += 1
    return rows


class SentenceVectors:
    """An index's memory-mapped sentence vectors: ``lookup`` texts -> rows, ``vectors_of`` rows."""

    def __init__(self, path: Path, record: dict, keys: np.ndarray, vectors: np.ndarray):
        self.path, self.record, self.keys, self.vectors = path, record, keys, vectors

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def embedder_name(self) -> str:
        return self.record["embedder"]["name"]

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, rows)``: a bool mask and the row of each found text (-1 elsewhere)."""
        rows = _rows(self.keys, keys_of(texts))
        return rows >= 0, rows

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), dim)`` float32 unit vectors."""
        order = np.argsort(rows, kind="stable")  # sorted reads of the memory map
        out = np.empty((len(rows), self.vectors.shape[1]), dtype=np.float32)
        out[order] = self.vectors[np.asarray(rows)[order]]
        return out


def load_sentence_vectors(index: str | Path, meta: dict | None = None, *,
                          verify: str = "size") -> SentenceVectors:
    """Open ``index/sentences/`` (memory-mapped) after checking it against ``meta.json``."""
    from pipeline.index.store import read_meta

    index = Path(index)
    meta = meta if meta is not None else read_meta(index)
    source = f"--index {index}"
    fix = f"rebuild them with `python -m pipeline.sentence_vectors --index {index}`"
    if not has_sentences(meta):
        raise OpenbookError(f"{source} has no sentence vectors; add them with "
                            f"`python -m pipeline.sentence_vectors --index {index}`")
    rec = meta["sentences"]
    check_files(index, meta, verify, source=source, fix=fix, key="sentences.files")
    emb = rec.get("embedder") if isinstance(rec.get("embedder"), dict) else {}
    if rec.get("rule") != RULE:
        raise IndexMismatchError(f"{source}: its sentence vectors were split by another rule "
                                 f"({str(rec.get('rule'))[:60]!r}, this version: {RULE!r}); {fix}")
    if emb.get("name") != meta["embedder"]["name"]:
        raise IndexMismatchError(f"{source}: its sentence vectors are from "
                                 f"{str(emb.get('name'))[:60]!r}, not the index's embedder "
                                 f"{meta['embedder']['name']}; {fix}")
    folder = index / SENTENCES_DIR
    try:
        keys = np.load(folder / KEYS_FILE, mmap_mode="r")
        vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise OpenbookError(f"{source}: the sentence vectors in {folder} are damaged "
                            f"({short_error(e)}); {fix}") from e
    n, dim = rec.get("count"), meta["embedder"]["dim"]
    if (keys.shape != (n, 2) or keys.dtype != np.uint64 or vectors.shape != (n, dim)
            or vectors.dtype.name != rec.get("dtype")):
        raise OpenbookError(f"{source}: the sentence vectors in {folder} do not match meta.json "
                            f"(keys {keys.shape} {keys.dtype}, vectors {vectors.shape} "
                            f"{vectors.dtype}; expected {n} x {dim} {rec.get('dtype')}); {fix}")
    if verify == "full" and n and np.any(keys[1:, 0] < keys[:-1, 0]):
        raise OpenbookError(f"{source}: {folder / KEYS_FILE} is not sorted; {fix}")
    log.info("sentence vectors %s: %d x %d %s", folder, n, dim, rec.get("dtype"))
    return SentenceVectors(folder, rec, keys, vectors)
