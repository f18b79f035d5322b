"""Disk full and unwritable outputs: a one-line error naming the path and what to do, no
temp file left, and the previous submission / index byte-identical.

A full disk is simulated with RLIMIT_FSIZE (writes past the limit fail with EFBIG, the way
they fail with ENOSPC on a full disk); that works for root too. Permission tests use a
*file* as a folder component, which fails for root as well; the chmod variants need a
non-root user and are skipped as root (CI runs as root).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_helpers import (BUILD_FLAGS, REPO, assert_user_error, copy_index, leftovers,
                                 questions_file, run_cli, run_cli_file_limit, snapshot,
                                 tiny_corpus, tiny_index)



def _permissions_enforced() -> bool:
    """False for root (CAP_DAC_OVERRIDE writes into read-only folders), as in CI."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ro = Path(d) / "ro"
        ro.mkdir(mode=0o500)
        try:
            (ro / "probe").write_text("x")
        except PermissionError:
            return True
        finally:
            ro.chmod(0o700)
        return False


ROOT = not _permissions_enforced()  # i.e. running as root with its usual capabilities


@pytest.fixture(scope="module")
def rel_index(tmp_path_factory):
    return tiny_index(tmp_path_factory)


def _previous_submission(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submission.csv").write_text("id,prediction\n1,E D C\n2,E D C\n", encoding="utf-8")
    (folder / "submission.report.json").write_text('{"earlier": true}\n', encoding="utf-8")
    return folder / "submission.csv"


# -- predict -----------------------------------------------------------------------------------


def test_predict_disk_full_keeps_previous_submission(rel_index, tmp_path):
    """The submission (~30 bytes) fits, the report (~1.5 kB) does not: neither may change,
    so a failed run never pairs a new submission with an old report."""
    out = _previous_submission(tmp_path / "out")
    before = snapshot(out.parent)
    res = run_cli_file_limit("predict", questions_file(tmp_path), "--index", rel_index,
                             "--out", out, "--overwrite", "--no-progress", max_file_bytes=300)
    assert_user_error(res, f"--report {out.with_name('submission.report.json')}",
                      "File too large", "free some disk space or choose another --report",
                      "previous file, if any, is untouched")
    assert snapshot(out.parent) == before  # both old files as they were, no temp file


def test_write_failure_of_first_file_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC on the submission itself (in-process, the library the CLI calls)."""
    from pipeline import fileio
    from pipeline.errors import OpenbookError

    out = _previous_submission(tmp_path / "out")
    before = snapshot(out.parent)
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    with pytest.raises(OpenbookError, match=r"--out .*submission\.csv: cannot write it \(No space "
                                            r"left on device\); free some disk space"):
        fileio.write_files_atomic([(out, "id,prediction\n1,A B C\n", "--out"),
                                      (out.with_name("submission.report.json"), "{}", "--report")])
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    assert snapshot(out.parent) == before


def test_predict_out_under_a_file_is_refused(rel_index, tmp_path):
    """Permission-denied that holds for root too: a file used as a folder."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("I am a file\n")
    out = blocker / "sub" / "submission.csv"
    res = run_cli("predict", questions_file(tmp_path), "--index", rel_index, "--out", out)
    assert_user_error(res, f"--out {out}", "cannot create folder", "choose another --out")
    assert blocker.read_text() == "I am a file\n"


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders; see the file-as-folder test")
def test_predict_out_in_read_only_folder_is_refused(rel_index, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        res = run_cli("predict", questions_file(tmp_path), "--index", rel_index,
                      "--out", folder / "submission.csv")
        assert_user_error(res, "is not writable", "choose another --out")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


# -- build_index ---------------------------------------------------------------------------


def test_build_disk_full_midway_keeps_previous_index(rel_index, tmp_path_factory, tmp_path):
    """--overwrite over a good index, and the disk fills while the vectors are written."""
    out = copy_index(rel_index, tmp_path / "idx")
    before = snapshot(out)
    res = run_cli_file_limit("build_index", "--corpus", tiny_corpus(tmp_path_factory),
                             "--out", out, "--overwrite", *BUILD_FLAGS, max_file_bytes=3000)
    assert_user_error(res, f"--out {out}: cannot write", ".idx.partial", "File too large",
                      "free some disk space", "choose another --out", "nothing was published",
                      "previous index", "untouched")
    assert snapshot(out) == before
    assert leftovers(out) == []  # no .idx.partial, no .idx.lock


def test_faiss_write_failure_is_not_silent(tmp_path):
    """faiss.write_index(index, path) only *prints* a failed write: the build used to publish
    a truncated faiss.index, with a matching sha256. Now the error reaches the caller."""
    code = f"""
import errno, resource, signal, sys
from dataclasses import dataclass
import numpy as np
from pipeline.index import faiss_index
from pipeline.index.writer import IndexWriter

@dataclass
class P:
    passage_id: str; doc_id: str; title: str; text: str

n, dim = 100, 16
vecs = np.ones((n, dim), np.float32) / 4
w = IndexWriter({str(tmp_path / 'idx')!r}, dim=dim)
w.add([P(f"d{{i}}:0", f"d{{i}}", "T", "x") for i in range(n)], vecs)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = n * dim * 4 + 8  # vectors.f32 fits, faiss.index (same data + header) does not
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    w.finish({{"embedder": {{"name": "fake", "dim": dim, "normalize": True}}}},
             faiss_index.choose_index(n, dim, "flat"))
except OSError as e:
    w.abort()
    print("OSError", errno.errorcode[e.errno])
    sys.exit(0)
print("published")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "OSError EFBIG", res.stdout + res.stderr[-2000:]
    assert not (tmp_path / "idx").exists() and leftovers(tmp_path / "idx") == []


def test_build_out_under_a_file_is_refused(tmp_path_factory, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("I am a file\n")
    out = blocker / "idx"
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                  *BUILD_FLAGS)
    assert_user_error(res, f"--out {out}: cannot create the folder {blocker}",
                      "a file is in the way", "choose another --out", "nothing was published")
    assert "pipeline.index.embedding:" not in res.stderr  # refused before loading any model
    assert blocker.read_text() == "I am a file\n"


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders; see the file-as-folder test")
def test_build_out_in_read_only_folder_is_refused(tmp_path_factory, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory),
                      "--out", folder / "idx", *BUILD_FLAGS)
        assert_user_error(res, "cannot write", "Permission denied", "choose another --out")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_disk_full_anywhere_else_is_one_line(capsys):
    """The command-line safety net: an ENOSPC the library did not turn into its own message
    (say, while bm25s writes its files) is still one line and exit 2, not a traceback."""
    from pipeline.cli import run

    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/idx/bm25/vocab.index.json")

    assert run(main, []) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("error: cannot write /data/idx/bm25/vocab.index.json (No space left on device); free "
            "some disk space (or choose another output location) and run the command again\n"
            ) in err
