"""The build lock is a kernel lock: a live holder refuses a second build, a dead one (or a
lock file naming a pid that now belongs to another, younger process) never blocks one."""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import REPO, make_passage, stop_process, wait_for
from pipeline.errors import OpenbookError
from pipeline.index import faiss_index, lock as lock_module
from pipeline.index.lock import BuildLock, process_start_time
from pipeline.index.store import load_index
from pipeline.index.writer import IndexWriter


def _write(out, n=20, dim=8):
    vecs = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    w = IndexWriter(out, dim=dim)
    w.add([make_passage(f"d{i}:0", f"d{i}", f"T{i}", f"text {i}") for i in range(n)], vecs)
    w.finish({"embedder": {"name": "fake", "dim": dim, "normalize": True}},
             faiss_index.choose_index(n, dim, "flat"))


@pytest.mark.parametrize("pid", [1, "parent"])
def test_lock_left_with_a_live_but_unrelated_pid_does_not_block_a_build(tmp_path, caplog, pid):
    """A builder died; later its pid went to another process (pid 1, our parent): not a builder."""
    pid = os.getppid() if pid == "parent" else pid
    started = process_start_time(pid)
    assert started is not None  # /proc (or psutil) tells when the process started
    lock = tmp_path / ".idx.lock"
    lock.write_text(str(pid))
    os.utime(lock, (started - 3600, started - 3600))  # written an hour before that process began
    with caplog.at_level(logging.WARNING, logger="pipeline.index.lock"):
        _write(tmp_path / "idx")
    assert load_index(tmp_path / "idx").size == 20
    assert f"taking over the stale build lock {lock}" in caplog.text and f"pid {pid}" in caplog.text
    assert not lock.exists()


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.index.lock import BuildLock
    BuildLock(Path(sys.argv[1])).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def test_kernel_lock_refuses_while_held_and_frees_when_its_holder_is_killed(tmp_path):
    out = tmp_path / "idx"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = tmp_path / ".idx.lock"
        assert lock.read_text() == str(holder.pid)
        with pytest.raises(OpenbookError, match=rf"--out {out} is being built by another process "
                                                rf"\(pid {holder.pid}\); wait for it to finish "
                                                "or stop it, or choose another --out"):
            IndexWriter(out, dim=8)
        assert lock.read_text() == str(holder.pid)  # the running build's lock is left alone
        holder.kill()  # SIGKILL: no clean-up, the file stays behind
        holder.wait()
        assert lock.exists()
    finally:
        stop_process(holder)
    _write(out)
    assert load_index(out).size == 20 and not lock.exists()


def test_a_second_lock_in_the_same_process_is_refused_and_bm25_can_tell(tmp_path):
    out = tmp_path / "idx"
    first = BuildLock(out)
    first.acquire()
    try:
        second = BuildLock(out)
        assert second.held_by_this_process() and not second.held
        with pytest.raises(OpenbookError, match="already being built by this process"):
            second.acquire()
    finally:
        first.release()
    assert not first.path.exists() and not BuildLock(out).held_by_this_process()


def _contend(out: str, marker: str, rounds: int, errors) -> None:
    from pathlib import Path

    lock, taken = BuildLock(Path(out)), 0
    while taken < rounds:
        try:
            lock.acquire()
        except OpenbookError:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holds it
            os.close(fd)
            time.sleep(0.0002)
            os.unlink(marker)
        except FileExistsError:
            errors.put(os.getpid())
        finally:
            lock.release()
        taken += 1


def test_lock_excludes_under_contention_although_it_is_removed_on_release(tmp_path):
    """Release removes the file; a process that opened the old one notices and retries."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "idx"), str(tmp_path / "in"), 60,
                                                errors)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    wait_for(lambda: all(p.exitcode is not None for p in procs), timeout=5, what="contenders")
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert errors.empty() and not (tmp_path / ".idx.lock").exists()


def test_a_lock_file_removed_while_being_taken_is_taken_afresh(tmp_path, monkeypatch):
    """The holder releases (removes the file) between our open() and our flock(): the flock
    then holds a file no longer at the path, so acquire() notices and takes a new one."""
    out = tmp_path / "idx"
    holder = BuildLock(out)
    holder.acquire()
    real, calls = lock_module._flock, []

    def flock_after_release(fd, path):
        if not calls:
            holder.release()
        calls.append(fd)
        return real(fd, path)

    monkeypatch.setattr(lock_module, "_flock", flock_after_release)
    lock = BuildLock(out)
    lock.acquire()
    try:
        assert len(calls) == 2  # the first try locked the removed file
        assert os.path.samestat(os.fstat(lock._fd), os.stat(lock.path))
        assert lock.path.read_text() == str(os.getpid())
    finally:
        lock.release()
