"""Which kind of reader a model is, and loading either kind through one call.

Two kinds: ``"mc"`` (:class:`~pipeline.readers.multiple_choice.MultipleChoiceReader`, an
``AutoModelForMultipleChoice`` encoder) and ``"llm"``
(:class:`~pipeline.readers.llm.CausalLMReader`, a causal LM or a LoRA adapter on one).
``kind="auto"`` looks at a local folder: ``config.json`` naming a ``*ForCausalLM``
architecture, an ``adapter_config.json`` with ``task_type`` ``CAUSAL_LM``, or an
``openbook_reader.json`` with ``"kind": "llm"`` make it ``"llm"``; anything else, and a
hub name that is not on disk, is ``"mc"`` (say ``kind="llm"``, ``--reader-kind llm``, for
a causal LM from the hub).

Example::

    >>> reader_kind("no/such-hub-model")
    'mc'
    >>> reader = load_reader("models/mistral-7b", tta=5)  # doctest: +SKIP
    >>> type(reader).__name__                             # doctest: +SKIP
    'CausalLMReader'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.device import CPU_BATCH
from pipeline.readers.record import ReaderError, load_reader_record

log = logging.getLogger(__name__)

__all__ = ["KINDS", "reader_kind", "load_reader"]

KINDS = ("auto", "mc", "llm")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def reader_kind(name_or_path: str | Path, kind: str = "auto") -> str:
    """``"mc"`` or ``"llm"`` for a reader folder or hub name (see the module docstring).

    Raises ReaderError naming ``--reader-kind`` for a kind other than auto, mc, llm.
    """
    if kind not in KINDS:
        raise ReaderError(f"unknown reader kind {kind!r}. Fix: pass --reader-kind "
                          f"{', '.join(KINDS)}")
    if kind != "auto":
        return kind
    path = Path(str(name_or_path)).expanduser()
    if not path.is_dir():
        return "mc"
    from pipeline.readers.llm_loading import ADAPTER_CONFIG, is_causal_lm_config

    if is_causal_lm_config(_json(path / "config.json").get("architectures")):
        return "llm"
    if str(_json(path / ADAPTER_CONFIG).get("task_type", "")).upper() == "CAUSAL_LM":
        return "llm"
    record = load_reader_record(path)
    if record is not None and record.data.get("kind") == "llm":
        return "llm"
    return "mc"


def load_reader(name_or_path: str | Path, *, kind: str = "auto", device: str | None = None,
                max_length: int | None = None, batch_size: int | None = None, dtype: Any = None,
                backend: str = "torch", **llm_options: Any):
    """A :class:`MultipleChoiceReader` or :class:`CausalLMReader` for ``name_or_path``.

    ``llm_options`` (``scoring``, ``per_option``, ``tta``, ``template``,
    ``use_chat_template``, ``device_map``, ``max_memory``, ``offload_folder``,
    ``load_in_4bit``, ``load_in_8bit``) go to :meth:`CausalLMReader.from_pretrained`; those
    that are None or False are dropped, and an encoder reader ignores the rest with a
    WARNING (so one set of CLI flags can serve an ensemble of both kinds). ``backend``
    (``--reader-backend``: torch, onnx, openvino, ``-int8``) applies to encoder readers; a
    causal LM runs on torch whatever it says (with a WARNING).
    """
    resolved = reader_kind(name_or_path, kind)
    options = {k: v for k, v in llm_options.items() if v is not None and v is not False}
    if resolved == "llm":
        from pipeline.readers.llm import CausalLMReader

        if backend != "torch":
            log.warning("%s is a causal LM: --reader-backend %s applies to multiple-choice "
                        "readers only; it runs on torch", name_or_path, backend)
        return CausalLMReader.from_pretrained(name_or_path, device=device, max_length=max_length,
                                              batch_size=batch_size or CPU_BATCH, dtype=dtype,
                                              **options)
    from pipeline.readers.multiple_choice import MultipleChoiceReader

    if options:
        log.warning("%s is a multiple-choice (encoder) reader: the causal-LM options %s do not "
                    "apply to it (pass --reader-kind llm if it is a causal LM)", name_or_path,
                    ", ".join(sorted(options)))
    return MultipleChoiceReader.from_pretrained(name_or_path, device=device, max_length=max_length,
                                                batch_size=batch_size, dtype=dtype, backend=backend)
