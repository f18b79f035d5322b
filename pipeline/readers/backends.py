"""ONNX Runtime / OpenVINO backends for the multiple-choice reader (CPU speed-ups).

``MultipleChoiceReader.from_pretrained(path, backend="onnx")`` (``predict
--reader-backend onnx``) exports the loaded model, offline, once, from the local
reader folder: the encoder, its pooling (the mean-pooling hooks of
:mod:`pipeline.readers.pooling` included) and the classifier head are traced with
``torch.onnx.export`` into one graph taking exactly the tensors
:meth:`MultipleChoiceReader.encode` + :class:`MultipleChoiceCollator` produce::

    input_ids, attention_mask[, token_type_ids]   int64 (batch, n_options, seq)
        -> logits                                   float32 (batch, n_options)

with batch, options and sequence dynamic. ``onnx`` runs it with ONNX Runtime (fp32);
``openvino`` with OpenVINO, which computes in **bf16** by itself on CPUs with AMX or
AVX512-BF16 and fp32 elsewhere (``openvino-fp32`` keeps fp32 everywhere;
``openvino-recheck`` runs bf16, then fp32 on near ties: :mod:`pipeline.answering.recheck`); ``*-int8``
adds ONNX Runtime's dynamic int8 quantisation of the weight MatMuls (faster, but the
scores move: see docs/throughput.md for the quality cost). Longformer (windowed attention padded in
Python) is not exported: use ``torch`` for it.

Exports are cached like the embedder's (:func:`pipeline.index.export.export_dir`:
``$OPENBOOK_EXPORT_DIR`` or ``models_dir()/exported``, a folder keyed by the reader
folder's config, tokenizer files and weights), written whole or not at all; the
reader folder itself is never written.

Example::

    >>> split_backend("openvino-int8")
    ('openvino', 'int8')
    >>> reader = MultipleChoiceReader.from_pretrained("readers/minilm", backend="onnx")  # doctest: +SKIP
    >>> reader.score(prompts, options, contexts).shape                                   # doctest: +SKIP
    (400, 5)
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import write_dir_atomic
from pipeline.index.export import OPSET, Runner, _quantize_int8, export_dir, require
from pipeline.readers.record import ReaderError

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "RECHECK", "split_backend", "check_backend", "ReaderRuntime"]

#: ``--reader-backend`` choices.
#: bf16 OpenVINO, near ties scored again with openvino-fp32 (pipeline.answering.recheck).
RECHECK = "openvino-recheck"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-fp32", "openvino-int8", RECHECK)
#: Bump when the exported reader graph changes, so old caches are not reused.
READER_EXPORT_VERSION = 1
#: Model types whose forward cannot be traced into a graph with dynamic shapes.
UNSUPPORTED = frozenset({"longformer"})


def split_backend(backend: str) -> tuple[str, str | None]:
    """``"onnx-int8"`` -> ``("onnx", "int8")``; ``"openvino"`` -> ``("openvino", None)``
    (``"openvino-fp32"`` is fp32 compute, no quantisation: ``("openvino", None)``)."""
    runtime, _, quantize = str(backend).partition("-")
    return runtime, (quantize if quantize == "int8" else None)


def check_backend(backend: str, *, device: str = "cpu", model_type: str | None = None,
                  dtype: Any = None) -> None:
    """Refuse, in one line naming ``--reader-backend`` and the fix, what cannot run.

    Unknown names, a GPU device, a non-fp32 dtype, a Longformer, or a missing optional
    package (the message names the pip extra: ``openbook[onnx]`` / ``openbook[openvino]``).
    """
    if backend not in BACKENDS:
        raise ReaderError(f"--reader-backend {backend!r} is not one of {', '.join(BACKENDS)}. "
                          "Fix: pass --reader-backend torch, onnx or openvino")
    if backend == "torch":
        return
    if not str(device).startswith("cpu"):
        raise ReaderError(f"--reader-backend {backend} runs on the CPU only. Fix: pass --device "
                          "cpu, or --reader-backend torch on the GPU")
    if dtype is not None and "float32" not in str(dtype) and str(dtype) not in ("fp32", "float"):
        raise ReaderError(f"--reader-backend {backend} exports the fp32 model (dtype {dtype}). "
                          "Fix: leave the dtype unset, or use --reader-backend torch")
    if model_type in UNSUPPORTED:
        raise ReaderError(f"--reader-backend {backend}: a {model_type} reader cannot be exported "
                          "(windowed attention). Fix: use --reader-backend torch")
    runtime, quantize = split_backend(backend)
    require(runtime, quantize, flags=f"--reader-backend {backend}", error=ReaderError)


def _logits_module(model: Any, names: list[str]):
    """``model`` as a module of positional tensors (``names`` order) -> logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors))).logits

    return Logits().eval()


def _export(model: Any, sample: dict, names: list[str], quantize: str | None, out: Path,
            source: str) -> None:
    """Write ``reader.onnx`` (and ``reader_int8.onnx``) + ``export.json`` into ``out``."""
    import torch

    axes = {k: {0: "batch", 1: "options", 2: "seq"} for k in names} | \
        {"logits": {0: "batch", 1: "options"}}
    args = tuple(sample[k].to("cpu") for k in names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes
        torch.onnx.export(_logits_module(model, names), args, str(out / "reader.onnx"),
                          dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET)
    if quantize == "int8":
        _quantize_int8(out / "reader.onnx", out / "reader_int8.onnx")
    (out / "export.json").write_text(json.dumps(
        {"reader": source, "model_type": model.config.model_type, "inputs": names,
         "output": "logits (batch, n_options)", "export_version": READER_EXPORT_VERSION,
         "opset": OPSET, "int8": quantize == "int8"}, indent=2))


def ensure_reader_export(model: Any, folder: str | Path, sample: dict, names: list[str],
                         quantize: str | None) -> Path:
    """Path of the cached ``.onnx`` of the reader in ``folder``, exported once if needed."""
    suffix = f".mc-reader-v{READER_EXPORT_VERSION}" + ("-int8" if quantize else "")
    cache = export_dir(str(folder), Path(folder).name + suffix)
    target = cache / ("reader_int8.onnx" if quantize == "int8" else "reader.onnx")
    if target.exists():
        return target
    log.info("exporting reader %s to ONNX (once) -> %s", folder, cache)
    try:
        write_dir_atomic(cache, lambda tmp: _export(model, sample, names, quantize, tmp,
                                                    str(folder)))
    except OSError as e:
        raise ReaderError(f"cannot write the exported reader to {cache} ({e.strerror or e}). Fix: "
                          "set $OPENBOOK_MODELS (or $OPENBOOK_EXPORT_DIR) to a writable folder") from e
    return target


class ReaderRuntime:
    """An exported reader run by ONNX Runtime or OpenVINO on the CPU.

    ``runtime(batch)`` with the collator's int64 ``(batch, n_options, seq)`` tensors (or
    arrays) by name -> ``(batch, n_options)`` float32 logits. ``precision`` says what the
    runtime computes in (``float32``, or ``bfloat16`` for OpenVINO on AMX/AVX512-BF16).

    Example::

        >>> rt = ReaderRuntime(model, "readers/minilm", "openvino", sample, names)  # doctest: +SKIP
        >>> rt(batch).shape                                                          # doctest: +SKIP
        (8, 5)
    """

    def __init__(self, model: Any, folder: str | Path, backend: str, sample: dict,
                 names: list[str], threads: int | None = None) -> None:
        if backend == RECHECK:  # two runtimes, driven by pipeline.answering.recheck
            raise ReaderError(f"--reader-backend {RECHECK} is run by predict/evaluate as "
                              "openvino, then openvino-fp32; load a reader with one of those")
        self.backend = backend
        runtime, quantize = split_backend(backend)
        self.path = ensure_reader_export(model, folder, sample, names, quantize)
        self.runner = Runner(self.path, runtime, threads,
                             precision="f32" if backend == "openvino-fp32" else None)
        self.names = [n for n in names if n in self.runner.inputs]
        self.precision = "int8 weights" if quantize else self.runner.precision

    def __call__(self, batch: dict) -> np.ndarray:
        feeds = {k: np.asarray(batch[k]) for k in self.names}
        return self.runner(feeds)
