"""ONNX Runtime / OpenVINO reader backends score like torch (pipeline.readers.backends).

Tiny random BERT and DeBERTa-v2 multiple-choice models, and the real MiniLM-L6 weights
with a (seeded, random) multiple-choice head and the mean-question pooling training
gives it: probabilities within 1e-4 of torch and the same option ranking. OpenVINO
computes in bf16 on CPUs with AMX / AVX512-BF16, so there only the ranking of clearly
separated options and a looser tolerance are checked. Exports go to a temp folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from pipeline.readers import backends as B
from pipeline.readers.multiple_choice import MultipleChoiceReader, ReaderError
from tests.conftest import _tiny_reader
from tests.readers.test_multiple_choice import CONTEXTS, OPTIONS, PROMPTS

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(autouse=True)
def export_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OPENBOOK_EXPORT_DIR", str(tmp_path_factory.getbasetemp() / "exports"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_path):
    """{"bert" | "deberta" | "minilm" | "longformer": reader folder}."""
    from transformers import AutoTokenizer, BertConfig, BertForMultipleChoice

    from pipeline.training.model import load_model

    root = tmp_path_factory.mktemp("backend-readers")
    torch.manual_seed(0)
    out = {"deberta": _tiny_reader("deberta-v2", root / "deberta", minilm_path),
           "longformer": _tiny_reader("longformer", root / "longformer", minilm_path)}
    bert = BertForMultipleChoice(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(root / "bert")
    out["bert"] = root / "bert"
    model, tok, _ = load_model(minilm_path)  # mean-question pooling, identity pooler, random head
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.2)
    model.save_pretrained(root / "minilm")
    tok.save_pretrained(root / "minilm")
    out["minilm"] = root / "minilm"
    return {k: str(v) for k, v in out.items()}


def _probs(folder: str, backend: str, **kw) -> tuple[np.ndarray, MultipleChoiceReader]:
    reader = MultipleChoiceReader.from_pretrained(folder, device="cpu", batch_size=3,
                                                  backend=backend, **kw)
    return reader.probabilities(PROMPTS, OPTIONS, CONTEXTS, progress=False), reader


@pytest.mark.parametrize("kind", ["bert", "deberta", "minilm"])
def test_onnx_matches_torch(folders, kind):
    torch_p, _ = _probs(folders[kind], "torch", max_length=128)
    onnx_p, reader = _probs(folders[kind], "onnx", max_length=128)
    assert reader.describe()["backend"] == "onnx" and reader.describe()["precision"] == "float32"
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    assert (np.argsort(-onnx_p, axis=1) == np.argsort(-torch_p, axis=1)).all()
    # other batch shapes than the traced one: one question at a time, a different length
    reader.batch_size = 1
    np.testing.assert_allclose(reader.probabilities(PROMPTS, OPTIONS, CONTEXTS, progress=False),
                               torch_p, atol=1e-4)


def test_export_is_cached_and_keyed_by_the_weights(folders, tmp_path):
    from transformers import BertForMultipleChoice

    _, first = _probs(folders["bert"], "onnx")
    stamp = first.runtime.path.stat().st_mtime_ns
    _, again = _probs(folders["bert"], "onnx")
    assert again.runtime.path == first.runtime.path and again.runtime.path.stat().st_mtime_ns == stamp
    assert first.runtime.path.parent.parent == Path(os.environ["OPENBOOK_EXPORT_DIR"])
    assert not list(Path(folders["bert"]).glob("*.onnx"))  # the reader folder is never written
    copy = tmp_path / "bert"
    shutil.copytree(folders["bert"], copy)
    model = BertForMultipleChoice.from_pretrained(copy)
    with torch.no_grad():
        model.classifier.bias += 1.0
    model.save_pretrained(copy)  # retrained in place: a new export
    _, changed = _probs(str(copy), "onnx")
    assert changed.runtime.path.parent != first.runtime.path.parent


def test_three_options_and_empty_contexts_run_through_the_same_graph(folders):
    prompts, options, contexts = PROMPTS[:2], [o[:3] for o in OPTIONS[:2]], ["", ""]
    t = MultipleChoiceReader.from_pretrained(folders["minilm"], device="cpu")
    o = MultipleChoiceReader.from_pretrained(folders["minilm"], device="cpu", backend="onnx")
    np.testing.assert_allclose(o.score(prompts, options, contexts, progress=False),
                               t.score(prompts, options, contexts, progress=False), atol=1e-4)


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'openbook[openvino]')")
def test_openvino_matches_torch(folders):
    torch_p, _ = _probs(folders["minilm"], "torch", max_length=128)
    ov_p, reader = _probs(folders["minilm"], "openvino", max_length=128)
    precision = reader.describe()["precision"]
    tol = 1e-4 if precision == "float32" else 2e-2  # bf16 on AMX / AVX512-BF16
    np.testing.assert_allclose(ov_p, torch_p, atol=tol)
    assert (ov_p.argmax(1) == torch_p.argmax(1)).all()
    fp32_p, fp32 = _probs(folders["minilm"], "openvino-fp32", max_length=128)
    assert fp32.describe()["precision"] == "float32"
    np.testing.assert_allclose(fp32_p, torch_p, atol=1e-4)
    assert (np.argsort(-fp32_p, axis=1) == np.argsort(-torch_p, axis=1)).all()


def test_int8_runs_and_stays_close(folders):
    torch_p, _ = _probs(folders["minilm"], "torch", max_length=128)
    q_p, reader = _probs(folders["minilm"], "onnx-int8", max_length=128)
    assert reader.describe()["precision"] == "int8 weights" and q_p.shape == torch_p.shape
    assert np.abs(q_p - torch_p).max() < 0.1


def test_bad_backend_names_the_flag(folders):
    with pytest.raises(ReaderError, match=r"--reader-backend 'tensorrt' is not one of torch, onnx"):
        MultipleChoiceReader.from_pretrained(folders["bert"], device="cpu", backend="tensorrt")
    with pytest.raises(ReaderError, match="CPU only"):
        B.check_backend("onnx", device="cuda")
    with pytest.raises(ReaderError, match="fp32"):
        MultipleChoiceReader.from_pretrained(folders["bert"], device="cpu", backend="onnx",
                                             dtype="bfloat16")
    with pytest.raises(ReaderError, match="longformer reader cannot be exported.*torch"):
        MultipleChoiceReader.from_pretrained(folders["longformer"], device="cpu", backend="onnx")
    with pytest.raises(ReaderError, match="local reader folder"):
        MultipleChoiceReader.from_pretrained("some-org/some-reader", device="cpu", backend="onnx")


@pytest.mark.parametrize("backend,extra", [("onnx", "onnx"), ("openvino", "openvino")])
def test_missing_extra_is_one_line_naming_it(monkeypatch, backend, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a))
    with pytest.raises(ReaderError) as e:
        B.check_backend(backend)
    msg = str(e.value)
    assert "\n" not in msg and f"pip install 'openbook[{extra}]'" in msg
    assert msg.startswith(f"--reader-backend {backend} needs") and msg.endswith("--reader-backend torch")


def test_load_reader_and_predict_config_pass_the_backend(folders):
    from pipeline.answering.predictor import PredictConfig
    from pipeline.answering.scoring import reader_for
    from pipeline.readers.kinds import load_reader

    assert load_reader(folders["bert"], device="cpu", backend="onnx").backend == "onnx"
    cfg = PredictConfig(questions="q.csv", index="i", device="cpu", reader_backend="onnx")
    assert reader_for(cfg, folders["bert"]).backend == "onnx"
    assert reader_for(PredictConfig(questions="q.csv", index="i", device="cpu"),
                      folders["bert"]).backend == "torch"
    with pytest.raises(ReaderError, match="--reader-backend"):
        PredictConfig(questions="q.csv", index="i", reader_backend="gpu")


def test_predict_cli_has_the_flag():
    from pipeline.predict import parser, reader_settings

    args = parser().parse_args(["q.csv", "--index", "i", "--reader-backend", "openvino"])
    assert reader_settings(args)["reader_backend"] == "openvino"
    with pytest.raises(SystemExit):
        parser().parse_args(["q.csv", "--index", "i", "--reader-backend", "tensorrt"])
