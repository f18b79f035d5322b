"""Readers stage: (question, options, contexts) -> one score per option.

``encoding`` (per-segment truncation: prompt and options are never cut, only the
context gives way), ``pooling``, ``multiple_choice`` (any
``AutoModelForMultipleChoice`` reader), ``zeroshot`` (the no-training baseline
scorer) and ``stacking`` (a logistic stacker over reader and evidence features).
"""
