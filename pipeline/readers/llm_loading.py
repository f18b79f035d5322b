"""Load a causal LM (or base model + peft LoRA adapter) for :class:`~pipeline.readers.llm.CausalLMReader`.

:func:`load_causal_lm` checks the folder (``config.json`` naming a ``*ForCausalLM``, or
``adapter_config.json``), finds an adapter's base (``openbook_reader.json``
``base_model``, else the adapter's ``base_model_name_or_path``) and refuses one whose
architecture or vocabulary differs from the record's ``base_architecture`` /
``vocab_size``; then loads tokenizer and model with accelerate's big-model options
(``device_map``, ``max_memory``, ``offload_folder``) or bitsandbytes 4/8-bit on CUDA.
It writes no layer loader of its own: everything goes to ``from_pretrained``.

Example::

    >>> lm = load_causal_lm("models/mistral-7b", device_map="auto",
    ...                     offload_folder="/tmp/offload")   # doctest: +SKIP
    >>> lm.info["model_type"], lm.device                     # doctest: +SKIP
    ('mistral', 'cuda:0')
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from pipeline.device import default_dtype as device_dtype, pick_device
from pipeline.readers.multiple_choice import _resolve_dtype
from pipeline.readers.record import READER_CONFIG, ReaderError, ReaderRecord, load_reader_record

__all__ = ["ADAPTER_CONFIG", "LoadedLM", "load_causal_lm", "is_causal_lm_config",
           "default_llm_max_length", "default_dtype", "quantization_config"]

ADAPTER_CONFIG = "adapter_config.json"
FIX = ("pass a directory written by save_pretrained holding a causal LM (config.json naming a "
       "*ForCausalLM architecture) or a peft adapter (adapter_config.json), or a hub name")


def is_causal_lm_config(architectures: Sequence[str] | None) -> bool:
    """Whether a config's ``architectures`` names a ``*ForCausalLM`` class."""
    return any(str(a).endswith("ForCausalLM") for a in (architectures or ()))


def default_llm_max_length(tokenizer: Any, config: Any) -> int:
    """``min(1024, tokenizer.model_max_length, config.max_position_embeddings)``."""
    candidates = [1024]
    for n in (getattr(tokenizer, "model_max_length", None),
              getattr(config, "max_position_embeddings", None)):
        if isinstance(n, int) and 0 < n:
            candidates.append(n)
    return min(candidates)


def default_dtype(dtype: torch.dtype | str | None, device: str) -> torch.dtype:
    """``dtype`` if given; else :func:`pipeline.device.default_dtype` (bf16 on GPUs with native
    bf16, fp16 on older ones, fp32 on a CPU)."""
    if dtype is not None:
        return _resolve_dtype(dtype, device)
    return device_dtype(device)


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, device: str, dtype: torch.dtype):
    """A ``BitsAndBytesConfig`` for the flags, None without them; ReaderError naming the flag when impossible."""
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        raise ReaderError("--load-in-4bit and --load-in-8bit both given. Fix: pass only one")
    flag = "--load-in-4bit" if load_in_4bit else "--load-in-8bit"
    if not (torch.cuda.is_available() and device.startswith("cuda")):
        raise ReaderError(f"{flag} needs a CUDA GPU (bitsandbytes), but the reader runs on {device}"
                          f"{'' if torch.cuda.is_available() else ' and torch sees no GPU'}. Fix: "
                          f"drop {flag} (on CPU use device_map with offload_folder), or run on a GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ReaderError(f"{flag} needs the bitsandbytes package, which is not installed. "
                          "Fix: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _looks_like_path(name: str) -> bool:
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.endswith(("/", "\\"))


def _adapter_base(path: Path, data: dict) -> str:
    try:
        adapter_cfg = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReaderError(f"{path / ADAPTER_CONFIG}: cannot read ({e}). Fix: save the adapter "
                          "again with save_pretrained") from e
    base = data.get("base_model") or adapter_cfg.get("base_model_name_or_path")
    fix = (f"Fix: put the base model there, or write its directory or hub name as "
           f"\"base_model\" in {path / READER_CONFIG}")
    if not base:
        raise ReaderError(f"{path}: the adapter names no base model. {fix}")
    if _looks_like_path(str(base)) and not Path(str(base)).expanduser().exists():
        raise ReaderError(f"{path}: the adapter's base model {base} is missing. {fix}")
    return str(base)


def _check_base(name: str, base: str, archs: list, config: Any, data: dict) -> None:
    want_arch, want_vocab = data.get("base_architecture"), data.get("vocab_size")
    fix = f"Fix: point \"base_model\" in {Path(name) / READER_CONFIG} at the model the adapter was trained on"
    if want_arch and archs and want_arch not in archs:
        raise ReaderError(f"{name}: the adapter was trained on a {want_arch} but the base {base} "
                          f"is a {archs[0]}. {fix}")
    vocab = getattr(config, "vocab_size", None)
    if want_vocab is not None and vocab is not None and int(want_vocab) != int(vocab):
        raise ReaderError(f"{name}: the adapter was trained with a vocabulary of {want_vocab} "
                          f"tokens but the base {base} has {vocab}. {fix}")


@dataclass
class LoadedLM:
    """What :func:`load_causal_lm` returns; ``device`` is where inputs go, ``info`` is for reports."""

    model: Any
    tokenizer: Any
    config: Any
    record: ReaderRecord | None
    device: str
    info: dict


def load_causal_lm(
    name_or_path: str | Path,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> LoadedLM:
    """Tokenizer + ``AutoModelForCausalLM`` (+ ``PeftModel`` for an adapter folder), eval mode.

    Without ``device_map`` the model is moved to ``device`` (``None``: cuda if available);
    with it accelerate places (and offloads) the layers. 4/8-bit need CUDA and bitsandbytes.

    Raises:
        ReaderError: missing folder, not a causal LM, missing or mismatched base, 4/8-bit
            without CUDA or bitsandbytes, a load failure; the message names path and fix.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    path = Path(name).expanduser()
    local = path.exists()
    if not local and _looks_like_path(name):
        raise ReaderError(f"{name}: reader model directory not found. Fix: {FIX}")
    adapter = local and (path / ADAPTER_CONFIG).is_file()
    if local and not (path.is_dir() and (adapter or (path / "config.json").is_file())):
        raise ReaderError(f"{name}: not a model directory (no config.json or "
                          f"{ADAPTER_CONFIG}). Fix: {FIX}")
    record = load_reader_record(path) if local else None
    data = record.data if record is not None else {}
    base = _adapter_base(path, data) if adapter else (str(path) if local else name)
    base_local = Path(base).expanduser().exists()
    try:
        config = AutoConfig.from_pretrained(base, local_files_only=base_local)
    except (OSError, ValueError, KeyError) as e:
        raise ReaderError(f"{base}: cannot read the model config ({_first_line(e)}). Fix: {FIX}") from e
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not is_causal_lm_config(archs):
        raise ReaderError(f"{base}: not a causal language model (architectures {archs}). Fix: "
                          "use it as an encoder reader (--reader-kind mc) or pass a *ForCausalLM model")
    if adapter:
        _check_base(name, base, archs, config, data)

    device = pick_device(device)
    torch_dtype = default_dtype(dtype, device)
    quant = quantization_config(load_in_4bit, load_in_8bit, device, torch_dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": base_local}
    if quant is not None:
        kwargs["quantization_config"] = quant
        device_map = device_map or {"": device}
    if device_map is not None:
        kwargs.update(device_map=device_map, max_memory=max_memory,
                      offload_folder=str(offload_folder) if offload_folder else None)
    elif max_memory or offload_folder:
        raise ReaderError("max_memory / offload_folder need a device_map. Fix: pass "
                          "device_map='auto' as well")
    has_tok = local and any((path / f).is_file()
                            for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
    tok_source = str(path) if has_tok or not adapter else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            tok_source, local_files_only=Path(tok_source).expanduser().exists())
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        raise ReaderError(f"{name}: cannot load a causal-LM reader ({_first_line(e)}). Fix: {FIX}") from e
    if device_map is None:
        model.to(device)
    else:
        emb = model.get_input_embeddings().weight.device
        device = "cpu" if emb.type == "meta" else str(emb)  # offloaded: accelerate's hooks move inputs
    info = {"model_type": getattr(config, "model_type", None), "adapter": adapter,
            "base_model": base if adapter else None, "dtype": str(torch_dtype).removeprefix("torch."),
            "quantization": "4bit" if load_in_4bit else "8bit" if load_in_8bit else None,
            "device_map": device_map if isinstance(device_map, (str, type(None))) else "custom"}
    return LoadedLM(model.eval(), tokenizer, config, record, device, info)
