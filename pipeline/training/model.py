"""The model a run trains: the backbone with its multiple-choice head set up to learn.

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
from pathlib import Path

import torch

from pipeline.errors import OpenbookError
from pipeline.index.embedding import resolve_model
from pipeline.readers.pooling import find_pooler, use_mean_pooling, wants_mean_pooling
from pipeline.training.config import TrainConfig

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
                            "Fix: pass a local model folder or a cached hub name") from e
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
