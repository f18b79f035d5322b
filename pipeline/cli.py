"""Shared plumbing for the command-line entry points: logging and error exits."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Sequence

from .errors import OpenbookError

log = logging.getLogger("pipeline")

EXIT_USER_ERROR = 2


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr as ``LEVEL name: message``; ``verbose`` turns on DEBUG."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Third-party chatter that says nothing to our users.
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock", "sentence_transformers",
                  "transformers", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn :class:`OpenbookError` into a one-line message and exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return main(argv)
    except OpenbookError as e:
        log.error("%s", e)
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
