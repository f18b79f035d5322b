"""Embedder backends (torch / onnx / openvino, int8), length sorting, export cache, CLI flag.

Uses the real MiniLM. The ONNX export (~5 s) happens once per session into a
temp folder ($OPENBOOK_EXPORT_DIR); onnx tests skip when onnxruntime is absent
(it is in the ``test`` extra), openvino tests when openvino is.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.index.embedding import Embedder
from pipeline.errors import EmbedderError
from pipeline.index.export import export_dir, require

from conftest import run_cli

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx"))
HAS_OV = HAS_ORT and importlib.util.find_spec("openvino") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="pip install '.[onnx]'")
needs_ov = pytest.mark.skipif(not HAS_OV, reason="pip install '.[openvino]'")

TEXTS = [
    "Water boils at 100 degrees Celsius at sea level.",
    "  Photosynthesis converts light energy into chemical energy stored in glucose. ",
    "DNA",
    "The mitochondrion is an organelle found in most eukaryotic cells; it produces ATP "
    "through oxidative phosphorylation, and has its own small circular genome. " * 3,
    "Newton's second law: force equals mass times acceleration.",
    "x " * 400,  # longer than max_seq_length: truncated the same way by every backend
    "Quarks combine to form hadrons such as protons and neutrons.",
]


@pytest.fixture(scope="module", autouse=True)
def export_cache(tmp_path_factory):
    """Exports go to a session temp folder, never into models/ or the model's folder."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("exported")
    mp.setenv("OPENBOOK_EXPORT_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def torch_emb():
    return Embedder()


@pytest.fixture(scope="module")
def torch_vecs(torch_emb):
    return torch_emb.encode(TEXTS)


# -- flag checks: fast, before any model is loaded ---------------------------------------
@pytest.mark.parametrize("kw, words", [
    (dict(backend="tensorrt"), ["--backend 'tensorrt'", "torch, onnx, openvino"]),
    (dict(quantize="int4"), ["--quantize 'int4'", "none, int8"]),
    (dict(quantize="int8"), ["--quantize int8 needs --backend onnx or --backend openvino"]),
    (dict(backend="onnx", device="cuda"), ["--backend onnx runs on the CPU only", "--device cpu"]),
])
def test_bad_backend_flags_are_refused_with_the_fix(kw, words):
    with pytest.raises(EmbedderError) as e:
        Embedder(**kw)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("backend, quantize, extra", [
    ("onnx", None, "openbook[onnx]"), ("openvino", None, "openbook[openvino]"),
    ("openvino", "int8", "openbook[openvino]")])
def test_missing_packages_name_the_flag_and_the_extra(monkeypatch, backend, quantize, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a))
    with pytest.raises(EmbedderError) as e:
        require(backend, quantize)
    msg = str(e.value)
    assert f"--backend {backend}" in msg and extra in msg and "--backend torch" in msg
    assert ("onnxruntime" in msg) == (backend == "onnx" or quantize == "int8")
    with pytest.raises(EmbedderError, match="pip install"):  # the Embedder checks the same way
        Embedder(backend=backend, quantize=quantize, device="cpu")


# -- torch: sorting by length keeps the caller's order -----------------------------------
def test_sorted_batches_return_rows_in_input_order(torch_emb, torch_vecs):
    one_by_one = np.vstack([torch_emb.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(torch_vecs, one_by_one, atol=2e-5)
    unsorted = torch_emb.model.encode(TEXTS, batch_size=3, normalize_embeddings=True)
    np.testing.assert_allclose(torch_vecs, unsorted, atol=2e-5)
    small_batches = torch_emb.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(torch_vecs, small_batches, atol=2e-5)
    assert torch_vecs.dtype == np.float32 and torch_vecs.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(torch_vecs, axis=1), 1.0, atol=1e-5)


def test_describe_records_backend_and_precision(torch_emb):
    d = torch_emb.describe()
    assert d["backend"] == "torch" and d["quantize"] == "none" and d["dtype"] == "float32"
    assert d["name"] == "sentence-transformers/all-MiniLM-L6-v2" and d["dim"] == 384
    assert torch_emb.batch_size == 16  # faster than 32 or 64 on a CPU (benchmarks.throughput)


# -- onnx ---------------------------------------------------------------------------------
@needs_ort
def test_onnx_matches_torch_and_is_cached(torch_vecs, export_cache, minilm_path):
    emb = Embedder(backend="onnx")
    vecs = emb.encode(TEXTS, batch_size=3)  # several batches, sorted and restored
    cos = np.sum(vecs * torch_vecs, axis=1)
    assert cos.min() > 0.9999, cos
    assert emb.encode([]).shape == (0, 384)
    d = emb.describe()
    assert (d["backend"], d["quantize"], d["dtype"]) == ("onnx", "none", "float32")
    assert emb.batch_size == 32
    folder = export_dir(emb.path, emb.name)
    assert folder.parent == export_cache and (folder / "model.onnx").exists()
    record = json.loads((folder / "export.json").read_text())
    assert record["model"] == emb.name and "input_ids" in record["inputs"]
    assert not any(p.name.endswith(".onnx") for p in Path(minilm_path).rglob("*"))
    mtime = (folder / "model.onnx").stat().st_mtime_ns
    again = Embedder(backend="onnx")  # cached: no second export
    assert (folder / "model.onnx").stat().st_mtime_ns == mtime
    np.testing.assert_allclose(again.encode(TEXTS[:2]), vecs[:2], atol=1e-6)


@needs_ort
def test_onnx_int8_is_close_but_not_equal(torch_vecs):
    emb = Embedder(backend="onnx", quantize="int8")
    vecs = emb.encode(TEXTS)
    cos = np.sum(vecs * torch_vecs, axis=1)
    assert cos.min() > 0.97, cos
    assert not np.allclose(vecs, torch_vecs, atol=1e-4)  # really quantised
    assert emb.describe()["quantize"] == "int8"
    # Queries embedded with torch still find the int8 passage vectors.
    assert (np.argmax(torch_vecs @ vecs.T, axis=1) == np.arange(len(TEXTS))).all()


@needs_ort
def test_unwritable_export_folder_says_which_variable_to_set(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OPENBOOK_EXPORT_DIR", str(blocker / "exports"))
    with pytest.raises(EmbedderError, match=r"\$OPENBOOK_MODELS"):
        Embedder(backend="onnx")


@needs_ov
def test_openvino_matches_torch(torch_vecs):
    emb = Embedder(backend="openvino")
    vecs = emb.encode(TEXTS, batch_size=3)
    assert np.sum(vecs * torch_vecs, axis=1).min() > 0.999  # bf16 on CPUs with AMX
    assert emb.describe()["backend"] == "openvino"
    assert emb.describe()["dtype"] in ("float32", "bfloat16", "float16")


# -- CLI ------------------------------------------------------------------------------------
@needs_ort
def test_build_index_with_onnx_backend_records_it(tmp_path, demo_summaries):
    corpus = tmp_path / "tiny.jsonl"
    titles = sorted(demo_summaries)[::800][:6]
    corpus.write_text("".join(json.dumps({"title": t, "text": demo_summaries[t]["extract"]}) + "\n"
                              for t in titles), encoding="utf-8")
    out = tmp_path / "idx"
    res = run_cli("build_index", "--corpus", corpus, "--out", out, "--backend", "onnx",
                  "--no-bm25", "--no-progress")
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["embedder"]["backend"] == "onnx" and meta["embedder"]["quantize"] == "none"
    assert meta["counts"]["passages"] >= len(titles)


def test_build_index_refuses_int8_with_torch(tmp_path):
    res = run_cli("build_index", "--format", "demo", "--limit", "2", "--out", tmp_path / "idx",
                  "--quantize", "int8", "--no-progress")
    assert res.returncode == 2
    assert "--quantize int8 needs --backend onnx or --backend openvino" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "idx").exists()
