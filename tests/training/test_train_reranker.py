"""pipeline.train_reranker / pipeline.training.reranker: fine-tune a cross-encoder on questions
whose source passage is known, with hard negatives mined from an index.

One small real index (the source summaries of the 36 sample questions + 4 others, ~90
passages) is built per module. The quality test fine-tunes the real MiniLM for 30 steps;
the others use a tiny random BertForSequenceClassification (MiniLM tokenizer) for the run
folder, the record, resume and the refusals."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from conftest import SAMPLE, run_cli
from pipeline import train_reranker as cli
from pipeline.cli import run
from pipeline.index.chunking import with_title
from pipeline.training import reranker as tr
from pipeline.training.reranker import DATA_FILE, RECORD_FILE, RerankerConfig, train_reranker

TINY = dict(negatives=3, candidates=8, max_length=64, batch_size=8, lr=1e-3, max_steps=3,
            valid_fraction=0.25, progress=False, save_steps=50)


@pytest.fixture(scope="module")
def rr_index(tmp_path_factory, demo_summaries) -> Path:
    """An index of the 36 sample questions' source summaries plus 4 distractors."""
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        titles = [r["source_title"] for r in csv.DictReader(f)]
    others = [t for t in sorted(demo_summaries) if t not in titles][::997][:4]
    folder = tmp_path_factory.mktemp("rr")
    corpus = folder / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for k, t in enumerate(titles + others):
            f.write(json.dumps({"id": f"doc{k}", "title": t,
                                "text": demo_summaries[t]["extract"]}) + "\n")
    res = run_cli("build_index", "--corpus", corpus, "--out", folder / "idx", "--chunk-size", "96",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    return folder / "idx"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, minilm_path) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base") / "tiny"
    BertForSequenceClassification(BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


def layout(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def lists(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / DATA_FILE).read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- quality (real MiniLM)
@pytest.mark.slow
def test_minilm_reranker_learns_to_put_the_source_first(rr_index, tmp_path):
    from pipeline.index.embedding import Embedder
    from pipeline.index.store import load_index
    from pipeline.questions import load_questions
    from pipeline.retrieval.sources import load_sources, source_rank
    from pipeline.retrieval.rerank import load_reranker
    from pipeline.retrieval.retriever import RetrievalConfig, retrieve

    out = tmp_path / "rr"
    args = [SAMPLE, "--index", rr_index, "--out", out, "--max-length", "128", "--negatives", "3",
            "--candidates", "8", "--max-steps", "30", "--lr", "1e-4", "--batch-size", "8",
            "--valid-fraction", "0.25", "--save-steps", "20", "--no-progress"]
    res = run_cli("train_reranker", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith(f"reranker {out}: 27 training lists, 30 steps; held-out source recall")
    rec = json.loads((out / RECORD_FILE).read_text())
    before, after = rec["held_out"]["before"], rec["held_out"]["after"]
    assert rec["held_out"]["questions"] == 9 and f"R@1 {before['recall@1']:.3f} -> " in last
    assert after["recall@1"] >= before["recall@1"] and after["recall@3"] >= before["recall@3"]
    assert after["recall@1"] >= 0.5 and after["recall@1"] > before["recall@1"]

    # the published folder through the inference path: the source first for most questions
    reranker = load_reranker(str(out), device="cpu")
    assert reranker.model.max_seq_length == 128  # the trained length, from the record
    qs = load_questions(SAMPLE)
    sources = load_sources(SAMPLE, qs)
    store = load_index(rr_index)
    cands = retrieve(qs, store, Embedder(store.meta["embedder"]["name"], device="cpu"),
                     RetrievalConfig(top_k=8, retriever="hybrid"), progress=False)
    top = reranker.rerank(qs, cands, top_k=3)
    assert all(c.scores == sorted(c.scores, reverse=True) for c in top)
    held = set(rec["data"]["held_out_ids"])
    train_first = [source_rank(c, s) == 1 for q, c, s in zip(qs, top, sources) if q.id not in held]
    assert sum(train_first) >= 0.7 * len(train_first), sum(train_first)

    # --resume of the finished run: nothing left to train, same folder, same weights
    files, w = layout(out), weights(out)
    res = run_cli("train_reranker", *args, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    rec2 = json.loads((out / RECORD_FILE).read_text())
    assert layout(out) == files and rec2["training"]["global_step"] == 30
    assert rec2["training"]["resumed_from"] == "checkpoint-30"
    assert all((w[k] == v).all() for k, v in weights(out).items())
    assert rec2["held_out"]["after"] == after


# ---------------------------------------------------------------- run folder and record
def test_run_record_lists_data_sha256_settings_and_the_mined_lists(rr_index, tiny_base, tmp_path):
    from pipeline.questions import load_questions
    from pipeline.retrieval.sources import is_source, load_sources

    out = tmp_path / "run"
    rec = train_reranker(RerankerConfig(questions=[str(SAMPLE)], index=str(rr_index),
                                        out=str(out), model=tiny_base, **TINY))
    assert rec == json.loads((out / RECORD_FILE).read_text())
    assert rec["kind"] == "reranker" and rec["complete"] is True
    assert rec["data"]["questions"] == [{"path": str(SAMPLE.resolve()),
                                         "sha256": hashlib.sha256(SAMPLE.read_bytes()).hexdigest()}]
    idx = rec["data"]["index"]
    assert idx["path"] == str(rr_index.resolve()) and len(idx["meta_sha256"]) == 64
    s = rec["settings"]
    assert (s["negatives"], s["candidates"], s["max_length"], s["lr"], s["loss"], s["seed"]) == \
        (3, 8, 64, 1e-3, "listnet", 0)
    assert rec["retriever"] == "hybrid" and rec["base_model"]["path"] == str(Path(tiny_base))
    assert rec["loss"]["name"] == "ListNetLoss" and rec["loss"]["lists_per_step"] == 2
    assert rec["training"]["global_step"] == 3 and rec["training"]["resumed_from"] is None
    assert {"torch", "transformers", "sentence-transformers", "python"} <= set(rec["versions"])
    assert set(rec["held_out"]) >= {"before", "after", "retrieval"}
    assert {"model.safetensors", "config.json", "tokenizer.json", RECORD_FILE, DATA_FILE,
            "checkpoints/checkpoint-3/trainer_state.json"} <= set(layout(out))
    assert not (tmp_path / ".run.partial").exists()

    # the lists: the source first, then negatives that are not the source; held out never trained
    qs = {q.id: q for q in load_questions(SAMPLE)}
    sources = dict(zip(qs, load_sources(SAMPLE, list(qs.values()))))
    rows = lists(out)
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "valid"]
    assert len(held) == 9 and [r["id"] for r in held] == rec["data"]["held_out_ids"]
    assert not {r["id"] for r in held} & {r["id"] for r in train}
    assert len(train) == rec["data"]["train_lists"] == rec["data"]["positive_from_index"] == 27
    import pandas as pd

    table = pd.read_parquet(rr_index / "passages.parquet").set_index("passage_id")
    for r in train:
        assert r["labels"] == [1, 0, 0, 0] and len(r["docs"]) == 4
        flags = [is_source(pid, table.at[pid, "doc_title"], table.at[pid, "text"], sources[r["id"]])
                 for pid in r["passage_ids"]]
        assert flags == [True, False, False, False]
        assert r["docs"][1] == with_title(table.at[r["passage_ids"][1], "doc_title"],
                                          table.at[r["passage_ids"][1], "text"])
    assert all(len(r["docs"]) == 8 and sum(r["labels"]) >= 1 for r in held)

    # --overwrite replaces a run of ours; the folder is never left missing
    rec2 = train_reranker(RerankerConfig(questions=[str(SAMPLE)], index=str(rr_index),
                                         out=str(out), model=tiny_base, overwrite=True,
                                         **{**TINY, "max_steps": 1}))
    assert rec2["training"]["global_step"] == 1


def test_bce_loss_and_a_valid_file_never_trained_on(rr_index, tiny_base, tmp_path):
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    valid = tmp_path / "valid.csv"
    with open(valid, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:4])
    out = tmp_path / "bce"
    rec = train_reranker(RerankerConfig(questions=[str(SAMPLE)], index=str(rr_index), out=str(out),
                                        model=tiny_base, loss="bce", valid=str(valid),
                                        keep_checkpoint=False, **{**TINY, "max_steps": 2}))
    assert rec["loss"]["name"] == "BinaryCrossEntropyLoss" and rec["loss"]["pos_weight"] == 3.0
    assert rec["data"]["valid"]["sha256"] == hashlib.sha256(valid.read_bytes()).hexdigest()
    assert rec["held_out"]["questions"] == 4 and rec["data"]["train_lists"] == 32
    prompts = {r["prompt"] for r in rows[:4]}
    assert not any(r["query"].startswith(tuple(prompts)) for r in lists(out) if r["split"] == "train")
    assert not (out / "checkpoints").exists()


def test_resume_continues_an_interrupted_run_from_its_last_checkpoint(rr_index, tiny_base,
                                                                      tmp_path, monkeypatch):
    cfg = dict(questions=[str(SAMPLE)], index=str(rr_index), model=tiny_base,
               **{**TINY, "max_steps": 4, "save_steps": 2})
    straight = tmp_path / "straight"
    train_reranker(RerankerConfig(out=str(straight), **cfg))

    def crash(self, args, state, control, **kw):
        if state.global_step == 3:
            raise KeyboardInterrupt
        return control

    out = tmp_path / "rr"
    monkeypatch.setattr(tr._SaveAtEnd, "on_step_end", crash)
    with pytest.raises(KeyboardInterrupt):
        train_reranker(RerankerConfig(out=str(out), **cfg))
    monkeypatch.undo()
    partial = tmp_path / ".rr.partial"
    assert not out.exists() and (partial / "checkpoints" / "checkpoint-2").is_dir()
    # a different recipe is refused; the same one resumes from checkpoint-2
    with pytest.raises(tr.OpenbookError, match="--negatives 4 differs"):
        train_reranker(RerankerConfig(out=str(out), resume=True, **{**cfg, "negatives": 4}))
    rec = train_reranker(RerankerConfig(out=str(out), resume=True, **cfg))
    assert rec["training"]["resumed_from"] == "checkpoint-2" and rec["training"]["global_step"] == 4
    assert layout(out) == layout(straight)
    assert not partial.exists()
    assert lists(out) == lists(straight)  # the same mined data, not mined again
    # the straight and the resumed runs end with the same weights (same seed, same batches)
    a, b = weights(out), weights(straight)
    assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


# ---------------------------------------------------------------- refusals
def one_error(argv) -> str:
    """``python -m pipeline.train_reranker argv`` in this process: exit 2 and one error line."""
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        assert run(cli.main, [str(a) for a in argv]) == 2
    lines = [x for x in buf.getvalue().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in buf.getvalue()
    return lines[0]


def test_non_empty_out_is_refused_through_the_cli(rr_index, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = run_cli("train_reranker", SAMPLE, "--index", rr_index, "--out", out)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert err[-1].startswith(f"error: --out {out}") and "not a reranker run" in err[-1]
    assert "not a reranker run" in one_error([SAMPLE, "--index", rr_index, "--out", out,
                                              "--overwrite"])
    assert layout(out) == ["notes.txt"] and not (tmp_path / ".mine.partial").exists()


def test_questions_without_source_are_refused_through_the_cli(tmp_path):
    bare = tmp_path / "bare.csv"
    with open(SAMPLE, encoding="utf-8", newline="") as f, open(bare, "w", newline="") as g:
        w = csv.writer(g)
        for row in csv.reader(f):
            w.writerow(row[:-1])  # drop source_title
    res = run_cli("train_reranker", bare, "--index", tmp_path / "none", "--out", tmp_path / "o")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: {bare}: ") and "no question names its source" in err
    assert "'context' column" in err and "source_title" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, says", [
    ([], "--index is required"),
    (["--index", "IDX", "--model", "/no/such/model"], "--model /no/such/model: no such folder"),
    (["--index", "IDX", "--resume"], "--resume: neither --out"),
    (["--index", "/no/such/index"], "--index /no/such/index: no such directory"),
    (["--index", "IDX", "--negatives", "9", "--candidates", "5"], "--candidates 5"),
])
def test_bad_flags_are_one_line_errors(rr_index, tmp_path, extra, says):
    argv = [SAMPLE, "--out", tmp_path / "o"] + [str(rr_index) if a == "IDX" else a for a in extra]
    assert says in one_error(argv)
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()
