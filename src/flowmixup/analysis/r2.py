"""The paper's R² of a clustering of hidden features (section IV-C, Eq. 7; Fig. 4).

For the features ``z`` of N samples at one hidden state (each flattened to V = D x H x W values) and a partition of
the samples into clusters::

    SST = 1/V * sum_j sum_v (z_jv - mean_v)^2              (mean over all samples)
    SSI = 1/V * sum_c sum_{j in c} sum_v (z_jv - mean_cv)^2  (mean over the samples of cluster c)
    R²  = 1 - SSI / SST

R² is the share of the total variance that lies between the clusters: 1 when every cluster is a single point,
0 when there is a single cluster. The paper partitions with k-means (k = 10) so that the classifier's own
predictions play no part; :func:`kmeans_assign` does that, :func:`r2_table` does both for several hidden states.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

#: above this many samples :func:`kmeans_assign` uses mini-batch k-means (full k-means is O(N k V) per iteration)
MINIBATCH_ABOVE = 20_000
#: k-means restarts (fixed, so a result depends on the seed only)
N_INIT = 3

_CHUNK = 1 << 22  # values per block of rows when summing squares (bounds the float64 temporaries)


def _as_2d(features) -> np.ndarray:
    z = np.asarray(features)
    if z.ndim == 0:
        raise ValueError("features must have a sample axis first, got a scalar")
    return z.reshape(z.shape[0], -1)


def cluster_r2(features, assignments) -> float:
    """R² = 1 - SSI/SST (Eq. 7) of ``features`` (N, V) -- or (N, D, L), (N, D, H, W): flattened per sample --
    partitioned by ``assignments`` (N,) (any hashable labels: cluster ids, class ids).

    Sums are taken in float64. Returns NaN when SST is 0 (all samples identical: R² is undefined).
    """
    z = _as_2d(features)
    labels = np.asarray(assignments).reshape(-1)
    n, v = z.shape
    if labels.shape[0] != n:
        raise ValueError(f"{n} feature rows but {labels.shape[0]} assignments")
    if n == 0 or v == 0:
        raise ValueError(f"features of shape {np.asarray(features).shape}: no samples or no values per sample")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    step = max(1, _CHUNK // v)
    # pass 1: the overall mean and the cluster means (sums in float64)
    total = np.zeros(v)
    sums = np.zeros((len(counts), v))
    for start in range(0, n, step):
        block = z[start : start + step].astype(np.float64)
        total += block.sum(axis=0)
        np.add.at(sums, inverse[start : start + step], block)
    mean = total / n
    means = sums / counts[:, None]
    # pass 2: squared deviations from each
    sst = ssi = 0.0
    for start in range(0, n, step):
        block = z[start : start + step].astype(np.float64)
        sst += float(np.square(block - mean).sum())
        ssi += float(np.square(block - means[inverse[start : start + step]]).sum())
    sst /= v
    ssi /= v
    if sst == 0.0:
        return math.nan
    return 1.0 - ssi / sst


def kmeans_assign(
    features, k: int = 10, seed: int = 0, n_init: int = N_INIT, minibatch_above: int = MINIBATCH_ABOVE
) -> np.ndarray:
    """k-means cluster ids (N,) of ``features`` (N, ...), seeded; mini-batch k-means above ``minibatch_above``
    samples. ``k`` must be between 1 and N."""
    z = _as_2d(features)
    n = z.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} clusters but {n} samples; allowed: 1 <= k <= {n}")
    if n > minibatch_above:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=n_init, batch_size=4096)
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, random_state=seed, n_init=n_init)
    return km.fit_predict(np.ascontiguousarray(z, dtype=np.float32))


def r2_table(
    features_by_point: Mapping[str, np.ndarray],
    k: int = 10,
    seed: int = 0,
    n_init: int = N_INIT,
    minibatch_above: int = MINIBATCH_ABOVE,
    progress: bool = False,
) -> list[dict]:
    """For each hidden state (in the mapping's order): k-means with ``k`` clusters, then :func:`cluster_r2`.

    Returns rows ``{"point", "k", "n", "v", "r2"}``."""
    items = list(features_by_point.items())
    if progress:
        from ..progress import progress as show_progress

        items = show_progress(items, desc="R² per hidden state", unit="state")
    rows = []
    for point, z in items:
        z = _as_2d(z)
        labels = kmeans_assign(z, k=k, seed=seed, n_init=n_init, minibatch_above=minibatch_above)
        rows.append({"point": point, "k": k, "n": z.shape[0], "v": z.shape[1], "r2": cluster_r2(z, labels)})
    return rows
