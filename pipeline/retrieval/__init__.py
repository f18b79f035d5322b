"""Retrieval stage: questions -> ranked passages from an index.

``query`` (the one place the searched text is built from a question),
``setup`` (the embedder that built an index, and the retrieval settings a
trained reader recorded), ``retriever`` (dense, BM25 and hybrid search,
reciprocal-rank fusion, the :class:`~pipeline.retrieval.retriever.Contexts`
handed to the readers) and ``focus`` (keep the sentences of the retrieved
passages closest to the question and options), ``rerank`` (a cross-encoder reorders the
retrieved passages) and ``sources`` (the one rule for "this passage is the question's
source", used by evaluation and by reranker training).
"""
