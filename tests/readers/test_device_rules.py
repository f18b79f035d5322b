"""GPU settings chosen from the device (issue #23 outcome 4), checked without a GPU by faking
what torch reports: bf16 only where it is native (compute capability >= 8), fp16 on a T4,
fp32 on a CPU; the batch from free GPU memory; a CPU keeps its fixed batch."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from pipeline import device as dev
from pipeline.readers.llm_loading import default_dtype as llm_dtype
from pipeline.readers.multiple_choice import MultipleChoiceReader


@pytest.mark.parametrize("capability, want", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                              ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_dtype_follows_the_compute_capability(monkeypatch, capability, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # a T4 says yes too
    assert dev.default_dtype("cuda") == want == dev.default_dtype("cuda:1")
    assert llm_dtype(None, "cuda") == want  # the LLM reader follows the same rule
    assert dev.default_dtype("cpu") == torch.float32
    assert llm_dtype("float16", "cuda") == torch.float16  # an explicit dtype wins


def test_batch_from_free_memory(monkeypatch):
    gb = 1 << 30
    free = {"v": 12 * gb}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free["v"], 16 * gb))
    assert dev.auto_batch_size("cuda", per_item_bytes=100 << 20) == 61  # half of 12 GB / 100 MB
    free["v"] = 1 * gb
    assert dev.auto_batch_size("cuda", per_item_bytes=100 << 20) == 5
    assert dev.auto_batch_size("cuda", per_item_bytes=10 * gb) == 1  # never 0
    assert dev.auto_batch_size("cuda", per_item_bytes=1) == 256  # capped
    assert dev.auto_batch_size("cpu", per_item_bytes=1) == dev.CPU_BATCH


def test_activation_estimate_grows_with_length_and_model():
    small = BertConfig(hidden_size=384, intermediate_size=1536, num_attention_heads=12)
    large = BertConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16)
    a = dev.activation_bytes(small, 5, 256, 2)
    assert dev.activation_bytes(small, 5, 512, 2) > 2 * a  # attention scores: quadratic
    assert dev.activation_bytes(large, 5, 256, 2) >= 2 * a
    assert dev.activation_bytes(small, 5, 256, 4) == 2 * a
    # DeBERTa-v3-large, 5 options x 512 tokens, fp16: tens of MB, not GB or bytes
    assert 20e6 < dev.activation_bytes(large, 5, 512, 2) < 500e6


def test_reader_batch_default_is_8_on_cpu(minilm_path):
    reader = MultipleChoiceReader.from_pretrained(minilm_path, device="cpu")
    assert reader.batch_size == dev.CPU_BATCH
    assert MultipleChoiceReader.from_pretrained(minilm_path, device="cpu",
                                                batch_size=3).batch_size == 3
