"""Prompts for a causal-LM reader: template, letter token ids, truncation, option rotations.

A prompt is the template with three placeholders filled in::

    {context}    retrieved passages, best first (the only part that is ever cut)
    {question}   the question, never cut
    {options}    "A. text\\nB. text\\n..." lines, never cut

:data:`DEFAULT_TEMPLATE` ends in the answer cue ``Answer:``; the reader then reads the
log-probabilities of the letter tokens at the next position. How a letter is tokenized
right after the cue differs between tokenizer families (WordPiece ``A``, byte-level BPE
``ĠA``, SentencePiece ``▁A``, or several tokens), so :func:`letter_token_ids` asks the
tokenizer itself: it tokenizes ``cue`` and ``cue + " A"`` and keeps the difference.

:func:`build_prompt_ids` tokenizes the text before the context, the context and the
text after it separately and cuts only the context (keeping its head) so that the
prompt fits ``max_length`` (minus ``reserve`` tokens for a continuation). If the
question and options alone do not fit, they are kept whole, the context is dropped and
a WARNING names the row: the prompt is then longer than ``max_length`` (never a
silently cut question; rotary-position models accept the extra tokens).

With ``use_chat_template=True`` the filled-in template is the user message of the
tokenizer's chat template (``apply_chat_template(..., add_generation_prompt=True)``),
and the letter follows the assistant header directly (no space).

:func:`rotations` gives the option orders for test-time augmentation and
:func:`unpermute` maps scores of a rotated question back to the original letters.

Example::

    >>> from transformers import AutoTokenizer                      # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("path/to/mistral")      # doctest: +SKIP
    >>> letter_token_ids(tok)                                       # doctest: +SKIP
    [[330], [365], [334], [384], [413]]
    >>> ids = build_prompt_ids(tok, "Mars is red.", "Which planet is red?",
    ...                        ["Mars", "Venus", "Io", "Moon", "Sun"], max_length=256)  # doctest: +SKIP
    >>> rotations(5, 2)
    [(0, 1, 2, 3, 4), (2, 3, 4, 0, 1)]
"""

from __future__ import annotations

import hashlib
import logging
import string
from typing import Any, Sequence

import numpy as np

from pipeline.questions import LETTERS
from pipeline.readers.record import ReaderError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEMPLATE", "PER_OPTION_TEMPLATE", "TEMPLATES", "JUDGE_CUE", "YES",
    "resolve_template", "template_id", "render_options", "answer_cue", "prompt_cue",
    "continuation_ids", "letter_token_ids", "special_prefix", "prompt_pieces",
    "build_prompt_ids", "rotations", "permute", "unpermute",
]

#: Letter scoring: context, question, lettered options, then the answer cue ``Answer:``.
DEFAULT_TEMPLATE = (
    "Read the context and answer the multiple-choice question with the letter of the "
    "correct option.\n\nContext:\n{context}\n\nQuestion: {question}\n\nOptions:\n{options}"
    "\n\nAnswer:"
)
#: Per-option scoring: the option text (`` option``) is the continuation after ``Answer:``.
PER_OPTION_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\nAnswer:"
#: Named templates (``template="default"`` / ``"per-option"``); any other string is the template.
TEMPLATES = {"default": DEFAULT_TEMPLATE, "per-option": PER_OPTION_TEMPLATE}
#: ``per_option="yes"``: after the option comes this cue, then the scored :data:`YES`.
JUDGE_CUE = "\nIs this answer correct? Answer yes or no:"
YES = " yes"

_FIELDS = {"context", "question", "options"}


def _fields(text: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ReaderError(f"LLM template {text[:60]!r}...: {e}. Fix: write literal braces as "
                          "{{ and }}") from e


def resolve_template(template: str | None, scoring: str = "letter") -> tuple[str, str]:
    """``(name, text)`` of a template name, template text, or None (the scoring's default).

    Raises ReaderError for unknown placeholders, a missing ``{question}``, a ``{context}``
    that is absent or repeated, or letter scoring without ``{options}``.
    """
    if template is None:
        template = "default" if scoring == "letter" else "per-option"
    if template in TEMPLATES:
        return template, TEMPLATES[template]
    fields = _fields(template)
    problems = sorted(set(fields) - _FIELDS)
    if problems:
        why = f"unknown placeholder(s) {', '.join('{' + p + '}' for p in problems)}"
    elif fields.count("context") != 1 or "question" not in fields:
        why = "it needs {question} and exactly one {context}"
    elif scoring == "letter" and "options" not in fields:
        why = "letter scoring needs the lettered {options}"
    else:
        return template_id(template), template
    raise ReaderError(f"LLM template {template[:60]!r}: {why}. Fix: pass a template name "
                      f"({', '.join(TEMPLATES)}) or text with {{context}}, {{question}} and "
                      "{options} (literal braces as {{ }})")


def template_id(text: str) -> str:
    """The template's name if it is a named one, else ``"sha1:<12 hex>"`` of its text."""
    for name, value in TEMPLATES.items():
        if value == text:
            return name
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def render_options(options: Sequence[str], letters: Sequence[str] = LETTERS) -> str:
    """``["Mars", "Io"] -> "A. Mars\\nB. Io"``."""
    if len(options) > len(letters):
        raise ValueError(f"{len(options)} options but only {len(letters)} letters")
    return "\n".join(f"{letter}. {text}" for letter, text in zip(letters, options))


def answer_cue(template: str) -> str:
    """The template's text after its last placeholder, stripped: ``"Answer:"`` for the default."""
    tail = template
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            tail = template.rsplit("{" + field + "}", 1)[-1]
    return tail.replace("{{", "{").replace("}}", "}").strip()


def _chat(tokenizer: Any, user: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ReaderError(f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}: "
                          "the tokenizer has no chat template. Fix: drop the chat-template option "
                          "(use_chat_template=False) or use a tokenizer that has one")
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def prompt_cue(tokenizer: Any, template: str, use_chat_template: bool = False) -> tuple[str, str]:
    """``(cue, sep)``: the text the answer follows and what goes between it and the answer.

    Plain templates: ``(answer_cue(template), " ")``. Chat: the whole chat rendering of a
    user message holding only the cue, and ``""`` (the assistant turn starts with the letter).
    """
    cue = answer_cue(template)
    if use_chat_template:
        return _chat(tokenizer, cue), ""
    return cue, " "


def _ids(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def continuation_ids(tokenizer: Any, cue: str, text: str) -> list[int]:
    """Token ids ``text`` gets when it follows ``cue``: ``ids(cue + text)`` minus the common head.

    >>> class Chars:  # a toy tokenizer: one id per character
    ...     def __call__(self, s, **kw): return {"input_ids": [ord(c) for c in s]}
    >>> continuation_ids(Chars(), "Answer:", " A")
    [32, 65]
    """
    base, full = _ids(tokenizer, cue), _ids(tokenizer, cue + text)
    n = 0
    while n < len(base) and n < len(full) and base[n] == full[n]:
        n += 1
    return full[n:] if n else _ids(tokenizer, text)


def letter_token_ids(tokenizer: Any, letters: Sequence[str] = LETTERS, *, cue: str = "Answer:",
                     sep: str = " ") -> list[list[int]]:
    """Per letter, the token ids it is written with right after ``cue`` (``len(letters)`` lists).

    A letter that is one token gives a one-element list; several tokens are scored as a
    sequence. Raises ReaderError when a letter has no tokens or two letters share theirs.
    """
    out = [continuation_ids(tokenizer, cue, sep + letter) for letter in letters]
    for letter, ids in zip(letters, out):
        if not ids:
            raise ReaderError(f"the tokenizer gives no tokens for letter {letter!r} after {cue!r}. "
                              "Fix: use another template (answer cue) or tokenizer")
    if len({tuple(ids) for ids in out}) < len(out):
        raise ReaderError(f"the tokenizer writes two of the letters {''.join(letters)} with the "
                          f"same tokens after {cue!r} ({out}). Fix: use a tokenizer that tells "
                          "letters apart, or per-option scoring")
    return out


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts *before* a text (BOS, ``[CLS]``); never a suffix."""
    probe = "a"
    bare = _ids(tokenizer, probe)
    full = list(tokenizer(probe, add_special_tokens=True, verbose=False)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i]
    return []


def prompt_pieces(tokenizer: Any, template: str, question: str, options: Sequence[str],
                  use_chat_template: bool = False) -> tuple[str, str]:
    """``(before, after)``: the prompt text on either side of the context."""
    opts = render_options(options) if options else ""
    head, tail = template.split("{context}", 1)
    head, tail = head.format(question=question, options=opts), tail.format(question=question,
                                                                           options=opts)
    if not use_chat_template:
        return head, tail
    sentinel = "\u2063CONTEXT\u2063"  # invisible separator: never in a question
    chat = _chat(tokenizer, head + sentinel + tail)
    before, after = chat.split(sentinel, 1)
    return before, after


def build_prompt_ids(
    tokenizer: Any,
    context: str,
    question: str,
    options: Sequence[str],
    max_length: int,
    template: str = DEFAULT_TEMPLATE,
    *,
    use_chat_template: bool = False,
    reserve: int = 0,
    row: int | None = None,
) -> list[int]:
    """Token ids of one prompt, at most ``max_length - reserve`` long when the question fits.

    Layout: ``special prefix + ids(before) + ids(context)[:k] + ids(after)`` where
    ``before``/``after`` are the template text around ``{context}`` with the question and
    options filled in (the chat rendering when ``use_chat_template``, whose own BOS text
    replaces the special prefix), and ``k`` is what is left of ``max_length - reserve``.
    If ``before`` and ``after`` alone exceed it, the context is dropped, they are kept
    whole (so the result is longer than ``max_length``) and a WARNING names ``row``.

    Args:
        context: retrieved passages, best first; ``""`` for none.
        options: the options, rendered as lettered lines (unused if the template has no
            ``{options}``).
        reserve: tokens kept free for a continuation (per-option scoring: the longest option).

    Returns:
        a list of token ids (no padding, no EOS).
    """
    before, after = prompt_pieces(tokenizer, template, question, options, use_chat_template)
    prefix = [] if use_chat_template else special_prefix(tokenizer)
    fixed = [*prefix, *_ids(tokenizer, before)]
    tail = _ids(tokenizer, after)
    room = max_length - reserve - len(fixed) - len(tail)
    if room < 0:
        log.warning("%s: question and options (%d tokens with the template) exceed max_length=%d"
                    "%s; kept them whole, without context", f"row {row}" if row is not None
                    else "question (row unknown)", len(fixed) + len(tail), max_length,
                    f" minus {reserve} for the answer" if reserve else "")
        return fixed + tail
    ctx: list[int] = []
    if context and room:
        ctx = list(tokenizer(context, add_special_tokens=False, truncation=True,
                             max_length=room, verbose=False)["input_ids"])[:room]
    return fixed + ctx + tail


def rotations(n_options: int, n: int) -> list[tuple[int, ...]]:
    """``n`` cyclic shifts of ``range(n_options)``, spread evenly; the first is the identity.

    ``perm[j]`` is the original option shown at position ``j``. ``n=n_options`` shows every
    option once at every position.

    >>> rotations(5, 2)
    [(0, 1, 2, 3, 4), (2, 3, 4, 0, 1)]
    """
    if not 1 <= n <= n_options:
        raise ReaderError(f"tta={n}: the number of option rotations must be between 1 and the "
                          f"{n_options} options. Fix: pass --tta between 1 and {n_options}")
    shifts = [(i * n_options) // n for i in range(n)]
    return [tuple((j + k) % n_options for j in range(n_options)) for k in shifts]


def permute(options: Sequence[str], perm: Sequence[int]) -> list[str]:
    """The options in the order ``perm`` shows them: ``[options[p] for p in perm]``."""
    return [options[p] for p in perm]


def unpermute(scores: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """Scores ``(..., n_options)`` by shown position -> by original option.

    >>> unpermute(np.array([10., 20., 30.]), (2, 0, 1)).tolist()
    [20.0, 30.0, 10.0]
    """
    out = np.empty_like(scores)
    out[..., list(perm)] = scores
    return out
