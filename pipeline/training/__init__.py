"""Training stage: labelled questions -> a fine-tuned multiple-choice reader (``python -m pipeline.train``).

``config`` (the run's recipe, output folder and resume), ``data`` (held-out split and
contexts, retrieved once and cached), ``model`` (backbone and head set up to learn,
optimizer groups, learning-rate schedule), ``loop`` (the training loop, validation,
checkpoints and log) and ``stacker`` (the stacker fitted at the end, or again by
``python -m pipeline.stack``).
"""
