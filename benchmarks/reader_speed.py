"""Seconds per question of a MiniLM vs an MPNet multiple-choice reader on CPU, same run.

Both backbones are loaded as ``AutoModelForMultipleChoice`` the way ``pipeline.train``
loads them (untrained head: speed only), and score the same questions with the same
contexts at the same length; best of ``--rounds`` interleaved rounds.

    python -m pipeline.models fetch mpnet          # once
    python -m benchmarks.reader_speed --questions runs/split/valid.csv --n 24
"""

from __future__ import annotations

import argparse
import logging
import time

from benchmarks.common import REPO


def main() -> int:
    from pipeline.questions import load_questions
    from pipeline.readers.multiple_choice import MultipleChoiceReader
    from pipeline.training.model import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", default=str(REPO / "runs" / "split" / "valid.csv"),
                   help="questions with a 'context' column (the contexts scored)")
    p.add_argument("--models", nargs="+", default=["minilm", "mpnet"])
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    qs = load_questions(args.questions)[: args.n]
    prompts, options, ctx = [q.prompt for q in qs], [list(q.options) for q in qs], \
        [q.context or "" for q in qs]
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in args.models:
            model, tok, _ = load_model(name)
            reader = MultipleChoiceReader(model.eval(), tok, name=name, max_length=args.max_length,
                                          batch_size=8)
            t = time.perf_counter()
            reader.score(prompts, options, ctx, progress=False)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t) / len(qs))
    base = best[args.models[0]]
    for name, s in best.items():
        print(f"{name:10s} {s:.3f} s/question  ({s / base:.2f}x {args.models[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
