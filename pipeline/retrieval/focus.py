"""Sentence focus: the reader's context rebuilt from the retrieved passages' best sentences.

A reader sees ``max_length`` tokens per ``[context, prompt, option]``, and the
prompt and option are never cut, so the context gets what is left: at 192
tokens, about the first 130 tokens of the top passage. The sentence that
answers the question is often further down, or in the second passage.

With ``focus="sentences"`` the top-k passages are split into sentences, each
sentence is scored against the question, and the context becomes the
sentences in score order (best first). Per-segment truncation then cuts the
least relevant sentences, not the second half of the first passage. More
passages (``--top-k``) now add evidence instead of text that is cut anyway.

A sentence's score is the sum of three cosines, all with the index's own
embedder (the one that retrieved the passages):

* with the retrieval query (``prompt + all options``),
* with the prompt alone,
* with ``prompt + option``, the best over the options.

The first two find sentences about the question, the third a sentence about
one of the answers. Each passage's first sentence carries its title, as a
passage does in :meth:`Contexts.joined`.

Contract: focusing reorders the sentences of the passages that retrieval
returned (every sentence is kept, one per line); it never searches again, and
the passages' ids, ranks and scores in ``Contexts`` are unchanged. Only
``Contexts.focused`` is set, and ``Contexts.joined()`` returns it when set.
What focus does to MAP@3 is measured in docs/results.md ("Readers trained on
focused contexts").

Cost: one embedding pass over the sentences of all the questions' passages;
repeated sentences are embedded once.

Example::

    >>> ctx = retrieve(questions, store, emb, RetrievalConfig(top_k=5, focus="sentences"))  # doctest: +SKIP
    >>> ctx[0].joined()[:200]   # the best sentences of the five passages, best first  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from pipeline.index.chunking import passage_sentences
from pipeline.retrieval.query import make_query, option_queries

log = logging.getLogger(__name__)

FOCUS_MODES = ("none", "sentences")


def sentence_scores(sentences: np.ndarray, query: np.ndarray, prompt: np.ndarray,
                    options: np.ndarray) -> np.ndarray:
    """Scores of one question's sentences from unit vectors.

    Args:
        sentences: ``(n_sentences, dim)``; query, prompt: ``(dim,)``; options: ``(n_options, dim)``.

    Returns:
        ``(n_sentences,)``: cos(query) + cos(prompt) + max over options of cos(prompt + option).
    """
    return sentences @ query + sentences @ prompt + (sentences @ options.T).max(axis=1)


def focus_contexts(questions: Sequence, contexts: Sequence, embedder, *,
                   progress: bool = False) -> None:
    """Set each :class:`~pipeline.retrieval.retriever.Contexts`' ``focused`` text, in place.

    ``questions`` are anything with ``prompt`` and ``options``; ``embedder`` an
    :class:`~pipeline.index.embedding.Embedder` whose ``encode`` gives unit vectors.
    A question without passages keeps an empty context.
    """
    if embedder is None:
        raise ValueError("focus='sentences' needs the index's embedder")
    per_q = [[s for t, x in zip(c.titles, c.texts) for s in passage_sentences(t, x)]
             for c in contexts]
    flat = [s for ss in per_q for s in ss]
    if not flat:
        for c in contexts:
            c.focused = ""
        return
    log.info("focusing contexts: %d sentences of %d questions", len(flat), len(contexts))
    sv = embedder.encode(flat, progress=progress)
    queries, prompts, pairs = [], [], []
    for q in questions:
        opts = list(q.options)
        queries.append(make_query(q.prompt, opts))
        prompts.append(q.prompt)
        pairs.extend(option_queries(q.prompt, opts))
    qv = embedder.encode(queries + prompts + pairs, progress=progress)
    n = len(questions)
    s0, o0 = 0, 2 * n
    for i, (q, c, ss) in enumerate(zip(questions, contexts, per_q)):
        k = len(q.options)
        if ss:
            sc = sentence_scores(sv[s0:s0 + len(ss)], qv[i], qv[n + i], qv[o0:o0 + k])
            order = np.argsort(-sc, kind="stable")
            c.focused = "\n".join(ss[j] for j in order)
        else:
            c.focused = ""
        s0 += len(ss)
        o0 += k
