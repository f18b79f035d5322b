"""pipeline.retrieval.rerank: reorder retrieved passages by a cross-encoder's scores.

A fake model with a known scoring checks the order, top_k, ties and the length-sorted
batches; a tiny random BertForSequenceClassification (MiniLM tokenizer) checks the real
CrossEncoder path; folders that are not rerankers are refused with one fixable line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import run_cli
from pipeline.cli import run
from pipeline.index.chunking import with_title
from pipeline.retrieval import rerank
from pipeline.retrieval.rerank import (RECORD_FILE, Reranker, load_reranker,
                                       fuse_ranks, order_by_score)
from pipeline.questions import Question
from pipeline.retrieval.retriever import Contexts, make_query


def q(prompt: str) -> Question:
    return Question(prompt, prompt, ("a", "b", "c", "d", "e"), None, None, 1)


def ctx(*passages: tuple[str, str]) -> Contexts:
    """Contexts of (title, text), rows 10, 11, ... and retrieval scores descending."""
    n = len(passages)
    return Contexts(rows=[10 + i for i in range(n)], passage_ids=[f"p{i}:0" for i in range(n)],
                    titles=[t for t, _ in passages], texts=[x for _, x in passages],
                    scores=[1.0 - i / 10 for i in range(n)], focused="stale focus")


class FakeCrossEncoder:
    """Scores a pair by the number after 'score=' in the passage; records every batch."""

    max_seq_length = 128

    def __init__(self):
        self.batches: list[list[tuple[str, str]]] = []

    def predict(self, pairs, batch_size, show_progress_bar, activation_fn, convert_to_numpy):
        assert len(pairs) <= batch_size and not show_progress_bar
        self.batches.append(list(pairs))
        return np.array([float(re.search(r"score=(-?[\d.]+)", p).group(1)) for _, p in pairs])


def test_rerank_orders_by_score_keeps_top_k_and_restores_batch_order():
    fake = FakeCrossEncoder()
    r = Reranker(model=fake, name="fake", batch_size=2)
    questions = [q("Which is best?"), q("Short?"), q("Nothing retrieved?")]
    contexts = [ctx(("T0", "score=0.1"), ("T1", "score=3 " + "long " * 30), ("T2", "score=2"),
                    ("T3", "score=3")),
                ctx(("U0", "score=-1"), ("U1", "score=5 " + "x " * 10)),
                Contexts()]
    out = r.rerank(questions, contexts, top_k=3)
    # question 0: 3 and 3 tie (retrieval order kept), then 2; 0.1 dropped by top_k
    assert out[0].titles == ["T1", "T3", "T2"] and out[0].scores == [3.0, 3.0, 2.0]
    assert out[0].rows == [11, 13, 12] and out[0].passage_ids == ["p1:0", "p3:0", "p2:0"]
    assert out[0].texts[1] == "score=3" and out[0].focused is None
    assert out[1].titles == ["U1", "U0"] and out[1].scores == [5.0, -1.0]  # fewer than top_k
    assert out[2].passage_ids == [] and out[2].scores == []
    assert contexts[0].titles[0] == "T0" and contexts[0].focused == "stale focus"  # input intact
    # all 6 pairs of all questions in one pass: batches of 2, longest first, query = prompt + options
    lengths = [sum(len(a) + len(b) for a, b in [p]) for batch in fake.batches for p in batch]
    assert len(fake.batches) == 3 and lengths == sorted(lengths, reverse=True)
    assert fake.batches[0][0] == (make_query("Which is best?", "abcde"), "T1. score=3 " + "long " * 30)
    assert out == r.rerank(questions, contexts, top_k=3)  # deterministic
    assert [len(c.titles) for c in r.rerank(questions, contexts, top_k=0)] == [0, 0, 0]


def test_rrf_fusion_keeps_what_retrieval_was_sure_of():
    """Retrieval order T0..T4; the reranker puts T4 first and T0 second. Alone it keeps T4
    first; fused with the retrieval ranks (k=60) T0 (ranks 1 and 2) beats T4 (ranks 5 and 1),
    and the scores are the fused ones."""
    fake = FakeCrossEncoder()
    r = Reranker(model=fake, name="fake", batch_size=8)
    contexts = [ctx(("T0", "score=4"), ("T1", "score=1"), ("T2", "score=2"), ("T3", "score=0"),
                    ("T4", "score=5"))]
    alone = r.rerank([q("Q?")], contexts, top_k=3)[0]
    fused = r.rerank([q("Q?")], contexts, top_k=3, fuse=True)[0]
    assert alone.titles == ["T4", "T0", "T2"]
    assert fused.titles == ["T0", "T4", "T1"]  # T1: ranks 2 and 4 beat T2's 3 and 3
    assert fused.scores == pytest.approx([1 / 61 + 1 / 62, 1 / 65 + 1 / 61, 1 / 62 + 1 / 64])
    assert fuse_ranks([5.0, 1.0], k=0) == [2.0, 1.0]  # both orders agree: 1/1 + 1/1, 1/2 + 1/2


def test_rerank_fusion_flag(tiny_index, easy_questions, tmp_path):
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", tmp_path / "s.csv",
                  "--rerank-fusion", "borda")
    assert res.returncode == 2 and "--rerank-fusion" in res.stderr and "Traceback" not in res.stderr


def test_order_by_score_is_stable():
    assert order_by_score([1, 2, 2, 0]) == [1, 2, 0, 3]
    assert order_by_score([]) == []


# ---------------------------------------------------------------- a real (tiny) cross-encoder
def test_real_cross_encoder_reorders_by_its_own_logits(tiny_cross_encoder):
    import torch

    r = load_reranker(tiny_cross_encoder, device="cpu")
    assert load_reranker(tiny_cross_encoder, device="cpu") is r  # cached per (folder, device)
    assert r.record is None and r.describe()["trained_by_openbook"] is False
    questions = [q("What is water made of?"), q("Which planet is red?")]
    contexts = [ctx(("Water", "It is hydrogen and oxygen."), ("Iron", "Iron is a metal."),
                    ("Salt", "Salt is sodium chloride.")),
                ctx(("Mars", "Mars is the red planet."), ("Venus", "Venus is hot."))]
    out = r.rerank(questions, contexts, top_k=2)
    for qu, c, o in zip(questions, contexts, out):
        pairs = [(make_query(qu.prompt, qu.options), with_title(t, x))
                 for t, x in zip(c.titles, c.texts)]
        logits = r.model.predict(pairs, activation_fn=torch.nn.Identity())
        best = np.argsort(-logits, kind="stable")[:2]
        assert len(set(np.round(logits, 3))) == len(logits)  # no near-ties to flip
        assert o.titles == [c.titles[j] for j in best]
        assert o.scores == pytest.approx([float(logits[j]) for j in best], abs=1e-5)


# ---------------------------------------------------------------- refusals
def one_line_exit_2(capsys, name_or_path) -> str:
    """What a CLI prints for ``--rerank name_or_path``: pipeline.cli.run around load_reranker."""
    def main(argv):
        load_reranker(name_or_path, device="cpu")
        return 0

    capsys.readouterr()  # only this call's output
    assert run(main, []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --rerank ") and "Traceback" not in err[0]
    return err[0]


def test_missing_folder_or_uninstalled_hub_name_is_refused_without_network(capsys, tmp_path):
    msg = one_line_exit_2(capsys, str(tmp_path / "nope"))
    assert "no such folder" in msg and "python -m pipeline.train_reranker" in msg
    msg = one_line_exit_2(capsys, "cross-encoder/not-installed-anywhere")
    assert "no installed model" in msg and "nothing is downloaded" in msg


def test_a_reader_folder_is_refused(capsys, tmp_path, tiny_cross_encoder, minilm_path):
    import shutil

    reader = tmp_path / "reader"
    shutil.copytree(tiny_cross_encoder, reader)
    (reader / "openbook_reader.json").write_text('{"max_length": 256}')
    assert "multiple-choice reader" in one_line_exit_2(capsys, str(reader))
    mc = tmp_path / "mc"
    shutil.copytree(tiny_cross_encoder, mc)
    cfg = json.loads((mc / "config.json").read_text())
    (mc / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForMultipleChoice"]}))
    assert "--reader" in one_line_exit_2(capsys, str(mc))
    # a sentence embedder has no scoring head: not a reranker (but fine as --model to train)
    msg = one_line_exit_2(capsys, minilm_path)
    assert "not a cross-encoder" in msg and "--model" in msg


def test_bad_records_are_refused(capsys, tmp_path, tiny_cross_encoder):
    import shutil

    folder = tmp_path / "rr"
    shutil.copytree(tiny_cross_encoder, folder)
    for body, says in [("{not json", "unreadable"), ('{"kind": "reader"}', "kind 'reader'"),
                       ('{"kind": "reranker", "complete": false}', "--resume")]:
        (folder / RECORD_FILE).write_text(body)
        assert says in one_line_exit_2(capsys, str(folder))
    (folder / RECORD_FILE).write_text('{"kind": "reranker", "complete": true, "max_length": 48}')
    assert load_reranker(str(folder), device="cpu").model.max_seq_length == 48  # the trained length
    three = tmp_path / "three"
    shutil.copytree(tiny_cross_encoder, three)
    cfg = json.loads((three / "config.json").read_text())
    (three / "config.json").write_text(json.dumps({**cfg, "id2label": {"0": "a", "1": "b", "2": "c"}}))
    assert "3 labels" in one_line_exit_2(capsys, str(three))


def test_a_file_is_refused(capsys, tmp_path):
    f = tmp_path / "model.bin"
    f.write_text("x")
    assert "is a file" in one_line_exit_2(capsys, str(f))
    assert rerank.local_model_folder(str(tmp_path / "missing")) is None
