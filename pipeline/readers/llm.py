"""Score the options of multiple-choice questions with a causal language model.

:class:`CausalLMReader` has the interface of
:class:`~pipeline.readers.multiple_choice.MultipleChoiceReader` (``score``,
``probabilities``, ``name``, ``max_length``, ``batch_size``) over any
``AutoModelForCausalLM`` checkpoint (Llama, Mistral, Qwen2, ...), or a peft LoRA
adapter folder on top of one. Two scorings:

* ``"letter"`` (default): one prompt per question (:data:`~pipeline.readers.prompting.DEFAULT_TEMPLATE`:
  context, question, lettered options, ``Answer:``); the option scores are the
  log-probabilities of the letter tokens at the next position
  (:func:`~pipeline.readers.prompting.letter_token_ids`; a several-token letter is scored as
  the sum over its tokens). Prompts are batched longest first with left padding.
* ``"per-option"``: the context + question prefix is run once, its KV cache
  (``DynamicCache``) repeated for the five continuations; an option scores the mean
  log-probability of its tokens (``per_option="mean"``) or the log-probability of
  `` yes`` after a judgement cue (``per_option="yes"``).

``tta=N`` scores N rotations of the option order and averages each original option's
probability (``score`` then returns the log of that mean, so ``probabilities`` is it).
Only the context is ever cut (:func:`~pipeline.readers.prompting.build_prompt_ids`).

Big models: ``device_map`` / ``max_memory`` / ``offload_folder`` go to
``AutoModelForCausalLM.from_pretrained`` (accelerate's big-model inference: several
GPUs, CPU and disk offload); ``load_in_4bit`` / ``load_in_8bit`` use bitsandbytes on CUDA.
Default dtype: bfloat16 on CUDA when supported, else float16; float32 on CPU. Loading
(and the checks of an adapter's base model) lives in :mod:`pipeline.readers.llm_loading`.

Example::

    >>> reader = CausalLMReader.from_pretrained("models/mistral-7b", tta=5,
    ...                                         device_map="auto")  # doctest: +SKIP
    >>> reader.probabilities(["Which is a planet?"], [["Mars", "Sun", "Moon", "Io", "Vega"]],
    ...                      ["Mars is the fourth planet from the Sun."]).shape  # doctest: +SKIP
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

from pipeline.metrics import softmax
from pipeline.questions import LETTERS
from pipeline.readers import prompting as P
from pipeline.readers.llm_loading import (ADAPTER_CONFIG, default_llm_max_length, is_causal_lm_config,
                                          load_causal_lm)
from pipeline.readers.record import ReaderError

log = logging.getLogger(__name__)

__all__ = ["CausalLMReader", "default_llm_max_length", "is_causal_lm_config", "ADAPTER_CONFIG"]

SCORINGS = ("letter", "per-option")
PER_OPTION = ("mean", "yes")


class CausalLMReader:
    """A causal LM plus tokenizer that scores options given retrieved context.

    Attributes:
        name: the model's name or path, for reports.
        max_length: tokens per prompt (context cut to fit; question and options never).
        batch_size: prompts per forward pass (per-option: questions, each with its options).
        scoring / per_option / tta / template / use_chat_template: see the module docstring.
        kv_cache: per-option scoring reuses the prefix's KV cache; False recomputes the
            prefix with every option (slower; for checking).
        letter_ids: per letter A-E the token ids scored after the answer cue.

    Example::

        >>> reader = CausalLMReader(model, tokenizer, name="tiny", max_length=256)  # doctest: +SKIP
        >>> reader.score(prompts, options, contexts).shape  # doctest: +SKIP
        (200, 5)
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, max_length: int,
                 batch_size: int = 8, device: str = "cpu", scoring: str = "letter",
                 per_option: str = "mean", tta: int = 1, template: str | None = None,
                 use_chat_template: bool = False, kv_cache: bool = True,
                 info: dict | None = None):
        if batch_size < 1:
            raise ReaderError(f"batch_size must be >= 1, got {batch_size}. Fix: pass a positive batch size")
        if scoring not in SCORINGS:
            raise ReaderError(f"unknown LLM scoring {scoring!r}. Fix: pass --llm-scoring "
                              f"{' or '.join(SCORINGS)}")
        if per_option not in PER_OPTION:
            raise ReaderError(f"unknown per-option score {per_option!r}. Fix: pass one of "
                              f"{', '.join(PER_OPTION)}")
        P.rotations(len(LETTERS), int(tta))  # validates tta
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_length, self.batch_size, self.device = int(max_length), int(batch_size), device
        self.scoring, self.per_option, self.tta = scoring, per_option, int(tta)
        self.template_name, self.template = P.resolve_template(template, scoring)
        self.use_chat_template, self.kv_cache = bool(use_chat_template), bool(kv_cache)
        self.info = dict(info or {})
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        n_vocab = model.get_input_embeddings().weight.shape[0]
        # padded positions are masked, so any id the embedding has will do
        pads = [i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None and i < n_vocab]
        self.pad_id = int(pads[0]) if pads else 0
        self.cue, self.sep = P.prompt_cue(tokenizer, self.template, self.use_chat_template)
        self.letter_ids = P.letter_token_ids(tokenizer, LETTERS, cue=self.cue, sep=self.sep)
        if max(i for ids in self.letter_ids for i in ids) >= n_vocab:
            raise ReaderError(f"{name}: the tokenizer's letter ids {self.letter_ids} exceed the "
                              f"model's {n_vocab} embeddings. Fix: use the tokenizer the model "
                              "was trained with")
        forward = getattr(model, "get_base_model", lambda: model)().forward
        params = set(inspect.signature(forward).parameters)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" in params
        model.eval()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int = 8,
        dtype: torch.dtype | str | None = None,
        scoring: str | None = None,
        per_option: str | None = None,
        tta: int | None = None,
        template: str | None = None,
        use_chat_template: bool | None = None,
        device_map: str | dict | None = None,
        max_memory: dict | None = None,
        offload_folder: str | Path | None = None,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        kv_cache: bool = True,
    ) -> "CausalLMReader":
        """Load tokenizer and causal LM (or base + peft adapter) from a directory or the hub.

        Options left at None come from the ``"llm"`` section of ``openbook_reader.json``
        (``scoring``, ``per_option``, ``tta``, ``template``, ``use_chat_template``), else the
        defaults (letter, mean, 1, the scoring's template, False). ``max_length`` None: the
        record's, else :func:`default_llm_max_length`. An adapter folder's base model is the
        record's ``base_model`` else the adapter's ``base_model_name_or_path``; it must match
        the record's ``base_architecture`` and ``vocab_size`` when those are given.

        Raises:
            ReaderError: missing or non-causal model, missing or mismatched base, 4/8-bit
                without CUDA or bitsandbytes, bad options; the message names path and fix.
        """
        lm = load_causal_lm(name_or_path, device=device, dtype=dtype, device_map=device_map,
                            max_memory=max_memory, offload_folder=offload_folder,
                            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
        name, record, config = str(name_or_path), lm.record, lm.config
        llm = record.section("llm") if record is not None else {}
        limit = getattr(config, "max_position_embeddings", None)
        where = "max_length"
        if max_length is None and record is not None and record.max_length is not None:
            max_length, where = record.max_length, f"{record.path} max_length"
        if max_length is None:
            max_length = default_llm_max_length(lm.tokenizer, config)
        elif isinstance(limit, int) and limit > 0 and max_length > limit:
            raise ReaderError(f"{name}: {where}={max_length} exceeds the {limit} positions the "
                              f"model supports. Fix: pass max_length <= {limit}")

        def pick(value, key, default):
            return value if value is not None else llm.get(key, default)

        reader = cls(lm.model, lm.tokenizer, name=name, max_length=max_length,
                     batch_size=batch_size, device=lm.device, scoring=pick(scoring, "scoring", "letter"),
                     per_option=pick(per_option, "per_option", "mean"), tta=pick(tta, "tta", 1),
                     template=pick(template, "template", None),
                     use_chat_template=pick(use_chat_template, "use_chat_template", False),
                     kv_cache=kv_cache, info=lm.info)
        log.info("LLM reader %s (%s%s): %s scoring, tta=%d, max_length=%d, batch_size=%d, %s on %s",
                 name, lm.info["model_type"], " + LoRA adapter" if lm.info["adapter"] else "",
                 reader.scoring, reader.tta, reader.max_length, reader.batch_size, lm.info["dtype"],
                 lm.device)
        return reader

    def describe(self) -> dict:
        """Settings for reports: name, kind ``"llm"``, scoring, tta, template, max_length, ..."""
        return {"name": self.name, "kind": "llm", "scoring": self.scoring,
                "per_option": self.per_option if self.scoring == "per-option" else None,
                "tta": self.tta, "template": self.template_name,
                "use_chat_template": self.use_chat_template, "max_length": self.max_length,
                "batch_size": self.batch_size, "letter_token_ids": self.letter_ids, **self.info}

    # ------------------------------------------------------------------ encoding
    def continuations(self, options: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Per-option scoring: per option its continuation ids and how many trailing ids are scored."""
        conts, scored = [], []
        for text in options:
            if self.per_option == "yes":
                ids = P.continuation_ids(self.tokenizer, self.cue, self.sep + text + P.JUDGE_CUE)
                yes = P.continuation_ids(self.tokenizer, P.JUDGE_CUE, P.YES)
                conts.append(ids + yes)
                scored.append(len(yes))
            else:
                ids = P.continuation_ids(self.tokenizer, self.cue, self.sep + text)
                conts.append(ids)
                scored.append(len(ids))
        return conts, scored

    def _items(self, prompts, options, contexts, rows):
        """One (question, rotation) item each: prompt ids, continuations, scored counts, perm."""
        n_options = len(options[0])
        rotate = self.tta > 1 and "{options}" in self.template
        if self.tta > 1 and not rotate:
            log.info("tta=%d ignored: the template does not show the options, so their order "
                     "cannot matter", self.tta)
        perms = P.rotations(n_options, self.tta) if rotate else [tuple(range(n_options))]
        items = []
        for i in range(len(prompts)):
            for perm in perms:
                shown = P.permute(options[i], perm)
                if self.scoring == "letter":
                    conts, scored = self.letter_ids[:n_options], [len(c) for c in self.letter_ids]
                else:
                    conts, scored = self.continuations(shown)
                reserve = max(len(c) for c in conts) - (1 if self.scoring == "letter" else 0)
                ids = self._prompt_ids(contexts[i], prompts[i], shown, reserve, rows[i])
                items.append((i, perm, ids, conts, scored))
        return items, perms

    def _prompt_ids(self, context: str | None, prompt: str, shown: Sequence[str], reserve: int,
                    row: int | None) -> list[int]:
        return P.build_prompt_ids(self.tokenizer, context or "", prompt, shown, self.max_length,
                                  self.template, reserve=reserve,
                                  use_chat_template=self.use_chat_template, row=row)

    # ------------------------------------------------------------------ training
    def encode(self, prompts: Sequence[str], options: Sequence[Sequence[str]],
               contexts: Sequence[str], rows: Sequence[int] | None = None) -> list[list[int]]:
        """Letter scoring: one prompt's token ids per question, options in the order given
        (no TTA), exactly as :meth:`score` builds them; what training feeds
        :meth:`letter_log_probs`."""
        rows = list(rows) if rows is not None else list(range(1, len(prompts) + 1))
        reserve = max(len(c) for c in self.letter_ids) - 1
        return [self._prompt_ids(c, p, o, reserve, r)
                for p, o, c, r in zip(prompts, options, contexts, rows)]

    def letter_log_probs(self, prefixes: Sequence[list[int]], n_options: int = len(LETTERS)) -> torch.Tensor:
        """Differentiable letter scores: float32 ``(len(prefixes), n_options)``, the log-probs of
        the letter tokens after each prompt (one left-padded batch, gradients kept).

        Equals :meth:`score` for letter scoring without TTA. Needs one-token letters (every
        tokenizer of a real LLM writes them so).

        Example::

            >>> logp = reader.letter_log_probs(reader.encode(prompts, options, contexts))  # doctest: +SKIP
            >>> loss = torch.nn.functional.cross_entropy(logp, labels)                    # doctest: +SKIP
        """
        if any(len(ids) != 1 for ids in self.letter_ids):
            raise ReaderError(f"{self.name}: the tokenizer writes the letters with several tokens "
                              f"({self.letter_ids}); training reads one token per letter. Fix: use "
                              "the model's own tokenizer or a template whose answer cue is "
                              "followed by one-token letters")
        ids, mask, pos = self._left_pad(prefixes)
        logits = self._forward(ids, mask, pos, last_only=True)[:, -1]
        letters = torch.tensor([ids_[0] for ids_ in self.letter_ids[:n_options]], device=logits.device)
        return logits[:, letters] - torch.logsumexp(logits, -1, keepdim=True)

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        prompts: Sequence[str],
        options: Sequence[Sequence[str]],
        contexts: Sequence[str],
        rows: Sequence[int] | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Scores for every option of every question: float32 ``(n_questions, n_options)``.

        Letter scoring: the letters' log-probabilities; per-option: mean token log-prob or
        log p(yes). With ``tta > 1``: log of the option's probability averaged over rotations.
        """
        n = len(prompts)
        if len(options) != n or len(contexts) != n or (rows is not None and len(rows) != n):
            raise ValueError(f"prompts ({n}), options ({len(options)}) and contexts ({len(contexts)})"
                             " must have the same length")
        if n == 0:
            return np.zeros((0, 0), dtype=np.float32)
        n_options = len(options[0])
        if any(len(o) != n_options for o in options) or n_options > len(LETTERS):
            raise ValueError(f"every question needs the same number of options (<= {len(LETTERS)})")
        rows = list(rows) if rows is not None else list(range(1, n + 1))
        items, perms = self._items(prompts, options, contexts, rows)
        logps = self._sequence_logprobs([it[2] for it in items], [it[3] for it in items], progress)
        raw = np.array([[self._reduce(lp, k) for lp, k in zip(item_lps, it[4])]
                        for it, item_lps in zip(items, logps)], dtype=np.float32)
        if len(perms) == 1:
            return raw
        probs = np.zeros((n, n_options), dtype=np.float64)
        for it, shown_scores in zip(items, raw):
            probs[it[0]] += P.unpermute(softmax(shown_scores[None])[0], it[1])
        return np.log(probs / len(perms)).astype(np.float32)

    def _reduce(self, logps: np.ndarray, k: int) -> float:
        """One option's score from its continuation's token log-probs: the last ``k`` summed
        (letters, yes) or averaged (per-option mean); ``-1e4`` for an empty option."""
        if k == 0 or len(logps) == 0:
            return -1e4
        total = float(logps[-k:].sum())
        return total / k if self.scoring == "per-option" and self.per_option == "mean" else total

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

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache=None,
                 last_only: bool = False):
        kwargs: dict[str, Any] = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                                  "position_ids": pos.to(self.device), "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_arg] = cache
        if last_only and self._keep_arg:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs).logits.float()

    def _sequence_logprobs(self, prefixes: Sequence[list[int]], conts: Sequence[list[list[int]]],
                           progress: bool = False) -> list[list[np.ndarray]]:
        """Per prefix, per continuation: the log-probs of the continuation's tokens given the prefix.

        ``prefixes``: ``m`` id lists; ``conts``: per prefix ``k`` non-empty-or-empty id lists.
        Prefixes are batched (``batch_size``, longest first, left padding); the first token
        of every continuation is read from the prefix's last position, the rest from one
        batch of ``m_batch * k`` continuations on the repeated KV cache (or, with
        ``kv_cache=False`` and per-option scoring, from each full sequence run alone).
        """
        m = len(prefixes)
        out: list[list[np.ndarray]] = [[] for _ in range(m)]
        order = sorted(range(m), key=lambda i: -len(prefixes[i]))
        batches = [order[s:s + self.batch_size] for s in range(0, m, self.batch_size)]
        cached = self.kv_cache or self.scoring == "letter"  # letters: one batched pass anyway
        with torch.inference_mode():
            for idx in tqdm(batches, disable=not progress, desc="llm reader", unit="batch"):
                if cached:
                    for i, lps in zip(idx, self._cached_batch([prefixes[i] for i in idx],
                                                              [conts[i] for i in idx])):
                        out[i] = lps
                else:
                    for i in idx:
                        out[i] = [self._uncached(prefixes[i], c) for c in conts[i]]
        return out

    def _uncached(self, prefix: list[int], cont: list[int]) -> np.ndarray:
        """Log-probs of ``cont`` after ``prefix``, one unpadded forward pass of the whole sequence."""
        if not cont:
            return np.zeros(0, dtype=np.float32)
        ids = torch.tensor([prefix + cont[:-1]])
        with torch.inference_mode():
            logits = self._forward(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
        logp = torch.log_softmax(logits[0, len(prefix) - 1:], dim=-1)
        return logp.gather(-1, torch.tensor(cont, device=logp.device)[:, None])[:, 0].cpu().numpy()

    def _left_pad(self, prefixes: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, mask, positions)``, each ``(len(prefixes), longest)``, padded on the left."""
        lp = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), lp), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prefixes), lp), dtype=torch.long)
        for r, p in enumerate(prefixes):
            ids[r, lp - len(p):], mask[r, lp - len(p):] = torch.tensor(p), 1
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _cached_batch(self, prefixes: list[list[int]], conts: list[list[list[int]]]) -> list[list[np.ndarray]]:
        from transformers import DynamicCache

        b, k = len(prefixes), len(conts[0])
        if any(len(c) != k for c in conts):
            raise ValueError("every prefix needs the same number of continuations")
        ids, mask, pos = self._left_pad(prefixes)
        tail = max(len(c) for cs in conts for c in cs) - 1
        cache = DynamicCache(config=self.model.config) if tail > 0 else None
        first = torch.log_softmax(self._forward(ids, mask, pos, cache, last_only=True)[:, -1], -1)
        rest = None
        if tail > 0:
            cache.batch_repeat_interleave(k)
            c_ids = torch.full((b * k, tail), self.pad_id, dtype=torch.long)
            c_mask = torch.zeros((b * k, tail), dtype=torch.long)
            c_next = torch.zeros((b * k, tail), dtype=torch.long)  # the token each position predicts
            for r, cs in enumerate(conts):  # right padding after the shared prefix
                for j, c in enumerate(cs):
                    if len(c) > 1:
                        row, n = r * k + j, len(c) - 1
                        c_ids[row, :n], c_mask[row, :n] = torch.tensor(c[:-1]), 1
                        c_next[row, :n] = torch.tensor(c[1:])
            c_pos = mask.sum(-1).repeat_interleave(k)[:, None] + torch.arange(tail)[None]
            full_mask = torch.cat([mask.repeat_interleave(k, dim=0), c_mask], dim=1)
            logits = self._forward(c_ids, full_mask, c_pos, cache)  # (b*k, tail, vocab)
            c_next = c_next.to(logits.device)
            rest = logits.gather(-1, c_next[..., None])[..., 0] - torch.logsumexp(logits, -1)
            del logits
        first, rest = first.cpu(), rest.cpu() if rest is not None else None
        out = []
        for r, cs in enumerate(conts):
            row = []
            for j, c in enumerate(cs):
                if not c:
                    row.append(np.zeros(0, dtype=np.float32))
                    continue
                vals = [float(first[r, c[0]])]
                if len(c) > 1:
                    vals += rest[r * k + j, :len(c) - 1].tolist()
                row.append(np.asarray(vals, dtype=np.float32))
            out.append(row)
        return out
