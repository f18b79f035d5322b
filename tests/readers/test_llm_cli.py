"""A causal LM as a first-class reader through the CLIs (issue #20): predict and evaluate with a
tiny random Llama, an ensemble with an encoder reader, option-order TTA, and the errors.

Proves: ``predict --reader LLM_DIR`` (kind found from the folder's config) gives exactly the
probabilities :class:`CausalLMReader` gives on the same retrieved contexts; an ensemble of an
LLM and an encoder reader is the mean of the two; ``--tta`` reaches the reader; evaluate
reports the same scorer; a causal-LM-only flag that cannot work here (4-bit on a CPU) and a
wrong ``--reader-kind`` are one-line errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import _tiny_reader, predict_report, report_scores, run_cli
from llm_fixtures import make_tokenizer, save_tiny_lm
from pipeline.index.embedding import Embedder
from pipeline.index.store import load_index
from pipeline.questions import load_questions
from pipeline.readers.llm import CausalLMReader
from pipeline.retrieval.retriever import RetrievalConfig, retrieve


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> str:
    return save_tiny_lm(tmp_path_factory.mktemp("llm") / "llama", make_tokenizer("bytelevel"),
                        "llama")


def _predict(questions, index, out, *args) -> dict:
    return predict_report(questions, index, out, "--top-k", "2", *args)


def test_predict_with_a_causal_lm_reader_and_an_ensemble(tiny_index, easy_questions, llm,
                                                         tmp_path, minilm_path):
    rep = _predict(easy_questions, tiny_index, tmp_path / "llm.csv", "--reader", llm,
                   "--max-length", "256")
    info = rep["scorers"][0]
    assert info["kind"] == "llm" and info["scoring"] == "letter" and info["tta"] == 1
    got = report_scores(rep)
    assert got.sum(axis=1) == pytest.approx(1.0, abs=1e-3)

    store = load_index(tiny_index)
    qs = load_questions(easy_questions)
    ctx = retrieve(qs, store, Embedder(store.meta["embedder"]["name"], device="cpu"),
                   RetrievalConfig(top_k=2), progress=False)
    reader = CausalLMReader.from_pretrained(llm, device="cpu", max_length=256)
    want = reader.probabilities([q.prompt for q in qs], [list(q.options) for q in qs],
                                [c.joined() for c in ctx], progress=False)
    assert got == pytest.approx(want, abs=2e-5)
    assert len({tuple(r.argsort()) for r in got}) > 1 or np.ptp(got) > 1e-3  # not constant

    encoder = str(_tiny_reader("deberta-v2", tmp_path / "deberta", minilm_path))
    enc = report_scores(_predict(easy_questions, tiny_index, tmp_path / "enc.csv", "--reader", encoder,
                           "--max-length", "256"))
    both = _predict(easy_questions, tiny_index, tmp_path / "both.csv", "--reader", llm,
                    "--reader", encoder, "--max-length", "256")
    assert [s.get("kind") for s in both["scorers"]] == ["llm", None]
    assert report_scores(both) == pytest.approx((got + enc) / 2, abs=2e-5)

    tta = _predict(easy_questions, tiny_index, tmp_path / "tta.csv", "--reader", llm,
                   "--max-length", "256", "--tta", "5")
    assert tta["scorers"][0]["tta"] == 5
    assert not np.allclose(report_scores(tta), got, atol=1e-4)


def test_evaluate_with_a_causal_lm_reader(tiny_index, easy_questions, llm, tmp_path):
    out = tmp_path / "report"
    res = run_cli("evaluate", easy_questions, "--index", tiny_index, "--out", out, "--reader", llm,
                  "--top-k", "2", "--max-contexts", "0", "--recall-k", "1", "--no-plots",
                  "--no-progress", "--llm-scoring", "per-option")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["scorers"][0]["kind"] == "llm" and m["scorers"][0]["scoring"] == "per-option"
    assert m["config"]["llm"] == {"scoring": "per-option"}


@pytest.mark.parametrize("args, says", [
    (["--load-in-4bit"], "--load-in-4bit needs a CUDA GPU"),
    (["--reader-kind", "mc"], "multiple-choice"),
])
def test_llm_errors_are_one_line(tiny_index, easy_questions, llm, tmp_path, args, says):
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", tmp_path / "s.csv",
                  "--reader", llm, "--no-progress", *args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert says in errors[0]
    assert not (tmp_path / "s.csv").exists()



def test_time_budget_steps_down_from_the_llm_reader(tiny_index, llm, tmp_path, monkeypatch):
    """Outcome 8: --time-budget treats the LLM reader like any reader. On a fake clock where
    the LLM costs 2 s a question, 20 questions in a 40 s budget: the first chunk (16) runs the
    LLM on top_k=2 (32 s), the projection (40 s) exceeds 97%, the guard steps down to top_k=1,
    still the LLM, and the 4 left are answered there; every question gets three letters."""
    import csv

    import pipeline.answering.budget as budget
    import pipeline.answering.predictor as answering
    from conftest import SAMPLE

    class Clock:
        t = 1000.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    monkeypatch.setattr(budget, "CLOCK", clock)
    real = CausalLMReader.probabilities

    def costly(self, prompts, *a, **kw):
        clock.t += 2.0 * len(prompts)
        return real(self, prompts, *a, **kw)

    monkeypatch.setattr(CausalLMReader, "probabilities", costly)
    questions = tmp_path / "q.csv"
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with open(questions, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:21])
    out = tmp_path / "sub.csv"
    answering.predict(answering.PredictConfig(
        questions=str(questions), index=str(tiny_index), out=str(out), readers=[llm],
        max_length=256, progress=False, retrieval=answering.RetrievalConfig(top_k=2),
        time_budget=40))
    with open(out, encoding="utf-8", newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["id"] for r in got] == [r[0] for r in rows[1:21]]
    assert all(len(set(r["prediction"].split()) & set("ABCDE")) == 3 for r in got)
    rep = json.loads(out.with_name("sub.report.json").read_text())
    assert rep["scorers"][0]["kind"] == "llm"
    tb = rep["time_budget"]
    assert tb["questions_per_level"] == {"configured scorer, top_k=2": 16,
                                         "configured scorer, top_k=1": 4}
    assert tb["within_budget"] is True and clock.t - 1000.0 == pytest.approx(40.0)
