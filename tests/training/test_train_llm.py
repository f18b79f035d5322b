"""``pipeline.train`` on a causal LM: LoRA adapters on a tiny random Llama (no downloaded weights).

Proves: the letter loss overfits 8 questions (from above ln 5 to well below it); the saved
reader is an fp32 adapter plus its record and reloads (``load_reader``) to the in-training
model's probabilities; the CLI trains, validates and fits the stacker; ``--resume`` after a
stop gives the uninterrupted run's losses and weights; a base that went missing or has
another vocabulary is refused with one line naming the path and the fix.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "readers"))
from llm_fixtures import (CONTEXTS, OPTIONS, QUESTIONS, make_tokenizer, save_tiny_lm,  # noqa: E402
                          tiny_lm)

from conftest import run_cli  # noqa: E402
from pipeline.questions import load_questions  # noqa: E402
from pipeline.readers.kinds import load_reader, reader_kind  # noqa: E402
from pipeline.readers.record import ReaderError  # noqa: E402
from pipeline.training.config import TrainConfig  # noqa: E402

ANSWERS = "ABCDEDCB"
MORE = [("Which is the unit of charge?", ["coulomb", "Mars", "oxygen", "water", "genes"],
         "The coulomb is the unit of electric charge."),
        ("What boils at 100 degrees?", ["water", "nitrogen", "Mars", "the Sun", "coulomb"],
         "Water boils at 100 degrees."),
        ("Who published general relativity?", ["Einstein", "Mars", "the nucleus", "oxygen", "Venus"],
         "Einstein published general relativity in 1915."),
        ("What freezes at 0 degrees?", ["water", "Saturn", "Jupiter", "glucose", "Mercury"],
         "Water freezes at 0 degrees.")]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny random Llama with a SentencePiece-style tokenizer (one-token letters)."""
    return save_tiny_lm(tmp_path_factory.mktemp("base") / "llama", make_tokenizer("metaspace"), "llama")


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> Path:
    """8 labelled questions with a short 'context' column; the right option (listed first in
    the fixtures) is moved to the letter of ANSWERS."""
    rows = list(zip(QUESTIONS, OPTIONS, [c[:80] for c in CONTEXTS])) + MORE
    path = tmp_path_factory.mktemp("q") / "eight.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "context", *"ABCDE", "answer"])
        for i, ((q, opts, ctx), a) in enumerate(zip(rows, ANSWERS)):
            opts = list(opts)
            opts.insert("ABCDE".index(a), opts.pop(0))
            w.writerow([f"q{i}", q, ctx, *opts, a])
    return path


def _cfg(train_csv, out, model, **kw) -> TrainConfig:
    return TrainConfig(**{"train": str(train_csv), "out": str(out), "model": model,
                          "use_context_column": True, "valid_split": 0, "max_length": 256,
                          "progress": False, "stack": False, **kw})


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()
            if "loss" in json.loads(x)]


def _probs(reader, qs) -> np.ndarray:
    return reader.probabilities([q.prompt for q in qs], [list(q.options) for q in qs],
                                [q.context for q in qs], progress=False)


@pytest.fixture(scope="module")
def overfit(base, eight, tmp_path_factory):
    from pipeline.training.loop import train

    out = tmp_path_factory.mktemp("run") / "lora"
    res = train(_cfg(eight, out, base, max_steps=150, batch_size=8, lr=2e-3, warmup=0.0,
                     shuffle_options=False, log_every=10))
    return out, res


def test_lora_overfits_eight_questions_on_the_letter_loss(overfit, eight):
    out, res = overfit
    losses = _losses(out)
    assert res.step == 150 and len(losses) == 15
    assert losses[0] > 0.8 * math.log(5)   # starts near or above chance
    assert losses[-1] < 0.1 * math.log(5)  # well below ln 5 = 1.609
    qs = load_questions(eight, require_answer=True)
    p = _probs(res.reader, qs)
    assert [("ABCDE"[i]) for i in p.argmax(1)] == list(ANSWERS)
    assert -np.mean(np.log(p[np.arange(8), ["ABCDE".index(a) for a in ANSWERS]])) < 0.2
    # only the adapters learned: the base weights are those of the saved base
    trainable = {n for n, p in res.reader.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_the_saved_adapter_reloads_to_the_training_scores(overfit, base, eight):
    from safetensors import safe_open

    out, res = overfit
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
        assert all("lora_" in k for k in f.keys())
    record = json.loads((out / "openbook_reader.json").read_text())
    assert record["kind"] == "llm" and record["base_model"] == str(Path(base).resolve())
    assert record["base_architecture"] == "LlamaForCausalLM"
    assert record["vocab_size"] == len(make_tokenizer("metaspace"))
    assert record["llm"] == {"scoring": "letter", "template": "default", "use_chat_template": False}
    assert record["max_length"] == 256 and record["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert {"source", "query", "focus", "top_k", "top_k_train", "embedder", "index"} <= set(record["retrieval"])
    assert record["retrieval"]["source"] == "context column" and record["step"] == 150

    assert reader_kind(out) == "llm"
    reloaded = load_reader(out)
    assert type(reloaded).__name__ == "CausalLMReader" and reloaded.describe()["adapter"]
    qs = load_questions(eight, require_answer=True)
    np.testing.assert_allclose(_probs(reloaded, qs), _probs(res.reader, qs), atol=1e-5)
    untrained = load_reader(base)
    assert np.abs(_probs(untrained, qs) - _probs(reloaded, qs)).max() > 0.1


def test_cli_trains_validates_and_writes_the_record(base, eight, tmp_path, tiny_index,
                                                    easy_questions):
    out = tmp_path / "cli"
    res = run_cli("train", eight, "--use-context-column", "--model", base, "--out", out,
                  "--max-steps", "4", "--valid", eight, "--batch-size", "4", "--lora-r", "4",
                  "--lora-target-modules", "q_proj,k_proj,v_proj", "--eval-every", "2",
                  "--contexts-infer", "2", "--query", "prompt",
                  "--stack-features", "lexical,coverage", "--log-every", "1", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "trained 4 steps" in res.stdout and "best valid MAP@3" in res.stdout
    record = json.loads((out / "openbook_reader.json").read_text())
    assert record["kind"] == "llm" and [h["step"] for h in record["validation"]] == [2, 4]
    assert record["lora"]["r"] == 4 and record["lora"]["target_modules"] == ["k_proj", "q_proj", "v_proj"]
    assert record["training"]["reader_kind"] == "auto" and record["training"]["lr"] == 2e-4
    assert (out / "last" / "adapter_model.safetensors").is_file()
    stack = json.loads((out / "openbook_stack.json").read_text())
    assert stack["features"] == ["reader", "lexical", "coverage"]
    assert [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
            if "loss" in r] == [1, 2, 3, 4]
    res = run_cli("stack", out, "--features", "lexical", "--no-progress")  # refit: either kind
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "openbook_stack.json").read_text())["features"] == ["reader", "lexical"]
    # predict loads base + adapter and reapplies the saved retrieval settings
    sub = tmp_path / "sub.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", out, "--out", sub,
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(sub.with_name("sub.report.json").read_text())
    assert report["retrieval"]["top_k"] == 2 and report["retrieval"]["query"] == "prompt"
    assert report["scorers"][0]["kind"] == "llm" and report["scorers"][0]["adapter"]


def test_resume_continues_as_if_never_stopped(base, eight, tmp_path, monkeypatch):
    """A run stopped after its step-3 checkpoint and resumed logs the uninterrupted run's
    losses and ends with its weights (data order, dropout RNG, optimizer, schedule restored)."""
    from pipeline.training import loop

    kw = dict(epochs=3, batch_size=4, save_every=3, log_every=1, lr=1e-3, lora_dropout=0.1)
    whole = loop.train(_cfg(eight, tmp_path / "whole", base, **kw))

    real = loop.save_last

    def stop_after_step_3(out, model, tok, opt, sched, state):
        real(out, model, tok, opt, sched, state)
        if state["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_last", stop_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(eight, tmp_path / "stopped", base, **kw))
    monkeypatch.setattr(loop, "save_last", real)
    assert json.loads((tmp_path / "stopped" / "last" / "trainer_state.json").read_text())["step"] == 3
    resumed = loop.train(_cfg(eight, tmp_path / "stopped", base, resume=True, **kw))
    assert resumed.step == whole.step == 6
    assert _losses(tmp_path / "stopped") == pytest.approx(_losses(tmp_path / "whole"), abs=1e-4)
    qs = load_questions(eight, require_answer=True)
    np.testing.assert_allclose(_probs(resumed.reader, qs), _probs(whole.reader, qs), atol=1e-5)


def test_a_missing_or_different_base_is_refused_in_one_line(overfit, tmp_path):
    out, _ = overfit
    adapter = tmp_path / "adapter"
    shutil.copytree(out, adapter)
    record = json.loads((adapter / "openbook_reader.json").read_text())
    moved = tmp_path / "moved-base"
    (adapter / "openbook_reader.json").write_text(json.dumps({**record, "base_model": str(moved)}))
    with pytest.raises(ReaderError) as e:
        load_reader(adapter)
    msg = str(e.value)
    assert f"base model {moved} is missing" in msg and "Fix:" in msg and "\n" not in msg

    other = save_tiny_lm(moved, make_tokenizer("wordpiece"), "llama")  # another vocabulary
    assert len(make_tokenizer("wordpiece")) != record["vocab_size"]
    with pytest.raises(ReaderError) as e:
        load_reader(adapter)
    msg = str(e.value)
    assert f"vocabulary of {record['vocab_size']} tokens but the base {other} has" in msg
    assert "Fix:" in msg and "\n" not in msg


def test_train_refuses_bad_causal_lm_input(base, eight, tmp_path):
    res = run_cli("train", eight, "--use-context-column", "--reader-kind", "llm",
                  "--model", tmp_path / "no-such-model", "--out", tmp_path / "o", "--no-progress")
    assert res.returncode == 2 and "no-such-model" in res.stderr and "Fix:" in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in res.stderr and len(errors) == 1 and "no-such-model" in errors[0]
    res = run_cli("train", eight, "--use-context-column", "--model", base, "--freeze-layers", "1",
                  "--out", tmp_path / "o2", "--no-progress")
    assert res.returncode == 2 and "--freeze-layers" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("train", eight, "--use-context-column", "--model", base, "--out", tmp_path / "o3",
                  "--lora-target-modules", "no_such_proj", "--no-progress")
    assert res.returncode == 2 and "--lora-target-modules no_such_proj" in res.stderr


def test_the_training_letter_scores_are_predicts_scores(base, eight):
    """The loss reads CausalLMReader.letter_log_probs(encode(...)): with gradients, and equal
    to what score() gives predict; several-token letters are refused with the fix."""
    from pipeline.readers.llm import CausalLMReader

    reader = CausalLMReader.from_pretrained(base, max_length=256, batch_size=3)
    qs = load_questions(eight, require_answer=True)
    args = ([q.prompt for q in qs], [list(q.options) for q in qs], [q.context for q in qs])
    logp = reader.letter_log_probs(reader.encode(*args))
    assert logp.shape == (8, 5) and logp.requires_grad
    np.testing.assert_allclose(logp.detach().numpy(), reader.score(*args, progress=False), atol=1e-4)

    tok = make_tokenizer("bytelevel", vocab_size=262)
    multi = CausalLMReader(tiny_lm("llama", tok), tok, name="multi", max_length=256)
    assert all(len(ids) == 2 for ids in multi.letter_ids)
    with pytest.raises(ReaderError, match="several tokens.*Fix:"):
        multi.letter_log_probs(multi.encode(*args))
