"""Label corruption: statistics, determinism, and the contract that inputs are never modified."""

from __future__ import annotations

import numpy as np
import pytest

from flowmixup.data import changed_fraction, corrupt_labels
from flowmixup.data.synth_ecg import generate


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    return (rng.random((20000, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.02]).astype(np.uint8)


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.7])
def test_resample_replaces_whole_vectors_at_the_rate(labels, rate):
    noisy = corrupt_labels(labels, rate, "resample", seed=1)
    # a replaced vector differs from the original with probability q = P(two random rows differ)
    rng = np.random.default_rng(2)
    a, b = labels[rng.integers(0, len(labels), 50000)], labels[rng.integers(0, len(labels), 50000)]
    q = np.any(a != b, axis=1).mean()
    expected = rate * q
    sd = np.sqrt(expected * (1 - expected) / len(labels))
    assert abs(changed_fraction(labels, noisy) - expected) < 5 * sd + 0.005
    # every corrupted row is a real label vector of the dataset, and marginals are kept
    real = {tuple(r) for r in labels}
    assert all(tuple(r) in real for r in noisy[np.any(noisy != labels, axis=1)])
    np.testing.assert_allclose(noisy.mean(0), labels.mean(0), atol=0.015)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_flip_flips_entries_independently(labels, rate):
    noisy = corrupt_labels(labels, rate, "flip", seed=3)
    flipped = (noisy != labels).mean()
    sd = np.sqrt(rate * (1 - rate) / labels.size)
    assert abs(flipped - rate) < 5 * sd
    assert set(np.unique(noisy)) <= {0, 1}


def test_deterministic_and_seed_dependent(labels):
    a = corrupt_labels(labels, 0.3, seed=5)
    assert np.array_equal(a, corrupt_labels(labels, 0.3, seed=5))
    assert not np.array_equal(a, corrupt_labels(labels, 0.3, seed=6))


def test_input_untouched_and_edge_rates(labels):
    before = labels.copy()
    corrupt_labels(labels, 0.9, "resample", seed=0)
    corrupt_labels(labels, 0.9, "flip", seed=0)
    assert np.array_equal(labels, before)
    assert np.array_equal(corrupt_labels(labels, 0.0), labels)
    assert np.array_equal(corrupt_labels(labels, 1.0, "flip"), 1 - labels)
    # rate 1 resample: every row gets ANOTHER row's vector
    small = np.eye(4, dtype=np.uint8)
    assert not np.any(np.all(corrupt_labels(small, 1.0, "resample", seed=0) == small, axis=1))


@pytest.mark.parametrize(
    "rate,kind,match",
    [
        (1.5, "resample", r"noise must be a probability in \[0, 1\]"),
        (-0.1, "flip", r"noise must be"),
        (0.2, "swap", r"corruption.kind must be one of resample, flip"),
    ],
)
def test_bad_arguments(labels, rate, kind, match):
    with pytest.raises(ValueError, match=match):
        corrupt_labels(labels, rate, kind)


def test_synthetic_labels_have_clinical_structure():
    _, y = generate(3000, 100, 3.0, seed=0)
    rhythm = y[:, :4]
    assert (rhythm.sum(1) == 1).all()  # exactly one rhythm per record
    assert not (y[:, 5] & y[:, 6]).any()  # RBBB and LBBB exclusive
    assert not (y[:, 12] & y[:, 13]).any()  # low voltage and LVH exclusive
    lvh, std = y[:, 13] == 1, y[:, 10] == 1
    assert std[lvh].mean() > 3 * std[~lvh].mean()  # LVH -> ST depression (correlated)
    low = y[:, 12] == 1
    assert abs(y[low, 3].mean() - y[~low, 3].mean()) < 0.08  # low voltage independent of AF
    prev = y.mean(0)
    assert prev.max() > 0.5 and prev.min() < 0.06  # common to rare
    x1, y1 = generate(50, 100, 3.0, seed=4)
    x2, y2 = generate(50, 100, 3.0, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (50, 8, 300) and x1.dtype == np.float32
