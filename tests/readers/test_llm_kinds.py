"""pipeline.readers.kinds: which reader a folder is, and load_reader for both kinds.

Proves: a *ForCausalLM folder, a CAUSAL_LM adapter folder and a record saying kind llm are
"llm"; an encoder folder and an unknown hub name are "mc"; an explicit kind wins; a bad
kind names --reader-kind; load_reader returns the matching reader class, and LLM options
given for an encoder reader are reported, not silently used.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import BertConfig, BertForMultipleChoice

from llm_fixtures import make_tokenizer, save_tiny_lm
from pipeline.readers.kinds import load_reader, reader_kind
from pipeline.readers.llm import CausalLMReader
from pipeline.readers.multiple_choice import MultipleChoiceReader
from pipeline.readers.record import ReaderError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    tok = make_tokenizer("wordpiece")
    out = {"llm": save_tiny_lm(root / "llm", tok, "llama")}
    torch.manual_seed(0)
    mc = BertForMultipleChoice(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64))
    mc.save_pretrained(root / "mc")
    tok.save_pretrained(root / "mc")
    out["mc"] = str(root / "mc")
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    out["adapter"] = str(root / "adapter")
    (root / "recorded").mkdir()
    (root / "recorded" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "recorded" / "openbook_reader.json").write_text(json.dumps({"kind": "llm"}))
    out["recorded"] = str(root / "recorded")
    return out


@pytest.mark.parametrize("folder, kind", [("llm", "llm"), ("mc", "mc"), ("adapter", "llm"),
                                          ("recorded", "llm")])
def test_auto_kind_of_a_folder(folders, folder, kind):
    assert reader_kind(folders[folder]) == kind


def test_hub_names_and_explicit_kinds():
    assert reader_kind("someone/not-on-disk") == "mc"
    assert reader_kind("someone/not-on-disk", "llm") == "llm"
    with pytest.raises(ReaderError, match="--reader-kind.*auto, mc, llm"):
        reader_kind("x", "decoder")


def test_load_reader_returns_the_matching_reader(folders, caplog):
    llm = load_reader(folders["llm"], max_length=128, batch_size=2, tta=2, scoring=None)
    assert isinstance(llm, CausalLMReader) and (llm.tta, llm.batch_size, llm.max_length) == (2, 2, 128)
    with caplog.at_level(logging.WARNING, logger="pipeline.readers.kinds"):
        mc = load_reader(folders["mc"], max_length=64, tta=5, load_in_4bit=False)
    assert isinstance(mc, MultipleChoiceReader) and mc.max_length == 64
    assert "do not apply" in caplog.text and "tta" in caplog.text and "load_in_4bit" not in caplog.text
    with pytest.raises(ReaderError, match="not a causal language model"):
        load_reader(folders["mc"], kind="llm")
