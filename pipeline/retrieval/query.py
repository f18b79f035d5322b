"""The text embedded or searched for a question: built here, for every stage.

* :func:`make_query`: the prompt followed by its options, space-separated (the
  ``prompt+options`` retrieval query, also one of the three cosines of
  :mod:`pipeline.retrieval.focus`), or the prompt alone (``mode="prompt"``);
* :func:`option_queries`: ``prompt + option`` for each option (per-option
  retrieval, focus, and the ``dense`` evidence of :mod:`pipeline.readers.zeroshot`
  and :mod:`pipeline.readers.stacking`).

>>> make_query("Which is red?", ["Mars", "Io"]), option_queries("Which is red?", ["Mars", "Io"])
('Which is red? Mars Io', ['Which is red? Mars', 'Which is red? Io'])
"""

from __future__ import annotations

from typing import Sequence


def make_query(prompt: str, options: Sequence[str], mode: str = "prompt+options") -> str:
    """The text searched for one question."""
    if mode == "prompt":
        return prompt
    return " ".join([prompt, *options])


def option_queries(prompt: str, options: Sequence[str]) -> list[str]:
    """``prompt + option``, one text per option."""
    return [make_query(prompt, [o]) for o in options]
