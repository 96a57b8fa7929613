"""flowmixup.stats: the bootstrap over test records, the intervals and the paired tests, each against an
independent computation (a plain resampling loop over scikit-learn's metrics, scipy, Holm's definition)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import f1_score, roc_auc_score

from flowmixup import stats


def independent_metric(y, p, metric, threshold=0.5):
    """The metric as the paper's tables define it, straight from scikit-learn: the mean over the classes that can be
    scored in this set (AUC: a positive and a negative; F1: a positive)."""
    if metric == "auc":
        values = [roc_auc_score(y[:, c], p[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    else:
        with_pos = [c for c in range(y.shape[1]) if y[:, c].sum() > 0]
        values = list(f1_score(y[:, with_pos], p[:, with_pos] >= threshold, average=None, zero_division=0))
    return float(np.mean(values)) if values else math.nan


def loop_bootstrap(y, p, metric, n_resamples, seed):
    """The bootstrap as one would write it by hand: draw indices, copy the rows, score them."""
    rng = np.random.default_rng(seed)
    return np.array(
        [
            independent_metric(y[idx], p[idx], metric)
            for idx in (rng.integers(0, len(y), len(y)) for _ in range(n_resamples))
        ]
    )


def toy(n=240, classes=5, seed=0, rare=None):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, classes)) < np.linspace(0.4, 0.08, classes)).astype(np.uint8)
    if rare is not None:  # a class with exactly `rare` positives: absent from many resamples
        y[:, -1] = 0
        y[:rare, -1] = 1
    p = np.clip(0.35 + 0.25 * (2.0 * y - 1) + rng.normal(0, 0.25, y.shape), 0, 1)
    return y, np.round(p, 2).astype(np.float32)  # rounded: ties, which AUC counts one half


@pytest.mark.parametrize("metric", ["auc", "macro_f1"])
def test_bootstrap_equals_a_plain_resampling_loop(metric):
    y, p = toy()
    ours = stats.bootstrap_metric(y, p, metric, n_resamples=200, seed=11)
    theirs = loop_bootstrap(y, p, metric, 200, 11)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert stats.percentile_interval(ours) == pytest.approx(tuple(np.percentile(theirs, [2.5, 97.5])), abs=1e-12)


@pytest.mark.parametrize("metric", ["auc", "macro_f1"])
def test_a_class_absent_from_a_resample_is_left_out_as_the_metric_does(metric):
    y, p = toy(n=120, rare=1)  # one positive: missing from about a third of the resamples
    ours = stats.bootstrap_metric(y, p, metric, n_resamples=300, seed=5)
    theirs = loop_bootstrap(y, p, metric, 300, 5)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    rng = np.random.default_rng(5)
    absent = [not y[rng.integers(0, len(y), len(y)), -1].any() for _ in range(300)]
    assert 50 < sum(absent) < 250  # the case is exercised: in those resamples the rare class is not in the mean
    first_absent = absent.index(True)
    rng = np.random.default_rng(5)
    idx = [rng.integers(0, len(y), len(y)) for _ in range(first_absent + 1)][-1]
    others = independent_metric(y[idx][:, :-1], p[idx][:, :-1], metric)
    assert ours[first_absent] == pytest.approx(others, abs=1e-12)  # neither 0 nor NaN counted for it


def test_interval_covers_a_known_auc():
    """Binormal scores: a positive's score ~ N(d, 1), a negative's ~ N(0, 1), so the true AUC is Phi(d / sqrt 2).
    Over 40 simulated test sets the 95% interval must cover it about 95% of the time (here at least 34 of 40)."""
    d = 1.0
    truth = scipy_stats.norm.cdf(d / math.sqrt(2))
    covered = 0
    for trial in range(40):
        rng = np.random.default_rng(1000 + trial)
        y = (rng.random((300, 1)) < 0.3).astype(np.uint8)
        score = rng.normal(0, 1, y.shape) + d * y
        low, high = stats.percentile_interval(stats.bootstrap_metric(y, score, "auc", n_resamples=300, seed=trial))
        covered += low <= truth <= high
    assert covered >= 34


def test_seed_interval_is_students_t():
    values = [0.61, 0.64, 0.58]
    expected = scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert stats.seed_interval(values) == pytest.approx(expected, abs=1e-12)
    assert all(math.isnan(v) for v in stats.seed_interval([0.6]))


def test_holm_against_its_definition():
    # sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to 0.06 (step-down)
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.2, math.nan, 0.6])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert stats.holm([0.5, 0.9]).max() <= 1.0


def _paired(y, better, worse, seeds=(0,)):
    a = [stats.bootstrap_metric(y, p, "macro_f1", n_resamples=400, seed=3) for p in better]
    b = [stats.bootstrap_metric(y, p, "macro_f1", n_resamples=400, seed=3) for p in worse]
    return stats.paired_difference(
        [independent_metric(y, p, "macro_f1") for p in better],
        [independent_metric(y, p, "macro_f1") for p in worse],
        a,
        b,
        seed=3,
    )


def test_paired_difference_excludes_zero_for_a_better_model():
    rng = np.random.default_rng(2)
    y = (rng.random((300, 4)) < 0.3).astype(np.uint8)
    good = [np.clip(0.3 + 0.35 * (2.0 * y - 1) + rng.normal(0, 0.2, y.shape), 0, 1) for _ in range(3)]
    poor = [np.clip(0.3 + 0.10 * (2.0 * y - 1) + rng.normal(0, 0.2, y.shape), 0, 1) for _ in range(3)]
    diff = _paired(y, good, poor)
    assert diff.excludes_zero and diff.low > 0 and diff.p_value < 0.001 and diff.n_pairs == 3
    assert diff.estimate == pytest.approx(
        np.mean(
            [independent_metric(y, g, "macro_f1") - independent_metric(y, q, "macro_f1") for g, q in zip(good, poor)]
        )
    )


def test_paired_difference_of_identical_predictions_is_zero_with_p_one():
    y, p = toy()
    diff = _paired(y, [p, p], [p.copy(), p.copy()])
    assert (diff.estimate, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not diff.excludes_zero


def test_paired_difference_of_two_noisy_equals_contains_zero():
    rng = np.random.default_rng(4)
    y = (rng.random((200, 3)) < 0.3).astype(np.uint8)
    same = [np.clip(0.3 + 0.2 * (2.0 * y - 1) + rng.normal(0, 0.25, y.shape), 0, 1) for _ in range(2)]
    diff = _paired(y, [same[0]], [same[1]])  # two draws of one model: no real difference
    assert diff.low < 0 < diff.high and diff.p_value > 0.05


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="metric must be one of auc, macro_f1"):
        stats.bootstrap_metric(np.zeros((3, 2)), np.zeros((3, 2)), "accuracy")
    with pytest.raises(ValueError, match="one shape"):
        stats.bootstrap_metric(np.zeros((3, 2)), np.zeros((3, 3)), "auc")
