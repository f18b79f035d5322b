"""Run the causal-LM reader end to end and print questions/s and peak GPU memory.

Meant for a lent GPU: point ``--model`` at a causal LM folder (e.g. Mistral-7B) or a LoRA
adapter folder, give a questions CSV (id,prompt,A..E[,answer]) and optionally ``--index``
for retrieved contexts; it prints throughput, ``torch.cuda.max_memory_allocated`` and, when
the CSV has answers, MAP@3. Without ``--model`` it builds a tiny random Llama (with a
byte-level BPE tokenizer trained on the questions) and runs anyway, saying so: the numbers
then only show that the path works, not quality or speed of a real model.

Example::

    .venv/bin/python scripts/gpu_llm_check.py data/sample_questions.csv \\
        --model /models/mistral-7b --index index/demo --tta 5 --load-in-4bit
    .venv/bin/python scripts/gpu_llm_check.py            # CPU, tiny random model
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.metrics import map_at_3  # noqa: E402
from pipeline.questions import LETTERS, load_questions  # noqa: E402
from pipeline.readers.llm import CausalLMReader  # noqa: E402


def tiny_model(questions, directory: Path) -> str:
    """Save a random 2-layer Llama + byte-level BPE tokenizer trained on the questions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    texts = [q.prompt + " " + " ".join(q.options) for q in questions] + ["Answer: A B C D E yes"] * 5
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=["</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 max_position_embeddings=2048)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def contexts_for(questions, args) -> list[str]:
    """Retrieved contexts (``--index``), else the CSV's context column, else empty."""
    if not args.index:
        return [q.context or "" for q in questions]
    from pipeline.index.store import load_index
    from pipeline.retrieval.retriever import RetrievalConfig, retrieve
    from pipeline.retrieval.setup import open_embedder

    store = load_index(args.index)
    embedder = None if args.retriever == "bm25" else open_embedder(store, None, None)
    config = RetrievalConfig(top_k=args.top_k, retriever=args.retriever)
    return [c.joined() for c in retrieve(questions, store, embedder, config, progress=False)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("questions", nargs="?", default="data/sample_questions.csv")
    p.add_argument("--model", help="causal LM or LoRA adapter folder (default: a tiny random Llama)")
    p.add_argument("--index", help="index folder for retrieved contexts")
    p.add_argument("--retriever", default="dense", choices=("dense", "bm25", "hybrid"))
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--scoring", default="letter", choices=("letter", "per-option"))
    p.add_argument("--per-option", default="mean", choices=("mean", "yes"))
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device-map", help="e.g. auto (accelerate: several GPUs, CPU/disk offload)")
    p.add_argument("--offload-folder")
    p.add_argument("--load-in-4bit", action="store_true")
    p.add_argument("--load-in-8bit", action="store_true")
    p.add_argument("--limit", type=int, help="only the first N questions")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    questions = load_questions(args.questions)[:args.limit]
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU only (no CUDA)'}"
          f"{f' x{torch.cuda.device_count()}' if cuda else ''}")
    tmp = None
    model = args.model
    if model is None:
        tmp = tempfile.TemporaryDirectory()
        model = tiny_model(questions, Path(tmp.name) / "tiny-llama")
        print("no --model: built a tiny RANDOM Llama; the run checks the path only, its "
              "accuracy and speed say nothing about a real model")
    contexts = contexts_for(questions, args)
    t0 = time.perf_counter()
    reader = CausalLMReader.from_pretrained(
        model, max_length=args.max_length, batch_size=args.batch_size, scoring=args.scoring,
        per_option=args.per_option, tta=args.tta, device_map=args.device_map,
        offload_folder=args.offload_folder, load_in_4bit=args.load_in_4bit,
        load_in_8bit=args.load_in_8bit)
    load_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    probs = reader.probabilities([q.prompt for q in questions], [list(q.options) for q in questions],
                                 contexts, rows=[q.row for q in questions])
    if cuda:
        torch.cuda.synchronize()
    run_s = time.perf_counter() - t0
    print(f"reader: {reader.describe()}")
    print(f"{len(questions)} questions in {run_s:.2f} s = {len(questions) / run_s:.2f} questions/s "
          f"(load {load_s:.1f} s, mean context {np.mean([len(c) for c in contexts]):.0f} chars)")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
              f"(max_memory_allocated, device 0)")
    if all(q.answer for q in questions):
        rankings = [[LETTERS[j] for j in np.argsort(-row)[:3]] for row in probs]
        print(f"MAP@3: {map_at_3(rankings, [q.answer for q in questions]):.4f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
