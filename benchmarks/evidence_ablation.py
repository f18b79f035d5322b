"""Would stronger context evidence help the stacker? Candidate features, fitted and compared.

The stacker (:mod:`pipeline.readers.stacking`) adds evidence to a reader: option-distinctive word
overlap (``lexical``), word ``coverage`` and the best sentence cosine of ``prompt + option``
(``dense``, with the index's embedder). This script measures candidate evidence that
``predict`` does not compute, before anyone builds it in:

* ``dense_mpnet``: the ``dense`` cosine with MPNet (``models/all-mpnet-base-v2``, fetched by
  ``make models``) instead of the index's MiniLM: a stronger sentence embedder;
* ``lexical_p1``, ``coverage_p1``, ``dense_p1``: the three content features on the
  top-ranked passage alone (the source passage is at rank 1 for ~83% of the questions, and
  the other passages add words that can match a wrong option).

Contexts are retrieved as ``predict`` would for the reader (its own settings). Stackers are
fitted on ``--valid`` and scored on ``--test``, with and without ``--reader`` (without, the
evidence alone is a zero-shot scorer), and each row is compared with the first row of its
group (95% paired bootstrap over the test questions)::

    python -m benchmarks.evidence_ablation --index index/haystack --reader runs/readers/minilm_r1 \\
        --valid runs/split/valid.csv --test runs/split/test.csv --cache runs/quality_cache
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import cached_probabilities, markdown
from pipeline.answering.predictor import PredictConfig
from pipeline.retrieval.setup import open_embedder, reader_retrieval
from pipeline.cli import setup_logging
from pipeline.index.chunking import with_title
from pipeline.index.embedding import Embedder
from pipeline.index.store import load_index
from pipeline.metrics import average_precisions, paired_bootstrap, rank_letters
from pipeline.questions import LETTERS, load_questions
from pipeline.readers import stacking
from pipeline.readers.stacking import CONTENT_FEATURES, Stacker, context_features, reader_feature
from pipeline.readers.zeroshot import ZeroShotScorer
from pipeline.retrieval.retriever import retrieve

log = logging.getLogger("evidence_ablation")

CONTENT = list(CONTENT_FEATURES)
P1 = [f"{f}_p1" for f in CONTENT]  # the content features of the top passage alone
EXTRA = ("dense_mpnet", *P1)
#: (label, evidence features, gated?)
VARIANTS = [
    ("content (lexical, coverage, dense), gated: the default", CONTENT, True),
    ("content + dense_mpnet, gated", CONTENT + ["dense_mpnet"], True),
    ("content + dense_mpnet, not gated", CONTENT + ["dense_mpnet"], False),
    ("content + top-passage features, gated", CONTENT + P1, True),
]
ZERO_SHOT = [
    ("lexical, coverage, dense (MiniLM)", CONTENT),
    ("lexical, coverage, dense_mpnet", ["lexical", "coverage", "dense_mpnet"]),
    ("lexical, coverage, dense + dense_mpnet", CONTENT + ["dense_mpnet"]),
    ("lexical, coverage, dense + top-passage features", CONTENT + P1),
]


def scored_set(csv: str, reader: str | None, index: str, store, emb: Embedder, mpnet: Embedder,
               cache: str) -> dict:
    """Every feature ``(n, 5)`` (the reader's log-probabilities too, when given) and answers.
    ``store`` is ``index`` loaded, ``emb`` its embedder."""
    qs = load_questions(csv, require_answer=True)
    cfg = reader_retrieval(PredictConfig(questions=csv, index=index, readers=[reader] if reader else [],
                                         progress=False)).resolved(store.meta, index)
    found = retrieve(qs, store, emb, cfg, progress=False)
    ctx = [c.joined() for c in found]
    top1 = [with_title(c.titles[0], c.texts[0]) if c.texts else "" for c in found]
    prompts, options = [q.prompt for q in qs], [list(q.options) for q in qs]
    feats = context_features(CONTENT_FEATURES, prompts, options, ctx, emb)
    key = hashlib.sha1(repr((mpnet.name, csv, Path(csv).read_text(), ctx)).encode()).hexdigest()[:16]
    path = Path(cache) / f"dense_mpnet-{key}.npy"
    if not path.exists():
        np.save(path, ZeroShotScorer(mpnet).dense_scores(prompts, options, ctx, progress=True))
    feats["dense_mpnet"] = np.load(path)
    feats.update({f"{k}_p1": v for k, v in
                  context_features(CONTENT_FEATURES, prompts, options, top1, emb).items()})
    if reader:
        from pipeline.readers.multiple_choice import MultipleChoiceReader

        feats["reader"] = reader_feature(cached_probabilities(
            cache, reader, csv, ctx, lambda: MultipleChoiceReader.from_pretrained(reader)
            .probabilities(prompts, options, ctx, [q.row for q in qs], progress=False)))
    return {"feats": feats, "answers": [q.answer for q in qs],
            "y": np.array([LETTERS.index(q.answer) for q in qs])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default="index/haystack")
    p.add_argument("--reader", default=None, help="a folder written by pipeline.train")
    p.add_argument("--valid", default="runs/split/valid.csv")
    p.add_argument("--test", default="runs/split/test.csv")
    p.add_argument("--mpnet", default="mpnet", help="the stronger embedder (default: make models')")
    p.add_argument("--cache", default="runs/quality_cache", metavar="DIR",
                   help="reader probabilities and MPNet cosines are kept here")
    args = p.parse_args()
    setup_logging(False)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    # the candidates are not stacker features (predict cannot compute them): let Stacker fit them
    stacking.FEATURES = stacking.FEATURES + EXTRA
    store = load_index(args.index)
    emb, mpnet = open_embedder(store, None, None), Embedder(args.mpnet)
    valid, test = (scored_set(csv, args.reader, args.index, store, emb, mpnet, args.cache)
                   for csv in (args.valid, args.test))
    groups = [("evidence alone (zero-shot)", [(lbl, f, False) for lbl, f in ZERO_SHOT], [])]
    if args.reader:
        groups.append((f"reader {Path(args.reader).name} +", VARIANTS, ["reader"]))
    rows = []
    for group, variants, reader in groups:
        base = None
        for label, feats, gated in variants:
            st = Stacker.fit(valid["feats"], valid["y"], [*reader, *feats], centered=reader,
                             gated=feats if gated else ())
            ap = average_precisions(rank_letters(st.score(test["feats"])), test["answers"])
            row = {"stacker": f"{group} {label}", "test MAP@3": f"{ap.mean():.4f}", "vs first": "0"}
            if base is not None:
                d, lo, hi = paired_bootstrap(ap, base, n_boot=4000)
                row["vs first"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            base = ap if base is None else base
            rows.append(row)
            log.info("%s", row)
    sys.stdout.write(f"{len(valid['y'])} valid (fit), {len(test['y'])} test questions\n\n"
                     + markdown(rows, ["stacker", "test MAP@3", "vs first"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
