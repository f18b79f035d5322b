"""``python -m pipeline.sentence_vectors --index DIR``: embed every passage sentence once, now.

A thin CLI over :func:`pipeline.index.sentences.add_sentence_vectors`; the files and
how ``predict`` uses them are documented there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.cli import add_output_args, run, setup_logging
from pipeline.errors import OpenbookError
from pipeline.index.sentences import DTYPES, add_sentence_vectors

EXAMPLES = """\
examples:
  # predict then looks the context sentences up instead of embedding them
  python -m pipeline.sentence_vectors --index index/demo

  # half the disk, through OpenVINO (bf16 where the CPU has it)
  python -m pipeline.sentence_vectors --index index/enwiki --dtype float16 --backend openvino
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.sentence_vectors",
        description="Embed every sentence of an index's passages with the index's embedder, "
                    "into DIR/sentences/, so that predict, evaluate and the stacker look them "
                    "up instead of embedding them at answer time.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, metavar="DIR", help="index built by pipeline.build_index")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="how the vectors are stored; float16 halves the disk and moves cosines "
                        "by ~1e-3 (default: %(default)s)")
    p.add_argument("--backend", choices=("torch", "onnx", "openvino"), default="torch",
                   help="what runs the embedder (onnx/openvino: CPU only, as build_index "
                        "--backend) (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sentences per forward pass (default: the embedder's)")
    add_output_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.batch_size is not None and args.batch_size < 1:
        raise OpenbookError(f"--batch-size must be >= 1, got {args.batch_size}")
    rec = add_sentence_vectors(args.index, dtype=args.dtype, backend=args.backend,
                               device=args.device, batch_size=args.batch_size,
                               progress=not args.no_progress)
    size = sum(f["bytes"] for f in rec["files"].values())
    sys.stdout.write(f"sentence vectors {args.index}: {rec['count']} distinct sentences of "
                     f"{rec['passages']} passages, {rec['embedder']['name']} "
                     f"({rec['embedder']['backend']}, {rec['dtype']}), {size / 1e6:.1f} MB, "
                     f"{rec['seconds']:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
