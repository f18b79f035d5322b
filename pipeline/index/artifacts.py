"""Checks of what an index's ``meta.json`` says before it is believed: the one home.

``meta.json`` is not checksummed (the build rewrites it), so every field that is read is
validated here, and a damaged or hostile one is a one-line
:class:`~pipeline.errors.OpenbookError` naming the file and key:

* :func:`meta_value`: one field (``"embedder.dim"``) of the right type, or an error;
* :func:`member`: a ``files`` key as a path, accepted only inside the index directory
  (no absolute path, no ``..``, no symlink out of it) and only as a regular file, so
  ``{"files": {"/dev/zero": ...}}`` can neither make a check read outside the index nor
  hang it;
* :func:`check_files`: the ``files`` table (``{name: {"bytes", "sha256"}}``) against the
  files, by size (``verify="size"``) or sha256 (``"full"``); without a table, ``size`` and
  ``full`` refuse the index instead of silently checking nothing;
* :func:`check_bm25_model`: loaded BM25 arrays that are the right size but wrong content.

Example::

    >>> meta_value({"embedder": {"dim": 384}}, "embedder.dim", int, source="i", fix="rebuild")
    384
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from pipeline.errors import OpenbookError
from pipeline.fileio import sha256_file

META_FILE = "meta.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "an object",
               float: "a number"}


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


def meta_value(meta, key: str, kind, *, source: str, fix: str, optional: bool = False,
               minimum: int | None = None):
    """``meta[a][b]`` for ``key="a.b"``, checked to be of ``kind`` (``bool`` is never an
    ``int``) and, for numbers, at least ``minimum``; ``None`` when missing and ``optional``.
    ``source`` names the index (``--index DIR``), ``fix`` says what to do."""
    node = meta
    for k in key.split("."):
        node = node.get(k) if isinstance(node, dict) else None
    if node is None:
        if optional:
            return None
        raise OpenbookError(f"{source}: {META_FILE} has no {key!r} (it was edited or damaged); "
                            f"{fix}")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(node, kinds) and not (isinstance(node, bool) and bool not in kinds)
    if ok and minimum is not None and isinstance(node, (int, float)) and node < minimum:
        ok = False
    if not ok:
        want = _kind_name(kind) + (f" >= {minimum}" if minimum is not None else "")
        raise OpenbookError(f"{source}: {META_FILE} key {key!r} is {str(node)[:60]!r}, not "
                            f"{want} (it was edited or damaged); {fix}")
    return node


def member(folder: Path, name, *, source: str, fix: str, key: str = "files") -> Path:
    """``folder / name`` for a name listed in ``meta.json``, refused unless it stays inside
    ``folder`` (relative, no ``..``, no symlink out) and, if it exists, is a regular file."""
    bad = None
    if not isinstance(name, str) or not name or "\0" in name:
        bad = "is not a file name"
    elif os.path.isabs(name) or name.startswith("~") or ".." in Path(name).parts:
        bad = "is outside the index directory"
    path = folder / name if bad is None else None
    if path is not None:
        root = os.path.realpath(folder)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            bad = "is outside the index directory"
        elif os.path.lexists(path) and not stat.S_ISREG(os.stat(real).st_mode):
            bad = "is not a regular file"
    if bad is not None:
        raise OpenbookError(f"{source}: {META_FILE} {key} names {str(name)[:80]!r}, which {bad} "
                            f"(only files inside the index are accepted; meta.json was edited "
                            f"or damaged); {fix}")
    return path


def check_files(folder: Path, meta: dict, verify: str, *, source: str, fix: str,
                key: str = "files", progress: bool = False) -> dict[str, Path]:
    """Check ``meta[key]`` (``"files"`` or ``"bm25.files"``) against the files in ``folder``:
    each exists and is a regular file inside ``folder``; with ``verify`` ``"size"`` its size,
    with ``"full"`` its size and sha256. Returns ``{name: path}``."""
    table = meta_value(meta, key, dict, source=source, fix=fix, optional=True)
    if table is None:
        if verify == "none":
            return {}
        raise OpenbookError(f"{source}: {META_FILE} has no {key!r} table, so its files cannot be "
                            f"checked (--verify-index {verify}); {fix} (or pass --verify-index "
                            "none to use it unchecked)")
    paths = {}
    for name, rec in table.items():
        path = member(folder, name, source=source, fix=fix, key=key)
        where = f"{key}.{name}"
        size = rec.get("bytes") if isinstance(rec, dict) else None
        digest = rec.get("sha256") if isinstance(rec, dict) else None
        if verify != "none" and not (isinstance(size, int) and not isinstance(size, bool)
                                     and size >= 0):
            raise OpenbookError(f"{source}: {META_FILE} key '{where}.bytes' is "
                                f"{str(size)[:60]!r}, not a byte count (it was edited or "
                                f"damaged); {fix}")
        if verify == "full" and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise OpenbookError(f"{source}: {META_FILE} key '{where}.sha256' is "
                                f"{str(digest)[:70]!r}, not a sha256 (it was edited or "
                                f"damaged); {fix}")
        if not path.exists():
            raise OpenbookError(f"{source}: {name} is missing; {fix}")
        if verify in ("size", "full") and path.stat().st_size != size:
            raise OpenbookError(f"{source}: {name} has {path.stat().st_size} bytes, meta.json "
                                f"says {size}: the file is damaged; {fix}")
        if verify == "full" and sha256_file(path, progress=progress) != digest:
            raise OpenbookError(f"{source}: {name} fails its sha256 check: the file is "
                                f"damaged; {fix}")
        paths[name] = path
    return paths


def short_error(e: BaseException, limit: int = 160) -> str:
    text = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return text[:limit] + ("..." if len(text) > limit else "")


def check_bm25_model(model, *, full: bool) -> None:
    """The loaded BM25 arrays are a consistent CSC matrix (lengths and ends always; with
    ``full`` every row id and score too), its vocabulary maps terms to column ids."""
    sc, vocab = model.scores, model.vocab_dict
    if not isinstance(vocab, dict) or not all(type(v) is int for v in vocab.values()):
        raise ValueError("vocab.index.json is not a map of terms to ids")
    data, indices, indptr = sc["data"], sc["indices"], sc["indptr"]
    n_docs = int(sc["num_docs"])
    if data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1 or len(data) != len(indices) \
            or len(indptr) < 1 or int(indptr[0]) != 0 or int(indptr[-1]) != len(data):
        raise ValueError("data/indices/indptr do not form one matrix")
    if vocab and (min(vocab.values()) < 0 or max(vocab.values()) >= len(indptr) - 1):
        raise ValueError("vocab.index.json has term ids outside the matrix")
    if full and len(data) and (int(indices.min()) < 0 or int(indices.max()) >= n_docs
                               or not np.isfinite(data).all() or np.any(np.diff(indptr) < 0)):
        raise ValueError("the matrix holds passage rows or scores out of range")
