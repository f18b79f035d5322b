"""The model a run trains: the backbone with its multiple-choice head set up to learn.

:class:`Trainee` is what the loop of :mod:`pipeline.training.loop` needs of either reader
kind (model, tokenizer, reader, optimizer groups, the batch loss, the record entries);
:func:`mc_trainee` builds it for an encoder, :func:`pipeline.training.llm.llm_trainee` for
a causal LM with LoRA adapters. :func:`shown_options` permutes a batch's options (the
label follows the answer) and :func:`make_batch` encodes and collates them for an encoder.
:func:`load_model` loads any ``AutoModelForMultipleChoice`` checkpoint (or the
``minilm``/``mpnet`` aliases) and fixes what a sentence-transformers checkpoint lacks
for a classification head (mean pooling, an identity pooler); :func:`param_groups`
freezes what ``--freeze-*`` asks and splits the parameters into the AdamW groups
(backbone or head, with or without weight decay); :func:`lr_factor` is the learning-rate
schedule (linear warmup, then cosine or linear decay).

Example::

    >>> model, tokenizer, name = load_model("minilm")                 # doctest: +SKIP
    >>> model.config.openbook_pooling                                 # doctest: +SKIP
    'mean-question'
    >>> [round(lr_factor(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.125]
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline.errors import OpenbookError
from pipeline.index.embedding import resolve_model
from pipeline.questions import LETTERS, Question
from pipeline.readers.multiple_choice import MultipleChoiceReader
from pipeline.readers.pooling import find_pooler, use_mean_pooling, wants_mean_pooling
from pipeline.training.config import LAST_DIR, TrainConfig, default_model

log = logging.getLogger(__name__)

#: What ``--pooling auto`` picks for a sentence-transformers (mean-pooling) checkpoint.
AUTO_MEAN = "mean-question"


def sentence_transformers_mean(folder: str) -> bool:
    """True if ``folder`` is a sentence-transformers checkpoint trained with mean pooling."""
    try:
        cfg = json.loads((Path(folder) / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(cfg.get("pooling_mode_mean_tokens"))


def load_model(name_or_path: str, pooling: str = "auto", pooler_init: str = "auto"):
    """``(model, tokenizer, base model name)`` with the head set up to learn.

    Sentence-transformers checkpoints (all-MiniLM-L6-v2, all-mpnet-base-v2) were
    trained with mean pooling: their CLS state and pooler were never trained (the
    pooler is missing or an untouched init, bias exactly 0), and a multiple-choice
    head on them sits at loss ln 5. ``pooling="auto"`` gives such checkpoints the
    mean of the prompt + option token states (``mean-question``, :mod:`pipeline.readers.pooling`;
    a mean over all tokens drowns the option in the shared context at 256 tokens);
    a checkpoint already trained with mean pooling keeps its mode. ``pooler_init="auto"``
    makes a missing or untrained pooler dense the identity (``W = I, b = 0``) so it
    passes the pooled state through instead of noise.
    """
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    name, source = resolve_model(name_or_path)
    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model, info = AutoModelForMultipleChoice.from_pretrained(
            source, local_files_only=local, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise OpenbookError(f"--model {name_or_path}: cannot load a multiple-choice model "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                            "Fix: pass a local model folder or a cached hub name (for a causal "
                            "LM from the hub add --reader-kind llm)") from e
    if pooling == "auto" and not wants_mean_pooling(model.config):
        pooling = AUTO_MEAN if local and sentence_transformers_mean(source) else "cls"
    if wants_mean_pooling(model.config) or pooling != "cls":
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else \
            tokenizer.eos_token_id
        use_mean_pooling(model, None if pooling == "auto" else pooling, sep)
        log.info("pooling: %s of the token states", model.config.openbook_pooling)
    dense = getattr(find_pooler(model), "dense", None)
    missing = any("pooler" in k for k in (info or {}).get("missing_keys") or [])
    if isinstance(dense, torch.nn.Linear) and dense.in_features == dense.out_features and (
            pooler_init == "identity" or (pooler_init == "auto" and (
                missing or dense.bias is None or not dense.bias.detach().any()))):
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.in_features))
            if dense.bias is not None:
                dense.bias.zero_()
        log.info("pooler dense initialised as identity (checkpoint pooler %s)",
                 "missing" if missing else "untrained" if pooler_init == "auto" else "replaced")
    return model, tokenizer, name


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """Freeze as asked; AdamW groups: (backbone | head) x (decay | no decay)."""
    base = model.base_model
    prefix = model.base_model_prefix + "."
    if cfg.freeze_embeddings:
        base.embeddings.requires_grad_(False)
    if cfg.freeze_layers:
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if layers is None or cfg.freeze_layers > len(layers):
            raise OpenbookError(f"--freeze-layers {cfg.freeze_layers}: the model has "
                                f"{len(layers) if layers is not None else 'no'} encoder layers")
        for layer in layers[:cfg.freeze_layers]:
            layer.requires_grad_(False)
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            head = not n.startswith(prefix) or ".pooler." in n
            decay = p.ndim >= 2 and "LayerNorm" not in n and "layer_norm" not in n
            groups.setdefault((head, decay), []).append(p)
    return [{"params": ps, "lr": cfg.head_lr if head else cfg.lr,
             "weight_decay": cfg.weight_decay if decay else 0.0, "head": head}
            for (head, decay), ps in sorted(groups.items())]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine or linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress


# ---------------------------------------------------------------- what the loop trains
#: ``loss(questions, contexts, idx, perms)``: the mean loss of questions ``idx`` shown in
#: the option orders ``perms`` (a scalar tensor to backpropagate).
BatchLoss = Callable[[Sequence[Question], Sequence[str], Sequence[int], np.ndarray], torch.Tensor]


@dataclass
class Trainee:
    """A reader set up to learn: what :func:`pipeline.training.loop.train` needs of either kind.

    ``groups``: AdamW groups (``params``, ``lr``, ``weight_decay``, ``head``); ``record``: the
    entries of ``openbook_reader.json`` that depend on the kind (``max_length``,
    ``base_model``, and for a causal LM ``kind``, ``base_architecture``, ``vocab_size``, ``llm``).
    """

    kind: str
    model: Any
    tokenizer: Any
    reader: Any
    base_name: str
    groups: list[dict]
    loss: BatchLoss
    record: dict


def shown_options(qs: Sequence[Question], idx: Sequence[int], perms: np.ndarray
                  ) -> tuple[list[list[str]], list[int]]:
    """Questions ``idx`` with their options in the order ``perms[i]`` and each label remapped.

    >>> q = Question("1", "?", ("a", "b", "c", "d", "e"), "B", None, 1)
    >>> shown_options([q], [0], np.array([[4, 3, 2, 1, 0]]))
    ([['e', 'd', 'c', 'b', 'a']], [3])
    """
    options = [[qs[i].options[j] for j in perms[i]] for i in idx]
    labels = [int(np.flatnonzero(perms[i] == LETTERS.index(qs[i].answer))[0]) for i in idx]
    return options, labels


def make_batch(reader: MultipleChoiceReader, qs: Sequence[Question], contexts: Sequence[str],
               idx: Sequence[int], perms: np.ndarray) -> dict[str, torch.Tensor]:
    """Encode questions ``idx`` with their options permuted (label remapped), then collate."""
    options, labels = shown_options(qs, idx, perms)
    feats = reader.encode([qs[i].prompt for i in idx], options, [contexts[i] for i in idx],
                          [qs[i].row for i in idx])
    batch = reader.collator([{**f, "label": y} for f, y in zip(feats, labels)])
    return {k: v.to(reader.device) for k, v in batch.items()
            if k in reader._input_names or k == "labels"}


def mc_trainee(cfg: TrainConfig, out: Path, state: dict, device: str) -> Trainee:
    """An ``AutoModelForMultipleChoice`` reader (``OUT/last`` on ``--resume``) set up to learn;
    sets ``cfg.lr`` when None (1e-4 for hidden size <= 512 such as MiniLM, else 2e-5)."""
    model, tokenizer, base_name = load_model(
        str(out / LAST_DIR) if cfg.resume else cfg.model or default_model(), cfg.pooling,
        "keep" if cfg.resume else cfg.pooler_init)
    base_name = state.get("base_model", base_name)
    if cfg.lr is None:  # small backbones (MiniLM) need a larger step than base/large ones
        cfg.lr = 1e-4 if getattr(model.config, "hidden_size", 1024) <= 512 else 2e-5
    model.to(device).train()
    reader = MultipleChoiceReader(model, tokenizer, name=base_name, max_length=cfg.max_length,
                                  batch_size=cfg.eval_batch_size, device=device)
    model.train()

    def loss(qs, contexts, idx, perms):
        return model(**make_batch(reader, qs, contexts, idx, perms)).loss

    return Trainee("mc", model, tokenizer, reader, base_name, param_groups(model, cfg), loss,
                   {"max_length": cfg.max_length, "base_model": base_name})
