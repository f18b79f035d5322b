"""Training stage: labelled questions -> a fine-tuned reader (``python -m pipeline.train``).

``config`` (the run's recipe, output folder and resume), ``data`` (held-out split and
contexts, retrieved once and cached), ``model`` (backbone and head set up to learn,
optimizer groups, learning-rate schedule), ``llm`` (LoRA adapters on a causal LM, trained
on the letter loss), ``loop`` (the training loop for either kind, validation,
checkpoints and log) and ``stacker`` (the stacker fitted at the end, or again by
``python -m pipeline.stack``).
"""
