"""Damaged and hostile index artifacts (issue #24, items 4-6), built here from a copy of the
tiny index: every field of ``meta.json`` that is read is validated, ``files`` names only
files inside the index, damage the size check cannot see is caught by the search, and
each is one ``error:`` line naming the file or key and the fix (exit 2, no traceback)."""

from __future__ import annotations

import json
import os

import pytest

from reliability_helpers import assert_user_error, questions_file, run_cli
from reliability_helpers import idx, rel_index  # noqa: F401 (fixtures)


def _predict(idx, tmp_path, *extra):
    out = tmp_path / "out" / "submission.csv"
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out", out,
                  "--no-progress", *extra)
    assert not out.exists()
    return res


def _edit_meta(idx, edit) -> None:
    meta = json.loads((idx / "meta.json").read_text(encoding="utf-8"))
    edit(meta)
    (idx / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


# -- item 4: damage of the same size is not answered silently -------------------------------


def test_vectors_overwritten_in_place_are_an_error_not_abc(idx, tmp_path):
    """NaN vectors, same size: the default size check passes, every search comes back empty.
    It used to answer "A B C" for every question with exit 0."""
    path = idx / "faiss.index"
    data = bytearray(path.read_bytes())
    n = 3 * 384 * 4  # the vectors are the file's tail
    data[-n:] = b"\xff" * n
    path.write_bytes(bytes(data))
    res = _predict(idx, tmp_path, "--retriever", "dense")
    assert_user_error(res, f"--index {idx}", "faiss.index are damaged", "--verify-index full",
                      "rebuild the index")


# -- item 5: right size, wrong content; a meta.json of the wrong shape ---------------------


def _npy_garbage(idx):
    path = idx / "bm25" / "indices.csc.index.npy"
    data = bytearray(path.read_bytes())
    data[128:] = b"\x7f" * (len(data) - 128)  # keep the header, ruin the row ids
    path.write_bytes(bytes(data))


def _npy_header(idx):
    path = idx / "bm25" / "data.csc.index.npy"
    data = path.read_bytes()
    assert b"'<f4'" in data
    path.write_bytes(data.replace(b"'<f4'", b"'|O' "))  # an object (pickle) array, same size


def _vocab_list(idx):
    path = idx / "bm25" / "vocab.index.json"
    n = path.stat().st_size
    path.write_text('["' + "a" * (n - 4) + '"]')


def _vocab_ids_out_of_range(idx):
    path = idx / "bm25" / "vocab.index.json"
    vocab = json.loads(path.read_text())
    text = json.dumps({k: v + 10_000 for k, v in vocab.items()}, separators=(",", ":"))
    path.write_text(text[: path.stat().st_size - 1] + "}" if len(text) > path.stat().st_size
                    else text)


@pytest.mark.parametrize("damage", [_npy_garbage, _npy_header, _vocab_list,
                                    _vocab_ids_out_of_range],
                         ids=["npy_content", "npy_header", "vocab_list", "vocab_ids"])
def test_bm25_file_of_right_size_wrong_content(damage, idx, tmp_path):
    damage(idx)
    res = _predict(idx, tmp_path, "--retriever", "hybrid", "--verify-index", "none")
    assert_user_error(res, f"--index {idx}", "BM25 files", "damaged",
                      f"python -m pipeline.bm25 --index {idx}")


@pytest.mark.parametrize("edit,needles", [
    (lambda m: m.clear() or m.update({"x": [1]}), ["format version"]),
    (lambda m: m["files"]["faiss.index"].pop("bytes"), ["'files.faiss.index.bytes'"]),
    (lambda m: m["files"]["faiss.index"].update(bytes="big"), ["'files.faiss.index.bytes'", "big"]),
    (lambda m: m["index"].update(nprobe="many"), ["'index.nprobe'", "many", "an integer"]),
    (lambda m: m["embedder"].update(dim="wide"), ["'embedder.dim'", "wide"]),
    (lambda m: m["embedder"].update(dim=True), ["'embedder.dim'"]),
    (lambda m: m["embedder"].update(normalize="yes"), ["'embedder.normalize'"]),
    (lambda m: m["counts"].update(passages=-3), ["'counts.passages'"]),
    (lambda m: m.update(files=["faiss.index"]), ["'files'", "an object"]),
    (lambda m: m["bm25"].update(dir="../../elsewhere"), ["'bm25.dir'"]),
], ids=["no_format", "no_bytes", "bytes_str", "nprobe_str", "dim_str", "dim_bool",
        "normalize_str", "negative_count", "files_list", "bm25_dir"])
def test_meta_field_of_the_wrong_type(edit, needles, idx, tmp_path):
    _edit_meta(idx, edit)
    res = _predict(idx, tmp_path, "--retriever", "hybrid")
    assert_user_error(res, f"--index {idx}", *needles)
    if "bm25" not in needles[0]:  # the BM25 files are opened with the embedder
        assert "pipeline.index.embedding:" not in res.stderr  # before any model is loaded


@pytest.mark.parametrize("text,needle", [("[1, 2]", "not an object"), ('"index"', "not an object"),
                                         ("{", "unreadable")])
def test_meta_json_that_is_not_an_object(text, needle, idx, tmp_path):
    (idx / "meta.json").write_text(text)
    assert_user_error(_predict(idx, tmp_path), f"--index {idx}", "meta.json", needle,
                      "rebuild the index")


# -- item 6: files by name, inside the index only; no table is no check --------------------


@pytest.mark.parametrize("name,needle", [
    ("../../../etc/hostname", "outside the index directory"),
    ("/dev/zero", "outside the index directory"),
    ("zero", "outside the index directory"),  # a symlink to /dev/zero
    ("fifo", "not a regular file"),  # a FIFO inside the index (reading it would hang)
    ("escape", "outside the index directory"),  # a symlink out of the index
], ids=["dotdot", "absolute_device", "symlink_to_device", "fifo", "symlink_out"])
@pytest.mark.parametrize("verify", ["size", "full"])
def test_files_key_outside_the_index_is_refused(name, needle, verify, idx, tmp_path):
    os.symlink("/dev/zero", idx / "zero")
    os.mkfifo(idx / "fifo")
    os.symlink(tmp_path / "secret", idx / "escape")
    (tmp_path / "secret").write_text("private\n")
    _edit_meta(idx, lambda m: m["files"].update({name: {"bytes": 3, "sha256": "0" * 64}}))
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out",
                  tmp_path / "s.csv", "--verify-index", verify)
    assert_user_error(res, f"--index {idx}", repr(name), needle, "rebuild the index")


@pytest.mark.parametrize("verify", ["size", "full"])
def test_meta_without_files_is_an_error_when_checking(verify, idx, tmp_path):
    _edit_meta(idx, lambda m: m.pop("files"))
    res = _predict(idx, tmp_path, "--verify-index", verify)
    assert_user_error(res, f"--index {idx}", "no 'files' table", f"--verify-index {verify}",
                      "rebuild the index")
