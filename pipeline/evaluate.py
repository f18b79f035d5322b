"""``python -m pipeline.evaluate``: measure a scorer on labelled questions; write a report folder.

A thin CLI over :func:`pipeline.reporting.evaluation.evaluate`; see ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.cli import add_output_args, run, setup_logging
from pipeline.reporting.evaluation import EvaluateConfig, evaluate
from pipeline.predict import add_retrieval_and_reader_args, reader_settings, retrieval_config
from pipeline.index.store import VERIFY_MODES

EXAMPLES = """\
examples:
  # the zero-shot baseline on the demo questions and index
  python -m pipeline.evaluate data/sample_questions.csv --index index/demo --out reports/demo

  # a trained reader (its saved retrieval settings apply, as in predict), MAP@3 for 1..20 contexts
  python -m pipeline.evaluate valid.csv --index index/haystack --reader readers/mpnet \\
      --max-contexts 20 --out reports/mpnet --overwrite

  # quick look: first 200 questions, hybrid retrieval, no plots
  python -m pipeline.evaluate valid.csv --index index/haystack --retriever hybrid --limit 200 \\
      --no-plots --out reports/quick

The report folder holds report.md (open it: it shows the plots), metrics.json and
per_question.csv. Recall@k of the source passage is measured when the CSV has a
'context' column (the passage the question was written from), a 'source_title'
or a 'source_id' column.
"""


def int_list(text: str) -> tuple[int, ...]:
    """``"1,3,5"`` -> ``(1, 3, 5)`` (argparse type)."""
    try:
        vals = tuple(sorted({int(x) for x in text.replace(" ", ",").split(",") if x}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,3,5,10; "
                                         f"got {text!r}") from None
    if not vals or vals[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,3,5,10; got {text!r}")
    return vals


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description="Answer a labelled question CSV (id,prompt,A..E,answer) as predict does and "
                    "write a report folder: MAP@3, accuracy@1, a per-question table, recall@k "
                    "of the source passages when known, and plots.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("questions", metavar="QUESTIONS.csv",
                   help="CSV with columns id,prompt,A,B,C,D,E,answer (optionally context, "
                        "source_title, source_id)")
    p.add_argument("--index", required=True, action="append", metavar="DIR",
                   help="index built by pipeline.build_index; repeat to search several, fused by "
                        "reciprocal rank")
    p.add_argument("--reader", action="append", default=[], metavar="NAME_OR_PATH",
                   help="AutoModelForMultipleChoice or causal-LM folder or hub name (or a LoRA "
                        "adapter folder); repeat to ensemble. Without it: the zero-shot baseline")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N questions")
    p.add_argument("--max-contexts", type=int, default=10, metavar="N",
                   help="largest number of passages on the MAP@3-vs-contexts curve (k = 1, 2, 3, "
                        "5, 8, 10, 15, 20 ... up to N; 0: no curve, only --top-k) "
                        "(default: %(default)s)")
    p.add_argument("--recall-k", type=int_list, default=(1, 3, 5, 10, 20), metavar="K,K,...",
                   help="k's of recall@k of the source passage (default: 1,3,5,10,20)")
    p.add_argument("--no-plots", action="store_true", help="numbers and tables only, no PNGs")
    p.add_argument("--verify-index", choices=VERIFY_MODES, default="size",
                   help="check the index files before use (default: %(default)s)")
    add_retrieval_and_reader_args(p)
    add_output_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = EvaluateConfig(
        questions=args.questions, index=args.index[0] if len(args.index) == 1 else args.index,
        out=args.out, readers=args.reader,
        embedder=args.embedder,
        retrieval=retrieval_config(args),
        max_contexts=args.max_contexts, recall_k=args.recall_k, limit=args.limit,
        plots=not args.no_plots, max_length=args.max_length, batch_size=args.batch_size,
        device=args.device, overwrite=args.overwrite, progress=not args.no_progress,
        verify_index=args.verify_index, **reader_settings(args))
    res = evaluate(cfg)
    sys.stdout.write(f"MAP@3 = {res.map3:.4f}  accuracy@1 = {res.accuracy:.4f}  "
                     f"(n={res.n}, {res.scorer})\n")
    for name, rec in (res.metrics.get("recall") or {}).items():
        sys.stdout.write(f"recall {name}: " + "  ".join(
            f"@{k} {v:.3f}" for k, v in rec["recall@k"].items()) + f"  (n={rec['n']})\n")
    sys.stdout.write(f"wrote {res.out}/report.md ({', '.join(res.files)})\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
