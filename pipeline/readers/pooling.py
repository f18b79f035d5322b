"""Mean pooling for ``AutoModelForMultipleChoice`` models, kept in the standard checkpoint format.

Sentence-transformers checkpoints (all-MiniLM-L6-v2, all-mpnet-base-v2) were
trained to mean-pool their token states; their CLS state and pooler were never
trained. :func:`use_mean_pooling` makes the model's own pooler (dense +
activation) read an attention-masked mean of the token states (all of them, or
only the prompt + option ones) instead of the first token's. No module is
replaced, so parameter names stay those of the stock class: the model saves with
``save_pretrained`` and loads with ``AutoModelForMultipleChoice``;
``config.openbook_pooling`` (saved in ``config.json``) tells :class:`pipeline.readers.multiple_choice.MultipleChoiceReader` to call
:func:`use_mean_pooling` again after loading.

>>> from transformers import BertConfig, BertForMultipleChoice
>>> m = use_mean_pooling(BertForMultipleChoice(BertConfig(hidden_size=8, num_hidden_layers=1,
...     num_attention_heads=1, intermediate_size=8, vocab_size=50)))
>>> m.config.openbook_pooling
'mean'
"""

from __future__ import annotations

from typing import Any

import torch

CONFIG_KEY = "openbook_pooling"
SEP_KEY = "openbook_pooling_sep_token_id"


def find_pooler(model: Any) -> torch.nn.Module | None:
    """The module that turns token states into one vector (BERT/RoBERTa/MPNet/Longformer: in the
    base model; DeBERTa: on the multiple-choice model), or None."""
    for owner in (model.base_model, model):
        pooler = getattr(owner, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            return pooler
    return None


MODES = ("mean", "mean-question")


def use_mean_pooling(model: Any, mode: str | None = None, sep_token_id: int | None = None) -> Any:
    """Make ``model``'s pooler read a masked mean of the token states; return ``model``.

    ``mode="mean"`` averages every attended token; ``"mean-question"`` only the
    tokens after the first ``sep_token_id`` (the prompt and the option: the part
    that differs between the options, where a mean over a long shared context
    would drown it). ``None`` reads the mode (and separator) saved in the config.
    """
    mode = mode or getattr(model.config, CONFIG_KEY, None) or "mean"
    sep = sep_token_id if sep_token_id is not None else getattr(model.config, SEP_KEY, None)
    if mode not in MODES:
        raise ValueError(f"unknown pooling {mode!r}; expected one of {MODES}")
    if mode == "mean-question" and sep is None:
        raise ValueError("pooling 'mean-question' needs the tokenizer's sep_token_id")
    pooler = find_pooler(model)
    if pooler is None:
        raise ValueError(f"{type(model).__name__} has no pooler module to mean-pool into")
    if getattr(model, "_openbook_mean_pooling", False):
        return model
    state: dict[str, torch.Tensor | None] = {}

    def keep_mask(module, args, kwargs):  # the base model gets the flattened (b*n, s) inputs
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        ids = kwargs.get("input_ids", args[0] if args else None)
        if mode == "mean-question" and ids is not None:
            after_sep = (ids == sep).long().cumsum(-1) > 0
            mask = after_sep.long() if mask is None else mask * after_sep
        state["mask"] = mask

    def mean_as_first_token(module, args):
        hidden, mask = args[0], state.get("mask")
        if mask is None or mask.dim() != 2:
            mask = hidden.new_ones(hidden.shape[:2])
        if mask.shape[1] < hidden.shape[1]:  # Longformer pads to its attention window
            mask = torch.nn.functional.pad(mask, (0, hidden.shape[1] - mask.shape[1]))
        m = mask[:, :hidden.shape[1]].to(hidden.dtype).unsqueeze(-1)
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return (mean.unsqueeze(1), *args[1:])

    model.base_model.register_forward_pre_hook(keep_mask, with_kwargs=True)
    pooler.register_forward_pre_hook(mean_as_first_token)
    model._openbook_mean_pooling = True
    setattr(model.config, CONFIG_KEY, mode)
    if mode == "mean-question":
        setattr(model.config, SEP_KEY, int(sep))
    return model


def wants_mean_pooling(config: Any) -> bool:
    """True if ``config`` (loaded from a checkpoint) was trained with :func:`use_mean_pooling`."""
    return getattr(config, CONFIG_KEY, None) in MODES
