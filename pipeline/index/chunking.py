"""Documents -> passages: sentence-aware windows measured in the embedder's tokens.

Each passage is a window of whole sentences whose token count (title
included) stays within ``max_tokens``; consecutive windows share up to
``overlap_tokens`` tokens of trailing sentences. A sentence longer than a
window is cut at token boundaries. The article title is kept with every
passage, and ids are stable: ``"{doc_id}:{k}"`` for the k-th window.

Example::

    >>> from transformers import AutoTokenizer               # doctest: +SKIP
    >>> chunker = Chunker(AutoTokenizer.from_pretrained(path), ChunkConfig(max_tokens=64))
    >>> [p.passage_id for p in chunker.chunk("7", "Water", long_text)]   # doctest: +SKIP
    ['7:0', '7:1', '7:2']
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

#: A sentence ends at . ! ? (optionally followed by quotes/brackets) before
#: whitespace and an upper-case letter, digit or opening quote/bracket; or at a
#: line break. Decimal points ("3.14") and most abbreviations in the middle of
#: a sentence ("e.g. the") do not match.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut. Recorded in every index's ``meta.json``.

    Args:
        max_tokens: window size in the embedder's tokens, title included
            (MiniLM reads at most 256).
        overlap_tokens: up to this many tokens of trailing sentences repeat
            at the start of the next window.
        min_tokens: a final window smaller than this is merged into the
            previous one when it fits.
    """

    max_tokens: int = 160
    overlap_tokens: int = 32
    min_tokens: int = 16

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens must be >= 16, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError(
                f"overlap_tokens must be in [0, max_tokens/2), got {self.overlap_tokens}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Passage:
    """One retrievable unit. ``text`` is the window; ``title`` its article's title."""

    passage_id: str
    doc_id: str
    title: str
    text: str
    n_tokens: int

    @property
    def full_text(self) -> str:
        """What gets embedded and read: the title, then the window."""
        return with_title(self.title, self.text)


def with_title(title: str, text: str) -> str:
    """``"Title. text"``, unless the text already starts with the title."""
    if not title or text.startswith(title):
        return text
    return f"{title}. {text}"


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text`` (whitespace trimmed)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def passage_sentences(title: str, text: str) -> list[str]:
    """The sentences of one passage, its title prefixed to the first (as ``with_title`` does).

    >>> passage_sentences("Neon", "It is a noble gas. It glows red.")
    ['Neon. It is a noble gas.', 'It glows red.']
    """
    sents = [text[a:b] for a, b in split_sentences(text)]
    if sents:
        sents[0] = with_title(title, sents[0])
    return sents


class Chunker:
    """Cut documents into :class:`Passage` windows with a (fast) HF tokenizer."""

    def __init__(self, tokenizer, config: ChunkConfig | None = None):
        self.config = config or ChunkConfig()
        # The Rust tokenizer gives offsets without the "sequence too long" warnings.
        # A copy, because tokenizer.json files often carry truncation (MiniLM: 128)
        # and padding settings that would cut long documents short.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        self._backend = backend

    # -- token offsets -------------------------------------------------------
    def _offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        if self._backend is not None:
            encs = self._backend.encode_batch(list(texts), add_special_tokens=False)
            return [[o for o in e.offsets if o[1] > o[0]] for e in encs]
        # Slow tokenizer: approximate tokens by words and punctuation.
        return [[m.span() for m in re.finditer(r"\w+|[^\w\s]", t)] for t in texts]

    def n_tokens(self, text: str) -> int:
        return len(self._offsets([text])[0])

    # -- chunking ------------------------------------------------------------
    def chunk_many(self, docs: Iterable) -> list[Passage]:
        """Chunk documents (anything with ``doc_id``, ``title``, ``text``), tokenizing in one batch."""
        docs = list(docs)
        offsets = self._offsets([d.text for d in docs])
        title_tokens = self._offsets([d.title + ". " if d.title else "" for d in docs])
        out: list[Passage] = []
        for d, offs, tt in zip(docs, offsets, title_tokens):
            out.extend(self._windows(d.doc_id, d.title, d.text, offs, len(tt)))
        return out

    def chunk(self, doc_id: str, title: str, text: str) -> list[Passage]:
        """Chunk one document."""
        offs = self._offsets([text])[0]
        tt = self.n_tokens(title + ". ") if title else 0
        return self._windows(doc_id, title, text, offs, tt)

    def _windows(self, doc_id: str, title: str, text: str, offsets: list[tuple[int, int]],
                 title_tokens: int) -> list[Passage]:
        cfg = self.config
        budget = max(8, cfg.max_tokens - title_tokens)
        # Token start positions -> tokens per sentence; long sentences cut into pieces.
        starts = [o[0] for o in offsets]
        pieces: list[tuple[int, int, int]] = []  # (char_start, char_end, n_tokens)
        import bisect

        for s, e in split_sentences(text):
            i, j = bisect.bisect_left(starts, s), bisect.bisect_left(starts, e)
            n = j - i
            if n <= budget:
                pieces.append((s, e, max(n, 1)))
                continue
            for a in range(i, j, budget):
                b = min(a + budget, j)
                ps = s if a == i else offsets[a][0]
                pe = e if b == j else offsets[b][0]
                pieces.append((ps, pe, b - a))
        windows: list[tuple[int, int]] = []  # piece index ranges [lo, hi)
        lo = 0
        while lo < len(pieces):
            hi, used = lo, 0
            while hi < len(pieces) and used + pieces[hi][2] <= budget:
                used += pieces[hi][2]
                hi += 1
            hi = max(hi, lo + 1)
            windows.append((lo, hi))
            if hi >= len(pieces):
                break
            # Step back over trailing pieces for the overlap, always moving forward.
            nxt, back = hi, 0
            while nxt - 1 > lo and back + pieces[nxt - 1][2] <= cfg.overlap_tokens:
                nxt -= 1
                back += pieces[nxt][2]
            lo = nxt
        # Merge a tiny tail window into the previous one when it fits.
        if len(windows) >= 2:
            tail = sum(p[2] for p in pieces[windows[-1][0]:windows[-1][1]])
            prev_lo = windows[-2][0]
            merged = sum(p[2] for p in pieces[prev_lo:windows[-1][1]])
            if tail < cfg.min_tokens and merged <= budget:
                windows[-2:] = [(prev_lo, windows[-1][1])]
        out = []
        for k, (a, b) in enumerate(windows):
            s, e = pieces[a][0], pieces[b - 1][1]
            n = sum(p[2] for p in pieces[a:b])
            window = text[s:e]
            n += 0 if with_title(title, window) == window else title_tokens
            out.append(Passage(f"{doc_id}:{k}", doc_id, title, window, n))
        return out
