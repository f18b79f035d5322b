"""``python -m pipeline.train``: fine-tune a reader (encoder, or LoRA on a causal LM) for ``predict --reader``.

A thin CLI over :func:`pipeline.training.loop.train`; see ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from pipeline.cli import run, setup_logging
from pipeline.errors import OpenbookError
from pipeline.retrieval.focus import FOCUS_MODES
from pipeline.retrieval.retriever import QUERY_MODES
from pipeline.readers.kinds import KINDS
from pipeline.readers.stacking import CONTEXT_FEATURES
from pipeline.training.config import LAST_DIR, SELECT_BY, TrainConfig, resume_config
from pipeline.training.loop import train

EXAMPLES = """\
examples:
  # gold contexts from the CSVs' 'context' column, MiniLM backbone, MAP@3 on a held-out CSV
  python -m pipeline.train train.csv --use-context-column --valid valid.csv --out readers/minilm

  # contexts retrieved from an index, exactly as predict does; predict then reads the settings
  python -m pipeline.train train.csv --index index/enwiki --contexts-train 3 --contexts-infer 5 \\
      --model models/deberta-v3-base --max-length 384 --out readers/deberta
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/deberta

  # several question files at once (e.g. the ones that come with a context, and ones without:
  # with --index every question gets retrieved contexts)
  python -m pipeline.train stem_1k.csv extra_500.csv train_6k.csv --index index/enwiki \\
      --epochs 1 --out readers/minilm_all

  # continue an interrupted run (same arguments plus --resume)
  python -m pipeline.train train.csv --index index/enwiki --out readers/deberta --resume

  # LoRA adapters on a causal LM (letter loss over A-E; bf16 base + gradient checkpointing on
  # CUDA); OUT is the adapter, predict loads base + adapter
  python -m pipeline.train train.csv --index index/enwiki --model models/qwen2.5-0.5b \\
      --max-length 768 --lora-r 16 --batch-size 2 --grad-accum 8 --out readers/qwen-lora
  python -m pipeline.predict test.csv --index index/enwiki --reader readers/qwen-lora

  # a quick smoke run
  python -m pipeline.train train.csv --use-context-column --out /tmp/r --max-steps 20 --overwrite
"""

D = {f.name: f.default for f in fields(TrainConfig)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train", argument_default=argparse.SUPPRESS,
        description="Fine-tune an AutoModelForMultipleChoice reader, or LoRA adapters on a "
                    "causal LM (when --model is one), on labelled questions "
                    "(id,prompt,A..E,answer[,context]). OUT holds the best checkpoint "
                    "(safetensors or the adapter, + openbook_reader.json), log.jsonl and last/ "
                    "for --resume.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", metavar="TRAIN.csv", nargs="+",
                   help="labelled questions to train on; several files are combined (their ids "
                        "become FILE_STEM:ID)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the trained reader")
    p.add_argument("--valid", metavar="VALID.csv", help="labelled questions: MAP@3 every epoch; "
                   "the best checkpoint is kept (default: --valid-split of TRAIN.csv)")
    p.add_argument("--valid-split", type=float, metavar="F",
                   help="without --valid: hold out this fraction of TRAIN.csv (20 to 500 "
                        "questions, written to OUT/valid_holdout.csv) to choose the best "
                        f"checkpoint and fit the stacker; 0 trains on all (default {D['valid_split']})")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="AutoModelForMultipleChoice folder or hub name, or the alias minilm/mpnet "
                        "(default: the all-MiniLM-L6-v2 folder); a causal LM (*ForCausalLM "
                        "folder, or a hub name with --reader-kind llm) trains LoRA adapters")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last/")
    c = p.add_argument_group("contexts")
    c.add_argument("--index", metavar="DIR", action="append",
                   help="index to retrieve contexts from, as predict; repeat to search several "
                        "(fused by reciprocal rank; the reader records them all)")
    c.add_argument("--use-context-column", action="store_true",
                   help="use the CSVs' 'context' column instead of retrieval")
    c.add_argument("--contexts-train", type=int, metavar="K",
                   help=f"passages per training question (default {D['contexts_train']})")
    c.add_argument("--contexts-infer", type=int, metavar="K",
                   help=f"passages for validation, saved as predict's default top-k "
                        f"(default {D['contexts_infer']})")
    c.add_argument("--query", choices=QUERY_MODES, help=f"default {D['query']}")
    c.add_argument("--focus", choices=FOCUS_MODES,
                   help="sentences: the context is the passages' sentences, best first, so "
                        "truncation drops the least relevant ones (see pipeline.retrieval.focus); saved as "
                        f"predict's default (default {D['focus']})")
    c.add_argument("--embedder", metavar="NAME_OR_PATH",
                   help="where the index's embedder is, if not where it was at build time")
    c.add_argument("--rerank", metavar="NAME_OR_PATH",
                   help="cross-encoder reranking the retrieved passages (as predict --rerank); "
                        "saved with the reader, so predict reranks as training did")
    c.add_argument("--rerank-top", type=int, metavar="N",
                   help=f"first-stage candidates the reranker reads (default {D['rerank_top']})")
    t = p.add_argument_group("training")
    for flag, typ, help_ in [
            ("--max-length", int, "tokens per [context, prompt, option] (causal LM: per prompt; "
                                  "only the context is cut)"),
            ("--epochs", int, "passes over TRAIN.csv"),
            ("--batch-size", int, "questions per micro-batch"),
            ("--grad-accum", int, "micro-batches per optimizer step"),

            ("--head-lr", float, "learning rate of the new head (classifier + pooler)"),
            ("--weight-decay", float, "AdamW weight decay (not on biases and LayerNorm)"),
            ("--warmup", float, "linear warmup, as a fraction of all steps"),
            ("--max-grad-norm", float, "gradient clipping"),
            ("--freeze-layers", int, "freeze the first N encoder layers"),
            ("--seed", int, "seed of data order, option shuffling and dropout"),
            ("--max-steps", int, "stop after N optimizer steps (overrides --epochs)"),
            ("--eval-every", int, "also validate every N steps"),
            ("--save-every", int, "also save last/ every N steps (always every epoch)"),
            ("--log-every", int, "write the mean loss to log.jsonl every N steps"),
            ("--eval-batch-size", int, "questions per validation forward pass")]:
        name = flag[2:].replace("-", "_")
        t.add_argument(flag, type=typ, help=f"{help_} (default {D[name]})")
    t.add_argument("--lr", type=float, help="backbone learning rate (default: 1e-4 for small "
                   "backbones, hidden size <= 512 such as MiniLM; 2e-5 for base/large ones; "
                   "2e-4 for LoRA adapters)")
    t.add_argument("--select", choices=SELECT_BY, help="what picks the best checkpoint on "
                   "--valid: map@3, loss (mean negative log-likelihood of the right option), or last "
                   f"(the final weights; validation still logged) (default {D['select']})")
    t.add_argument("--schedule", choices=("cosine", "linear"), help="decay after warmup "
                   f"(default {D['schedule']})")
    t.add_argument("--pooling", choices=("auto", "cls", "mean", "mean-question"),
                   help="what the head reads: cls (the model's own pooler), mean (of all tokens) "
                        "or mean-question (of the prompt + option tokens). auto (default): "
                        "mean-question for sentence-transformers checkpoints (MiniLM, MPNet), "
                        "else cls")
    t.add_argument("--pooler-init", choices=("auto", "identity", "keep"),
                   help="auto (default): identity pooler when the checkpoint's is missing or "
                        "untrained (sentence-transformers models)")
    t.add_argument("--freeze-embeddings", action="store_true", help="do not train the embeddings")
    t.add_argument("--no-shuffle-options", dest="shuffle_options", action="store_false",
                   help="keep the options in file order (default: a random order every epoch)")
    t.add_argument("--device", help="cpu, cuda ... (default: cuda if available)")
    t.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"),
                   help="autocast dtype on CUDA (default auto: bf16/fp16 on CUDA, fp32 on CPU)")
    g = p.add_argument_group("causal-LM readers: LoRA (see pipeline.training.llm)")
    g.add_argument("--reader-kind", choices=KINDS, help="mc (encoder), llm (causal LM) or auto: "
                   "llm when --model is a local *ForCausalLM folder (default auto)")
    for flag, typ, help_ in [("--lora-r", int, "LoRA rank"),
                             ("--lora-alpha", float, "LoRA scaling alpha"),
                             ("--lora-dropout", float, "dropout on the LoRA input")]:
        g.add_argument(flag, type=typ, help=f"{help_} (default {D[flag[2:].replace('-', '_')]})")
    g.add_argument("--lora-target-modules", metavar="M1,M2|all-linear",
                   help="modules that get adapters (default: peft's for the architecture, e.g. "
                        "q_proj,v_proj for Llama; all-linear when it has none)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   help="recompute activations in the backward pass: less memory, ~30%% slower "
                        "(default: on CUDA)")
    g.add_argument("--template", metavar="NAME_OR_TEXT",
                   help="prompt template: default, or text with {context}, {question}, {options} "
                        "(saved with the reader)")
    g.add_argument("--chat-template", dest="use_chat_template", action="store_true",
                   help="wrap the prompt in the tokenizer's chat template (saved with the reader)")
    k = p.add_argument_group("stacker (see pipeline.readers.stacking)")
    k.add_argument("--no-stack", dest="stack", action="store_false",
                   help="do not fit the stacker that combines the reader with cheap evidence "
                        "(default: fitted on --valid at the end and saved as openbook_stack.json)")
    k.add_argument("--stack-features", type=lambda v: tuple(x for x in v.split(",") if x),
                   metavar="F1,F2,...", help="evidence combined with the reader (default "
                   f"{','.join(D['stack_features'])}; choose from {','.join(CONTEXT_FEATURES)})")
    k.add_argument("--no-stack-gate", dest="stack_gate", action="store_false",
                   help="fit the context evidence with one weight whatever the contexts (default: "
                        "its weight also grows with how well the contexts match the question)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    given = vars(parser().parse_args(argv))
    setup_logging(given.pop("verbose", False))
    if isinstance(given.get("index"), list) and len(given["index"]) == 1:
        given["index"] = given["index"][0]
    if given.get("resume"):
        state = Path(given["out"]) / LAST_DIR / "trainer_state.json"
        if not state.is_file():
            raise OpenbookError(f"--resume: {state.parent} holds no checkpoint to resume; "
                                "drop --resume to start a new run")
        cfg = resume_config(json.loads(state.read_text(encoding="utf-8"))["config"], given)
    else:
        cfg = TrainConfig(**given)
    res = train(cfg)
    sys.stdout.write(f"trained {res.step} steps; reader in {res.out}\n")
    if res.best and "map@3" in res.best:
        loss = f", loss = {res.best['loss']:.4f}" if "loss" in res.best else ""
        sys.stdout.write(f"best valid MAP@3 = {res.best['map@3']:.4f} "
                         f"(accuracy@1 = {res.best['accuracy@1']:.4f}{loss}) at step "
                         f"{res.best['step']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
