"""pipeline.readers.stacking: the learned combination of a reader with cheap evidence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import OpenbookError
from pipeline.metrics import map_at_3, rank_letters
from pipeline.readers.stacking import STACK_FILE, Stacker, context_features, coverage_scores
from pipeline.readers.zeroshot import zscore


def _synthetic(n=400, seed=0):
    """'lexical' points at the answer (noisily), 'length' is noise, 'reader' weakly informative."""
    rng = np.random.default_rng(seed)
    ans = rng.integers(0, 5, n)
    onehot = np.eye(5)[ans]
    return ans, {"reader": 0.3 * onehot + rng.normal(size=(n, 5)),
                 "lexical": 1.5 * onehot + rng.normal(size=(n, 5)),
                 "length": rng.normal(size=(n, 5))}


def test_fit_weights_follow_the_evidence_and_beat_each_feature():
    ans, feats = _synthetic()
    s = Stacker.fit(feats, ans, ["reader", "lexical", "length"])
    w = dict(zip(s.features, s.weights))
    assert w["lexical"] > w["reader"] > abs(w["length"])
    letters = ["ABCDE"[a] for a in ans]
    stacked = map_at_3(rank_letters(s.score(feats)), letters)
    assert stacked > map_at_3(rank_letters(feats["reader"]), letters) + 0.1
    assert stacked >= max(map_at_3(rank_letters(feats[f]), letters) for f in feats) - 0.01
    # held out: fitted on the first half, still better than the reader alone on the second
    s2 = Stacker.fit({k: v[:200] for k, v in feats.items()}, ans[:200])
    held = {k: v[200:] for k, v in feats.items()}
    assert map_at_3(rank_letters(s2.score(held)), letters[200:]) > \
        map_at_3(rank_letters(held["reader"]), letters[200:])


def test_scores_are_invariant_to_feature_scale_and_shift():
    ans, feats = _synthetic(50)
    s = Stacker(["reader", "lexical"], [1.0, 2.0])
    moved = {"reader": 10 * feats["reader"] - 3, "lexical": feats["lexical"] + 100}
    np.testing.assert_allclose(s.score(feats), s.score(moved), atol=1e-5)


def test_zscore_constant_row_is_zero():
    z = zscore(np.array([[2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0]]))
    assert np.all(z[0] == 0) and abs(z[1].mean()) < 1e-9 and abs(z[1].std() - 1) < 1e-9


def test_save_load_roundtrip_and_bad_file(tmp_path):
    s = Stacker(["reader", "length"], [1.5, 0.25], {"n_questions": 3})
    path = s.save(tmp_path)
    assert path.name == STACK_FILE
    back = Stacker.load(tmp_path)
    assert back.features == s.features and back.weights == s.weights
    assert back.info["n_questions"] == 3
    assert Stacker.load(tmp_path / "nothing-here") is None
    path.write_text("{not json")
    with pytest.raises(OpenbookError, match=STACK_FILE):
        Stacker.load(tmp_path)
    path.write_text(json.dumps({"features": ["reader", "astrology"], "weights": [1, 2]}))
    with pytest.raises(OpenbookError, match="astrology"):
        Stacker.load(tmp_path)


def test_missing_feature_is_named():
    with pytest.raises(OpenbookError, match="lexical"):
        Stacker(["reader", "lexical"], [1, 1]).score({"reader": np.zeros((1, 5))})


class _FakeEmbedder:
    """Bag-of-letters vectors: similar strings get similar unit vectors."""
    name = "fake"

    def encode(self, texts, progress=False):
        v = np.array([[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
                      for t in texts], dtype=np.float32) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_context_features_shapes_and_meaning():
    prompts = ["Which gas do plants absorb?"]
    options = [["carbon dioxide", "helium", "neon gas", "argon", "xenon"]]
    ctx = ["Plants absorb carbon dioxide from the air during photosynthesis."]
    f = context_features(["lexical", "coverage", "length", "dense", "consensus"],
                         prompts, options, ctx, _FakeEmbedder())
    assert set(f) == {"lexical", "coverage", "length", "dense", "consensus"}
    assert all(v.shape == (1, 5) for v in f.values())
    assert f["coverage"][0].argmax() == 0 and f["coverage"][0, 0] == 1.0
    assert f["lexical"][0].argmax() == 0
    assert f["length"][0].tolist() == [14, 6, 8, 5, 5]
    assert np.all(np.abs(f["consensus"]) <= 1.0001)
    with pytest.raises(OpenbookError, match="embedder"):
        context_features(["dense"], prompts, options, ctx, None)
    with pytest.raises(OpenbookError, match="unknown"):
        context_features(["horoscope"], prompts, options, ctx, None)


def test_coverage_ignores_stop_words():
    assert coverage_scores(["the of and", "water"], "water is wet").tolist() == [0.0, 1.0]


def test_centred_reader_keeps_its_confidence(tmp_path):
    """z-scoring makes a sure and an unsure reader look alike; centring does not."""
    sure, unsure = np.log([[0.96, 0.01, 0.01, 0.01, 0.01]]), np.log([[0.3, 0.175, 0.175, 0.175, 0.175]])
    lexical = np.array([[0.0, 1.0, 0.0, 0.0, 0.0]])  # the evidence disagrees with the reader
    s = Stacker(["reader", "lexical"], [1.0, 1.5], centered=["reader"])
    assert s.score({"reader": sure, "lexical": lexical}).argmax() == 0  # the sure reader wins
    assert s.score({"reader": unsure, "lexical": lexical}).argmax() == 1  # the evidence wins
    z = Stacker(["reader", "lexical"], [1.0, 1.5])
    assert z.score({"reader": sure, "lexical": lexical}).argmax() == \
        z.score({"reader": unsure, "lexical": lexical}).argmax()
    s.save(tmp_path)
    assert Stacker.load(tmp_path).centered == ["reader"]
    assert Stacker.fit({"reader": sure, "lexical": lexical}, np.array([0]),
                       centered=["reader"]).centered == ["reader"]


def _two_regimes(n=600, seed=1):
    """Half the questions have contexts about them (high 'dense' cosine, 'lexical' points at
    the answer), half do not (low cosine, 'lexical' is noise); 'reader' is weakly right."""
    rng = np.random.default_rng(seed)
    ans = rng.integers(0, 5, n)
    onehot = np.eye(5)[ans]
    found = (np.arange(n) % 2 == 0)[:, None]
    dense = np.where(found, 0.8, 0.45) + 0.01 * rng.normal(size=(n, 5))
    lexical = np.where(found, 2.0 * onehot, 0.0) + rng.normal(size=(n, 5))
    return ans, {"reader": 0.8 * onehot + rng.normal(size=(n, 5)), "lexical": lexical,
                 "dense": dense}


def test_gated_evidence_follows_the_evidence_confidence():
    ans, feats = _two_regimes()
    train = {k: v[:300] for k, v in feats.items()}
    held = {k: v[300:] for k, v in feats.items()}
    letters = ["ABCDE"[a] for a in ans[300:]]
    plain = Stacker.fit(train, ans[:300], ["reader", "lexical", "dense"], centered=["reader"])
    gated = Stacker.fit(train, ans[:300], ["reader", "lexical", "dense"], centered=["reader"],
                        gated=["lexical", "dense"])
    assert gated.gated == ["lexical", "dense"] and len(gated.gate_weights) == 2
    assert dict(zip(gated.gated, gated.gate_weights))["lexical"] > 0  # more weight when found
    m_plain = map_at_3(rank_letters(plain.score(held)), letters)
    m_gated = map_at_3(rank_letters(gated.score(held)), letters)
    assert m_gated > m_plain + 0.01
    # where the contexts miss, the gated stacker leans on the reader, the plain one does not
    miss = np.arange(300) % 2 == 1
    lo = {k: v[miss] for k, v in held.items()}
    reader_only = map_at_3(rank_letters(lo["reader"]), [x for x, m in zip(letters, miss) if m])
    assert map_at_3(rank_letters(gated.score(lo)), [x for x, m in zip(letters, miss) if m]) \
        >= reader_only - 0.02


def test_gated_save_load_and_checks(tmp_path):
    s = Stacker(["reader", "lexical", "dense"], [1.0, 0.5, 0.2], centered=["reader"],
                gated=["lexical"], gate_weights=[0.7])
    s.save(tmp_path)
    back = Stacker.load(tmp_path)
    assert back.gated == ["lexical"] and back.gate_weights == [0.7]
    assert s.describe()["gated"] == {"lexical": 0.7}
    feats = {"reader": np.log([[0.2] * 5]), "lexical": np.array([[1.0, 0, 0, 0, 0]]),
             "dense": np.array([[0.9, 0.1, 0.1, 0.1, 0.1]])}
    # score = 0.5 z(lexical) + 0.2 z(dense) + 0.7 * max(dense) * z(lexical)
    z = zscore(feats["lexical"])[0, 0]
    assert s.score(feats)[0, 0] == pytest.approx(0.5 * z + 0.2 * z + 0.7 * 0.9 * z, rel=1e-5)
    # a stacker file from before gating has none
    (tmp_path / STACK_FILE).write_text(json.dumps({"features": ["reader", "lexical"],
                                                   "weights": [1, 2]}))
    assert Stacker.load(tmp_path).gated == []
    # a file whose gate makes no sense is refused, naming the file and the fix
    (tmp_path / STACK_FILE).write_text(json.dumps({"features": ["reader", "lexical", "dense"],
                                                   "weights": [1, 1, 1], "gated": ["length"],
                                                   "gate_weights": [1]}))
    with pytest.raises(OpenbookError, match=f"{STACK_FILE} is not a valid stacker file.*length"):
        Stacker.load(tmp_path)
    with pytest.raises(OpenbookError, match="gated"):
        Stacker(["reader", "lexical", "dense"], [1, 1, 1], gated=["length"], gate_weights=[1])
    with pytest.raises(OpenbookError, match="dense"):
        Stacker(["reader", "lexical"], [1, 1], gated=["lexical"], gate_weights=[1])
    with pytest.raises(OpenbookError, match="gate weight"):
        Stacker(["reader", "lexical", "dense"], [1, 1, 1], gated=["lexical"], gate_weights=[])
