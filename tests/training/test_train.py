"""``python -m pipeline.train``: tiny random BERT/DeBERTa readers trained for a few steps.

The models are built from configs and saved with the real all-MiniLM-L6-v2
tokenizer; contexts come from a CSV column or from the tiny index that
test_cli.py builds with the real MiniLM embedder.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from conftest import _sample_rows

SHARED = REPO.parent / "shared" / "data"


def _tiny_model(kind: str, folder: Path, minilm_path: str) -> Path:
    from transformers import AutoModelForMultipleChoice, AutoTokenizer, BertConfig, DebertaV2Config

    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=512)
    config = DebertaV2Config(**common) if kind == "deberta-v2" else BertConfig(**common)
    AutoModelForMultipleChoice.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_path) -> Path:
    return _tiny_model("bert", tmp_path_factory.mktemp("m") / "bert", minilm_path)


@pytest.fixture(scope="module")
def tiny_deberta(tmp_path_factory, minilm_path) -> Path:
    return _tiny_model("deberta-v2", tmp_path_factory.mktemp("m") / "deberta", minilm_path)


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory, demo_summaries) -> Path:
    """20 sample questions with a 'context' column (their source article's summary)."""
    rows = _sample_rows()[:20]
    path = tmp_path_factory.mktemp("q") / "train.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "context", *"ABCDE", "answer"])
        for r in rows:
            ctx = demo_summaries.get(r["source_title"], {}).get("extract", "") or r["prompt"]
            w.writerow([r["id"], r["prompt"], ctx, *(r[x] for x in "ABCDE"), r["answer"]])
    return path


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_train_context_column_then_predict_uses_saved_settings(
        tiny_bert, train_csv, tiny_index, easy_questions, tmp_path):
    out = tmp_path / "reader"
    res = run_cli("train", train_csv, "--use-context-column", "--index", tiny_index,
                  "--model", tiny_bert, "--valid", train_csv, "--out", out, "--max-steps", "4",
                  "--batch-size", "4", "--max-length", "64", "--contexts-infer", "2",
                  "--query", "prompt", "--log-every", "1", "--eval-every", "2", "--select", "loss",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "trained 4 steps" in res.stdout and "best valid MAP@3" in res.stdout
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert not list(out.glob("*.bin")) and (out / "last" / "model.safetensors").is_file()
    meta = json.loads((out / "openbook_reader.json").read_text())
    assert meta["max_length"] == 64 and meta["base_model"] == str(tiny_bert)
    assert meta["retrieval"]["top_k"] == 2 and meta["retrieval"]["query"] == "prompt"
    assert meta["retrieval"]["source"] == "context column"
    assert meta["retrieval"]["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["training"]["max_steps"] == 4 and meta["training"]["lr"] > 0
    assert [h["step"] for h in meta["validation"]] == [2, 4]
    assert 0 <= meta["best"]["map@3"] <= 1
    # --select loss: the best checkpoint is the lowest validation loss
    assert meta["best"]["loss"] == min(h["loss"] for h in meta["validation"]) > 0
    assert meta["training"]["select"] == "loss"
    log = _log(out)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and "lr" in r and "head_lr" in r for r in log if "loss" in r)
    stack = json.loads((out / "openbook_stack.json").read_text())  # fitted on --valid
    # the default evidence: the content features, also gated by the evidence confidence
    assert stack["features"] == ["reader", "lexical", "coverage", "dense"]
    assert len(stack["weights"]) == 4 and all(np.isfinite(stack["weights"]))
    assert stack["gated"] == ["lexical", "coverage", "dense"]
    assert len(stack["gate_weights"]) == 3 and all(np.isfinite(stack["gate_weights"]))
    assert stack["info"]["n_questions"] == 20
    assert stack["info"]["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"

    sub = tmp_path / "sub.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", out,
                  "--out", sub, "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(sub.with_name("sub.report.json").read_text())
    assert report["retrieval"]["top_k"] == 2 and report["retrieval"]["query"] == "prompt"
    assert report["scorers"][0]["max_length"] == 64
    assert set(report["scorers"][0]["stacker"]["features"]) == set(stack["features"])
    assert set(report["scorers"][0]["stacker"]["gated"]) == set(stack["gated"])
    assert all(len(q["passages"]) == 2 for q in report["per_question"])
    # an explicit flag still wins over the reader's saved settings
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", out,
                  "--out", sub, "--overwrite", "--top-k", "3", "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(sub.with_name("sub.report.json").read_text())
    assert report["retrieval"]["top_k"] == 3 and report["retrieval"]["query"] == "prompt"


def test_train_retrieved_contexts_and_resume(tiny_deberta, train_csv, tiny_index, tmp_path):
    out = tmp_path / "reader"
    common = ["--index", tiny_index, "--model", tiny_deberta, "--out", out, "--batch-size", "4",
              "--max-length", "96", "--contexts-train", "2", "--log-every", "1",
              "--save-every", "3", "--no-progress"]
    res = run_cli("train", train_csv, *common, "--max-steps", "3")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (out / "contexts.jsonl").read_text().splitlines()]
    assert len(rows) == 21 and rows[1]["split"] == "train" and len(rows[1]["passages"]) == 2
    assert rows[1]["context"].strip()
    meta = json.loads((out / "openbook_reader.json").read_text())
    assert meta["retrieval"]["source"] == "index" and meta["retrieval"]["top_k_train"] == 2
    assert meta["retrieval"]["top_k"] == 5 and meta["step"] == 3
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["step"] == 3 and (out / "last" / "state.pt").is_file()
    mtime = (out / "contexts.jsonl").stat().st_mtime_ns

    res = run_cli("train", train_csv, *common, "--max-steps", "6", "--resume")
    assert res.returncode == 0, res.stderr
    assert "trained 6 steps" in res.stdout and "contexts from the cache" in res.stderr
    assert (out / "contexts.jsonl").stat().st_mtime_ns == mtime
    assert [r["step"] for r in _log(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "last" / "trainer_state.json").read_text())["step"] == 6
    assert json.loads((out / "openbook_reader.json").read_text())["step"] == 6

    res = run_cli("train", train_csv, *common, "--resume", "--lr", "1e-3")
    assert res.returncode == 2 and "--lr" in res.stderr and "Traceback" not in res.stderr


def test_refuses_non_empty_out(tiny_bert, train_csv, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = [train_csv, "--use-context-column", "--model", tiny_bert, "--out", out, "--max-steps", "1"]
    for extra in ([], ["--overwrite"]):
        res = run_cli("train", *args, *extra)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "--overwrite" in res.stderr or "not a training run" in res.stderr
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    res = run_cli("train", *args[:-4], "--out", tmp_path / "empty", "--resume")
    assert res.returncode == 2 and "--resume" in res.stderr and not (tmp_path / "empty").exists()


def test_bad_train_csv_is_the_loaders_error(tiny_bert, tmp_path):
    bad = tmp_path / "noanswer.csv"
    bad.write_text("id,prompt,A,B,C,D,E,context\n1,Why?,a,b,c,d,e,ctx\n", encoding="utf-8")
    res = run_cli("train", bad, "--use-context-column", "--model", tiny_bert,
                  "--out", tmp_path / "r")
    assert res.returncode == 2 and "noanswer.csv" in res.stderr and "'answer'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r").exists()
    res = run_cli("train", bad, "--model", tiny_bert, "--out", tmp_path / "r")
    assert res.returncode == 2 and "--index" in res.stderr


def test_training_batches_are_predicts_encoding(tiny_bert, train_csv, tmp_path, monkeypatch):
    """In-process: training goes through encode_question, and its tensors equal predict's."""
    import torch

    import pipeline.readers.encoding
    import pipeline.readers.multiple_choice
    from pipeline.questions import load_questions
    from pipeline.readers.multiple_choice import MultipleChoiceReader
    from pipeline.training.config import TrainConfig
    from pipeline.training.loop import epoch_plan, make_batch, train
    from pipeline.training.model import load_model

    calls = []
    real = pipeline.readers.encoding.encode_question

    def spy(*a, **k):
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(pipeline.readers.multiple_choice, "encode_question", spy)
    out = tmp_path / "r"
    train(TrainConfig(train=str(train_csv), out=str(out), model=str(tiny_bert), max_length=80,
                      use_context_column=True, max_steps=2, batch_size=3, progress=False,
                      pooling="mean-question"))
    assert len(calls) == 6  # 2 steps x 3 questions

    qs = load_questions(train_csv, require_answer=True)
    ctx = [q.context for q in qs]
    model, tok, _ = load_model(str(out))
    ours = MultipleChoiceReader(model, tok, name="t", max_length=80)
    theirs = MultipleChoiceReader.from_pretrained(out)  # what predict --reader loads
    assert theirs.max_length == 80
    identity = np.tile(np.arange(5), (len(qs), 1))
    idx = [0, 5, 7]
    got = make_batch(ours, qs, ctx, idx, identity)
    want = theirs.collator(theirs.encode([qs[i].prompt for i in idx],
                                         [list(qs[i].options) for i in idx], [ctx[i] for i in idx]))
    assert set(got) - {"labels"} == set(want) & theirs._input_names
    for k in set(got) - {"labels"}:
        assert torch.equal(got[k], want[k]), k
    assert got["labels"].tolist() == ["ABCDE".index(qs[i].answer) for i in idx]
    # the mean-pooling head is saved in config.json and restored by the reader
    saved = json.loads((out / "config.json").read_text())
    assert saved["openbook_pooling"] == "mean-question"
    assert saved["openbook_pooling_sep_token_id"] == tok.sep_token_id
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in got.items() if k != "labels"}).logits
        assert torch.allclose(logits, theirs.model(**{k: want[k] for k in got if k != "labels"}).logits)
        from transformers import AutoModelForMultipleChoice

        plain = AutoModelForMultipleChoice.from_pretrained(out).eval()  # CLS pooling: differs
        assert not torch.allclose(logits, plain(**{k: v for k, v in got.items() if k != "labels"}).logits)

    # shuffled options: the label follows the answer
    cfg = TrainConfig(train="x", out="y", use_context_column=True, batch_size=4)
    batches, perms = epoch_plan(len(qs), 0, cfg)
    assert sorted(sum(batches, [])) == list(range(len(qs)))
    b = make_batch(ours, qs, ctx, batches[0], perms)
    for row, i in enumerate(batches[0]):
        shown = [qs[i].options[j] for j in perms[i]]
        assert shown[b["labels"][row]] == qs[i].options["ABCDE".index(qs[i].answer)]
    again, perms2 = epoch_plan(len(qs), 0, cfg)
    assert again == batches and (perms2 == perms).all()
    assert epoch_plan(len(qs), 1, cfg)[0] != batches


def test_pooler_identity_for_sentence_transformers(minilm_path):
    import torch

    from pipeline.training.config import TrainConfig
    from pipeline.training.model import AUTO_MEAN, load_model, lr_factor, param_groups

    model, _, name = load_model("minilm")  # auto: a sentence-transformers checkpoint
    assert name == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.config.openbook_pooling == AUTO_MEAN
    assert torch.equal(model.bert.pooler.dense.weight, torch.eye(384))
    kept, _, _ = load_model(minilm_path, "cls", "keep")
    assert not torch.equal(kept.bert.pooler.dense.weight, torch.eye(384))
    assert getattr(kept.config, "openbook_pooling", None) is None
    groups = param_groups(model, TrainConfig(train="x", out="y", use_context_column=True,
                                             freeze_embeddings=True, freeze_layers=2,
                                             lr=1e-5, head_lr=1e-3))
    head = {id(p) for g in groups if g["head"] for p in g["params"]}
    assert {id(p) for p in model.classifier.parameters()} | \
        {id(p) for p in model.bert.pooler.parameters()} == head
    assert all(g["lr"] == (1e-3 if g["head"] else 1e-5) for g in groups)
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad
    assert not any(p.requires_grad for p in model.bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.bert.encoder.layer[2].parameters())
    f = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0 and f[10] == 1.0 and f[99] < 0.01
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)


def test_lr_factor_is_transformers_schedule_but_for_warmup():
    """Why the loop keeps its own schedule: after warmup ``lr_factor`` is exactly
    ``transformers.get_scheduler`` (cosine or linear), but its warmup is one step ahead
    (``(s + 1) / warmup``: the first step learns; transformers' first step has lr 0)."""
    import torch
    from transformers import get_scheduler

    from pipeline.training.model import lr_factor

    for schedule in ("cosine", "linear"):
        for total, warmup in ((100, 10), (37, 3), (20, 0)):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            hf = get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=total)
            theirs = [hf.lr_lambdas[0](s) for s in range(total)]
            ours = [lr_factor(s, total, warmup, schedule) for s in range(total)]
            assert ours[warmup:] == pytest.approx(theirs[warmup:], abs=1e-12)
            assert ours[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
            assert theirs[:warmup] == pytest.approx([s / warmup for s in range(warmup)])


@pytest.mark.slow
def test_minilm_learns_on_real_questions(tmp_path):
    """The user's report: MiniLM sat at ln 5 = 1.609 for 350+ steps. With the defaults it learns.

    In-process (no subprocess timeout): 200 steps take 10-30 minutes on a shared 2-core CPU.
    """
    from pipeline.training.config import TrainConfig
    from pipeline.training.loop import train

    src = SHARED / "stem_1k.csv"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    out = tmp_path / "minilm"
    train(TrainConfig(train=str(src), out=str(out), use_context_column=True, max_length=128,
                      batch_size=4, max_steps=200, log_every=20, progress=False))
    losses = [r["loss"] for r in _log(out) if "loss" in r]
    assert losses[0] > 1.58, losses  # it starts at chance (ln 5 = 1.609)
    assert min(losses) < 1.55 and np.mean(losses[-2:]) < 1.55, losses


def test_mean_question_pooling_reads_only_prompt_and_option():
    """The pooled vector is the mean over the tokens after the first separator."""
    import torch
    from transformers import BertConfig, BertForMultipleChoice

    from pipeline.readers.pooling import find_pooler, use_mean_pooling

    torch.manual_seed(0)
    model = BertForMultipleChoice(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                             num_attention_heads=1, intermediate_size=8)).eval()
    use_mean_pooling(model, "mean-question", sep_token_id=3)
    seen = {}
    find_pooler(model).register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))  # after ours
    hidden = {}
    model.bert.encoder.register_forward_hook(lambda m, a, o: hidden.update(h=o[0]))
    ids = torch.tensor([[[1, 7, 8, 3, 9, 3, 10, 3, 0]]])  # [CLS] c c [SEP] p [SEP] o [SEP] pad
    mask = (ids != 0).long()
    model(input_ids=ids, attention_mask=mask)
    want = hidden["h"][0, 3:8].mean(0)
    assert torch.allclose(seen["x"][0, 0], want, atol=1e-6)


def test_stacker_changes_predictions_and_no_stack(tiny_bert, train_csv, tiny_index, easy_questions,
                                                  tmp_path):
    """A stacker that trusts only option length makes predict rank by length; --no-stack
    leaves no stacker behind."""
    from pipeline.questions import load_questions
    from pipeline.readers.stacking import Stacker

    out = tmp_path / "reader"
    res = run_cli("train", train_csv, "--use-context-column", "--model", tiny_bert,
                  "--valid", train_csv, "--out", out, "--max-steps", "1", "--max-length", "64",
                  "--no-stack", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert not (out / "openbook_stack.json").exists()
    # pipeline.stack fits it afterwards, from the run's own settings (context column, --valid)
    res = run_cli("stack", out, "--features", "lexical,length", "--no-progress")
    assert res.returncode == 0, res.stderr
    fitted = json.loads((out / "openbook_stack.json").read_text())
    assert fitted["features"] == ["reader", "lexical", "length"] and fitted["centered"] == ["reader"]
    assert fitted["gated"] == []  # no 'dense', so no evidence confidence to gate by
    res = run_cli("stack", out, "--features", "lexical,dense", "--no-progress")
    assert res.returncode == 0 and "gated" in res.stdout, res.stderr
    assert json.loads((out / "openbook_stack.json").read_text())["gated"] == ["lexical", "dense"]
    res = run_cli("stack", out, "--features", "lexical,dense", "--no-gate", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "openbook_stack.json").read_text())["gated"] == []
    assert fitted["info"]["fitted_on"] == str(train_csv) and "valid MAP@3" in res.stdout
    for bad, says in ((["--features", "lexical,tarot"], "--features: unknown ['tarot']"),
                      (["--valid", tmp_path / "none.csv"], "none.csv")):
        res = run_cli("stack", out, *bad, "--no-progress")
        assert res.returncode == 2 and says in res.stderr, res.stderr
    res = run_cli("stack", tmp_path, "--no-progress")
    assert res.returncode == 2 and "openbook_reader.json" in res.stderr
    Stacker(["reader", "length"], [0.0, 1.0]).save(out)
    sub = tmp_path / "sub.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", out,
                  "--out", sub, "--no-progress")
    assert res.returncode == 0, res.stderr
    qs = load_questions(easy_questions)
    rows = sub.read_text().splitlines()[1:]
    for q, row in zip(qs, rows):
        longest = "ABCDE"[int(np.argmax([len(o) for o in q.options]))]
        assert row.split(",")[1].split()[0] == longest, (q.options, row)
    (out / "openbook_stack.json").write_text("{broken")
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", out,
                  "--out", sub, "--overwrite", "--no-progress")
    assert res.returncode == 2 and "openbook_stack.json" in res.stderr
    res = run_cli("train", train_csv, "--use-context-column", "--model", tiny_bert,
                  "--out", tmp_path / "r2", "--stack-features", "lexical,tarot", "--no-progress")
    assert res.returncode == 2 and "--stack-features" in res.stderr


def test_collapse_is_told_apart_from_no_learning_and_from_learning():
    from pipeline.training.loop import collapsed

    chance = math.log(5)
    rng = np.random.default_rng(0)
    noise = lambda n: 0.3 * rng.standard_normal(n)  # noqa: E731 - per-step losses are noisy
    flat = list(chance + noise(300))
    learning = list(np.linspace(chance, 1.0, 300) + noise(300))
    # collapsed: every option gets the same score, so each step's loss is ln 5 to a hair
    back = list(np.linspace(chance, 1.2, 220) + noise(220)) + list(chance + 0.01 * noise(120))
    assert not collapsed(flat, 5)  # never learned: the slow test's failure mode, not a collapse
    assert not collapsed(learning, 5)
    assert collapsed(back, 5)
    assert not collapsed(back[:230], 5)  # still below chance on average
    assert not collapsed(back[:40], 5)  # too few steps to say


def test_focus_saved_with_the_reader_and_used_by_predict(tiny_bert, train_csv, tiny_index,
                                                         easy_questions, tmp_path):
    from pipeline.training.config import _known_fields

    out = tmp_path / "reader"
    res = run_cli("train", train_csv, "--index", tiny_index, "--model", tiny_bert, "--out", out,
                  "--focus", "sentences", "--contexts-train", "2", "--contexts-infer", "2",
                  "--max-steps", "1", "--batch-size", "4", "--max-length", "64", "--no-progress")
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "openbook_reader.json").read_text())
    assert meta["retrieval"]["focus"] == "sentences" and meta["training"]["focus"] == "sentences"
    assert meta["retrieval"]["retrieval_train"]["focus"] == "sentences"
    rows = [json.loads(x) for x in (out / "contexts.jsonl").read_text().splitlines()[1:]]
    # two passages became their sentences, one a line
    assert all(len(r["context"].split("\n")) > len(r["passages"]) for r in rows)

    sub = tmp_path / "sub.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", out,
                  "--out", sub, "--no-progress")
    assert res.returncode == 0, res.stderr
    report = json.loads(sub.with_name("sub.report.json").read_text())
    assert report["retrieval"]["focus"] == "sentences" and report["retrieval"]["top_k"] == 2
    # readers saved before --focus existed were trained on the passages as they are
    assert _known_fields({"lr": 1e-4}) == {"lr": 1e-4, "focus": "none"}
    res = run_cli("train", train_csv, "--index", tiny_index, "--out", tmp_path / "x",
                  "--focus", "words")
    assert res.returncode == 2 and "--focus" in res.stderr and "Traceback" not in res.stderr


def test_split_holdout_is_seeded_disjoint_and_bounded():
    from pipeline.questions import Question
    from pipeline.training.data import holdout_size, split_holdout

    qs = [Question(f"q{i}", "p", ("a", "b", "c", "d", "e"), "A", None, i + 1) for i in range(300)]
    train, held = split_holdout(qs, 0.1, seed=3)
    assert len(held) == 30 and len(train) == 270
    assert {q.id for q in train}.isdisjoint(q.id for q in held)
    assert [q.row for q in held] == sorted(q.row for q in held)  # file order kept
    assert [q.id for q in split_holdout(qs, 0.1, seed=3)[1]] == [q.id for q in held]
    assert [q.id for q in split_holdout(qs, 0.1, seed=4)[1]] != [q.id for q in held]
    assert split_holdout(qs, 0.0, seed=3) == (qs, [])
    assert holdout_size(150, 0.1) == 0 and holdout_size(40, 0.5) == 20
    assert holdout_size(100_000, 0.1) == 500


def test_train_without_valid_holds_out_questions_for_checkpoint_and_stacker(
        tiny_bert, tiny_index, tmp_path):
    """No --valid: --valid-split of TRAIN.csv is held out (never trained on), written to
    OUT/valid_holdout.csv, used for the best checkpoint and the stacker; resume keeps it out."""
    rows = (_sample_rows() * 2)[:40]
    path = tmp_path / "train40.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", *"ABCDE", "answer"])
        for i, r in enumerate(rows):
            w.writerow([f"x{i}", r["prompt"], *(r[x] for x in "ABCDE"), r["answer"]])
    out = tmp_path / "reader"
    common = ["--index", tiny_index, "--model", tiny_bert, "--out", out, "--batch-size", "4",
              "--max-length", "64", "--contexts-train", "1", "--contexts-infer", "1",
              "--valid-split", "0.5", "--no-progress"]
    res = run_cli("train", path, *common, "--max-steps", "2")
    assert res.returncode == 0, res.stderr
    assert "holding out 20 of 40" in res.stderr
    with open(out / "valid_holdout.csv", encoding="utf-8", newline="") as f:
        held = list(csv.DictReader(f))
    assert len(held) == 20 and set(held[0]) == {"id", "prompt", *"ABCDE", "answer"}
    ctx = [json.loads(x) for x in (out / "contexts.jsonl").read_text().splitlines()[1:]]
    trained = {r["id"] for r in ctx if r["split"] == "train"}
    assert len(trained) == 20 and trained.isdisjoint(r["id"] for r in held)
    meta = json.loads((out / "openbook_reader.json").read_text())
    assert Path(meta["training"]["valid"]).name == "valid_holdout.csv" and meta["validation"]
    assert json.loads((out / "openbook_stack.json").read_text())["info"]["n_questions"] == 20

    res = run_cli("train", path, *common, "--max-steps", "4", "--resume")
    assert res.returncode == 0, res.stderr
    assert "contexts from the cache" in res.stderr  # same train/valid ids as before

    res = run_cli("train", path, *common[:-2], "--valid-split", "1.5", "--out", tmp_path / "r2")
    assert res.returncode == 2 and "--valid-split" in res.stderr and "Traceback" not in res.stderr


def test_checkpoint_selection_by_loss_or_map():
    from pipeline.training.loop import improves, validation_loss

    sure = np.array([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0]])
    assert validation_loss(np.zeros((2, 5)), ["A", "B"]) == pytest.approx(math.log(5))
    assert validation_loss(sure, ["A", "B"]) < 0.1 < validation_loss(sure, ["B", "A"])
    a, b = {"map@3": 0.70, "loss": 1.30}, {"map@3": 0.66, "loss": 1.10}
    assert improves(b, a, "loss") and not improves(a, b, "loss")
    assert improves(a, b, "map@3") and not improves(b, a, "map@3")
    assert improves(a, None, "loss") and improves(a, {"step": 3, "epoch": 0}, "loss")
    assert improves(a, {"map@3": 0.6}, "loss")  # a best from before losses were logged
    assert improves(b, a, "last") and improves(a, b, "last")
    res = run_cli("train", "x.csv", "--out", "/tmp/never", "--select", "accuracy")
    assert res.returncode == 2 and "--select" in res.stderr


def test_train_on_several_files_with_the_same_ids(tiny_bert, tiny_index, tmp_path):
    """Several TRAIN.csv files (each numbering its rows from 0, one with a context column and
    one without) are combined: ids become FILE_STEM:ID, retrieval gives every question its
    contexts, the held-out split is drawn from all of them; resume needs the same files."""
    rows = _sample_rows()[:20]
    paths = []
    for name, with_ctx in (("stem", True), ("plain", False)):
        path = tmp_path / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "prompt", *(["context"] if with_ctx else []), *"ABCDE", "answer"])
            for i, r in enumerate(rows):
                w.writerow([i, r["prompt"], *(["gold text"] if with_ctx else []),
                            *(r[x] for x in "ABCDE"), r["answer"]])
        paths.append(path)
    out = tmp_path / "reader"
    common = ["--index", tiny_index, "--model", tiny_bert, "--out", out, "--batch-size", "4",
              "--max-length", "64", "--contexts-train", "1", "--contexts-infer", "1",
              "--valid-split", "0.5", "--no-progress"]
    res = run_cli("train", *paths, *common, "--max-steps", "2")
    assert res.returncode == 0, res.stderr
    assert "holding out 20 of 40" in res.stderr
    ctx = [json.loads(x) for x in (out / "contexts.jsonl").read_text().splitlines()[1:]]
    ids = [r["id"] for r in ctx]
    assert len(set(ids)) == 40 and {i.split(":")[0] for i in ids} == {"stem", "plain"}
    assert all(r["context"] and r["context"] != "gold text" for r in ctx)  # retrieved, not read
    meta = json.loads((out / "openbook_reader.json").read_text())
    assert [Path(p).name for p in meta["training"]["train"]] == ["stem.csv", "plain.csv"]

    res = run_cli("train", *paths, *common, "--max-steps", "3", "--resume")
    assert res.returncode == 0, res.stderr
    assert "contexts from the cache" in res.stderr
    res = run_cli("train", paths[0], *common, "--max-steps", "4", "--resume")
    assert res.returncode != 0 and "differs" in res.stderr and "Traceback" not in res.stderr
