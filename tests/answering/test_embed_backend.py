"""``predict --embed-backend``: the index's embedder run by ONNX Runtime / OpenVINO for the
query, stacker and zero-shot embeddings; fp32 ONNX gives torch's answers, bad settings are
one line naming the flag."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from conftest import run_cli
from reliability.reliability_helpers import assert_user_error

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


@pytest.fixture(autouse=True)
def export_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OPENBOOK_EXPORT_DIR", str(tmp_path_factory.getbasetemp() / "exports"))


def _rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not HAS_ORT, reason="pip install '.[onnx]'")
def test_onnx_embedder_gives_torchs_answers_and_is_recorded(tmp_path, tiny_index,
                                                              easy_questions):
    outs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", out,
                      "--embed-backend", backend, "--device", "cpu", "--no-progress")
        assert res.returncode == 0, res.stderr
        outs[backend] = out
        report = json.loads(out.with_suffix(".report.json").read_text())
        assert report["embed_backend"] == backend
    torch_rows, onnx_rows = _rows(outs["torch"]), _rows(outs["onnx"])
    assert len(torch_rows) >= 5 and torch_rows == onnx_rows  # fp32: the same rankings


def test_bad_embed_backend_settings_are_one_line(tmp_path, tiny_index, easy_questions,
                                                 monkeypatch):
    out = tmp_path / "s.csv"
    res = run_cli("predict", easy_questions, "--index", tiny_index, "--out", out,
                  "--embed-backend", "onnx", "--device", "cuda")
    assert_user_error(res, "--embed-backend onnx", "--device cpu")
    assert not out.exists()

    from pipeline.errors import EmbedderError
    from pipeline.retrieval.setup import check_embed_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino")
                        else real(name, *a))
    with pytest.raises(EmbedderError) as e:
        check_embed_backend("openvino", None)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--embed-backend openvino needs")
    assert "pip install 'openbook[openvino]'" in msg and msg.endswith("--embed-backend torch")
