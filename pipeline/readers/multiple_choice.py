"""Score the options of multiple-choice questions with a cross-encoder reader.

:class:`MultipleChoiceReader` wraps any ``AutoModelForMultipleChoice``
checkpoint (BERT, DeBERTa-v2/v3, RoBERTa, Longformer, ...) and its tokenizer.
Questions are encoded with :func:`pipeline.readers.encoding.encode_question` (the same
function training uses: the context is tokenised once per question and shared by its
options), sorted by length so that dynamic padding wastes little, batched by a token
budget (``batch_size x n_options x max_length`` padded tokens per forward pass, so short
questions go many to a batch) through :class:`pipeline.readers.encoding.MultipleChoiceCollator`
and scored under ``torch.inference_mode()``, or by an exported ONNX Runtime / OpenVINO
graph (``backend=``, :mod:`pipeline.readers.backends`); the logits come back in the
original order.

Example::

    >>> reader = MultipleChoiceReader.from_pretrained("path/to/finetuned-reader")  # doctest: +SKIP
    >>> reader.score(["Which is a planet?"], [["Mars", "Sun", "Moon", "Io", "Vega"]],
    ...              ["Mars is the fourth planet from the Sun."]).shape  # doctest: +SKIP
    (1, 5)
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.readers.encoding import MultipleChoiceCollator, encode_question
from pipeline.device import activation_bytes, auto_batch_size, default_dtype, pick_device
from pipeline.metrics import softmax
from pipeline.questions import LETTERS
from pipeline.readers.backends import ReaderRuntime, check_backend
from pipeline.readers.pooling import use_mean_pooling, wants_mean_pooling
from pipeline.readers.record import READER_CONFIG, ReaderError, load_reader_record

log = logging.getLogger(__name__)

__all__ = ["READER_CONFIG", "ReaderError", "MultipleChoiceReader", "default_max_length"]

#: Model types whose position ids start after the padding index (``pad_token_id + 1``).
_PADDING_OFFSET_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet",
    "data2vec-text", "roberta-prelayernorm", "ibert", "luke", "mluke", "markuplm", "ernie_m",
})

_DTYPES = {
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}

_FIX = ("pass a directory written by save_pretrained (config.json, model weights and "
        "tokenizer files of a fine-tuned multiple-choice model) or a Hugging Face hub name")


def _position_limit(config: Any) -> int | None:
    """Longest sequence the model's position embeddings allow, or None if unbounded."""
    n = getattr(config, "max_position_embeddings", None)
    if not n or n <= 0:
        return None
    model_type = getattr(config, "model_type", "")
    if model_type in ("deberta", "deberta-v2") and not getattr(config, "position_biased_input", True):
        return None  # relative positions only (DeBERTa-v3): no hard limit
    if model_type in _PADDING_OFFSET_TYPES:
        n -= (getattr(config, "pad_token_id", None) or 0) + 1
    return int(n)


def default_max_length(tokenizer: Any, config: Any) -> int:
    """``min(512, tokenizer.model_max_length, usable position embeddings)``.

    For RoBERTa-style models (Longformer included) the usable positions are
    ``max_position_embeddings - pad_token_id - 1``; DeBERTa-v3 (relative
    positions only) has no position limit.
    """
    candidates = [512]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max > 0:
        candidates.append(model_max)
    limit = _position_limit(config)
    if limit is not None:
        candidates.append(limit)
    return min(candidates)


def _resolve_dtype(dtype: torch.dtype | str | None, device: str) -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if resolved is None:
        raise ReaderError(f"unknown dtype {dtype!r}. Fix: pass one of float32, float16, bfloat16")
    return resolved


class MultipleChoiceReader:
    """A multiple-choice model plus tokenizer that scores options given retrieved context.

    Attributes:
        name: the model's name or path, for reports.
        max_length: tokens per (context, prompt, option) sequence.
        batch_size: questions per forward pass (each has ``n_options`` sequences).
        device: torch device string.
        global_attention: whether a ``global_attention_mask`` is built (Longformer).
        backend: ``torch``, or the exported runtime that scores (see
            :mod:`pipeline.readers.backends`); ``runtime`` runs it (None on torch).

    Example::

        >>> reader = MultipleChoiceReader.from_pretrained("out/reader", batch_size=4)  # doctest: +SKIP
        >>> reader.probabilities(prompts, options, contexts).shape  # doctest: +SKIP
        (200, 5)
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, max_length: int,
                 batch_size: int = 8, device: str = "cpu"):
        if batch_size < 1:
            raise ReaderError(f"batch_size must be >= 1, got {batch_size}. Fix: pass a positive batch size")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device
        config = model.config
        self.global_attention = getattr(config, "model_type", None) == "longformer"
        self.collator = MultipleChoiceCollator(tokenizer)
        accepted = set(inspect.signature(model.forward).parameters)
        type_vocab = getattr(config, "type_vocab_size", None)
        if type_vocab is not None and type_vocab < 2:
            accepted.discard("token_type_ids")  # segment 1 would be out of range / is unused
        self._input_names = accepted
        self.model.eval()
        self.backend = "torch"
        self.runtime: ReaderRuntime | None = None

    def use_backend(self, backend: str, folder: str | Path, threads: int | None = None) -> None:
        """Score with ``backend`` (see :mod:`pipeline.readers.backends`), exported from the
        model as loaded from ``folder`` (cached by the folder's files)."""
        check_backend(backend, device=self.device, model_type=self.model.config.model_type,
                      dtype=next(self.model.parameters()).dtype)
        if backend == "torch":
            self.backend, self.runtime = "torch", None
            return
        sample = self.collator(self.encode(
            ["Which of these is a planet?", "Why?"], [["Mars", "the Sun", "Io", "a moon", "Vega"]] * 2,
            ["Mars is the fourth planet from the Sun.", ""]))
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids")
                 if k in sample and k in self._input_names]
        self.runtime = ReaderRuntime(self.model, folder, backend, sample, names, threads)
        self.backend = backend

    def describe(self) -> dict:
        """The backend and what it computes in, for reports."""
        if self.runtime is None:
            return {"backend": "torch",
                    "precision": str(next(self.model.parameters()).dtype).removeprefix("torch.")}
        return {"backend": self.backend, "precision": self.runtime.precision,
                "export": str(self.runtime.path)}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        dtype: torch.dtype | str | None = None,
        backend: str = "torch",
    ) -> "MultipleChoiceReader":
        """Load tokenizer and ``AutoModelForMultipleChoice`` from a local directory or the hub.

        Args:
            name_or_path: a directory written by ``save_pretrained`` (loaded
                without network) or a hub name.
            device: ``None`` picks ``"cuda"`` if available, else ``"cpu"``.
            max_length: ``None`` reads ``max_length`` from
                ``openbook_reader.json`` in the directory, else
                :func:`default_max_length`.
            batch_size: questions per forward pass; ``None``: 8 on a CPU, on CUDA as many
                as half the free GPU memory holds (:func:`pipeline.device.auto_batch_size`).
            dtype: ``None``: bfloat16 on GPUs with native bf16, float16 on older ones,
                float32 on a CPU (:func:`pipeline.device.default_dtype`).
            backend: ``torch``, or ``onnx`` / ``openvino`` (``-int8``): a graph exported
                once from the local folder, on the CPU (:mod:`pipeline.readers.backends`).

        Raises:
            ReaderError: the model cannot be found or loaded, or ``max_length``
                exceeds what it supports, or the backend cannot run (the message names
                ``--reader-backend`` and the pip extra); the message names the path.
        """
        from transformers import AutoModelForMultipleChoice, AutoTokenizer

        name = str(name_or_path)
        path = Path(name).expanduser()
        local = path.exists()
        looks_like_path = path.is_absolute() or name.startswith((".", "~")) or name.endswith(("/", "\\"))
        if not local and looks_like_path:
            raise ReaderError(f"{name}: reader model directory not found. Fix: {_FIX}")
        if local and not (path.is_dir() and (path / "config.json").is_file()):
            raise ReaderError(f"{name}: not a model directory (no config.json). Fix: {_FIX}")

        device = pick_device(device)
        torch_dtype = _resolve_dtype(dtype, device)
        check_backend(backend, device=device, dtype=torch_dtype)  # before the slow load
        if backend != "torch" and not local:
            raise ReaderError(f"--reader-backend {backend} exports a local reader folder; {name} "
                              "is not one. Fix: pass the folder, or use --reader-backend torch")
        source = str(path) if local else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            model, info = AutoModelForMultipleChoice.from_pretrained(
                source, local_files_only=local, dtype=torch_dtype, output_loading_info=True)
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise ReaderError(f"{name}: cannot load a multiple-choice reader ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}). Fix: {_FIX}") from e

        if wants_mean_pooling(model.config):  # trained by pipeline.train with --pooling mean
            use_mean_pooling(model)
        missing = list((info or {}).get("missing_keys") or [])
        if missing:
            log.warning("%s: %d weights were not in the checkpoint and are random (%s); "
                        "scores are meaningless unless this is a fine-tuned multiple-choice model",
                        name, len(missing), ", ".join(sorted(missing)[:4]))

        limit = _position_limit(model.config)
        if max_length is None and local:
            record = load_reader_record(path)
            max_length = record.max_length if record is not None else None
            where = f"{path / READER_CONFIG}"
        else:
            where = "max_length"
        if max_length is None:
            max_length = default_max_length(tokenizer, model.config)
        elif limit is not None and max_length > limit:
            raise ReaderError(f"{name}: {where}={max_length} exceeds the {limit} positions the model "
                              f"supports. Fix: pass max_length <= {limit}")

        model.to(device)
        if batch_size is None:
            per_question = activation_bytes(model.config, len(LETTERS), max_length,
                                            torch.finfo(torch_dtype).bits // 8)
            batch_size = auto_batch_size(device, per_question)
        reader = cls(model, tokenizer, name=name, max_length=max_length, batch_size=batch_size,
                     device=device)
        reader.use_backend(backend, path)
        log.info("reader %s (%s): max_length=%d, batch_size=%d, %s on %s%s%s", name,
                 model.config.model_type, reader.max_length, reader.batch_size,
                 str(torch_dtype).removeprefix("torch."), device,
                 f", backend {backend} ({reader.runtime.precision})" if reader.runtime else "",
                 ", global attention on prompt+option" if reader.global_attention else "")
        return reader

    def encode(self, prompts: Sequence[str], options: Sequence[Sequence[str]],
               contexts: Sequence[str], rows: Sequence[int] | None = None) -> list[dict[str, list[list[int]]]]:
        """One :func:`encode_question` feature dict per question (``rows`` default to 1, 2, ...)."""
        n = len(prompts)
        if len(options) != n or len(contexts) != n or (rows is not None and len(rows) != n):
            raise ValueError(f"prompts ({n}), options ({len(options)}), contexts ({len(contexts)})"
                             + (f" and rows ({len(rows)})" if rows is not None else "")
                             + " must have the same length")
        rows = list(rows) if rows is not None else list(range(1, n + 1))
        return [encode_question(self.tokenizer, contexts[i] or "", prompts[i], options[i],
                                self.max_length, row=rows[i], global_attention=self.global_attention)
                for i in range(n)]

    def score(
        self,
        prompts: Sequence[str],
        options: Sequence[Sequence[str]],
        contexts: Sequence[str],
        rows: Sequence[int] | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Logits for every option of every question.

        Args:
            prompts: ``n_questions`` questions.
            options: ``n_questions`` lists of ``n_options`` options each.
            contexts: ``n_questions`` retrieved contexts, best passage first
                (``""`` for none).
            rows: the questions' row numbers, used in warnings (default 1..n).
            progress: show a tqdm bar.

        Returns:
            float32 array of shape ``(n_questions, n_options)``, in input order.
        """
        n = len(prompts)
        if n == 0:
            return np.zeros((0, 0), dtype=np.float32)
        n_options = len(options[0])
        if any(len(o) != n_options for o in options):
            raise ValueError("every question needs the same number of options")
        features = self.encode(prompts, options, contexts, rows)
        out = np.empty((n, n_options), dtype=np.float32)
        self.model.eval()
        batches = self.token_batches(features, n_options)
        with torch.inference_mode():
            for idx in tqdm(batches, disable=not progress, desc="reader", unit="batch"):
                batch = self.collator([features[i] for i in idx])
                if self.runtime is not None:
                    out[idx] = self.runtime({k: v.numpy() for k, v in batch.items()})
                    continue
                inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._input_names}
                out[idx] = self.model(**inputs).logits.float().cpu().numpy()
        return out

    def token_batches(self, features: Sequence[dict], n_options: int) -> list[list[int]]:
        """Question indices per forward pass: sorted by length (longest sequence, then total
        tokens; longest first, so an OOM shows at once) and cut by a padded-token budget of
        ``batch_size x n_options x max_length``, so that short questions go many to a batch.

        >>> r = MultipleChoiceReader.__new__(MultipleChoiceReader)
        >>> r.batch_size, r.max_length = 2, 10
        >>> f = [{"input_ids": [[0] * k] * 5} for k in (10, 3, 10, 4, 2)]
        >>> r.token_batches(f, 5)
        [[0, 2], [3, 1, 4]]
        """
        longest = [max(len(ids) for ids in f["input_ids"]) for f in features]
        total = [sum(len(ids) for ids in f["input_ids"]) for f in features]
        order = sorted(range(len(features)), key=lambda i: (-longest[i], -total[i]))
        budget = self.batch_size * n_options * self.max_length
        batches: list[list[int]] = []
        for i in order:  # the batch's first question is its longest: it sets the padding
            if batches and (len(batches[-1]) + 1) * n_options * longest[batches[-1][0]] <= budget:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def probabilities(
        self,
        prompts: Sequence[str],
        options: Sequence[Sequence[str]],
        contexts: Sequence[str],
        rows: Sequence[int] | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Softmax of :meth:`score` over the options: shape ``(n_questions, n_options)``, rows sum to 1."""
        return softmax(self.score(prompts, options, contexts, rows=rows, progress=progress))
