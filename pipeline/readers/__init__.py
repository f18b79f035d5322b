"""Readers stage: (question, options, contexts) -> one score per option.

``encoding`` (per-segment truncation: prompt and options are never cut, only the
context gives way), ``pooling``, ``record`` (a trained reader's
``openbook_reader.json``, read and checked in one place), ``multiple_choice``
(any ``AutoModelForMultipleChoice`` reader), ``zeroshot`` (the no-training
baseline scorer), ``stacking`` (a logistic stacker over reader and evidence
features) and ``cascade`` (send the least confident questions to a second scorer).
"""
