"""``python -m pipeline.bm25 --index DIR``: add (or rebuild) the BM25 side of an index.

A thin CLI over :func:`pipeline.index.bm25.add_bm25`; the index format and the
tokenizer are documented there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.cli import add_output_args, run, setup_logging
from pipeline.index.bm25 import (DEFAULT_MEMORY, METHODS, STEMMERS, STOPWORD_LISTS,
                                 Bm25Config, add_bm25, parse_memory)

EXAMPLES = """\
examples:
  # add BM25 to an index built with --no-bm25 (or rebuild it with other settings)
  python -m pipeline.bm25 --index index/demo

  # no stemming, Lucene's short stop-word list
  python -m pipeline.bm25 --index index/demo --stemmer none --stopwords en

  # a corpus of tens of millions of passages on a small machine: 512 MB of runs at a time
  python -m pipeline.bm25 --index index/enwiki --memory 512M
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.bm25",
        description="Build the BM25 index of an existing index directory (into DIR/bm25/), "
                    "for --retriever bm25|hybrid in pipeline.predict.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, metavar="DIR", help="index built by pipeline.build_index")
    p.add_argument("--k1", type=float, default=Bm25Config.k1, help="default: %(default)s")
    p.add_argument("--b", type=float, default=Bm25Config.b, help="default: %(default)s")
    p.add_argument("--method", choices=METHODS, default=Bm25Config.method,
                   help="bm25s scoring variant (default: %(default)s)")
    p.add_argument("--stemmer", choices=STEMMERS, default=Bm25Config.stemmer,
                   help="auto = english when PyStemmer is installed (default: %(default)s)")
    p.add_argument("--stopwords", choices=STOPWORD_LISTS, default=Bm25Config.stopwords,
                   help="en_plus = NLTK's 179 English stop words, en = Lucene's 33 "
                        "(default: %(default)s)")
    p.add_argument("--memory", default=DEFAULT_MEMORY, metavar="SIZE",
                   help="working memory beyond the vocabulary: (term, passage) pairs are spilled "
                        "to disk in sorted runs of this size and the score matrix is written a "
                        "column range of this size at a time (default: %(default)s)")
    add_output_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = Bm25Config(k1=args.k1, b=args.b, method=args.method, stemmer=args.stemmer,
                     stopwords=args.stopwords)
    rec = add_bm25(args.index, cfg, memory_mb=parse_memory(args.memory),
                   progress=not args.no_progress)
    size = sum(f["bytes"] for f in rec["files"].values())
    sys.stdout.write(f"bm25 {args.index}: {rec['num_docs']} passages, vocabulary "
                     f"{rec['vocab_size']}, stemmer {rec['tokenizer']['stemmer']}, "
                     f"{size / 1e6:.1f} MB, {rec['seconds']:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
