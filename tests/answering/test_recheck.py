"""--reader-backend openvino-recheck (pipeline.answering.recheck): bf16 scores, near ties
scored again in fp32, so that the final orders are fp32's."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import run_cli
from pipeline.answering import recheck as R
from pipeline.metrics import rank_letters

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@dataclass
class Cfg:
    reader_backend: str = R.RECHECK


def fake_scorer(exact: np.ndarray, noise: np.ndarray, calls: list):
    """``score`` for score_with_recheck: exact scores in fp32, exact + noise in bf16."""

    def score(cfg, readers, questions, contexts, embedder, evidence):
        rows = np.asarray(questions, dtype=int)
        if cfg.reader_backend == R.FAST:
            evidence["dense"] = exact[rows] * 2  # the stacker features of every question
        else:  # the fp32 pass gets the bf16 pass's, for its rows
            assert np.array_equal(evidence["dense"], exact[rows] * 2)
        calls.append((cfg.reader_backend, rows.tolist()))
        s = exact[rows] + (noise[rows] if cfg.reader_backend == R.FAST else 0)
        return s, "reader r", [{"type": "reader", "backend": cfg.reader_backend}]

    return score


def run(exact, noise):
    calls: list = []
    n = len(exact)
    out, label, described = R.score_with_recheck(Cfg(), ["r"], list(range(n)), [None] * n, None,
                                                 fake_scorer(exact, noise, calls))
    return out, label, described, calls


@pytest.mark.parametrize("sigma", [0.003, 0.01, 0.03])
def test_changed_top3s_stay_within_the_rule(sigma):
    """bf16-like noise (normal, in log-probability) on 10 x 400 questions: the top 3 of at
    most 1% of questions differ from fp32 after the recheck (the equivalence rule), and
    fewer questions are scored twice than a full fp32 pass."""
    changed, rechecked, total = 0, 0, 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n = 400
        exact = rng.dirichlet(np.ones(5) * 0.7, size=n)
        noisy = np.exp(np.log(exact) + rng.normal(0, sigma, size=exact.shape))
        noise = (noisy - exact).astype(np.float32)
        out, _, described, calls = run(exact.astype(np.float32), noise)
        top3 = lambda s: [r[:3] for r in rank_letters(s)]  # noqa: E731 (what MAP@3 reads)
        changed += sum(a != b for a, b in zip(top3(out), top3(exact)))
        info = described[-1]
        assert info["type"] == "precision-recheck" and info["of"] == n
        assert info["scored_in_fp32"] == info["calibration"] + info["rechecked"] < n
        assert info["expected_changed_left"] <= R.TARGET * n
        assert calls[0] == (R.FAST, list(range(n)))  # everything in bf16 first, once
        assert all(b == R.EXACT for b, _ in calls[1:])
        rechecked += info["scored_in_fp32"]
        total += n
    assert changed <= 0.01 * total, (changed, total)
    assert rechecked < 0.5 * total


def test_only_near_ties_are_scored_again():
    n = 200
    exact = np.tile(np.array([0.6, 0.25, 0.1, 0.04, 0.01], np.float32), (n, 1))
    tied = np.arange(3, n, 10)  # 20 questions whose 2nd and 3rd options are 1e-4 apart
    exact[tied, 1], exact[tied, 2] = 0.17505, 0.17495
    noise = np.zeros_like(exact)
    noise[:, 2] = 0.0004  # bf16 raises option C a little everywhere
    out, label, described, calls = run(exact, noise)
    info = described[-1]
    calib = R.calibration_rows(n)
    assert info["calibration"] == len(calib) == 16 and info["sigma"] > 0
    expected = sorted(set(tied.tolist()) - set(calib.tolist()))
    assert calls[1] == (R.EXACT, calib.tolist())
    assert calls[2] == (R.EXACT, expected)  # the tied ones, nothing else
    assert info["rechecked"] == len(expected)
    assert np.array_equal(out[tied], exact[tied])  # fp32 scores where it mattered
    assert "rechecked in fp32" in label


def test_no_change_no_recheck_and_a_tiny_run_is_all_fp32():
    exact = np.random.default_rng(0).dirichlet(np.ones(5), size=50).astype(np.float32)
    out, _, described, calls = run(exact, np.zeros_like(exact))
    assert described[-1]["rechecked"] == 0 and len(calls) == 2  # bf16, then the sample only
    out, _, described, calls = run(exact[:10], np.full((10, 5), 0.3, np.float32))
    assert described[-1]["calibration"] == 10 and np.array_equal(out, exact[:10])


def test_neighbour_gaps_read_the_first_four_places():
    s = np.array([[0.4, 0.3, 0.2, 0.1, 0.0999], [0.3, 0.3, 0.2, 0.1, 0.1]])
    gaps = R.neighbour_gaps(s, np.argsort(-s, axis=1, kind="stable")[:, :R.TOP])
    assert gaps.min(axis=1).round(4).tolist() == [0.1, 0.0]  # 4th/5th tie does not matter


def test_recheck_is_refused_as_a_single_runtime():
    from pipeline.readers.backends import ReaderRuntime
    from pipeline.readers.record import ReaderError

    with pytest.raises(ReaderError, match="openvino, then openvino-fp32"):
        ReaderRuntime(None, ".", R.RECHECK, {}, [])


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'openbook[openvino]')")
def test_predict_with_recheck_ranks_as_fp32(tiny_index, easy_questions, tmp_path, folders_minilm):
    """The CLI end to end on a real-weights MiniLM reader with a random head."""
    reports = {}
    for backend in ("openvino-fp32", R.RECHECK):
        out = tmp_path / f"{backend}.csv"
        res = run_cli("predict", easy_questions, "--index", tiny_index, "--reader", folders_minilm,
                      "--reader-backend", backend, "--device", "cpu", "--out", out,
                      "--no-progress")
        assert res.returncode == 0, res.stderr
        reports[backend] = json.loads(out.with_name(out.stem + ".report.json").read_text())
    fp32, mixed = reports["openvino-fp32"], reports[R.RECHECK]
    info = mixed["scorers"][-1]
    assert info["type"] == "precision-recheck" and info["of"] == fp32["n_questions"]
    assert [q["ranking"] for q in mixed["per_question"]] == \
        [q["ranking"] for q in fp32["per_question"]]


@pytest.fixture(scope="module")
def folders_minilm(tmp_path_factory, minilm_path):
    import torch

    from pipeline.training.model import load_model

    root = tmp_path_factory.mktemp("recheck-reader")
    torch.manual_seed(0)
    model, tok, _ = load_model(minilm_path)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.2)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)
