"""How sure a number is: bootstrap intervals over test records, intervals over seeds, paired differences, Holm.

The report puts an interval on every cell and a paired test on every comparison with these functions; a run puts
its own bootstrap intervals into ``summary.json`` with them. Nothing here knows about runs or tables.

**Resampling records.** :func:`bootstrap_metric` draws ``n_resamples`` bootstrap samples of the test records (each
``rng.integers(0, n, n)`` from ``numpy.random.default_rng(seed)``, one after another) and computes the metric of
each sample exactly as :func:`flowmixup.training.metrics.score` computes it on the full set: mean ROC-AUC over the
classes with at least one positive and one negative *in that sample* (ties counted one half, as scikit-learn), or
macro-F1 at the threshold over the classes with at least one positive in that sample (a class with none is left out
of that sample's mean, not counted as 0). A sample is turned into a count per record, so the metric is computed on
weights instead of copied arrays: the same numbers as scoring ``y[idx]``, which ``tests/test_stats.py`` checks
against that plain loop. The same ``seed`` draws the same samples for every run scored on the same test records, so
two runs' resampled metrics are paired sample by sample (:func:`paired_difference`).

**Intervals.** Percentile intervals of the resampled values (:func:`percentile_interval`); over seeds, Student's t
interval of the mean (:func:`seed_interval`). **Tests.** A two-sided p-value of a difference from its bootstrap
standard error (:func:`bootstrap_p_value`: the normal approximation, which, unlike counting resampled differences
beyond 0, has no floor of 1/B that Holm's correction would multiply past 0.05 in a large family) and Holm's
step-down correction of a family of p-values (:func:`holm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

N_RESAMPLES = 1000  # bootstrap samples of the test records, by default
CONFIDENCE = 0.95
SEED = 0  # the generator of the record samples: the same for every run, so runs on one test set are paired
METRICS = ("auc", "macro_f1")
_CELLS_PER_CHUNK = 4_000_000  # samples x records held at once (32 MB of float64 weights)


def _draws(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The record counts of the bootstrap samples, in chunks of (samples, n)."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    done = 0
    while done < n_resamples:
        rows = min(per_chunk, n_resamples - done)
        counts = np.empty((rows, n), dtype=np.float64)
        for i in range(rows):
            counts[i] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        done += rows
        yield counts


def _weighted_macro_f1(counts: np.ndarray, y: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    pred = (prob >= threshold).astype(np.float64)
    positives = counts @ y
    predicted = counts @ pred
    true_pos = counts @ (y * pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(positives > 0, 2.0 * true_pos / (positives + predicted), np.nan)
    return _nanmean_rows(f1)


def _weighted_auc(counts: np.ndarray, y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    aucs = np.full((len(counts), y.shape[1]), np.nan)
    for c in range(y.shape[1]):
        order = np.argsort(prob[:, c], kind="stable")
        score, label = prob[order, c], y[order, c]
        starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])  # groups of tied scores
        w = counts[:, order]
        pos = np.add.reduceat(w * label, starts, axis=1)
        neg = np.add.reduceat(w, starts, axis=1) - pos
        below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower than each group
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        aucs[:, c] = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    return _nanmean_rows(aucs)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    kept = np.isfinite(values)
    total = np.where(kept, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept.any(axis=1), total / kept.sum(axis=1), np.nan)


def bootstrap_metric(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metric: str,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    threshold: float = 0.5,
) -> np.ndarray:
    """The metric (``auc``: mean ROC-AUC, ``macro_f1``) of each of ``n_resamples`` bootstrap samples of the records
    (rows) of ``y_true`` / ``y_score`` (n x C); NaN for a sample in which no class can be scored."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    y = (np.asarray(y_true) >= 0.5).astype(np.float64)
    prob = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 2 or y.shape != prob.shape:
        raise ValueError(f"y_true and y_score must be n x C arrays of one shape, got {y.shape} and {prob.shape}")
    chunks = [
        _weighted_auc(counts, y, prob) if metric == "auc" else _weighted_macro_f1(counts, y, prob, threshold)
        for counts in _draws(len(y), n_resamples, seed)
    ]
    return np.concatenate(chunks)


def percentile_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of the finite ``values`` (NaN, NaN when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of the mean of ``values`` (one per seed); NaN, NaN with fewer than two."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan, math.nan
    half = float(t.ppf(0.5 + confidence / 2.0, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


def bootstrap_p_value(estimate: float, differences: Sequence[float]) -> float:
    """Two-sided p-value of "the difference is 0": ``2 * (1 - Phi(|estimate| / se))`` with ``se`` the standard
    deviation of the resampled ``differences`` (1 when they and the estimate are all 0; 0 when they never vary
    but the estimate is not 0)."""
    from scipy.stats import norm

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2 or not math.isfinite(estimate):
        return math.nan
    se = float(d.std(ddof=1))
    if se == 0.0:
        return 1.0 if estimate == 0.0 else 0.0
    return float(min(1.0, 2.0 * norm.sf(abs(estimate) / se)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class Difference:
    """A paired difference ``a - b`` with its bootstrap interval and two-sided p-value."""

    estimate: float
    low: float
    high: float
    p_value: float
    n_pairs: int
    n_resamples: int

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def paired_difference(
    a_point: Sequence[float],
    b_point: Sequence[float],
    a_resampled: Sequence[np.ndarray],
    b_resampled: Sequence[np.ndarray],
    *,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Difference:
    """``mean(a) - mean(b)`` over pairs (seed s of a with seed s of b), its percentile interval and p-value.

    ``a_point[i]`` / ``b_point[i]`` are pair i's metrics on the whole test set; ``a_resampled[i]`` /
    ``b_resampled[i]`` the same runs' :func:`bootstrap_metric` values on the SAME record samples (one seed for
    both). One pair: the differences of the record samples. Several pairs: a two-level bootstrap, each sample
    drawing the pairs with replacement (``seed``) and then taking the record sample's differences of those pairs,
    so the interval holds both the training seeds' spread and the test set's."""
    a_point, b_point = np.asarray(a_point, float), np.asarray(b_point, float)
    diffs = np.stack([np.asarray(a, float) - np.asarray(b, float) for a, b in zip(a_resampled, b_resampled)])
    n_pairs, n_resamples = diffs.shape
    if n_pairs != len(a_point) or len(a_point) != len(b_point):
        raise ValueError("paired_difference: as many point values as resampled arrays, for a and for b")
    if n_pairs > 1:
        pick = np.random.default_rng(seed + 1).integers(0, n_pairs, size=(n_resamples, n_pairs))
        resampled = np.nanmean(diffs[pick, np.arange(n_resamples)[:, None]], axis=1)
    else:
        resampled = diffs[0]
    low, high = percentile_interval(resampled, confidence)
    estimate = float(np.mean(a_point - b_point))
    return Difference(estimate, low, high, bootstrap_p_value(estimate, resampled), n_pairs, n_resamples)
