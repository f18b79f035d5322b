"""What several benchmarks share: paths, the haystack's document ids, a probability cache, tables.

Imported as ``from benchmarks.common import ...`` by scripts run from the repository
root as modules (``python -m benchmarks.quality``), so ``pipeline`` imports without any
``sys.path`` edit.

>>> source_doc_id("stem-12"), source_doc_id("extra-3"), needle_id("stem_1k", 12)
('stem_1k-12', 'extra_500-3', 'stem_1k-12')
>>> print(markdown([{"a": 1, "b": 0.5}, {"a": 2}], ["a", "b"]))
| a | b |
|---|---|
| 1 | 0.5 |
| 2 |  |
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: The labelled question files, read in place (never copied into the repository).
SHARED = REPO.parent / "shared" / "data"
#: The question files that carry their source passage (``context``), by the id prefix
#: ``benchmarks.shared_split`` gives their questions.
LABELLED = {"stem": "stem_1k", "extra": "extra_500"}

log = logging.getLogger("benchmarks.common")


def needle_id(file_stem: str, row_id: str | int) -> str:
    """Document id of a question's source passage in the haystack corpus
    (``benchmarks.haystack``): ``<file stem>-<row id>``."""
    return f"{file_stem}-{row_id}"


def source_doc_id(split_id: str) -> str:
    """The haystack document id of a ``benchmarks.shared_split`` question (``stem-12`` ->
    ``stem_1k-12``); an id without a known prefix is taken as ``<file stem>-<row id>``."""
    tag, _, num = split_id.partition("-")
    return needle_id(LABELLED.get(tag, tag), num)


def cached_probabilities(cache: str | None, reader: str, questions_csv: str, contexts: list[str],
                         compute: Callable[[], np.ndarray],
                         max_length: int | None = None) -> np.ndarray:
    """A reader's probabilities ``(n, 5)``, kept in ``cache`` keyed by its weights and inputs.

    ``compute()`` scores when there is no ``cache`` or nothing kept under the key: the
    reader folder, its weights' size and mtime, the question file's text, the contexts
    and ``max_length`` (so retraining, other questions or other contexts score again)."""
    if not cache:
        return compute()
    weights = Path(reader) / "model.safetensors"
    stat = weights.stat() if weights.exists() else None
    inputs = [str(Path(reader).resolve()), stat and [stat.st_size, stat.st_mtime_ns],
              Path(questions_csv).read_text(), contexts]
    key = hashlib.sha1(json.dumps(inputs + ([max_length] if max_length else [])).encode()).hexdigest()
    path = Path(cache) / f"{Path(reader).name}-{key[:16]}.npy"
    if path.exists():
        log.info("%s: probabilities from %s", reader, path)
        return np.load(path)
    p = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, p)
    return p


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the hardware line of a benchmark."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def markdown(rows: list[dict], cols: list[str]) -> str:
    """``rows`` as a Markdown table of the columns ``cols`` (a missing cell is empty)."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def clustered(n: int, centres: np.ndarray, rng, noise: float = 0.6) -> np.ndarray:
    """``(n, dim)`` float32 unit vectors, each one of ``centres`` (drawn with ``rng``) plus
    Gaussian ``noise``: the synthetic vectors of the index benchmarks (many near-ties, hard
    for PQ)."""
    x = centres[rng.integers(0, len(centres), n)] \
        + noise * rng.standard_normal((n, centres.shape[1])).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_vectors(n: int, n_queries: int, dim: int = 384, *,
                      query_seed: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(database, queries, description)``: :func:`clustered` vectors around ``n // 500``
    centres (at least 16), seed 0; the queries continue the same random stream, or start
    their own at ``query_seed``."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(16, n // 500), dim)).astype(np.float32)
    db = clustered(n, centres, rng)
    q = clustered(n_queries, centres,
                  rng if query_seed is None else np.random.default_rng(query_seed))
    return db, q, f"{n:,} synthetic clustered {dim}-d unit vectors, {n_queries:,} queries"
