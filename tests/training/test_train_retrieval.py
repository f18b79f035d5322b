"""``pipeline.train`` retrieves as predict will: with a reranker (saved with the reader and
reapplied by predict) and from several indexes (recorded, contexts fused), and
``pipeline.stack --rerank`` overrides the run's reranker for the validation contexts."""

from __future__ import annotations

import json

from conftest import _tiny_reader, predict_report, run_cli


def _train(out, train, *args):
    res = run_cli("train", train, "--out", out, "--max-steps", "2", "--batch-size", "2",
                  "--max-length", "64", "--contexts-train", "2", "--contexts-infer", "2",
                  "--no-progress", *args)
    assert res.returncode == 0, res.stderr
    return json.loads((out / "openbook_reader.json").read_text())


def test_a_reranker_used_in_training_is_saved_and_reapplied(tiny_index, easy_questions,
                                                            tiny_cross_encoder, minilm_path,
                                                            tmp_path):
    model = _tiny_reader("deberta-v2", tmp_path / "base", minilm_path)
    out = tmp_path / "reader"
    meta = _train(out, easy_questions, "--index", tiny_index, "--model", model,
                  "--rerank", tiny_cross_encoder, "--rerank-top", "6", "--valid", easy_questions,
                  "--no-stack")
    r = meta["retrieval"]
    assert r["rerank"] == tiny_cross_encoder and r["rerank_top"] == 6
    assert r["retrieval_infer"]["rerank"] == tiny_cross_encoder
    cached = [json.loads(x) for x in (out / "contexts.jsonl").read_text().splitlines()[1:]]
    rep = predict_report(easy_questions, tiny_index, tmp_path / "s.csv", "--reader", str(out))
    assert rep["retrieval"]["rerank"] == tiny_cross_encoder and rep["retrieval"]["top_k"] == 2
    # predict retrieves for the valid questions exactly what training read (reranked passages)
    valid = {c["id"]: c["passages"] for c in cached if c["split"] == "valid"}
    assert valid and all(valid[q["id"]] == q["passages"] for q in rep["per_question"]
                         if q["id"] in valid)

    res = run_cli("stack", out, "--rerank", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "openbook_reader.json").read_text())["retrieval"]["rerank"] == \
        tiny_cross_encoder  # the reader keeps its own setting for predict


def test_training_from_two_indexes_records_both(tiny_index, easy_questions, minilm_path,
                                                tmp_path):
    model = _tiny_reader("deberta-v2", tmp_path / "base", minilm_path)
    out = tmp_path / "reader"
    meta = _train(out, easy_questions, "--index", tiny_index, "--index", tiny_index,
                  "--model", model, "--valid", easy_questions, "--no-stack")
    assert meta["retrieval"]["index"] == [str(tiny_index.resolve())] * 2
    cached = [json.loads(x) for x in (out / "contexts.jsonl").read_text().splitlines()[1:]]
    assert all(p.split(":", 1)[0] in ("tiny", "tiny#2") for c in cached for p in c["passages"])
