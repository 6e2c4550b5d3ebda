"""DeepConf-style confidences on small hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.confidence import filter_top, token_confidence, trace_confidence, trace_score, window_means


def test_token_confidence_from_top_k():
    tops = [[-0.1, -2.3, -3.6], [-1.0, -1.0, -1.0]]
    assert token_confidence([-0.1, -1.0], tops) == pytest.approx([2.0, 1.0])


def test_token_confidence_ragged_and_missing_top_k():
    tops = [[-0.5, -1.5], [-2.0], None, []]
    assert token_confidence([0.0] * 4, tops) == pytest.approx([1.0, 2.0, 0.0, 0.0])


def test_token_confidence_falls_back_to_sampled_token_probability():
    conf = token_confidence([0.0, math.log(0.5), math.log(0.25)])
    assert conf == pytest.approx([1.0, 0.5, 0.25])
    assert token_confidence([0.0, -1.0], []) == pytest.approx([1.0, math.exp(-1.0)])


def test_window_means():
    assert window_means(np.array([1.0, 3.0, 2.0, 6.0]), window=2) == pytest.approx([2.0, 2.5, 4.0])
    assert window_means(np.array([1.0, 3.0]), window=2048) == pytest.approx([2.0])  # capped at the length


def test_trace_scores_by_hand():
    conf = np.array([4.0, 2.0, 1.0, 3.0, 5.0, 6.0])
    assert trace_score(conf, "mean") == pytest.approx(3.5)
    assert trace_score(conf, "tail", tail=2) == pytest.approx(5.5)
    assert trace_score(conf, "tail") == pytest.approx(3.5)  # tail capped at the length
    # windows of 2: 3, 1.5, 2, 4, 5.5
    assert trace_score(conf, "lowest_group", window=2) == pytest.approx(1.5)
    assert trace_score(conf, "lowest_group") == pytest.approx(3.5)  # one window: the whole trace
    assert trace_score(conf, "bottom_percent", window=2, percent=10) == pytest.approx(1.5)  # ceil(0.5) = 1
    assert trace_score(conf, "bottom_percent", window=2, percent=40) == pytest.approx((1.5 + 2) / 2)


def test_empty_trace_has_zero_confidence():
    for method in ("mean", "lowest_group", "bottom_percent", "tail"):
        assert trace_score(np.array([]), method) == 0.0
        assert trace_confidence([], None, method) == 0.0
        assert trace_confidence([], [], method) == 0.0


def test_trace_confidence_from_logprobs():
    tops = [[-0.1, -2.3, -3.6], [-1.0, -1.0, -1.0], [-0.5, -0.5, -0.5]]
    assert trace_confidence([-0.1, -1.0, -0.5], tops, "mean") == pytest.approx((2.0 + 1.0 + 0.5) / 3)
    assert trace_confidence([-0.1, -1.0, -0.5], tops, "lowest_group", window=2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown method"):
        trace_confidence([-0.1], None, "median")


def test_filter_top_keeps_ceil_of_eta_percent():
    weights = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 1.0])
    assert np.count_nonzero(filter_top(weights, 10)) == 1
    assert np.count_nonzero(filter_top(weights, 70)) == 7  # not 8 from 0.7 * 10 = 7.000000000000001
    assert np.count_nonzero(filter_top(weights, 15)) == 2  # ceil(1.5)
    assert np.count_nonzero(filter_top(weights, 0)) == 0
    assert np.array_equal(filter_top(weights, 100), weights)
    kept = filter_top(weights, 30)
    assert kept.tolist() == [0, 0.9, 0, 0, 0, 0.8, 0, 0, 0, 1.0]


def test_filter_top_breaks_ties_by_order():
    kept = filter_top(np.array([1.0, 2.0, 2.0, 2.0]), 50)
    assert kept.tolist() == [0.0, 2.0, 2.0, 0.0]
