"""Benchmark scripts that print the figures of the README and docs.

Each is a module, run from the repository root::

    python -m benchmarks.quality --help

What several of them share is in :mod:`benchmarks.common`; whether a retrieved passage is a
question's source is decided by :mod:`pipeline.retrieval.sources`, as in ``pipeline.evaluate``.
"""
