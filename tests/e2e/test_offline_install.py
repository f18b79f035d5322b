"""Offline: no code path reaches the network when weights and data are local, and the
project installs from a folder of wheels alone (``make wheels``) into a fresh venv."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from conftest import REPO

SAMPLE = REPO / "data" / "sample_questions.csv"

#: Installed as ``sitecustomize`` in front of everything: any connection (except Unix sockets)
#: or name lookup is written to $OPENBOOK_NET_LOG and refused.
GUARD = textwrap.dedent('''
    import os, socket

    _log = os.environ["OPENBOOK_NET_LOG"]
    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _note(what):
        with open(_log, "a") as f:
            f.write(what + "\\n")

    def _guarded(orig):
        def connect(self, address, *args):
            if self.family == getattr(socket, "AF_UNIX", None):
                return orig(self, address, *args)
            _note(f"connect {address!r}")
            raise OSError(101, f"network disabled by the test: connect to {address!r}")
        return connect

    def _getaddrinfo(host, *args, **kwargs):
        _note(f"getaddrinfo {host!r}")
        raise socket.gaierror(-2, f"network disabled by the test: lookup of {host!r}")

    socket.socket.connect = _guarded(_connect)
    socket.socket.connect_ex = _guarded(_connect_ex)
    socket.getaddrinfo = _getaddrinfo
    socket.create_connection = lambda address, *a, **k: _guarded(_connect)(socket.socket(), address)
''')


def _guarded_env(tmp: Path, *, offline_flags: bool) -> tuple[dict, Path]:
    guard = tmp / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp / "network.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]),
               OPENBOOK_NET_LOG=str(log))
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(k, None)
    if offline_flags:
        env["HF_HUB_OFFLINE"] = "1"
    return env, log


def _questions(tmp: Path, n: int) -> Path:
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    path = tmp / "q.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:n + 1])
    return path


def _run(python: str, module: str, *args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", f"pipeline.{module}", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def test_the_guard_catches_a_connection(tmp_path):
    env, log = _guarded_env(tmp_path, offline_flags=False)
    res = subprocess.run([sys.executable, "-c", "import urllib.request as u; "
                          "u.urlopen('http://example.invalid', timeout=2)"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "network disabled by the test" in res.stderr
    assert "example.invalid" in log.read_text()


def test_build_and_predict_never_touch_the_network(tmp_path, minilm_path):
    """Without HF_HUB_OFFLINE: the default models resolve to local folders by themselves.
    A reader given as a local folder (the MiniLM, with a new head) loads without the hub too."""
    env, log = _guarded_env(tmp_path, offline_flags=False)
    index = tmp_path / "idx"
    res = _run(sys.executable, "build_index", "--format", "demo", "--limit", "20", "--out", index,
               "--no-progress", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    q = _questions(tmp_path, 4)
    res = _run(sys.executable, "predict", q, "--index", index, "--out", tmp_path / "zs.csv",
               "--no-progress", "--retriever", "hybrid", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = _run(sys.executable, "predict", q, "--index", index, "--out", tmp_path / "rd.csv",
               "--reader", minilm_path, "--top-k", "1", "--max-length", "64", "--no-progress",
               "--time-budget", "10m", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len((tmp_path / "rd.csv").read_text().splitlines()) == 5
    assert not log.exists(), f"network attempts: {log.read_text()}"


@pytest.mark.slow
def test_install_from_wheel_folder_into_a_fresh_venv_and_run_the_demo(tmp_path):
    """``scripts/build_wheelhouse.sh`` (= ``make wheels``), then a fresh venv installs from that
    folder alone (no index, pip's config ignored) and runs build_index + predict offline."""
    wheels = tmp_path / "wheels"
    res = subprocess.run(["bash", str(REPO / "scripts" / "build_wheelhouse.sh"), str(wheels),
                          "demo"], env=dict(os.environ, PY=sys.executable),
                         capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, res.stdout + res.stderr
    assert any(wheels.glob("openbook-*.whl")) and any(wheels.glob("torch-2.13.0*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    clean.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1")
    res = subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                          str(wheels), "openbook[demo]"], env=clean, capture_output=True,
                         text=True, timeout=3000)
    assert res.returncode == 0, res.stdout + res.stderr

    run_dir = tmp_path / "run"  # not the repo: the installed package must be the one used
    run_dir.mkdir()
    env, log = _guarded_env(tmp_path, offline_flags=True)
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    env["PYTHONPATH"] = str(tmp_path / "guard")
    res = subprocess.run([py, "-c", "import pipeline, torch; print(pipeline.__file__, torch.__version__)"],
                         env=env, cwd=run_dir, capture_output=True, text=True)
    assert res.returncode == 0 and str(env_dir) in res.stdout and "2.13.0" in res.stdout, res.stderr
    res = _run(py, "build_index", "--format", "demo", "--limit", "40", "--out", run_dir / "idx",
               "--no-progress", env=env, cwd=run_dir)
    assert res.returncode == 0, res.stderr
    res = _run(py, "predict", _questions(run_dir, 10), "--index", run_dir / "idx", "--out",
               run_dir / "submission.csv", "--no-progress", "--time-budget", "30m",
               env=env, cwd=run_dir)
    assert res.returncode == 0, res.stderr
    assert len((run_dir / "submission.csv").read_text().splitlines()) == 11
    assert not log.exists(), f"network attempts: {log.read_text()}"
