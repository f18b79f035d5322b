"""The reader record: ``openbook_reader.json`` in a reader folder, read and checked in one place.

``pipeline.train`` writes it next to the weights (``max_length``, ``base_model``,
``retrieval``, ``training``, ``validation``, ``best``, ...); a reader fine-tuned
elsewhere may carry one with only ``{"max_length": 384}``. Its readers:

* :meth:`MultipleChoiceReader.from_pretrained <pipeline.readers.multiple_choice.MultipleChoiceReader.from_pretrained>`
  takes :attr:`ReaderRecord.max_length`;
* :func:`pipeline.retrieval.setup.reader_retrieval` (``predict``, ``evaluate``) takes the
  ``retrieval`` settings;
* :func:`pipeline.training.stacker.restack` (``pipeline.stack``) takes the ``training`` config.

:func:`load_reader_record` reads the file; each key is checked when it is read, and a bad
file or key raises :class:`ReaderError` naming both.

Example::

    >>> record = load_reader_record("readers/minilm")       # doctest: +SKIP
    >>> record.max_length, record.section("retrieval")["top_k"]  # doctest: +SKIP
    (256, 5)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import OpenbookError

__all__ = ["READER_CONFIG", "ReaderError", "ReaderRecord", "load_reader_record"]

#: Optional file in a reader directory; ``{"max_length": 384}`` fixes the length used in training.
READER_CONFIG = "openbook_reader.json"


class ReaderError(OpenbookError):
    """The reader model cannot be loaded or configured as asked; the message names the path."""


@dataclass(frozen=True)
class ReaderRecord:
    """The JSON object of one ``openbook_reader.json`` (``path``), read by :func:`load_reader_record`."""

    path: Path
    data: dict

    @property
    def max_length(self) -> int | None:
        """Tokens per sequence the reader was trained with, or None when not recorded."""
        value = self.data.get("max_length")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ReaderError(f"{self.path}: max_length must be a positive integer, got {value!r}. "
                              "Fix: write the max_length the reader was trained with")
        return value

    def section(self, key: str) -> dict:
        """The object under ``key`` (``retrieval``, ``training``); ``{}`` when absent or empty."""
        value = self.data.get(key)
        if not value:
            return {}
        if not isinstance(value, dict):
            raise ReaderError(f"{self.path}: {key} must be a JSON object, got {value!r}. "
                              f"Fix: delete the {key!r} entry, or train the reader again with "
                              "pipeline.train")
        return value


def load_reader_record(directory: str | Path) -> ReaderRecord | None:
    """The record in ``directory/openbook_reader.json``, or None if there is no such file.

    Raises :class:`ReaderError` naming the file when it cannot be read or is not a JSON object.
    """
    path = Path(directory).expanduser() / READER_CONFIG
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReaderError(f"{path}: cannot read reader settings ({e}). "
                          f"Fix: write valid JSON such as {{\"max_length\": 512}} or delete the file") from e
    if not isinstance(data, dict):
        raise ReaderError(f"{path}: reader settings must be a JSON object, got "
                          f"{type(data).__name__}. Fix: write valid JSON such as "
                          "{\"max_length\": 512} or delete the file")
    return ReaderRecord(path, data)
