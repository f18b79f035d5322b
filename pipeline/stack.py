"""``python -m pipeline.stack READER_DIR``: fit a trained reader's stacker again, without training.

``pipeline.train`` fits the stacker (:mod:`pipeline.readers.stacking`) on ``--valid`` at the end of
a run. This command does only that step, for a reader trained before a change to the
stacker, after a stopped run, or on other labelled questions::

    python -m pipeline.stack runs/readers/minilm                  # the run's own --valid
    python -m pipeline.stack runs/readers/minilm --valid more.csv --features lexical,dense

It retrieves the validation contexts exactly as the run did (same index and settings),
scores them with the reader and writes ``READER_DIR/openbook_stack.json`` (atomically).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.cli import add_output_args, run, setup_logging
from pipeline.readers.stacking import CONTEXT_FEATURES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reader", metavar="READER_DIR", help="a folder written by pipeline.train")
    p.add_argument("--valid", default=None, metavar="VALID.csv",
                   help="labelled questions the reader was not trained on (default: the run's)")
    p.add_argument("--features", type=lambda v: tuple(x for x in v.split(",") if x), default=None,
                   metavar="F1,F2,...", help="evidence beside the reader (default: the run's; "
                   f"choose from {','.join(CONTEXT_FEATURES)})")
    p.add_argument("--no-gate", dest="gate", action="store_false", default=None,
                   help="one weight per feature whatever the contexts (default: the run's; "
                        "gated by the evidence confidence for readers trained since it exists)")
    p.add_argument("--rerank", default=None, metavar="NAME_OR_PATH",
                   help="cross-encoder reranking the validation contexts (default: the run's; "
                        "'none': no reranking). The reader keeps the run's setting for predict")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: the run's, else auto)")
    add_output_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.training.stacker import restack

    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    s = restack(args.reader, valid=args.valid, features=args.features, device=args.device,
                progress=not args.no_progress, gate=args.gate, rerank=args.rerank)
    info = s.describe()
    sys.stdout.write(f"stacker of {args.reader}: valid MAP@3 {info['valid_map@3_reader']:.4f} "
                     f"(reader) -> {info['valid_map@3_stacked_in_sample']:.4f} (stacked, in-sample); "
                     f"weights {info['features']}"
                     + (f", gated {info['gated']}" if info.get("gated") else "") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
