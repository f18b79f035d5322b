"""One command that proves the GPU paths run on the GPU, and agree with the CPU: ``make gpu-check``.

On a machine with a CUDA GPU (after ``make gpu-check`` installed a CUDA torch and
faiss-gpu), it runs each GPU path through the real CLIs and library, the same work once on
the GPU and once on the CPU, and prints one table:

=====================  ============================================  ==========================
step                   GPU run                                       matches the CPU run when
=====================  ============================================  ==========================
embed + index build    ``build_index --device cuda`` (fp16 vectors,  top-5 passages of the
                       faiss on the GPUs) of ``--docs`` demo docs     questions overlap >= 0.9
nprobe on a GPU index  IVF index moved to the GPU, nprobe 1 vs all   all lists = exact search;
                                                                     1 list differs (applied)
reader training        ``train --device cuda --max-steps N``         loss finite, falls
                       (bf16/fp16 autocast)
reader predict         ``predict --reader --device cuda`` (fp16)     top-1 agreement >= 0.9,
                                                                     max prob diff <= 0.05
LLM reader             tiny random Llama or ``--llm-model``, bf16    top-1 agreement >= 0.8
=====================  ============================================  ==========================

with passages/s or questions/s and the peak GPU memory of each step. It **fails loudly**:
exit status 1 when any GPU step ran on the CPU (torch or faiss fell back) or a result does
not match; 2 when there is no CUDA GPU. ``--cpu-dry-run`` runs every step on the CPU twice
(for testing the script itself on a machine without a GPU; it proves nothing about GPUs).

Example::

    make gpu-check                                   # installs the GPU extras, then runs this
    .venv/bin/python scripts/gpu_check.py --docs 3000 --llm-model /models/mistral-7b
    .venv/bin/python scripts/gpu_check.py --cpu-dry-run --docs 150   # plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAMPLE = REPO / "data" / "sample_questions.csv"


class CheckFailed(Exception):
    """A GPU step fell back to the CPU or disagreed with the CPU run."""


def cli(module: str, *args, env_gpu: bool = True) -> str:
    """Run ``python -m pipeline.MODULE``; a failure stops the check with its stderr."""
    env = dict(os.environ)
    if not env_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU reference run sees no GPU at all
    res = subprocess.run([sys.executable, "-m", f"pipeline.{module}", *map(str, args),
                          "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise CheckFailed(f"pipeline.{module} failed:\n{res.stderr[-2000:]}")
    return res.stdout + res.stderr


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def report_of(path: Path) -> dict:
    return json.loads(path.with_name(path.stem + ".report.json").read_text())


def step_index(work: Path, docs: int, dev: str, gpu: bool) -> dict:
    """Build the same small demo index on the GPU and on the CPU; compare retrieved passages."""
    out = {}
    for name, use_gpu in (("gpu", True), ("cpu", False)):
        t = time.perf_counter()
        cli("build_index", "--format", "demo", "--limit", docs, "--out", work / f"idx_{name}",
            "--device", dev if use_gpu else "cpu", "--overwrite", env_gpu=use_gpu and gpu)
        out[name] = time.perf_counter() - t
    meta = json.loads((work / "idx_gpu" / "meta.json").read_text())
    n = meta["counts"]["passages"] if "counts" in meta else None
    if gpu and meta["embedder"].get("dtype") != "float16":
        raise CheckFailed(f"build_index --device {dev} embedded in {meta['embedder'].get('dtype')}, "
                          "not float16 on the GPU: the embedder fell back to the CPU")
    reps = {}
    for name in ("gpu", "cpu"):
        cli("predict", SAMPLE, "--index", work / f"idx_{name}", "--out", work / f"zs_{name}.csv",
            "--top-k", "5", "--device", dev if name == "gpu" else "cpu",
            env_gpu=name == "gpu" and gpu)
        reps[name] = report_of(work / f"zs_{name}.csv")
    overlap = np.mean([len(set(a["passages"]) & set(b["passages"])) / max(len(a["passages"]), 1)
                       for a, b in zip(reps["gpu"]["per_question"], reps["cpu"]["per_question"])])
    return {"step": "embed + index build", "device": meta["embedder"].get("dtype"),
            "rate": f"{n / out['gpu']:.0f} passages/s (build incl. load)" if n else "",
            "cpu_rate": f"{n / out['cpu']:.0f} passages/s" if n else "",
            "match": f"top-5 overlap {overlap:.3f}", "ok": overlap >= 0.9}


def step_nprobe(gpu: bool) -> dict:
    """nprobe really reaches a GPU IVF index: all lists equal exact search, one list does not."""
    import faiss

    from pipeline.index import faiss_index

    if gpu and faiss_index.gpu_count() == 0:
        raise CheckFailed("faiss sees no GPU (faiss-cpu installed?): pip install '.[gpu]' after "
                          "uninstalling faiss-cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 64)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:200] + 0.05 * rng.standard_normal((200, 64)).astype("float32")
    cpu = faiss.index_factory(64, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    cpu.train(x)
    cpu.add(x)
    index = faiss_index.for_search(cpu) if gpu else cpu
    on_gpu = "Gpu" in type(index).__name__ or any(
        "Gpu" in type(leaf).__name__ for leaf in faiss_index._leaves(index))
    if gpu and not on_gpu:
        raise CheckFailed(f"faiss_index.for_search returned {type(index).__name__}: not on the GPU")
    exact = faiss.IndexFlatIP(64)
    exact.add(x)
    _, want = exact.search(q, 10)
    t = time.perf_counter()
    faiss_index.set_nprobe(index, 64)
    _, full = index.search(q, 10)
    secs = time.perf_counter() - t
    faiss_index.set_nprobe(index, 1)
    _, one = index.search(q, 10)
    agree_full = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full, want)]))
    agree_one = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(one, want)]))
    return {"step": "nprobe on a GPU index", "device": type(index).__name__,
            "rate": f"{len(q) / secs:.0f} queries/s", "cpu_rate": "",
            "match": f"recall@10 nprobe=all {agree_full:.3f}, nprobe=1 {agree_one:.3f}",
            "ok": agree_full >= 0.999 and agree_one < agree_full}


def step_reader(work: Path, steps: int, dev: str, gpu: bool) -> list[dict]:
    """Train a MiniLM reader for a few steps on the GPU; predict with it on GPU and CPU."""
    reader = work / "reader"
    t = time.perf_counter()
    log = cli("train", SAMPLE, "--index", work / "idx_cpu", "--out", reader, "--max-steps", steps,
              "--device", dev, "--overwrite", "--no-stack", "--valid-split", "0.2",
              env_gpu=gpu)
    train_s = time.perf_counter() - t
    losses = [json.loads(line).get("loss") for line in (reader / "log.jsonl").read_text().splitlines()]
    losses = [x for x in losses if x is not None]
    used = re.search(r"\b(fp32|fp16|bf16) on (\S+)", log)  # the loop's "training ..." line
    precision = f"{used.group(1)} on {used.group(2)}" if used else "unknown"
    fell_back = gpu and not (used and used.group(1) in ("bf16", "fp16")
                             and used.group(2).startswith("cuda"))
    rows = [{"step": "reader training", "device": precision,
             "rate": f"{steps / train_s:.2f} steps/s (incl. load)", "cpu_rate": "",
             "match": f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged",
             "ok": bool(losses) and all(np.isfinite(losses)) and not fell_back}]
    reps, secs = {}, {}
    for name in ("gpu", "cpu"):
        t = time.perf_counter()
        cli("predict", SAMPLE, "--index", work / "idx_cpu", "--reader", reader, "--out",
            work / f"rd_{name}.csv", "--device", dev if name == "gpu" else "cpu",
            env_gpu=name == "gpu" and gpu)
        secs[name] = time.perf_counter() - t
        reps[name] = report_of(work / f"rd_{name}.csv")
    a = np.array([[q["scores"][k] for k in "ABCDE"] for q in reps["gpu"]["per_question"]])
    b = np.array([[q["scores"][k] for k in "ABCDE"] for q in reps["cpu"]["per_question"]])
    top1 = float(np.mean(a.argmax(1) == b.argmax(1)))
    diff = float(np.abs(a - b).max())
    n = len(a)
    rows.append({"step": "reader predict", "device": dev,
                 "rate": f"{n / secs['gpu']:.2f} questions/s (incl. load)",
                 "cpu_rate": f"{n / secs['cpu']:.2f} questions/s",
                 "match": f"top-1 agreement {top1:.3f}, max prob diff {diff:.4f}",
                 "ok": top1 >= 0.9 and diff <= 0.05})
    return rows


def step_llm(work: Path, model: str | None, dev: str, gpu: bool) -> dict:
    """The causal-LM reader on the GPU (bf16/fp16) against the CPU (fp32)."""
    from gpu_llm_check import tiny_model

    from pipeline.questions import load_questions
    from pipeline.readers.llm import CausalLMReader

    qs = load_questions(SAMPLE)
    model = model or tiny_model(qs, work / "tiny-llama")
    args = ([q.prompt for q in qs], [list(q.options) for q in qs], [q.context or "" for q in qs])
    out, secs = {}, {}
    for name, device in (("gpu", dev), ("cpu", "cpu")):
        reader = CausalLMReader.from_pretrained(model, device=device, batch_size=4)
        if name == "gpu" and gpu and not str(reader.device).startswith("cuda"):
            raise CheckFailed(f"the LLM reader runs on {reader.device}, not on the GPU")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out[name] = reader.probabilities(*args, progress=False)
        secs[name] = time.perf_counter() - t
        dtype = reader.describe().get("dtype")
        del reader
    top1 = float(np.mean(out["gpu"].argmax(1) == out["cpu"].argmax(1)))
    return {"step": "LLM reader", "device": f"{dev}, {dtype}",
            "rate": f"{len(qs) / secs['gpu']:.2f} questions/s",
            "cpu_rate": f"{len(qs) / secs['cpu']:.2f} questions/s",
            "match": f"top-1 agreement {top1:.3f}", "ok": top1 >= 0.8}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=2000, help="demo documents indexed (default 2000)")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--llm-model", help="a causal LM folder (default: a tiny random Llama)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="no GPU needed: every step on the CPU twice (tests the script only)")
    p.add_argument("--work", help="folder for the check's files (default: a temporary one)")
    args = p.parse_args(argv)
    gpu = not args.cpu_dry_run
    if gpu and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to torch (torch %s, CUDA build: %s). Fix: run on a "
              "GPU machine after `make gpu-check` installs a CUDA torch, or pass --cpu-dry-run "
              "to test the script" % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2
    dev = "cuda" if gpu else "cpu"
    name = torch.cuda.get_device_name(0) if gpu else "CPU (dry run: proves nothing about GPUs)"
    print(f"device: {name}" + (f" x{torch.cuda.device_count()}" if gpu else ""))
    tmp = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    steps = [("embed + index build", lambda: [step_index(work, args.docs, dev, gpu)]),
             ("nprobe on a GPU index", lambda: [step_nprobe(gpu)]),
             ("reader", lambda: step_reader(work, args.train_steps, dev, gpu)),
             ("LLM reader", lambda: [step_llm(work, args.llm_model, dev, gpu)])]
    for label, run in steps:
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        try:
            got = run()
        except CheckFailed as e:
            got = [{"step": label, "device": "-", "rate": "", "cpu_rate": "", "match": str(e)[:300],
                    "ok": False}]
        peak = peak_gib()
        for r in got:
            r["peak"] = f"{peak:.2f} GiB" if peak is not None else "-"
        rows.extend(got)
        print(f"{label}: {'ok' if all(r['ok'] for r in got) else 'FAILED'}", flush=True)
    print("\n| step | device | GPU run | CPU run | peak GPU memory | matches the CPU | ok |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['device']} | {r['rate']} | {r['cpu_rate']} | {r['peak']} | "
              f"{r['match']} | {'yes' if r['ok'] else '**NO**'} |")
    if tmp is not None:
        tmp.cleanup()
    failed = [r["step"] for r in rows if not r["ok"]]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall GPU paths ran on the GPU and match the CPU" if gpu else
          "\ndry run complete (CPU only)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
