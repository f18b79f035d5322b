"""Write a needle-in-a-haystack corpus: the source passages of ../shared/data among the demo summaries.

Each labelled question in ``stem_1k.csv`` and ``extra_500.csv`` carries the passage it was written
from (``context``). This script writes those passages as documents (id ``<file>-<row id>``) followed
by the 10,033 vital-article summaries as distractors, as one jsonl corpus for ``build_index``.

    python -m benchmarks.haystack --out /tmp/haystack.jsonl
    python -m pipeline.build_index --corpus /tmp/haystack.jsonl --out index/haystack

``--distractors N`` keeps only the first N summaries: a smaller haystack on which a slow
embedder (MPNet) can be compared with MiniLM in minutes rather than an hour.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from benchmarks.common import LABELLED, SHARED, needle_id

FILES = tuple(f"{stem}.csv" for stem in LABELLED.values())  # stem_1k.csv, extra_500.csv


def needles(shared: Path = SHARED):
    """(doc_id, text) of every labelled question's source passage."""
    for name in FILES:
        with open(shared / name, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                yield needle_id(Path(name).stem, row["id"]), row["context"]


def main() -> int:
    from pipeline.corpus.stream import iter_documents

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--shared", default=str(SHARED))
    p.add_argument("--distractors", type=int, default=None, metavar="N",
                   help="only the first N demo summaries (default: all 10,033)")
    args = p.parse_args()
    n = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for doc_id, text in needles(Path(args.shared)):
            f.write(json.dumps({"id": doc_id, "title": "", "text": text}, ensure_ascii=False) + "\n")
            n += 1
        for i, d in enumerate(iter_documents(None, "demo")):
            if args.distractors is not None and i >= args.distractors:
                break
            f.write(json.dumps({"id": f"demo-{d.doc_id}", "title": d.title, "text": d.text},
                               ensure_ascii=False) + "\n")
            n += 1
    sys.stdout.write(f"wrote {args.out}: {n} documents\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
