"""CausalLMReader on tiny random Llama / Mistral / Qwen2 models (no network, no downloaded weights).

Proves: batched, left-padded, length-sorted letter scores equal each prompt run alone
(the log-softmax over the vocab at the last position, read at the letter ids, summed over
several-token letters); per-option scores with the reused KV cache equal those recomputed
without it; TTA turns a model that always answers "A" into an order-independent ranking;
contexts are cut to max_length; settings come from openbook_reader.json; a saved LoRA
adapter reloads to the same scores and a wrong base is refused; accelerate disk offload
scores the same; loading errors name the fix (missing dir, not a causal LM, 4-bit on CPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_fixtures import CONTEXTS, OPTIONS, QUESTIONS, make_tokenizer, save_tiny_lm, tiny_lm
from pipeline.readers.llm import CausalLMReader
from pipeline.readers.record import ReaderError

PAIRS = {"llama": "metaspace", "mistral": "wordpiece", "qwen2": "bytelevel"}  # arch -> tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    out = {arch: save_tiny_lm(root / arch, make_tokenizer(fam), arch) for arch, fam in PAIRS.items()}
    out["multi"] = save_tiny_lm(root / "multi", make_tokenizer("bytelevel", vocab_size=262), "llama")
    return out


def alone(reader, ids, cont):
    """Log-probs of ``cont`` after ``ids``: the model run on the one unpadded sequence."""
    with torch.no_grad():
        seq = torch.tensor([ids + cont[:-1]])
        logp = torch.log_softmax(reader.model(input_ids=seq).logits[0].float(), -1)
    return np.array([logp[len(ids) - 1 + t, c].item() for t, c in enumerate(cont)])


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "multi"])
def test_letter_scores_equal_each_prompt_scored_alone(dirs, arch):
    reader = CausalLMReader.from_pretrained(dirs[arch], batch_size=3, max_length=400)
    assert reader.tokenizer.padding_side == "left" and reader.pad_id is not None
    scores = reader.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False)
    assert scores.shape == (4, 5) and scores.dtype == np.float32
    items, _ = reader._items(QUESTIONS, OPTIONS, CONTEXTS, [1, 2, 3, 4])
    lengths = {len(it[2]) for it in items}
    assert len(lengths) > 1  # padding really happened inside a batch
    expected = [[alone(reader, it[2], ids).sum() for ids in reader.letter_ids] for it in items]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    if arch == "multi":
        assert all(len(ids) == 2 for ids in reader.letter_ids)
    probs = reader.probabilities(QUESTIONS, OPTIONS, CONTEXTS, progress=False)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    # input order is kept: scoring a subset gives the same rows
    np.testing.assert_allclose(reader.score(QUESTIONS[2:], OPTIONS[2:], CONTEXTS[2:], progress=False),
                               scores[2:], atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("mode", ["mean", "yes"])
def test_per_option_kv_cache_gives_the_uncached_scores(dirs, arch, mode):
    reader = CausalLMReader.from_pretrained(dirs[arch], scoring="per-option", per_option=mode,
                                            batch_size=4, max_length=400)
    calls = []
    hook = reader.model.register_forward_hook(lambda *_: calls.append(1))
    cached = reader.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False)
    n_cached, calls[:] = len(calls), []
    reader.kv_cache = False
    uncached = reader.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False)
    hook.remove()
    assert n_cached == 2 and len(calls) == 4 * 5  # prefix once per batch vs once per option
    np.testing.assert_allclose(cached, uncached, atol=1e-4)
    conts, scored = reader.continuations(OPTIONS[1])
    if mode == "mean":  # the mean log-prob of the option's own tokens
        items, _ = reader._items(QUESTIONS[1:2], OPTIONS[1:2], CONTEXTS[1:2], [1])
        np.testing.assert_allclose(cached[1], [alone(reader, items[0][2], c).mean() for c in conts],
                                   atol=1e-4)
    else:
        assert len(set(tuple(c[-k:]) for c, k in zip(conts, scored))) == 1  # the same " yes"


def biased_reader(path, bias=30.0, **kw):
    """The tiny Llama with an lm_head bias towards the token of letter A (always answers A)."""
    reader = CausalLMReader.from_pretrained(path, max_length=400, **kw)
    head = reader.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[reader.letter_ids[0][0]] = bias
    reader.model.lm_head = biased
    return reader


def test_tta_removes_a_positional_bias(dirs):
    base = OPTIONS[0]
    shifts = [base[k:] + base[:k] for k in range(5)]  # the same question, options rotated
    qs, ctx = [QUESTIONS[0]] * 5, [CONTEXTS[0]] * 5
    plain = biased_reader(dirs["llama"])
    p = plain.probabilities(qs, shifts, ctx, progress=False)
    assert (p.argmax(1) == 0).all() and p[:, 0].min() > 0.9  # always "A", whatever option is there
    assert len({shifts[i][0] for i in range(5)}) == 5  # ... so the chosen option follows position
    tta = biased_reader(dirs["llama"], tta=5)
    q = tta.probabilities(qs, shifts, ctx, progress=False)
    by_option = np.array([[q[i, shifts[i].index(o)] for o in base] for i in range(5)])
    np.testing.assert_allclose(by_option, np.repeat(by_option[:1], 5, axis=0), atol=1e-5)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-5)
    # every option was shown once at every position, so the bias is shared out evenly
    np.testing.assert_allclose(by_option, 0.2, atol=1e-3)


def test_long_contexts_are_cut_to_max_length(dirs):
    reader = CausalLMReader.from_pretrained(dirs["qwen2"], max_length=120, scoring="per-option")
    items, _ = reader._items(QUESTIONS, OPTIONS, [c * 20 for c in CONTEXTS], [1, 2, 3, 4])
    for it in items:
        assert len(it[2]) + max(len(c) for c in it[3]) <= 120
    assert reader.score(QUESTIONS, OPTIONS, [c * 20 for c in CONTEXTS], progress=False).shape == (4, 5)


def test_settings_from_the_record_and_explicit_overrides(tmp_path):
    tok = make_tokenizer("bytelevel")
    path = save_tiny_lm(tmp_path / "m", tok, "qwen2", record={
        "kind": "llm", "max_length": 200, "llm": {"scoring": "per-option", "per_option": "yes", "tta": 1}})
    reader = CausalLMReader.from_pretrained(path)
    d = reader.describe()
    assert (d["kind"], d["max_length"], d["scoring"], d["per_option"], d["template"]) == (
        "llm", 200, "per-option", "yes", "per-option")
    reader = CausalLMReader.from_pretrained(path, scoring="letter", max_length=64)
    assert (reader.scoring, reader.max_length, reader.template_name) == ("letter", 64, "default")
    plain = save_tiny_lm(tmp_path / "plain", tok, "qwen2")
    assert CausalLMReader.from_pretrained(plain).max_length == 512  # min(1024, positions)


@pytest.fixture(scope="module")
def adapter(dirs, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(dirs["llama"])
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "lora"
    peft_model.save_pretrained(out)
    make_tokenizer("metaspace").save_pretrained(out)
    record = {"kind": "llm", "base_model": dirs["llama"], "base_architecture": "LlamaForCausalLM",
              "vocab_size": base.config.vocab_size, "max_length": 300, "llm": {"scoring": "letter"}}
    (out / "openbook_reader.json").write_text(json.dumps(record))
    return out, peft_model.eval(), record


def test_a_saved_adapter_reloads_to_the_same_scores(dirs, adapter):
    out, peft_model, _ = adapter
    reloaded = CausalLMReader.from_pretrained(out)
    assert reloaded.describe()["adapter"] and reloaded.max_length == 300
    in_memory = CausalLMReader(peft_model, make_tokenizer("metaspace"), name="mem", max_length=300)
    base = CausalLMReader.from_pretrained(dirs["llama"], max_length=300)
    s = reloaded.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False)
    np.testing.assert_allclose(s, in_memory.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False), atol=1e-5)
    assert np.abs(s - base.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False)).max() > 1e-3


@pytest.mark.parametrize("change, message", [
    ({"base_model": "/no/such/base"}, "base model /no/such/base is missing"),
    ({"vocab_size": 99}, "vocabulary of 99 tokens"),
    ({"base_architecture": "MistralForCausalLM"}, "trained on a MistralForCausalLM"),
])
def test_a_wrong_base_is_refused(adapter, tmp_path, change, message):
    import shutil

    out, _, record = adapter
    copy = tmp_path / "lora"
    shutil.copytree(out, copy)
    (copy / "openbook_reader.json").write_text(json.dumps({**record, **change}))
    with pytest.raises(ReaderError, match=message) as e:
        CausalLMReader.from_pretrained(copy)
    assert "Fix:" in str(e.value)


def test_disk_offload_through_accelerate_scores_the_same(dirs, tmp_path):
    reader = CausalLMReader.from_pretrained(dirs["mistral"], max_length=300)
    offloaded = CausalLMReader.from_pretrained(dirs["mistral"], max_length=300, device_map="auto",
                                               max_memory={"cpu": "10KB"}, offload_folder=tmp_path)
    assert set(offloaded.model.hf_device_map.values()) == {"disk"}
    np.testing.assert_allclose(offloaded.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False),
                               reader.score(QUESTIONS, OPTIONS, CONTEXTS, progress=False), atol=1e-5)


def test_loading_errors_name_the_fix(tmp_path, dirs, monkeypatch):
    from transformers import BertConfig

    with pytest.raises(ReaderError, match="not found.*Fix:"):
        CausalLMReader.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="no config.json.*Fix:"):
        CausalLMReader.from_pretrained(tmp_path / "empty")
    BertConfig(architectures=["BertForMultipleChoice"]).save_pretrained(tmp_path / "mc")
    with pytest.raises(ReaderError, match="not a causal language model.*--reader-kind mc"):
        CausalLMReader.from_pretrained(tmp_path / "mc")
    for flag in ("4bit", "8bit"):
        with pytest.raises(ReaderError, match=f"--load-in-{flag} needs a CUDA GPU.*Fix:"):
            CausalLMReader.from_pretrained(dirs["llama"], device="cpu", **{f"load_in_{flag}": True})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ReaderError, match="Fix: pip install bitsandbytes"):
        CausalLMReader.from_pretrained(dirs["llama"], device="cuda", dtype="float16", load_in_4bit=True)


@pytest.mark.parametrize("kw, message", [({"tta": 6}, "--tta"), ({"scoring": "logits"}, "--llm-scoring"),
                                         ({"per_option": "no"}, "per-option score")])
def test_bad_options_are_refused(dirs, kw, message):
    with pytest.raises(ReaderError, match=message):
        CausalLMReader.from_pretrained(dirs["llama"], **kw)


def test_a_tokenizer_larger_than_the_model_is_refused():
    tok = make_tokenizer("bytelevel")
    model = tiny_lm("llama", make_tokenizer("bytelevel", vocab_size=262))  # 262 < letter ids
    with pytest.raises(ReaderError, match="exceed the model's 262 embeddings"):
        CausalLMReader(model, tok, name="x", max_length=64)
