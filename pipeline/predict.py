"""``python -m pipeline.predict``: answer a question CSV with an index and a reader.

A thin CLI over :func:`pipeline.answering.predictor.predict`; see ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.answering.predictor import PredictConfig, predict
from pipeline.answering.budget import parse_duration
from pipeline.cli import add_output_args, run, setup_logging
from pipeline.errors import OpenbookError
from pipeline.retrieval.focus import FOCUS_MODES
from pipeline.readers.cascade import COMBINE
from pipeline.index.embedding import BACKENDS as EMBED_BACKENDS
from pipeline.readers.backends import BACKENDS
from pipeline.readers.kinds import KINDS
from pipeline.readers.llm import PER_OPTION, SCORINGS
from pipeline.retrieval.retriever import QUERY_MODES, RERANK_FUSIONS, RETRIEVERS, RetrievalConfig
from pipeline.index.store import VERIFY_MODES

EXAMPLES = """\
examples:
  # zero-shot baseline over the demo index; prints MAP@3 when the CSV has an 'answer' column
  python -m pipeline.predict data/sample_questions.csv --index index/demo --overwrite

  # a fine-tuned multiple-choice reader (DeBERTa-v3, Longformer, BERT, ...: a local folder or hub name)
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/deberta-v3-large \\
      --top-k 8 --max-length 512 --out submissions/submission.csv

  # BM25 only, or hybrid (dense + BM25, rank-fused) with one query per option
  python -m pipeline.predict test.csv --index index/demo --retriever bm25
  python -m pipeline.predict test.csv --index index/demo --retriever hybrid --per-option-queries

  # a Kaggle-style run that must end within 9 hours: contexts are cut if it would not
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/a --time-budget 8.5h

  # several indexes (say a dense index of all of Wikipedia and one of a STEM subset), fused
  python -m pipeline.predict test.csv --index index/enwiki --index index/stem270k --reader readers/a

  # an ensemble: probabilities of several readers averaged
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/a --reader readers/b

  # rerank the top 20 passages with a cross-encoder (python -m pipeline.train_reranker), keep 5
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/a \
      --rerank runs/rerankers/minilm --rerank-top 20 --top-k 5

  # a confidence cascade: MiniLM answers all, the 30% it is least sure of go to MPNet
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/minilm \
      --cascade readers/mpnet --cascade-fraction 0.3

  # a causal LM (or a LoRA adapter trained by pipeline.train) reads: letter scoring, 5 rotations
  python -m pipeline.predict test.csv --index index/enwiki --reader models/mistral-7b \
      --tta 5 --device-map auto --load-in-4bit
"""


def _duration(text: str) -> float:
    try:
        return parse_duration(text, "--time-budget")
    except OpenbookError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--time-budget ")) from e


def add_retrieval_and_reader_args(p: argparse.ArgumentParser) -> None:
    """The retrieval and reader flags ``predict`` and ``evaluate`` share (same names, same
    defaults); :func:`retrieval_config` turns them into a :class:`RetrievalConfig`."""
    r = p.add_argument_group("retrieval")
    r.add_argument("--top-k", type=int, default=RetrievalConfig.top_k,
                   help="passages per question (default: %(default)s, or the reader's saved "
                        "setting)")
    r.add_argument("--query", choices=QUERY_MODES, default=RetrievalConfig.query,
                   help="what is embedded to search (default: %(default)s)")
    r.add_argument("--retriever", choices=RETRIEVERS, default=RetrievalConfig.retriever,
                   help="dense (FAISS), bm25, or hybrid (both, reciprocal-rank fused); bm25 and "
                        "hybrid need an index built with BM25 (default: %(default)s)")
    r.add_argument("--per-option-queries", "--per-option", action="store_true",
                   help="search 'prompt + option' once per option and fuse the five rankings, "
                        "instead of one 'prompt + all options' query")
    r.add_argument("--focus", choices=FOCUS_MODES, default=RetrievalConfig.focus,
                   help="sentences: the context is the passages' sentences, best first "
                        "(see pipeline.retrieval.focus) (default: %(default)s, or the reader's saved "
                        "setting)")
    r.add_argument("--nprobe", type=int, default=None,
                   help="IVF lists searched per query (default: the index's own)")
    r.add_argument("--refine", type=int, default=None, metavar="K_FACTOR",
                   help="an index built with --refine: re-score k x K_FACTOR IVF-PQ candidates "
                        "with the exact vectors (default: the index's own)")
    r.add_argument("--embedder", default=None, metavar="NAME_OR_PATH",
                   help="where the index's embedder is, if not where it was at build time; "
                        "must be the same model")
    r.add_argument("--rerank", default=None, metavar="NAME_OR_PATH",
                   help="cross-encoder that reorders the first --rerank-top passages before the "
                        "best --top-k are kept: a folder from pipeline.train_reranker, another "
                        "cross-encoder folder or an installed hub name (nothing is downloaded); "
                        "'none' turns off a reranker saved with the reader (default: the "
                        "reader's saved one, else none)")
    r.add_argument("--rerank-top", type=int, default=RetrievalConfig.rerank_top, metavar="N",
                   help="first-stage candidates per question the reranker reads "
                        "(default: %(default)s)")
    r.add_argument("--rerank-fusion", choices=RERANK_FUSIONS, default="none",
                   help="rrf: order by the reciprocal-rank fusion of the retrieval order and the "
                        "reranker's, not by the reranker alone (default: %(default)s)")
    m = p.add_argument_group("reader")
    m.add_argument("--reader-kind", choices=KINDS, default="auto",
                   help="mc (AutoModelForMultipleChoice) or llm (a causal LM, or a LoRA adapter "
                        "on one); auto tells them apart from a local folder's config "
                        "(default: %(default)s; say llm for a causal LM given by hub name)")
    m.add_argument("--reader-backend", choices=BACKENDS, default="torch",
                   help="what runs multiple-choice readers on the CPU: torch, or a graph exported "
                        "once from the reader folder and run by onnx (ONNX Runtime, fp32) or "
                        "openvino (bf16 on CPUs with AMX/AVX512-BF16; openvino-fp32: fp32 "
                        "everywhere; openvino-recheck: bf16, then fp32 for the questions whose "
                        "top options are closer than bf16's measured error); -int8 variants are "
                        "faster but move the scores (see docs/throughput.md) "
                        "(default: %(default)s)")
    m.add_argument("--embed-backend", choices=EMBED_BACKENDS, default="torch",
                   help="what runs the index's embedder for the query, stacker and zero-shot "
                        "embeddings on the CPU: torch, or its export run by onnx (fp32) or "
                        "openvino (bf16 on CPUs with AMX/AVX512-BF16: faster, the scores move "
                        "slightly; see docs/throughput.md) (default: %(default)s)")
    m.add_argument("--no-sentence-vectors", dest="sentence_vectors", action="store_false",
                   help="embed every context sentence now, even when the index has sentence "
                        "vectors (pipeline.sentence_vectors), which are otherwise looked up")
    m.add_argument("--max-length", type=int, default=None,
                   help="tokens per [context, prompt, option] (default: the reader's own, <= 512)")
    m.add_argument("--batch-size", type=int, default=None,
                   help="questions per forward pass (default: 8; an encoder reader on CUDA: as "
                        "many as half the free GPU memory holds)")
    m.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    g = p.add_argument_group("causal-LM readers (ignored by encoder readers)")
    g.add_argument("--llm-scoring", choices=SCORINGS, default=None,
                   help="letter: log-probability of the letters A-E after 'Answer:'; per-option: "
                        "of each option's text after the question, the context+question KV cache "
                        "reused (default: the reader's saved setting, else letter)")
    g.add_argument("--per-option-score", choices=PER_OPTION, default=None,
                   help="per-option scoring: mean token log-probability of the option, or of "
                        "'yes' after a judgement cue (default: mean)")
    g.add_argument("--tta", type=int, default=None, metavar="N",
                   help="score N rotations of the option order (1-5) and average each option's "
                        "probability: removes a model's preference for a position")
    g.add_argument("--template", default=None, metavar="NAME_OR_TEXT",
                   help="prompt template: a name (default, per-option) or text with {context}, "
                        "{question} and {options} (see pipeline.readers.prompting)")
    g.add_argument("--chat-template", action="store_true", default=None,
                   help="wrap the prompt in the tokenizer's chat template")
    g.add_argument("--device-map", default=None, metavar="MAP",
                   help="accelerate device map, such as auto: several GPUs and CPU/disk offload")
    g.add_argument("--max-memory", default=None, metavar="DEV=SIZE,...",
                   help="with --device-map: memory per device, such as 0=14GiB,1=14GiB,cpu=30GiB")
    g.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="with --device-map: where layers that fit nowhere else are offloaded")
    g.add_argument("--load-in-4bit", action="store_true", default=None,
                   help="4-bit weights through bitsandbytes (CUDA only)")
    g.add_argument("--load-in-8bit", action="store_true", default=None,
                   help="8-bit weights through bitsandbytes (CUDA only)")
    c = p.add_argument_group("confidence cascade")
    c.add_argument("--cascade", action="append", default=[], metavar="NAME_OR_PATH",
                   help="a stronger reader for the questions the first scorer (the --reader(s), "
                        "or the zero-shot baseline) is least sure of; repeat to ensemble it")
    c.add_argument("--cascade-fraction", type=float, default=None, metavar="F",
                   help="share of the questions sent on, smallest probability margin (best "
                        "minus second) first (default 0.3)")
    c.add_argument("--cascade-margin", type=float, default=None, metavar="M",
                   help="instead: send every question whose margin is below M")
    c.add_argument("--cascade-combine", choices=COMBINE, default="replace",
                   help="the second stage's probabilities replace the first's, or are averaged "
                        "with them (default: %(default)s)")


def retrieval_config(args: argparse.Namespace) -> RetrievalConfig:
    return RetrievalConfig(top_k=args.top_k, query=args.query, nprobe=args.nprobe,
                           refine=args.refine,
                           retriever=args.retriever, per_option=args.per_option_queries,
                           focus=args.focus, rerank=args.rerank, rerank_top=args.rerank_top,
                           rerank_fusion=args.rerank_fusion)


def reader_settings(args: argparse.Namespace) -> dict:
    """The reader-kind, causal-LM and cascade fields of a PredictConfig (or EvaluateConfig)."""
    llm = {"scoring": args.llm_scoring, "per_option": args.per_option_score, "tta": args.tta,
           "template": args.template, "use_chat_template": args.chat_template,
           "device_map": args.device_map, "max_memory": args.max_memory,
           "offload_folder": args.offload_folder, "load_in_4bit": args.load_in_4bit,
           "load_in_8bit": args.load_in_8bit}
    return {"reader_kind": args.reader_kind, "reader_backend": args.reader_backend,
            "embed_backend": args.embed_backend, "sentence_vectors": args.sentence_vectors,
            "llm": {k: v for k, v in llm.items() if v is not None},
            "cascade": args.cascade, "cascade_fraction": args.cascade_fraction,
            "cascade_margin": args.cascade_margin, "cascade_combine": args.cascade_combine}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description="Retrieve contexts for 5-option questions (id,prompt,A..E[,answer]), rank the "
                    "options and write a submission (id,prediction).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("questions", metavar="QUESTIONS.csv",
                   help="CSV with columns id,prompt,A,B,C,D,E and optionally answer")
    p.add_argument("--index", required=True, action="append", metavar="DIR",
                   help="index built by pipeline.build_index; repeat to search several (each "
                        "with its own embedder), fused by reciprocal rank")
    p.add_argument("--reader", action="append", default=[], metavar="NAME_OR_PATH",
                   help="AutoModelForMultipleChoice or causal-LM folder or hub name (or a LoRA "
                        "adapter folder); repeat to ensemble. Without it: the zero-shot "
                        "retrieval-similarity baseline")
    p.add_argument("--out", default="submissions/submission.csv", metavar="FILE",
                   help="submission to write (default: %(default)s)")
    p.add_argument("--report", default=None, metavar="FILE",
                   help="JSON report (default: next to --out, as NAME.report.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--verify-index", choices=VERIFY_MODES, default="size",
                   help="check the index files before use: size (instant, catches truncation), "
                        "full (sha256 of every file, catches any changed byte) or none "
                        "(default: %(default)s)")
    add_retrieval_and_reader_args(p)
    p.add_argument("--time-budget", type=_duration, default=None, metavar="DURATION",
                   help="finish within this time (such as 8.5h, 90m, 600s), counted from the "
                        "start: throughput is measured on the first questions and, if the "
                        "projected total exceeds the budget, fewer passages are used (top-k "
                        "halved down to 1, then the zero-shot baseline, then option length for "
                        "whatever is left); the report's 'time_budget' says what was done")
    add_output_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = PredictConfig(
        questions=args.questions, index=args.index[0] if len(args.index) == 1 else args.index,
        out=args.out, report=args.report,
        readers=args.reader, embedder=args.embedder,
        retrieval=retrieval_config(args),
        max_length=args.max_length, batch_size=args.batch_size, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress, verify_index=args.verify_index,
        time_budget=args.time_budget, **reader_settings(args))
    res = predict(cfg)
    sys.stdout.write(f"wrote {cfg.out} ({len(res.ids)} questions, scorer: {res.scorer})\n")
    if res.map3 is not None:
        sys.stdout.write(f"MAP@3 = {res.map3:.4f}  accuracy@1 = {res.accuracy:.4f}  "
                         f"(n={len(res.ids)}, {res.scorer})\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
