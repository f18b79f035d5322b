"""A zero-shot baseline scorer, used when ``predict`` gets no ``--reader``.

**This is a baseline, not a trained reader.** For each question it scores
every option by how strongly the retrieved context supports it, from two
kinds of evidence, each standardised (z-score) across the question's
options and then added with weights:

* *dense*: the best cosine similarity between the embedding of
  ``prompt + option`` and the embeddings of the context's sentences;
* *lexical*: the option's distinctive words (and word pairs) found in the
  context, each weighted by how rare it is among the five options
  (a word every option shares says nothing), normalised by the
  option's total weight to the power 0.5 so long options are not
  favoured just for their length.

Example::

    >>> scorer = ZeroShotScorer(embedder)                              # doctest: +SKIP
    >>> scorer.score(["What is H2O?"], [["water", "salt", "iron", "gold", "air"]],
    ...              ["Water (H2O) is a compound."]).shape              # doctest: +SKIP
    (1, 5)
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

from pipeline.index.chunking import split_sentences
from pipeline.retrieval.query import option_queries

log = logging.getLogger(__name__)

NAME = "zero-shot baseline (dense sentence similarity + option-distinctive word overlap)"

_STOP = frozenset("""a an the of and or in on at to for from by with as is are was were be been being
it its this that these those which who whom whose what when where why how not no nor but if then than
so such there their they them he she his her we our you your i me my do does did has have had can could
may might will would shall should also into onto about over under between among more most less least
very much many other some any each all both either neither only same own just one""".split())
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens without stop words (numbers kept)."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def _features(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def lexical_scores(options: Sequence[str], context: str) -> np.ndarray:
    """Option-distinctive word and word-pair overlap with ``context`` -> ``(n_options,)``."""
    ctx = set(_features(words(context)))
    feats = [set(_features(words(o))) for o in options]
    df = Counter(f for fs in feats for f in fs)
    n = len(options)
    out = np.zeros(n, dtype=np.float32)
    for k, fs in enumerate(feats):
        if not fs:
            continue
        w = {f: math.log((n + 1) / df[f]) * (1.5 if " " in f else 1.0) for f in fs}
        total = sum(w.values())
        if total <= 0:
            continue
        out[k] = sum(v for f, v in w.items() if f in ctx) / math.sqrt(total)
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise each row (question) across its options; a constant row becomes 0.

    The one z-score of the readers: the zero-shot scorer's and the stacker's (whose saved
    weights were fitted on it: float64, a row with a standard deviation up to 1e-9 is constant).

    >>> zscore(np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])).round(3).tolist()
    [[-1.225, 0.0, 1.225], [0.0, 0.0, 0.0]]
    """
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=-1, keepdims=True)
    return (x - x.mean(axis=-1, keepdims=True)) / np.where(sd > 1e-9, sd, 1.0)


class ZeroShotScorer:
    """Scores options from context evidence, with no training. See the module docstring.

    Args:
        embedder: a :class:`pipeline.index.embedding.Embedder` (the index's own).
        dense_weight, lexical_weight: weights of the two standardised evidences.
        max_sentences: context sentences embedded per question (the first ones,
            i.e. from the best-ranked passages).
    """

    name = NAME

    def __init__(self, embedder, *, dense_weight: float = 1.0, lexical_weight: float = 2.0,
                 max_sentences: int = 48):
        self.embedder = embedder
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight
        self.max_sentences = max_sentences

    def describe(self) -> dict:
        return {"type": "zero-shot-baseline", "name": self.name,
                "embedder": self.embedder.name, "dense_weight": self.dense_weight,
                "lexical_weight": self.lexical_weight, "max_sentences": self.max_sentences}

    def dense_scores(self, prompts: Sequence[str], options: Sequence[Sequence[str]],
                     contexts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Best sentence cosine per option -> ``(n_questions, n_options)``."""
        sents = []
        for c in contexts:
            s = [c[a:b] for a, b in split_sentences(c)][: self.max_sentences]
            sents.append(s)
        flat = [s for ss in sents for s in ss]
        queries = [t for p, opts in zip(prompts, options) for t in option_queries(p, opts)]
        sv = self.embedder.encode(flat, progress=progress) if flat else None
        qv = self.embedder.encode(queries, progress=progress)
        n_opt = max(len(o) for o in options)
        out = np.zeros((len(prompts), n_opt), dtype=np.float32)
        start, q0 = 0, 0
        for i, ss in enumerate(sents):
            k = len(options[i])
            if ss:
                sims = qv[q0:q0 + k] @ sv[start:start + len(ss)].T
                out[i, :k] = sims.max(axis=1)
            start += len(ss)
            q0 += k
        return out

    def score(self, prompts: Sequence[str], options: Sequence[Sequence[str]],
              contexts: Sequence[str], rows: Sequence[int] | None = None,
              progress: bool = True) -> np.ndarray:
        """Scores ``(n_questions, n_options)``; higher means better supported."""
        lex = np.stack([lexical_scores(o, c) for o, c in zip(options, contexts)]) \
            if len(options) else np.zeros((0, 5), dtype=np.float32)
        total = self.lexical_weight * zscore(lex)
        if self.dense_weight:
            total = total + self.dense_weight * zscore(self.dense_scores(prompts, options,
                                                                         contexts, progress))
        return total.astype(np.float32)
