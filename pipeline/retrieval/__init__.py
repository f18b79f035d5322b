"""Retrieval stage: questions -> ranked passages from an index.

``retriever`` (dense, BM25 and hybrid search, query building, reciprocal-rank
fusion, the :class:`~pipeline.retrieval.retriever.Contexts` handed to the
readers) and ``focus`` (keep the sentences of the retrieved passages closest to
the question and options).
"""
