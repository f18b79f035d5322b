"""Does a reader's stacker transfer? Fitted on one kind of question, scored on another.

A stacker (:mod:`pipeline.readers.stacking`) is fitted on a few hundred validation questions.
Two things can differ between those and the questions it answers later:

* the **question writer**: ``length`` and ``consensus`` describe how the options were
  built, and differ between generators (the longest option is right more often in
  ``train_6k`` than in ``stem_1k``, and the competition's longest option scores 0.584);
* the **contexts**: questions whose source passages are in the index get contexts about
  them; questions whose passages are not get unrelated ones, and the context evidence then
  says nothing.

This script scores one trained reader on three question sets, with contexts retrieved
exactly as ``predict`` would (the reader's own settings): ``--valid`` (where the stacker
is fitted), ``--test`` (same writer, source passages in the index) and ``--foreign``
(a sample of another writer's questions, ``train_6k``, whose sources are *not* in the
haystack index). Then it fits several stackers and prints MAP@3 on each set:

* fitted on ``--valid``: all five features (the old default), the content features only
  (``lexical,coverage,dense``), and either with the evidence gated by its confidence
  (``pipeline.train``'s default now: content features, gated);
* fitted on ``--valid`` plus half of ``--foreign`` (validation questions from a mix of
  good and missing contexts, as a ``--valid-split`` of several files gives), scored on
  ``--test`` and on the other half of ``--foreign``.

    python -m benchmarks.stack_transfer --index index/haystack --reader runs/readers/minilm_r1 \\
        --valid runs/split/valid.csv --test runs/split/test.csv \\
        --foreign ../shared/data/train_6k.csv --foreign-n 1000 --cache runs/quality_cache
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import SHARED, cached_probabilities, markdown
from pipeline.answering.predictor import PredictConfig
from pipeline.retrieval.setup import open_embedder, reader_retrieval
from pipeline.cli import setup_logging
from pipeline.index.store import load_index
from pipeline.metrics import average_precisions, paired_bootstrap, rank_letters
from pipeline.questions import LETTERS, load_questions
from pipeline.readers.stacking import (CONTENT_FEATURES, CONTEXT_FEATURES, Stacker,
                                       context_features, gated_features, reader_feature)
from pipeline.retrieval.retriever import retrieve

log = logging.getLogger("stack_transfer")

#: (label, features besides the reader, gated?)
VARIANTS = [
    ("all five features (old default)", CONTEXT_FEATURES, False),
    ("content features", CONTENT_FEATURES, False),
    ("all five, gated", CONTEXT_FEATURES, True),
    ("content, gated (new default)", CONTENT_FEATURES, True),
]


def scored_set(csv: str, reader: str, index: str, cache: str | None) -> dict:
    """The reader's log-probabilities and every context feature ``(n, 5)``, and the answers."""
    from pipeline.readers.multiple_choice import MultipleChoiceReader

    qs = load_questions(csv, require_answer=True)
    store = load_index(index)
    emb = open_embedder(store, None, None)
    cfg = reader_retrieval(PredictConfig(questions=csv, index=index, readers=[reader],
                                         progress=False)).resolved(store.meta, index)
    ctx = [c.joined() for c in retrieve(qs, store, emb, cfg, progress=False)]
    prompts, options = [q.prompt for q in qs], [list(q.options) for q in qs]
    probs = cached_probabilities(cache, reader, csv, ctx, lambda: MultipleChoiceReader.from_pretrained(reader)
                    .probabilities(prompts, options, ctx, [q.row for q in qs], progress=False))
    feats = {"reader": reader_feature(probs),
             **context_features(CONTEXT_FEATURES, prompts, options, ctx, emb)}
    return {"feats": feats, "answers": [q.answer for q in qs],
            "y": np.array([LETTERS.index(q.answer) for q in qs])}


def part(s: dict, mask: np.ndarray) -> dict:
    return {"feats": {k: v[mask] for k, v in s["feats"].items()},
            "answers": [a for a, m in zip(s["answers"], mask) if m], "y": s["y"][mask]}


def join(sets: list[dict]) -> dict:
    return {"feats": {k: np.concatenate([s["feats"][k] for s in sets]) for k in sets[0]["feats"]},
            "answers": [a for s in sets for a in s["answers"]],
            "y": np.concatenate([s["y"] for s in sets])}


def aps(scores: np.ndarray, s: dict) -> np.ndarray:
    return average_precisions(rank_letters(scores), s["answers"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default="index/haystack")
    p.add_argument("--reader", required=True, help="a folder written by pipeline.train")
    p.add_argument("--valid", default="runs/split/valid.csv")
    p.add_argument("--test", default="runs/split/test.csv")
    p.add_argument("--foreign", default=str(SHARED / "train_6k.csv"),
                   help="another writer's labelled questions (a random sample is used)")
    p.add_argument("--foreign-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cache", default="runs/quality_cache", metavar="DIR",
                   help="reader probabilities and the foreign sample are kept here")
    args = p.parse_args()
    if args.foreign_n < 20:
        p.error("--foreign-n must be at least 20")
    setup_logging(False)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    foreign = Path(args.cache) / f"{Path(args.foreign).stem}_sample{args.foreign_n}_s{args.seed}.csv"
    if not foreign.exists():
        df = pd.read_csv(args.foreign, keep_default_na=False, dtype=str)
        df.sample(min(args.foreign_n, len(df)), random_state=args.seed).to_csv(foreign, index=False)
    sets = {name: scored_set(csv, args.reader, args.index, args.cache)
            for name, csv in (("valid", args.valid), ("test", args.test), ("foreign", str(foreign)))}
    half = np.arange(len(sets["foreign"]["y"])) % 2 == 0
    f_fit, f_eval = part(sets["foreign"], half), part(sets["foreign"], ~half)
    evals = {"test": sets["test"], "foreign (other half)": f_eval, "foreign (all)": sets["foreign"]}
    rows = [{"fitted on": "-", "stacker": "reader alone",
             **{k: f"{aps(s['feats']['reader'], s).mean():.4f}" for k, s in evals.items()}}]
    base: dict[tuple[str, str], np.ndarray] = {}
    for fit_name, fit_set, targets in (("valid", sets["valid"], evals),
                                       ("valid + half of foreign", join([sets["valid"], f_fit]),
                                        {k: evals[k] for k in ("test", "foreign (other half)")})):
        for label, feats, gated in VARIANTS:
            st = Stacker.fit(fit_set["feats"], fit_set["y"], ["reader", *feats], centered=["reader"],
                             gated=gated_features(feats, gated))
            row = {"fitted on": fit_name, "stacker": label}
            for k, s in targets.items():
                a = aps(st.score(s["feats"]), s)
                key = (fit_name, k)
                if key not in base:
                    base[key] = a
                    row[k] = f"{a.mean():.4f}"
                else:
                    d, lo, hi = paired_bootstrap(a, base[key], n_boot=4000)
                    row[k] = f"{a.mean():.4f} ({d:+.3f} [{lo:+.3f}, {hi:+.3f}])"
            rows.append(row)
            log.info("%s", row)
    sys.stdout.write(f"reader {args.reader}; {len(sets['valid']['y'])} valid, "
                     f"{len(sets['test']['y'])} test, {len(sets['foreign']['y'])} foreign questions "
                     "(differences: vs the first row fitted on the same questions, 95% paired "
                     "bootstrap)\n\n")
    sys.stdout.write(markdown(rows, ["fitted on", "stacker", *evals]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
