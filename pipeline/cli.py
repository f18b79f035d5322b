"""Shared plumbing for the command-line entry points: logging and error exits."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import sys
from typing import Callable, Sequence

from pipeline.errors import OpenbookError

log = logging.getLogger("pipeline")

EXIT_USER_ERROR = 2


def add_output_args(p, progress: bool = True) -> None:
    """``--no-progress`` (stored as ``no_progress``) and ``-v/--verbose``, the same on every
    command; ``progress=False`` adds only ``-v``."""
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


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
                  "transformers", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # bm25s sets its own logger to DEBUG when imported: drop DEBUG at the handler too
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.INFO)
        quiet_library_progress()


def quiet_library_progress() -> None:
    """No progress bars of the Hugging Face libraries' own (``Loading weights``, downloads):
    ours say what is happening; theirs only show with ``-v``."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn :class:`OpenbookError` (and a full disk) into a one-line
    message and exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return main(argv)
    except OpenbookError as e:
        msg = " ".join(str(e).split())  # one line, even when it quotes a multi-line library error
        log.error("%s", msg)
        sys.stderr.write(f"error: {msg}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refused a pickle
        log.debug("refused pickle", exc_info=True)
        where = _unpickled_file(e)
        msg = (f"refused to load {where or 'a pickle-based weights file'}: it is a pickle that "
               f"holds more than weights, and loading it could "
               "run code, so it was not loaded; use a model folder saved as model.safetensors "
               "(save_pretrained(..., safe_serialization=True)) from a source you trust")
        log.error("%s", msg)
        sys.stderr.write(f"error: {msg}\n")
        return EXIT_USER_ERROR
    except OSError as e:  # a disk filled up somewhere the library did not expect it
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        log.debug("write failed", exc_info=True)
        where = f" {e.filename}" if e.filename else ""
        msg = (f"cannot write{where} ({e.strerror}); free some disk space (or choose another "
               "output location) and run the command again")
        log.error("%s", msg)
        sys.stderr.write(f"error: {msg}\n")
        return EXIT_USER_ERROR


def _unpickled_file(e: BaseException) -> str | None:
    """The file ``torch.load`` was reading when it refused ``e`` (from the traceback)."""
    tb, found = e.__traceback__, None
    while tb is not None:
        code, local = tb.tb_frame.f_code, tb.tb_frame.f_locals
        if code.co_name == "load" and code.co_filename.endswith(os.path.join("torch", "serialization.py")):
            f = local.get("f")
            found = str(f) if isinstance(f, (str, os.PathLike)) else found
        tb = tb.tb_next
    return found
