"""Label corruption for multi-hot label matrices (the paper replaces labels "with corrupted labels in probability").

``kind="resample"`` (default, our reading of the paper): with probability ``rate`` a sample's whole label vector is
replaced by the vector of another sample drawn uniformly at random. The corrupted labels keep the marginal
prevalences and the co-occurrence statistics of the clean ones (every label vector is a real one), only the link
between an input and its labels is broken. A replaced vector can equal the original one by chance (common for the
frequent "normal" patterns), so the fraction of labels that actually change is below ``rate``:
:func:`changed_fraction` measures it.

``kind="flip"``: each entry is flipped independently with probability ``rate``.

``kind="class_conditional"`` (asymmetric, class by class, as real report-mined labels are wrong): each positive of
class c turns negative with probability ``min(1, rate x fn_rate[c])`` and each negative turns positive with
probability ``min(1, rate x fp_rate[c])``, independently. ``rate`` (the config's ``noise``) scales a measured
profile: ``noise=1`` applies the rates as given, ``noise=0.5`` half of them, ``noise=0`` none. The rates come from
``corruption.fn_rate`` / ``corruption.fp_rate`` (a number for every class, or a list by class) or from
``corruption.profile`` (a ``noise_profile.csv`` of ``scripts/noise_profile.py``, whose classes must be the
dataset's, or ``chestxray14``: the packaged rates measured on ChestX-ray14's expert-labelled test images,
:data:`PACKAGED_PROFILES`); :func:`class_rates` resolves them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

KINDS = ("resample", "flip", "class_conditional")
# corruption.profile=<name>: the per-class rates shipped with the package (figures, not the label files)
PACKAGED_PROFILES = {"chestxray14": "profiles/chestxray14_nlp_vs_expert.csv"}


def check_rate(rate: float, key: str = "noise") -> float:
    rate = float(rate)
    if not (0.0 <= rate <= 1.0):
        raise ValueError(f"{key} must be a probability in [0, 1], got {rate}")
    return rate


def corrupt_labels(
    y: np.ndarray,
    rate: float,
    kind: str = "resample",
    seed: int = 0,
    fn_rate: Sequence[float] | np.ndarray | None = None,
    fp_rate: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Return a corrupted copy of the n x C multi-hot array ``y`` (same dtype); ``y`` itself is not changed.

    ``fn_rate``, ``fp_rate``: the per-class rates of ``kind="class_conditional"`` (C numbers each, see
    :func:`class_rates`). Deterministic for a given ``seed``.
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
    if kind == "class_conditional":
        fn, fp = (_rate_vector(v, y.shape[1], key) for v, key in ((fn_rate, "fn_rate"), (fp_rate, "fp_rate")))
        p = np.where(y == 1, np.minimum(1.0, rate * fn), np.minimum(1.0, rate * fp))
        flip = rng.random(y.shape) < p
        out[flip] = 1 - out[flip]
        return out
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


def _rate_vector(value, n_classes: int, key: str) -> np.ndarray:
    if value is None:
        return np.zeros(n_classes)
    v = np.asarray(value, dtype=np.float64)
    if v.shape != (n_classes,) or not np.all((v >= 0) & (v <= 1)):
        raise ValueError(f"corruption.{key}: expected {n_classes} probabilities in [0, 1], got {value!r}")
    return v


def packaged_profile(name: str) -> Path:
    """The file of a packaged profile (:data:`PACKAGED_PROFILES`)."""
    return Path(__file__).resolve().parent / PACKAGED_PROFILES[name]


def read_profile(path: str | os.PathLike, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(fn_rate, fp_rate) by class, in ``class_names`` order, from a ``noise_profile.csv`` (``#`` lines are comments;
    columns ``class``, ``fn_rate``, ``fp_rate``) or a packaged profile's name. A missing file or column, a rate
    outside [0, 1] or classes other than ``class_names`` is one line ``corruption.profile: ...``."""
    import pandas as pd

    where = packaged_profile(str(path)) if str(path) in PACKAGED_PROFILES else Path(path)
    allowed = f"allowed: a noise_profile.csv (scripts/noise_profile.py) or {', '.join(PACKAGED_PROFILES)}"
    if not where.is_file():
        raise ValueError(f"corruption.profile: {path} not found; {allowed}")
    try:
        df = pd.read_csv(where, comment="#")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"corruption.profile: {where} is not a readable CSV ({' '.join(str(err).split())})") from None
    missing = [c for c in ("class", "fn_rate", "fp_rate") if c not in df.columns]
    if missing:
        raise ValueError(f"corruption.profile: {where} lacks the columns {missing}; {allowed}")
    names = [str(c) for c in df["class"]]
    if sorted(names) != sorted(class_names) or len(set(names)) != len(names):
        raise ValueError(
            f"corruption.profile: {where} has the classes {names} but the dataset has {list(class_names)}; allowed: "
            "a profile of the same classes (or corruption.fn_rate / corruption.fp_rate as numbers)"
        )
    df = df.set_index("class").loc[list(class_names)]
    out = []
    for key in ("fn_rate", "fp_rate"):
        v = pd.to_numeric(df[key], errors="coerce").fillna(0.0).to_numpy(np.float64)  # no expert positive: no flip
        if not np.all((v >= 0) & (v <= 1)):
            raise ValueError(f"corruption.profile: {where}: {key} must be probabilities in [0, 1], got {v.tolist()}")
        out.append(v)
    return out[0], out[1]


def class_rates(corruption: Any, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(fn_rate, fp_rate) by class from the ``corruption`` config node (a mapping): ``profile``, else ``fn_rate``
    and ``fp_rate`` (each a number for every class, a list of one number per class, or null for 0). One-line
    ValueErrors ``corruption.<key>: ...; allowed: ...``."""
    get = corruption.get if hasattr(corruption, "get") else (lambda k, d=None: getattr(corruption, k, d))
    profile = get("profile", None)
    if profile not in (None, ""):
        return read_profile(profile, class_names)
    out = []
    for key in ("fn_rate", "fp_rate"):
        value = get(key, None)
        n = len(class_names)
        if value is None:
            out.append(np.zeros(n))
            continue
        values = [value] * n if isinstance(value, (int, float)) and not isinstance(value, bool) else list(value)
        ok = len(values) == n and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values
        )
        if not ok:
            raise ValueError(
                f"corruption.{key}: got {value!r}; allowed: a probability in [0, 1] for every class, or a list of {n} "
                f"(one per class: {', '.join(class_names)})"
            )
        out.append(np.asarray(values, dtype=np.float64))
    return out[0], out[1]
