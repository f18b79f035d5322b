"""A build killed with SIGKILL mid-way: nothing published under ``--out``, its ``.partial``
refused by ``predict``, and the next build takes over its stale lock and cleans up.

A ``.partial`` with finished shards is resumed by the same command instead (and refused, to
protect it, by a build with other settings unless ``--overwrite``): tests/test_resume.py.
Here the kill comes before the first shard is done, so there is nothing to resume."""

from __future__ import annotations

import shutil
import signal

import pytest

from reliability_helpers import (BUILD_FLAGS, assert_ok, assert_user_error, kill_when, leftovers,
                                 many_docs, popen_cli, questions_file, run_cli, tiny_corpus,
                                 wait_for, write_jsonl)


@pytest.fixture(scope="module")
def killed_build(tmp_path_factory):
    """Start a build of 600 documents and SIGKILL it once ``.idx.partial`` is being written."""
    base = tmp_path_factory.mktemp("killed")
    corpus = write_jsonl(base / "corpus" / "many.jsonl", many_docs(600))
    out = base / "idx"
    partial, lock = base / ".idx.partial", base / ".idx.lock"
    proc = popen_cli("build_index", "--corpus", corpus, "--out", out, *BUILD_FLAGS,
                     "--batch-size", "4")
    kill_when(proc, lambda: (partial / "meta.json").exists(), what=f"{partial}")
    return {"base": base, "out": out, "partial": partial, "lock": lock, "pid": proc.pid}


def test_killed_build_publishes_nothing(killed_build):
    k = killed_build
    assert not k["out"].exists()
    assert k["partial"].is_dir()  # the half-written work is kept aside, never under --out
    assert k["lock"].read_text() == str(k["pid"])  # a lock whose builder is gone


def test_predict_refuses_partial_of_killed_build(killed_build, tmp_path):
    partial = killed_build["partial"]
    out = tmp_path / "s.csv"
    res = run_cli("predict", questions_file(tmp_path), "--index", partial, "--out", out)
    assert_user_error(res, f"--index {partial}", "the build did not finish (complete=false)",
                      "run the same pipeline.build_index command again")
    assert not out.exists()
    res = run_cli("predict", questions_file(tmp_path), "--index", killed_build["out"],
                  "--out", out)
    assert_user_error(res, f"--index {killed_build['out']}", "no such directory",
                      "python -m pipeline.build_index --out")


def test_next_build_takes_over_stale_lock(killed_build, tmp_path_factory, tmp_path):
    """Re-running the build after the kill needs no manual clean-up."""
    k = killed_build
    for name in (".idx.partial", ".idx.lock"):  # the killed build's leftovers, in a fresh place
        src = k["base"] / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    out = tmp_path / "idx"
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                  *BUILD_FLAGS)
    assert_ok(res)
    assert f"taking over the stale build lock {tmp_path / '.idx.lock'}" in res.stderr
    assert f"pid {k['pid']}" in res.stderr
    assert leftovers(out) == []
    from pipeline.index.store import load_index

    assert load_index(out, verify="full").size == 3  # the new corpus, not the killed one's


def test_ctrl_c_midway_cleans_up(tmp_path):
    """SIGINT (Ctrl-C) while the ``.partial`` is being written: exit 130, nothing left."""
    corpus = write_jsonl(tmp_path / "corpus" / "many.jsonl", many_docs(600))
    out = tmp_path / "idx"
    proc = popen_cli("build_index", "--corpus", corpus, "--out", out, *BUILD_FLAGS,
                     "--batch-size", "4")
    try:
        wait_for(lambda: (tmp_path / ".idx.partial" / "meta.json").exists(), proc=proc,
                 what=".idx.partial")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.rstrip().endswith("interrupted")
    assert not out.exists() and leftovers(out) == []
