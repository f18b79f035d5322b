"""Embedding throughput per backend vs a naive ``SentenceTransformer(model).encode(all_texts)``.

The texts: the first ``--n`` passages (default 2,000) of the demo corpus
(``--format demo``: Wikipedia vital-article summaries), chunked as
``build_index`` does (160-token windows, MiniLM tokens, title included).

Compared in one process, measured in interleaved rounds (every variant once
per round, ``--rounds`` rounds; the best round counts, so a burst of load from
other jobs on the machine hurts no variant for good):

- **naive**: ``SentenceTransformer(model).encode(texts)``: default batch 32,
  fp32 torch; what the Kaggle notebooks do;
- **ours** per backend: :class:`pipeline.index.embedding.Embedder` (texts sorted by
  length, batch by device) with ``torch``, ``onnx`` fp32 / int8, ``openvino``
  fp32 / int8 (those whose packages are installed).

Quality cost, against torch fp32 exact search (flat inner product): the
queries are ``--queries`` question prompts of ``stem_1k.csv``; recall@10 of
each backend's passage vectors searched (a) with torch query vectors (what
``predict`` does: an index built with int8 is queried with the torch
embedder) and (b) with the backend's own query vectors; plus the lowest
cosine between a backend's passage vector and torch's, and the largest
|score difference| over all query-passage pairs.

Run (from the repository root; ~5 min on 2 busy cores)::

    nohup .venv/bin/python -m benchmarks.throughput > reports/throughput.log 2>&1 &
    .venv/bin/python -m benchmarks.throughput --n 300 --rounds 1 --queries 50   # quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the embedding stack is imported

from benchmarks.common import SHARED, cpu_name  # noqa: E402
from pipeline.cli import setup_logging  # noqa: E402
from pipeline.corpus.stream import iter_documents  # noqa: E402
from pipeline.index.chunking import ChunkConfig, Chunker  # noqa: E402
from pipeline.index.embedding import Embedder, resolve_model  # noqa: E402

QUESTIONS = SHARED / "stem_1k.csv"
K = 10


def passages(tokenizer, n: int) -> list[str]:
    """The first ``n`` passages of the demo corpus, as ``build_index`` embeds them."""
    chunker = Chunker(tokenizer, ChunkConfig())
    out: list[str] = []
    docs = iter_documents(None, "demo")
    while len(out) < n:
        batch = list(itertools.islice(docs, 256))
        if not batch:
            break
        out.extend(p.full_text for p in chunker.chunk_many(batch))
    return out[:n]


def queries(n: int, held_out: list[str]) -> tuple[list[str], str]:
    """``n`` question prompts of stem_1k.csv, or held-out passages when the file is absent."""
    if QUESTIONS.exists():
        import pandas as pd

        return pd.read_csv(QUESTIONS)["prompt"].astype(str).head(n).tolist(), str(QUESTIONS)
    return held_out[:n], "held-out demo passages"


def variants(args) -> dict:
    """name -> (encode function, Embedder or None), models loaded and exported up front."""
    from sentence_transformers import SentenceTransformer

    _, path = resolve_model(args.embedder)
    naive = SentenceTransformer(path, device="cpu")
    out = {"naive encode(all)": (lambda t: naive.encode(t, normalize_embeddings=True), None)}
    specs = [("torch", None)]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        specs += [("onnx", None), ("onnx", "int8")]
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("onnxruntime"):
        specs += [("openvino", None), ("openvino", "int8")]
    for backend, q in specs:
        if args.only and backend not in args.only:
            continue
        t0 = time.perf_counter()
        emb = Embedder(args.embedder, device="cpu", backend=backend, quantize=q)
        dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(
            emb.describe()["dtype"], emb.describe()["dtype"])  # OpenVINO picks bf16 on AMX CPUs
        name = f"ours {backend} " + (f"int8 ({dtype} activations)" if q else dtype)
        print(f"# {name}: ready in {time.perf_counter() - t0:.1f} s "
              f"(export cached after the first run), batch {emb.batch_size}, "
              f"computes in {emb.describe()['dtype']}", flush=True)
        out[name] = (emb.encode, emb)
        if backend == "torch":
            for bs in args.torch_batches or []:  # where our torch path loses to naive, if it does
                out[f"ours torch fp32, batch {bs}"] = (
                    lambda t, _e=emb, _b=bs: _e.encode(t, batch_size=_b), emb)
    return out


def search_recall_at_k(ref_q, ref_p, q, p, k=K) -> float:
    """Mean overlap of the exact top ``k`` of ``q`` over ``p`` with that of the reference
    vectors (k-recall@k of one backend against torch fp32; not source-passage recall)."""
    truth = np.argsort(-(ref_q @ ref_p.T), axis=1)[:, :k]
    got = np.argsort(-(q @ p.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="passages to embed (default %(default)s)")
    ap.add_argument("--queries", type=int, default=300, help="queries for recall@10")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--only", nargs="*", help="backends to run (torch onnx openvino); default all")
    ap.add_argument("--torch-batches", type=int, nargs="*", metavar="N",
                    help="also run our torch path with these batch sizes")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    setup_logging(False)
    import torch

    runs = variants(args)
    tok = next(e for _, e in runs.values() if e is not None).tokenizer
    texts = passages(tok, args.n + args.queries)
    texts, held = texts[:args.n], texts[args.n:]
    qs, qsrc = queries(args.queries, held)
    print(f"# {len(texts)} demo passages (mean {np.mean([len(t) for t in texts]):.0f} chars), "
          f"{len(qs)} queries from {qsrc}")
    print(f"# {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at start")

    secs: dict[str, list[float]] = {k: [] for k in runs}
    vecs: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, (fn, _) in runs.items():
            t0 = time.perf_counter()
            vecs[name] = np.asarray(fn(texts), dtype=np.float32)
            secs[name].append(time.perf_counter() - t0)
            print(f"# round {r + 1}: {name:<20} {secs[name][-1]:7.1f} s", flush=True)

    ref_name = "ours torch fp32"
    ref_p, ref_q = vecs[ref_name], runs[ref_name][0](qs)
    naive_rate = len(texts) / min(secs["naive encode(all)"])
    rows = []
    for name, (fn, _) in runs.items():
        p = vecs[name]
        q_own = np.asarray(fn(qs), dtype=np.float32)
        rate = len(texts) / min(secs[name])
        rows.append({
            "variant": name, "passages_per_s": rate, "speedup_vs_naive": rate / naive_rate,
            "seconds": secs[name],
            "recall10_torch_queries": search_recall_at_k(ref_q, ref_p, ref_q, p),
            "recall10_own_queries": search_recall_at_k(ref_q, ref_p, q_own, p),
            "min_cos_vs_torch": float(np.min(np.sum(p * ref_p, axis=1))),
            "max_abs_score_diff": float(np.max(np.abs(ref_q @ p.T - ref_q @ ref_p.T))),
        })
    print(f"\n# load average {os.getloadavg()[0]:.1f} at end; best of {args.rounds} rounds\n")
    print("| variant | passages/s | × naive | recall@10 (torch queries) | recall@10 (own queries) "
          "| min cos vs torch | max abs score diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['passages_per_s']:.1f} | {row['speedup_vs_naive']:.2f} "
              f"| {row['recall10_torch_queries']:.4f} | {row['recall10_own_queries']:.4f} "
              f"| {row['min_cos_vs_torch']:.4f} | {row['max_abs_score_diff']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": len(texts), "queries": len(qs), "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
