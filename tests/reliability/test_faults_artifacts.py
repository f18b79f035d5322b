"""Untrusted index artifacts: damaged files, an edited ``meta.json`` and an index built
differently from what ``predict`` uses are refused before any work, in one line, through
``python -m pipeline.predict`` (``--verify-index none|size|full``)."""

from __future__ import annotations

import json

import pytest

from reliability_helpers import (assert_user_error, flip_bytes, questions_file, run_cli,
                                 snapshot, truncate)
from reliability_helpers import idx, rel_index  # noqa: F401 (fixtures)


def _predict(idx, tmp_path, *extra):
    out = tmp_path / "out" / "submission.csv"
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out", out, *extra)
    return res, out


def _edit_meta(idx, edit) -> None:
    meta = json.loads((idx / "meta.json").read_text(encoding="utf-8"))
    edit(meta)
    (idx / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


@pytest.mark.parametrize("name", ["faiss.index", "passages.parquet", "bm25/data.csc.index.npy"])
def test_tampered_file_same_size_caught_by_full_check(name, idx, tmp_path):
    """Flipped bytes in the middle keep the size: only the sha256 check sees them (a flip
    inside the vectors would otherwise load and silently return wrong passages)."""
    flip_bytes(idx / name, (idx / name).stat().st_size // 2)
    uses = ("--retriever", "hybrid") if name.startswith("bm25/") else ()  # BM25 is checked when used
    res, out = _predict(idx, tmp_path, "--verify-index", "full", *uses)
    assert_user_error(res, f"--index {idx}", f"{name} fails its sha256 check", "rebuild the")
    assert "pipeline.index.embedding:" not in res.stderr  # refused before loading any model
    assert not out.exists()


@pytest.mark.parametrize("name", ["faiss.index", "passages.parquet"])
def test_truncated_file_caught_by_default_size_check(name, idx, tmp_path):
    size = (idx / name).stat().st_size
    truncate(idx / name)
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, f"--index {idx}", f"{name} has {size // 2} bytes, meta.json says "
                                             f"{size}", "damaged; rebuild the index")
    assert not out.exists()


def test_truncated_faiss_index_without_checks_is_still_a_clean_error(idx, tmp_path):
    truncate(idx / "faiss.index")
    res, out = _predict(idx, tmp_path, "--verify-index", "none")
    assert_user_error(res, f"--index {idx}", "cannot read faiss.index", "rebuild the index")
    assert not out.exists()


def test_damaged_parquet_header_without_full_check_is_a_clean_error(idx, tmp_path):
    """A flip in a parquet page passes the size check; reading it must not be a traceback.
    (In-process: the failure only shows when passages are read, after the model loads.)"""
    from pipeline.errors import OpenbookError
    from pipeline.index.store import load_index

    flip_bytes(idx / "passages.parquet", 6)
    store = load_index(idx)  # default: sizes only
    with pytest.raises(OpenbookError, match="passages.parquet is damaged.*rebuild the index"):
        store.passages([0])


def test_full_check_passes_an_intact_index(rel_index):
    from pipeline.index.store import load_index

    before = snapshot(rel_index)
    assert load_index(rel_index, verify="full").size == 3
    assert snapshot(rel_index) == before


def test_unknown_verify_mode_is_a_usage_error(idx, tmp_path):
    res, out = _predict(idx, tmp_path, "--verify-index", "paranoid")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--verify-index: invalid choice: 'paranoid'" in res.stderr


# -- an index built differently from what predict would use ----------------------------------


def test_index_of_another_embedder_refused(idx, tmp_path):
    _edit_meta(idx, lambda m: m["embedder"].update(name="acme/other-embedder"))
    res, out = _predict(idx, tmp_path, "--embedder", "minilm")
    assert_user_error(res, "--embedder minilm differs from the embedder that built --index",
                      "acme/other-embedder", "drop --embedder, or rebuild the index")
    assert not out.exists()


def test_index_of_an_unavailable_embedder_refused(idx, tmp_path):
    _edit_meta(idx, lambda m: m["embedder"].update(name="acme/other-embedder",
                                                   path="/nonexistent/model"))
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, "embedder 'acme/other-embedder' is not installed here",
                      "make models", "--embedder PATH", "OPENBOOK_ALLOW_DOWNLOAD=1")
    assert not out.exists()


def test_index_with_another_dimension_refused(idx, tmp_path):
    _edit_meta(idx, lambda m: m["embedder"].update(dim=768))
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, f"--index {idx}", "vectors are 384-d but meta.json says 768",
                      "rebuild the index")
    assert not out.exists()


def test_index_without_normalisation_refused(idx, tmp_path):
    _edit_meta(idx, lambda m: m["embedder"].update(normalize=False))
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, f"--index {idx}", "normalize=False", "L2-normalised query vectors",
                      "rebuild the index")
    assert "pipeline.index.embedding:" not in res.stderr  # told before loading the model
    assert not out.exists()


def test_index_format_version_from_the_future_refused(idx, tmp_path):
    _edit_meta(idx, lambda m: m.update(format_version=99))
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, f"--index {idx}", "format version 99", "rebuild the index")


def test_unreadable_meta_json_refused(idx, tmp_path):
    truncate(idx / "meta.json", 0.3)
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, f"--index {idx}", "meta.json is unreadable", "rebuild the index")


def test_meta_json_missing_a_field_refused(idx, tmp_path):
    _edit_meta(idx, lambda m: m["embedder"].pop("dim"))
    res, out = _predict(idx, tmp_path)
    assert_user_error(res, f"--index {idx}", "meta.json has no 'embedder.dim'", "rebuild the index")
