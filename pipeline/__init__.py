"""openbook: retrieval-augmented multiple-choice question answering.

Data flow (one module per step)::

    corpus -> chunking -> embedding -> store (index dir)
    questions -> retrieval -> encoding -> reader / zeroshot -> metrics -> submission

The command-line entry points are ``python -m pipeline.build_index`` and
``python -m pipeline.predict``; everything they do is importable from the
modules above.
"""

__version__ = "0.1.0"
