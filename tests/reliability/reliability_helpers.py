"""Shared helpers for tests/reliability (a plain module, not a conftest: a second
``conftest.py`` would shadow ``from conftest import run_cli`` in the other test files).

Every fault test goes through the real CLI (``run_cli``) and checks the same four
things with :func:`assert_user_error`: exit status 2, exactly one ``error:`` line,
no traceback, and the words that say where and what to do. Set
``RELIABILITY_MESSAGES=FILE`` to collect every message seen (docs/reliability.md
quotes them).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (REPO, kill_when, popen_cli, run_cli, stop_process,  # noqa: F401
                      wait_for)  # (re-exported for the test modules)

BUILD_FLAGS = ("--chunk-size", "64", "--chunk-overlap", "16", "--no-progress")

#: Three short documents: enough for a real index, fast to embed.
TINY_DOCS = [
    {"id": "w", "title": "Water", "text": "Water is a chemical compound of hydrogen and oxygen. "
     "It boils at 100 degrees Celsius at sea level. Ice is its solid form."},
    {"id": "m", "title": "Mars", "text": "Mars is the fourth planet from the Sun. It is called "
     "the Red Planet because of the iron oxide on its surface."},
    {"id": "p", "title": "Photosynthesis", "text": "Photosynthesis is the process by which "
     "plants use sunlight, water and carbon dioxide to make glucose and oxygen."},
]

GOOD_QUESTIONS = (
    "id,prompt,A,B,C,D,E,answer\n"
    "1,What is water made of?,hydrogen and oxygen,iron,gold,neon,salt,A\n"
    "2,Which planet is called the Red Planet?,Venus,Mars,Earth,Jupiter,Saturn,B\n"
)


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def many_docs(n: int) -> list[dict]:
    """``n`` distinct synthetic documents (slow enough to embed to kill a build midway)."""
    return [{"id": f"d{i}", "title": f"Topic {i}",
             "text": f"Topic {i} is about the number {i * 7919 % 10007}. It was first described "
                     f"in year {1000 + i} and relates to topic {(i * 31) % n}. "
                     f"Its main property is {'odd' if i % 2 else 'even'} parity."}
            for i in range(n)]


_CACHE: dict[str, Path] = {}


def tiny_corpus(tmp_path_factory) -> Path:
    if "corpus" not in _CACHE:
        _CACHE["corpus"] = write_jsonl(tmp_path_factory.mktemp("rel_corpus") / "tiny.jsonl",
                                       TINY_DOCS)
    return _CACHE["corpus"]


def tiny_index(tmp_path_factory) -> Path:
    """One real index (MiniLM, 3 passages, BM25) per session, shared by the modules.

    Tests that damage an index work on a :func:`copy_index` of it.
    """
    if "index" not in _CACHE:
        out = tmp_path_factory.mktemp("rel_index") / "tiny"
        res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                      *BUILD_FLAGS)
        assert res.returncode == 0, res.stderr
        _CACHE["index"] = out
    return _CACHE["index"]


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def rel_index(tmp_path_factory):
    """The session's tiny index (fixture: import it into a test module to use it)."""
    return tiny_index(tmp_path_factory)


@pytest.fixture()
def idx(rel_index, tmp_path):
    """A private copy of the tiny index, to damage."""
    return copy_index(rel_index, tmp_path / "idx")


def questions_file(folder: Path, text: str = GOOD_QUESTIONS, name: str = "q.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# -- checking what the user sees ---------------------------------------------------------


def _record(res: subprocess.CompletedProcess, line: str) -> None:
    sink = os.environ.get("RELIABILITY_MESSAGES")
    if sink:
        with open(sink, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                                "rc": res.returncode, "line": line}, ensure_ascii=False) + "\n")


def error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, f"expected one 'error:' line, got {lines}\n{res.stderr[-3000:]}"
    return lines[0]


def assert_user_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one ``error:`` line holding every needle, no traceback. Returns the line."""
    assert "Traceback" not in res.stderr, res.stderr[-5000:]
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    line = error_line(res)
    _record(res, line)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def assert_ok(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr, res.stderr[-5000:]
    assert res.returncode == 0, res.stderr[-3000:]
    _record(res, (res.stdout.splitlines() or [""])[0])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """The ``.NAME.partial`` / ``.NAME.lock`` / ``.NAME.old`` a build may leave beside ``out``."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def flip_bytes(path: Path, offset: int, n: int = 4) -> None:
    """Invert ``n`` bytes at ``offset`` (negative: from the end); the size stays the same."""
    data = bytearray(path.read_bytes())
    start = offset % len(data)
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -- processes -----------------------------------------------------------------------------


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


def run_cli_file_limit(module: str, *args, max_file_bytes: int) -> subprocess.CompletedProcess:
    """``run_cli`` with RLIMIT_FSIZE set: writing past ``max_file_bytes`` in any file fails
    with EFBIG, as a full disk fails with ENOSPC (SIGXFSZ is ignored so the write returns
    the error instead of killing the process). Works for root too."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", f"pipeline.{module}", *map(str, args)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900,
                          preexec_fn=limit)


