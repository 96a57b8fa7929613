"""Metrics equal scikit-learn's; Eq. (8) equals its formula."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from flowmixup.training.metrics import normalized_variance, score

NAMES = [f"c{i}" for i in range(5)]


def test_mean_auc_and_macro_f1_match_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < 0.3).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random((300, 5)), 0, 1)
    s = score(y, p, NAMES)
    assert s.auc == pytest.approx(roc_auc_score(y, p, average="macro"))
    assert s.macro_f1 == pytest.approx(f1_score(y, p >= 0.5, average="macro", zero_division=0))
    np.testing.assert_allclose(s.per_class_auc, roc_auc_score(y, p, average=None))
    assert s.auc_excluded == [] and s.f1_excluded == []


def test_classes_without_positives_or_negatives_are_left_out_and_listed():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 5)) < 0.4).astype(int)
    y[:, 1] = 0  # no positive
    y[:, 3] = 1  # no negative
    p = rng.random((200, 5))
    s = score(y, p, NAMES)
    ok = [0, 2, 4]
    assert s.auc == pytest.approx(np.mean([roc_auc_score(y[:, c], p[:, c]) for c in ok]))
    assert s.auc_excluded == ["c1", "c3"]
    assert s.macro_f1 == pytest.approx(f1_score(y, p >= 0.5, average="macro", labels=[0, 2, 3, 4], zero_division=0))
    assert s.f1_excluded == ["c1"] and np.isnan(s.per_class_f1[1])


def test_equation_8_variance():
    values = [0.61, 0.70, 0.66, 0.72, 0.74, 0.73, 0.90, 0.95]
    n = 6
    v = np.array(values[:n])
    normed = (v - v.min()) / (v.max() - v.min())
    expected = np.sum((normed - normed.mean()) ** 2) / n
    got, used = normalized_variance(values, n)
    assert got == pytest.approx(expected) and used == n
    assert normalized_variance([0.5] * 5, 5) == (0.0, 5)
    assert normalized_variance(values, 100)[1] == len(values)
