"""Reporting stage: evaluation of a scorer on labelled questions (MAP@3, recall@k of the
source passage, curves) and plots. The source-passage rule lives in
:mod:`pipeline.retrieval.sources`.
"""
