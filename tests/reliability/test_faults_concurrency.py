"""Two ``build_index`` runs into the same ``--out`` at once: the second refuses at once,
naming the first one's pid, and the first completes untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from reliability_helpers import (BUILD_FLAGS, assert_user_error, leftovers, popen_cli, run_cli,
                                 stop_process, tiny_corpus, wait_for)


def test_second_concurrent_build_is_refused_and_first_completes(tmp_path_factory, tmp_path):
    corpus = tiny_corpus(tmp_path_factory)
    out = tmp_path / "idx"
    lock = tmp_path / ".idx.lock"
    first = popen_cli("build_index", "--corpus", corpus, "--out", out, *BUILD_FLAGS)
    try:
        # The lock is taken before the model loads; freeze the first build while it holds
        # it, so the second surely starts while the first is still running.
        wait_for(lambda: lock.exists() and lock.read_text() == str(first.pid), proc=first,
                 what=f"{lock} to hold pid {first.pid}")
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = run_cli("build_index", "--corpus", corpus, "--out", out, *BUILD_FLAGS)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert_user_error(second, f"--out {out} is being built by another process "
                                  f"(pid {first.pid})", "wait for it to finish", "another --out")
        assert "pipeline.index.embedding:" not in second.stderr  # refused before loading any model
        stdout, stderr = first.communicate(timeout=600)
    finally:
        stop_process(first)
    assert first.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert f"index {out}: 3 documents" in stdout
    assert json.loads((out / "meta.json").read_text())["complete"] is True
    assert leftovers(out) == []  # the first build's lock is gone too


def test_bm25_rebuild_refused_while_a_build_runs(tmp_path_factory, tmp_path):
    """``python -m pipeline.bm25`` shares the lock: it does not write into an index being built."""
    lock = tmp_path / ".idx.lock"
    # a live process stands for the running build
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "idx").mkdir()
        lock.write_text(str(sleeper.pid))
        res = run_cli("bm25", "--index", tmp_path / "idx")
        assert_user_error(res, f"(pid {sleeper.pid})", "wait for it to finish")
        assert lock.read_text() == str(sleeper.pid)  # the live builder's lock is left alone
    finally:
        stop_process(sleeper)
