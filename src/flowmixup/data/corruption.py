"""Label corruption for multi-hot label matrices (the paper replaces labels "with corrupted labels in probability").

``kind="resample"`` (default, our reading of the paper): with probability ``rate`` a sample's whole label vector is
replaced by the vector of another sample drawn uniformly at random. The corrupted labels keep the marginal
prevalences and the co-occurrence statistics of the clean ones (every label vector is a real one), only the link
between an input and its labels is broken. A replaced vector can equal the original one by chance (common for the
frequent "normal" patterns), so the fraction of labels that actually change is below ``rate``:
:func:`changed_fraction` measures it.

``kind="flip"``: each entry is flipped independently with probability ``rate``.
"""

from __future__ import annotations

import numpy as np

KINDS = ("resample", "flip")


def check_rate(rate: float, key: str = "noise") -> float:
    rate = float(rate)
    if not (0.0 <= rate <= 1.0):
        raise ValueError(f"{key} must be a probability in [0, 1], got {rate}")
    return rate


def corrupt_labels(y: np.ndarray, rate: float, kind: str = "resample", seed: int = 0) -> np.ndarray:
    """Return a corrupted copy of the n x C multi-hot array ``y`` (same dtype); ``y`` itself is not changed.

    Deterministic for a given ``seed``.
    """
    rate = check_rate(rate)
    if kind not in KINDS:
        raise ValueError(f"corruption.kind must be one of {', '.join(KINDS)}, got '{kind}'")
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"labels must be an n x C array, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be multi-hot (0/1) to be corrupted")
    out = y.copy()
    n = len(y)
    if rate == 0.0 or n == 0:
        return out
    rng = np.random.default_rng(seed)
    if kind == "flip":
        flip = rng.random(y.shape) < rate
        out[flip] = 1 - out[flip]
        return out
    if n < 2:
        return out
    chosen = np.flatnonzero(rng.random(n) < rate)
    donors = rng.integers(0, n - 1, size=len(chosen))
    donors += donors >= chosen  # uniform over the n - 1 OTHER samples
    out[chosen] = y[donors]
    return out


def changed_fraction(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """Fraction of samples whose label vector differs between ``clean`` and ``corrupted``."""
    if len(clean) == 0:
        return 0.0
    return float(np.any(np.asarray(clean) != np.asarray(corrupted), axis=1).mean())
