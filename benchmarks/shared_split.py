"""A fixed train / valid / test split of the labelled questions in ../shared/data.

``stem_1k.csv`` and ``extra_500.csv`` (1,495 questions with their source
passage) are shuffled with a fixed seed and cut into ``test`` (never trained
on: every quality figure in the README is measured on it), ``valid``
(checkpoint choice and the stacker's fit in ``pipeline.train``) and
``train``. Ids get a file prefix (both files number from 0). ``train_6k.csv``
(no passages) is left whole for whoever wants more training questions.

    python -m benchmarks.shared_split --out runs/split
    # -> runs/split/{train,valid,test}.csv  (id,prompt,context,A..E,answer)

The files are written outside the repository's tracked folders (``runs/`` is
ignored by git): the shared data is read from ``../shared``, never copied in.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

from benchmarks.common import LABELLED, REPO, SHARED

COLUMNS = ["id", "prompt", "context", "A", "B", "C", "D", "E", "answer"]
SEED = 20240601


def read_labelled(shared: Path = SHARED) -> list[dict]:
    rows = []
    for tag, name in LABELLED.items():  # stem -> stem_1k, extra -> extra_500
        with open(shared / f"{name}.csv", encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                r["id"] = f"{tag}-{r['id']}"
                rows.append(r)
    return rows


def split(rows: list[dict], n_test: int, n_valid: int, seed: int = SEED) -> dict[str, list[dict]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return {"test": rows[:n_test], "valid": rows[n_test:n_test + n_valid],
            "train": rows[n_test + n_valid:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "runs" / "split"))
    p.add_argument("--shared", default=str(SHARED))
    p.add_argument("--test", type=int, default=400)
    p.add_argument("--valid", type=int, default=200)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in split(read_labelled(Path(args.shared)), args.test, args.valid).items():
        tmp = out / f".{name}.csv.tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(part)
        tmp.replace(out / f"{name}.csv")
        print(f"{name}: {len(part)} questions, answers {sorted(Counter(r['answer'] for r in part).items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
