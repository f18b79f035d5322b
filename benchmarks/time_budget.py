"""What the ``--time-budget`` guard costs and what it saves, against a run without it.

Runs ``predict`` on the same questions and index three times in one process:
without a budget (the baseline), with a generous budget (the guard's chunking
overhead only), and with a tight budget of ``--tight`` times the baseline's
time (the guard must step down). Prints seconds and MAP@3, with times as
ratios to the baseline measured in the same run.

    python -m benchmarks.time_budget --index index/demo --questions data/sample_questions.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from pipeline.answering.predictor import PredictConfig, predict
from pipeline.retrieval.retriever import RetrievalConfig


def run(questions: str, index: str, out: Path, budget: float | None, top_k: int,
        readers: list[str]) -> dict:
    t = time.perf_counter()
    res = predict(PredictConfig(questions=questions, index=index, out=str(out), overwrite=True,
                                readers=readers, retrieval=RetrievalConfig(top_k=top_k),
                                progress=False, time_budget=budget))
    seconds = time.perf_counter() - t
    report = json.loads(out.with_name(out.stem + ".report.json").read_text())
    tb = report["time_budget"] or {}
    return {"seconds": seconds, "map3": res.map3, "levels": tb.get("questions_per_level")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", default="index/demo")
    p.add_argument("--questions", default="data/sample_questions.csv")
    p.add_argument("--reader", action="append", default=[])
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--tight", type=float, default=0.6,
                   help="the tight budget as a fraction of the baseline's time")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    run(args.questions, args.index, tmp / "warm.csv", None, args.top_k, args.reader)  # warm caches
    base = run(args.questions, args.index, tmp / "base.csv", None, args.top_k, args.reader)
    rows = [("no budget (baseline)", base),
            ("budget 10x baseline", run(args.questions, args.index, tmp / "gen.csv",
                                        10 * base["seconds"], args.top_k, args.reader)),
            (f"budget {args.tight:g}x baseline", run(args.questions, args.index, tmp / "tight.csv",
                                                     args.tight * base["seconds"], args.top_k,
                                                     args.reader))]
    print("| run | seconds | ratio to baseline | MAP@3 | questions per level |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {r['seconds'] / base['seconds']:.2f} | "
              f"{r['map3']:.3f} | {r['levels'] or '-'} |")


if __name__ == "__main__":
    main()
