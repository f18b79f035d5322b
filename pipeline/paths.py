"""Where openbook looks for things on disk that no flag names.

* :func:`models_dir`: model folders fetched by ``python -m pipeline.models fetch``
  (``$OPENBOOK_MODELS``, default ``./models``); ``--embedder NAME`` and
  ``--model NAME`` find a fetched model there by the last part of its hub name.

>>> import os; os.environ.pop("OPENBOOK_MODELS", None) and None
>>> models_dir()
PosixPath('models')
"""

from __future__ import annotations

import os
from pathlib import Path


def models_dir() -> Path:
    """Where ``python -m pipeline.models fetch`` puts model folders (``$OPENBOOK_MODELS`` or ``./models``)."""
    return Path(os.environ.get("OPENBOOK_MODELS", "models"))
