"""Index stage: documents -> token-measured chunks -> normalised vectors -> an index directory.

An index is a folder (``faiss.index``, ``passages.parquet``, ``bm25/``, ``meta.json``)
that describes how it was built; :func:`pipeline.index.store.load_index` checks it
before use. Modules: ``chunking`` (passages), ``embedding`` and ``export`` (the
embedder and its ONNX/OpenVINO exports), ``shards`` (checkpointed, resumable
pieces of a build), ``lock`` (one builder per index directory), ``writer`` (writing
and publishing an index directory), ``store`` (meta.json and loading), ``faiss_index``
and ``sizing`` (which FAISS index and its parameters), ``build`` (the streaming build),
``ray_engine`` (the same on a Ray cluster), ``bm25`` (the lexical side).
"""
