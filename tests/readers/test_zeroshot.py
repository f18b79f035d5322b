"""pipeline.readers.zeroshot: the baseline scorer's z-score and the texts it embeds."""

from __future__ import annotations

import numpy as np

from pipeline.readers.zeroshot import ZeroShotScorer, zscore
from pipeline.retrieval.focus import focus_contexts
from pipeline.retrieval.query import make_query, option_queries
from pipeline.retrieval.retriever import Contexts, RetrievalConfig, make_queries
from pipeline.questions import Question


class _Recorder:
    """An embedder that records what it is asked to embed (unit vectors of a hash)."""

    name, dim = "recorder", 8

    def __init__(self):
        self.seen: list[list[str]] = []

    def encode(self, texts, progress=False):
        self.seen.append(list(texts))
        v = np.array([[hash((t, i)) % 97 + 1 for i in range(self.dim)] for t in texts], float)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_one_query_builder_for_retrieval_focus_and_evidence():
    q = Question("1", "Which planet is red?", ("Mars", "Venus", "the Moon", "Io", "Vega"), "A",
                 None, 1)
    joined = "Which planet is red? Mars Venus the Moon Io Vega"
    pairs = [f"{q.prompt} {o}" for o in q.options]
    assert make_query(q.prompt, q.options) == joined and make_query(q.prompt, q.options, "prompt") == q.prompt
    assert option_queries(q.prompt, q.options) == pairs
    assert make_queries(q.prompt, q.options, RetrievalConfig()) == [joined]
    assert make_queries(q.prompt, q.options, RetrievalConfig(per_option=True)) == pairs
    emb = _Recorder()
    ZeroShotScorer(emb).dense_scores([q.prompt], [list(q.options)], ["Mars is red. Io is not."])
    assert emb.seen[1] == pairs  # sentences first, then the queries
    emb = _Recorder()
    focus_contexts([q], [Contexts(titles=["Mars"], texts=["Mars is red. It is cold."])], emb)
    assert emb.seen[1] == [joined, q.prompt, *pairs]


def test_zscore_is_the_stackers():
    from pipeline.readers import stacking

    x = np.array([[0.5, 0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0, 2.0],
                  [1.0, 1.0 + 1e-7, 1.0, 1.0, 1.0]], dtype=np.float32)
    z = zscore(x)
    assert z.dtype == np.float64 and np.all(z[0] == 0)
    assert abs(z[1].std() - 1) < 1e-12 and abs(z[2].std() - 1) < 1e-6  # sd 4e-8 > 1e-9: scaled
    assert stacking.zscore is zscore
