"""Where the time of a ``predict`` run goes, per scorer and reader backend, and questions/s.

Runs :func:`pipeline.answering.predictor.predict` on the same questions and index once per
variant (the zero-shot baseline, then each ``--reader`` on each ``--backends``), with
timers around its stages (self time: a stage's time excludes the stages it calls):

    load: questions / index+embedder / reader    search, query embedding
    focus (+ its embedding)                      reader (+ reader: tokenise), zero-shot scorer
    stacker (+ its embedding)                    writing, other (the rest of predict)

It also counts the texts each stage embeds (not those looked up), per question (query embeddings, focus
sentences and stacker features should each be computed once per question). Variants run
alternating, ``--rounds`` times (the machine is shared: compare within a round); the best
round of each counts, the first round includes any one-off ONNX export. Backends are
compared with torch on the same run's questions: same top-3 (ordered), MAP@3 difference.

    python -m benchmarks.predict_profile --questions ../shared/data/stem_1k.csv --n 200 \\
        --index index/demo --reader runs/readers/minilm --reader runs/readers/mpnet \\
        --backends torch onnx openvino --rounds 2 --json reports/predict_profile.json

A backend may name the embedder's backend too, ``READER:EMBED`` (``openvino:openvino``:
the reader and the query/stacker/zero-shot embeddings on OpenVINO; ``predict
--embed-backend``), and ``READER:EMBED:sv`` looks the context sentences up in the index's
sentence vectors (``pipeline.sentence_vectors``; without ``:sv`` a variant runs
``--no-sentence-vectors``); the zero-shot baseline then also runs with each such EMBED.
Every variant is compared with its torch:torch twin (no sentence vectors). ``--questions`` can be any labelled CSV:
for a 4,000-question run take 4,000 distinct questions (repeated ones would be embedded
once: :meth:`Embedder.encode` drops duplicate texts).

``--untrained minilm mpnet`` first saves those backbones with the multiple-choice head
``pipeline.train`` starts from (seeded, untrained: for speed and backend agreement only)
under ``runs/profile-readers/`` and adds them as readers.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, markdown

STAGES = ["load: questions", "load: index+embedder", "load: reader", "query embedding", "search",
          "focus", "focus: embedding", "reader: tokenise", "reader", "zero-shot scorer",
          "zero-shot scorer: embedding", "stacker", "stacker: embedding", "writing", "other"]


class StageTimer:
    """Wraps functions so that each call's self time (minus nested wrapped calls) adds to a
    stage; ``Embedder.encode`` is named after the stage that calls it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.texts: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []  # [label, start, child seconds]
        self.undo: list = []

    def wrap(self, owner, attr: str, label: str | None, *, static: bool = False,
             count: bool = False) -> None:
        """Time ``owner.attr`` under ``label`` (``None``: an embedding, named after its
        caller); with ``count``, add the length of its first argument to that stage's texts."""
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        func = getattr(owner, attr) if static else original

        @functools.wraps(func)
        def timed(*args, **kwargs):
            name = label
            if name is None:  # embedding: named after its caller
                parent = self.stack[-1][0] if self.stack else "other"
                if parent.endswith("embedding"):  # encode calling itself, or _embed
                    name = parent
                else:
                    name = "query embedding" if parent == "search" else f"{parent}: embedding"
            if count:
                self.texts[name] += len(args[1] if len(args) > 1 else kwargs.get("texts", ()))
            self.stack.append([name, time.perf_counter(), 0.0])
            try:
                return func(*args, **kwargs)
            finally:
                _, start, child = self.stack.pop()
                elapsed = time.perf_counter() - start
                self.seconds[name] += elapsed - child
                if self.stack:
                    self.stack[-1][2] += elapsed

        setattr(owner, attr, staticmethod(timed) if static else timed)
        self.undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self.undo):
            setattr(owner, attr, original)
        self.undo.clear()


def instrument(timer: StageTimer) -> None:
    from pipeline.answering import predictor, scoring
    from pipeline.index.embedding import Embedder
    from pipeline.readers.multiple_choice import MultipleChoiceReader
    from pipeline.readers.zeroshot import ZeroShotScorer
    from pipeline.retrieval import indexes, retriever

    timer.wrap(predictor, "load_questions", "load: questions")
    timer.wrap(indexes.IndexSet, "open", "load: index+embedder", static=True)
    timer.wrap(indexes.IndexSet, "_load_embedders", "load: index+embedder")  # lazy, on first use
    timer.wrap(scoring, "load_reader", "load: reader")
    timer.wrap(retriever, "_ranked_lists", "search")
    timer.wrap(retriever, "focus_contexts", "focus")
    timer.wrap(Embedder, "encode", None)
    timer.wrap(Embedder, "_embed", None, count=True)  # texts the model embeds (not looked up)
    timer.wrap(MultipleChoiceReader, "encode", "reader: tokenise")
    timer.wrap(MultipleChoiceReader, "score", "reader")
    timer.wrap(ZeroShotScorer, "score", "zero-shot scorer")
    timer.wrap(scoring, "apply_stacker", "stacker")
    timer.wrap(predictor, "write_files_atomic", "writing")


def run_once(questions: str, index: str, reader: str | None, backend: str, work: Path,
             max_length: int | None = None, focus: str | None = None,
             embed_backend: str = "torch", sentence_vectors: bool = False) -> dict:
    """One instrumented predict: stage seconds, texts embedded, rankings, MAP@3."""
    from pipeline.answering import scoring
    from pipeline.answering.predictor import PredictConfig, predict
    from pipeline.retrieval.retriever import RetrievalConfig

    scoring._load_reader.cache_clear()  # every run loads its reader, as a fresh process would
    timer = StageTimer()
    instrument(timer)
    try:
        t0 = time.perf_counter()
        res = predict(PredictConfig(questions=questions, index=index, out=str(work / "sub.csv"),
                                    readers=[reader] if reader else [], device="cpu",
                                    overwrite=True, progress=False, reader_backend=backend,
                                    embed_backend=embed_backend, max_length=max_length,
                                    sentence_vectors=sentence_vectors,
                                    retrieval=RetrievalConfig(focus=focus) if focus else RetrievalConfig()))
        total = time.perf_counter() - t0
    finally:
        timer.restore()
    seconds = dict(timer.seconds)
    seconds["other"] = total - sum(seconds.values())
    return {"seconds": seconds, "total": total, "texts": dict(timer.texts),
            "rankings": res.rankings, "map3": res.map3, "scorer": res.scorer}


def untrained_reader(name: str, out: Path) -> str:
    """``name``'s backbone with the head ``pipeline.train`` starts from, saved once."""
    import torch

    from pipeline.training.model import load_model

    folder = out / f"{name}-untrained"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model, tok, _ = load_model(name)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(folder)


def parse_variant(spec: str) -> tuple[str, str, bool]:
    """``READER[:EMBED[:sv]]`` -> (reader backend, embed backend, use sentence vectors).

    >>> parse_variant("torch"), parse_variant("openvino-fp32:openvino:sv")
    (('torch', 'torch', False), ('openvino-fp32', 'openvino', True))
    """
    parts = spec.split(":")
    if len(parts) > 3 or (len(parts) == 3 and parts[2] != "sv"):
        raise SystemExit(f"--backends {spec}: expected READER[:EMBED[:sv]]")
    return parts[0], parts[1] if len(parts) > 1 else "torch", len(parts) == 3


def label(reader: str, embed: str, sv: bool) -> str:
    """A variant's name: ``torch``, ``openvino:openvino``, ``torch:torch:sv``."""
    return reader + (f":{embed}" if embed != "torch" or sv else "") + (":sv" if sv else "")


def subset(path: str, n: int, work: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    out = work / "questions.csv"
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", default=str(REPO.parent / "shared" / "data" / "stem_1k.csv"))
    p.add_argument("--index", default=str(REPO / "index" / "demo"))
    p.add_argument("--n", type=int, default=200, help="first N questions")
    p.add_argument("--reader", action="append", default=[], help="reader folder; repeatable")
    p.add_argument("--untrained", nargs="*", default=[], metavar="MODEL",
                   help="also profile these backbones with an untrained head (minilm, mpnet)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "openvino"])
    p.add_argument("--max-length", type=int, default=None, help="reader tokens (default: its own)")
    p.add_argument("--focus", choices=["none", "sentences"], default=None,
                   help="retrieval focus (default: the reader's saved setting, else none)")
    p.add_argument("--no-zero-shot", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="write every round's figures here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    readers = list(args.reader) + [untrained_reader(m, REPO / "runs" / "profile-readers")
                                   for m in args.untrained]
    specs = [parse_variant(b) for b in args.backends]  # READER[:EMBED[:sv]]
    embeds = list(dict.fromkeys((e, sv) for _, e, sv in specs if (e, sv) != ("torch", False)))
    variants = ([] if args.no_zero_shot else
                [("zero-shot", None, "torch", "torch", False)]
                + [(f"zero-shot {label('', e, sv)}", None, "torch", e, sv) for e, sv in embeds]) + \
        [(f"{Path(r).name} {label(b, e, sv)}", r, b, e, sv) for r in readers for b, e, sv in specs]
    work = Path(tempfile.mkdtemp(prefix="predict_profile."))
    questions = subset(args.questions, args.n, work)
    rounds: dict[str, list[dict]] = defaultdict(list)
    for r in range(args.rounds):
        for name, reader, backend, embed, sv in variants:
            res = run_once(questions, args.index, reader, backend, work, args.max_length, args.focus,
                           embed, sv)
            res["load_average"] = os.getloadavg()
            rounds[name].append(res)
            print(f"round {r + 1} {name}: {res['total']:.1f} s, reader "
                  f"{res['seconds'].get('reader', 0) + res['seconds'].get('reader: tokenise', 0):.1f} s, "
                  f"MAP@3 {res['map3']}, load average {res['load_average'][0]:.1f}", flush=True)
    best = {k: min(v, key=lambda x: x["total"]) for k, v in rounds.items()}
    print(f"\n{args.n} questions, {args.index}, best of {args.rounds} rounds; seconds (share):\n")
    cols = ["stage"] + list(best)
    rows = [{"stage": s, **{k: f"{b['seconds'][s]:.2f} ({b['seconds'][s] / b['total']:.0%})"
                            for k, b in best.items() if s in b["seconds"]}}
            for s in STAGES if any(s in b["seconds"] for b in best.values())]
    rows.append({"stage": "**total**", **{k: f"{b['total']:.1f}" for k, b in best.items()}})
    rows.append({"stage": "questions/s", **{k: f"{args.n / b['total']:.2f}" for k, b in best.items()}})
    for name in sorted({n for b in best.values() for n in b["texts"]}):
        rows.append({"stage": f"texts embedded/question, {name}",
                     **{k: f"{b['texts'].get(name, 0) / args.n:.1f}" for k, b in best.items()}})
    rows.append({"stage": "MAP@3", **{k: f"{b['map3']:.4f}" for k, b in best.items() if b["map3"] is not None}})
    print(markdown(rows, cols))
    print("\nbackends vs torch (same questions; ratios from the same round, best round):\n")
    comp = []
    for name, reader, backend, embed, sv in variants:
        base = f"{Path(reader).name} torch" if reader else "zero-shot"
        if name == base or base not in best:
            continue
        b, t = best[name], best[base]
        same = np.mean([x[:3] == y[:3] for x, y in zip(b["rankings"], t["rankings"])])
        reader_s = lambda x: x["seconds"].get("reader", 0) + x["seconds"].get("reader: tokenise", 0)  # noqa: E731
        per_round = [reader_s(tr) / max(reader_s(br), 1e-9)
                     for tr, br in zip(rounds[base], rounds[name])]
        comp.append({"variant": name, "same top-3": f"{same:.1%}",
                     "MAP@3 - torch": f"{(b['map3'] or 0) - (t['map3'] or 0):+.4f}",
                     "reader speed-up": f"{reader_s(t) / reader_s(b):.2f}x" if reader else "",
                     "per round": ", ".join(f"{x:.2f}x" for x in per_round) if reader else "",
                     "predict speed-up": f"{t['total'] / b['total']:.2f}x",
                     "load avg": f"{b['load_average'][0]:.1f}"})
    if comp:
        print(markdown(comp, list(comp[0])))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"n": args.n, "questions": args.questions, "index": args.index,
             "rounds": {k: [{kk: vv for kk, vv in x.items() if kk != "rankings"} for x in v]
                        for k, v in rounds.items()}, "comparison": comp}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
