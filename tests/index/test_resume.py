"""Resumable builds: SIGKILL a real build midway, rerun it, get exactly the uninterrupted index."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import kill_when, popen_cli, run_cli

FLAGS = ("--chunk-size", "64", "--chunk-overlap", "16", "--shard-size", "8", "--no-bm25",
         "--no-progress", "--keep-vectors")


def _corpus(path, n=80):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"d{i}", "title": f"Topic {i}",
                                "text": f"Topic {i} is about the number {i * 7919 % 10007}. "
                                        f"It was first described in year {1000 + i}."}) + "\n")
    return path


def _shards_done(partial):
    try:
        return json.loads((partial / "checkpoint.json").read_text())["shards"]
    except (OSError, ValueError, KeyError):
        return 0


def _kill_after(out, corpus, shards, *extra):
    """Start a build, SIGKILL it once ``shards`` shards are checkpointed; return the partial dir."""
    partial = out.with_name(f".{out.name}.partial")
    proc = popen_cli("build_index", "--corpus", corpus, "--out", out, *FLAGS, *extra)
    kill_when(proc, lambda: _shards_done(partial) >= shards, what=f"{shards} checkpointed shards")
    return partial


def _passages(index):
    return pq.read_table(index / "passages.parquet").to_pylist()


def _vectors(index):
    return np.fromfile(index / "vectors.f32", dtype=np.float32).reshape(-1, 384)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    corpus = _corpus(base / "corpus.jsonl")
    ref = base / "ref"
    res = run_cli("build_index", "--corpus", corpus, "--out", ref, *FLAGS)
    assert res.returncode == 0, res.stderr[-3000:]
    out = base / "idx"
    partial = _kill_after(out, corpus, 3)
    killed_copy = base / "killed_partial"
    shutil.copytree(partial, killed_copy)
    res = run_cli("build_index", "--corpus", corpus, "--out", out, *FLAGS)
    return {"base": base, "corpus": corpus, "ref": ref, "out": out, "rerun": res,
            "killed": killed_copy}


def test_killed_build_leaves_a_resumable_partial_and_no_index(builds):
    killed = builds["killed"]
    ck = json.loads((killed / "checkpoint.json").read_text())
    assert ck["shards"] >= 3 and ck["passages"] >= 3 * 8
    assert json.loads((killed / "meta.json").read_text())["complete"] is False
    assert sorted(p.name for p in (killed / "shards").glob("0000*.parquet"))[:3] == [
        "000000.parquet", "000001.parquet", "000002.parquet"]


def test_rerun_resumes_and_equals_the_uninterrupted_build(builds):
    res, ref, out = builds["rerun"], builds["ref"], builds["out"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming the unfinished build" in res.stderr
    assert "skipping the" in res.stderr
    meta = json.loads((out / "meta.json").read_text())
    ref_meta = json.loads((ref / "meta.json").read_text())
    assert meta["build"]["resumed"] is True and ref_meta["build"]["resumed"] is False
    got, want = _passages(out), _passages(ref)
    ids = [p["passage_id"] for p in got]
    assert len(ids) == len(set(ids)) == meta["counts"]["passages"] == ref_meta["counts"]["passages"]
    assert got == want  # same passages, same order, no duplicates
    np.testing.assert_allclose(_vectors(out), _vectors(ref), atol=1e-5)
    assert meta["counts"]["documents"] == ref_meta["counts"]["documents"] == 80
    assert not list(out.parent.glob(".idx.*"))  # partial and lock gone
    from pipeline.index.store import load_index

    assert load_index(out, verify="full").size == len(want)


def test_other_settings_refuse_to_resume_until_overwrite(builds, tmp_path):
    out = tmp_path / "idx"
    shutil.copytree(builds["killed"], tmp_path / ".idx.partial")
    res = run_cli("build_index", "--corpus", builds["corpus"], "--out", out, *FLAGS,
                  "--limit", "20")
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr.strip().splitlines()[-1]
    assert "holds an unfinished build made with other settings" in err
    assert "limit: None there, 20 now" in err and "--overwrite" in err
    assert (tmp_path / ".idx.partial" / "checkpoint.json").exists()  # not thrown away
    res = run_cli("build_index", "--corpus", builds["corpus"], "--out", out, *FLAGS,
                  "--limit", "20", "--overwrite")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "discarding the unfinished build" in res.stderr
    assert len(_passages(out)) == 20
