"""The confidence cascade's routing and combining, on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import OpenbookError
from pipeline.metrics import map_at_3, rank_letters
from pipeline.readers.cascade import as_probabilities, check_settings, combine, curve, route

#: Four questions: sure, unsure, a tie, fairly sure (margins 0.8, 0.05, 0.0, 0.3).
FIRST = np.array([[0.9, 0.1, 0.0, 0.0, 0.0],
                  [0.40, 0.35, 0.25, 0.0, 0.0],
                  [0.5, 0.5, 0.0, 0.0, 0.0],
                  [0.6, 0.3, 0.1, 0.0, 0.0]])
#: The strong scorer always puts E first.
SECOND = np.tile([0.0, 0.0, 0.0, 0.2, 0.8], (4, 1))


@pytest.mark.parametrize("fraction, sent", [(0.0, []), (0.25, [2]), (0.5, [1, 2]), (0.75, [1, 2, 3]),
                                            (1.0, [0, 1, 2, 3])])
def test_fraction_sends_the_least_confident_first(fraction, sent):
    assert np.flatnonzero(route(FIRST, fraction=fraction)).tolist() == sent


def test_margin_threshold_sends_those_below_it():
    assert np.flatnonzero(route(FIRST, margin=0.1)).tolist() == [1, 2]
    assert np.flatnonzero(route(FIRST, margin=0.31)).tolist() == [1, 2, 3]
    assert not route(FIRST, margin=0.0).any()


def test_ties_in_margin_go_by_question_order():
    same = np.tile([0.5, 0.5, 0, 0, 0], (5, 1))
    assert np.flatnonzero(route(same, fraction=0.4)).tolist() == [0, 1]


def test_default_fraction_is_three_tenths():
    probs = np.tile([0.6, 0.4, 0, 0, 0], (10, 1))
    assert route(probs).sum() == 3


def test_replace_and_mean():
    sent = route(FIRST, fraction=0.5)  # questions 1 and 2
    out = combine(FIRST, SECOND, sent, "replace")
    assert [r[0] for r in rank_letters(out)] == ["A", "E", "E", "A"]
    np.testing.assert_allclose(out[[0, 3]], FIRST[[0, 3]])
    mean = combine(FIRST, SECOND, sent, "mean")
    np.testing.assert_allclose(mean[1], (FIRST[1] + SECOND[1]) / 2)
    np.testing.assert_allclose(mean[0], FIRST[0])
    # the second scorer's rows may be given for the questions sent only
    np.testing.assert_allclose(combine(FIRST, SECOND[sent], sent), out)


def test_curve_ends_at_both_scorers():
    answers = ["A", "E", "E", "B"]
    rows = curve(FIRST, SECOND, answers, seconds_first=1.0, seconds_second=8.0,
                 fractions=[0.0, 0.5, 1.0])
    assert [r["sent"] for r in rows] == [0, 2, 4]
    assert rows[0]["map@3"] == round(map_at_3(rank_letters(FIRST), answers), 4)
    assert rows[-1]["map@3"] == round(map_at_3(rank_letters(SECOND), answers), 4)
    assert rows[1]["map@3"] > max(rows[0]["map@3"], rows[-1]["map@3"])  # the cascade wins here
    assert [r["seconds"] for r in rows] == [1.0, 5.0, 9.0]


def test_scores_that_are_not_probabilities_go_through_softmax():
    p = as_probabilities(np.array([[2.0, 1.0, 0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert p.argmax() == 0
    np.testing.assert_array_equal(as_probabilities(FIRST), FIRST)


@pytest.mark.parametrize("kw, flag", [(dict(fraction=0.2, margin=0.1), "not both"),
                                      (dict(fraction=1.5, margin=None), "--cascade-fraction"),
                                      (dict(fraction=None, margin=-0.1), "--cascade-margin"),
                                      (dict(fraction=None, margin=None, combine_mode="max"),
                                       "--cascade-combine")])
def test_bad_settings_name_the_flag(kw, flag):
    with pytest.raises(OpenbookError, match=flag):
        check_settings(**kw)
