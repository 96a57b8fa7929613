"""The paper's metrics, computed with scikit-learn.

* mean ROC-AUC over classes (ChestX-ray14); a class without a positive or without a negative in the evaluated
  split has no AUC: it is left out of the mean and listed;
* macro-F1 at threshold 0.5 on the sigmoid outputs (ECG); a class without a positive in the evaluated split is
  left out of the macro average and listed (its F1 is 0 by convention or undefined, and either would be noise);
* Eq. (8), Table III: the population variance of the min-max-normalised per-epoch test metric over the first n
  epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


@dataclass
class Scores:
    auc: float
    macro_f1: float
    per_class_auc: np.ndarray
    per_class_f1: np.ndarray
    auc_excluded: list[str] = field(default_factory=list)
    f1_excluded: list[str] = field(default_factory=list)


def score(y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str], threshold: float = 0.5) -> Scores:
    """Per-class and averaged AUC and F1 for binary ``y_true`` (n x C) and probabilities ``y_prob`` (n x C)."""
    y_true = (np.asarray(y_true) >= 0.5).astype(int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n_classes = y_true.shape[1]
    positives = y_true.sum(axis=0)
    has_both = (positives > 0) & (positives < len(y_true))
    auc = np.full(n_classes, np.nan)
    for c in np.flatnonzero(has_both):
        auc[c] = roc_auc_score(y_true[:, c], y_prob[:, c])
    y_pred = (y_prob >= threshold).astype(int)
    f1 = f1_score(y_true, y_pred, average=None, zero_division=0.0)
    f1 = np.where(positives > 0, f1, np.nan)
    return Scores(
        auc=float(np.nanmean(auc)) if has_both.any() else float("nan"),
        macro_f1=float(np.nanmean(f1)) if (positives > 0).any() else float("nan"),
        per_class_auc=auc,
        per_class_f1=f1,
        auc_excluded=[class_names[c] for c in np.flatnonzero(~has_both)],
        f1_excluded=[class_names[c] for c in np.flatnonzero(positives == 0)],
    )


def normalized_variance(values, n: int) -> tuple[float, int]:
    """Eq. (8): population variance of the min-max-normalised first ``n`` values; returns (variance, epochs used).

    A constant series has variance 0. Fewer than ``n`` values: all of them are used (the count says how many).
    """
    v = np.asarray(values, dtype=np.float64)[: int(n)]
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), 0
    span = v.max() - v.min()
    if span == 0:
        return 0.0, len(v)
    normed = (v - v.min()) / span
    return float(np.mean((normed - normed.mean()) ** 2)), len(v)


def class_at_epochs(
    per_epoch: list[Scores], c: int, auc_epoch: int, f1_epoch: int, best_val_epoch: int, prefix: str = "test"
) -> dict:
    """Class ``c``'s AUC and F1 at the epochs a table reports, keyed ``<prefix>_{auc,f1}_{best,last,at_best_val}``:
    ``best`` at ``auc_epoch`` / ``f1_epoch`` (0-based), ``at_best_val`` at the 1-based ``best_val_epoch`` (the last
    epoch when there is none)."""
    at_val = per_epoch[best_val_epoch - 1] if best_val_epoch >= 1 else per_epoch[-1]
    return {
        f"{prefix}_auc_best": per_epoch[auc_epoch].per_class_auc[c],
        f"{prefix}_f1_best": per_epoch[f1_epoch].per_class_f1[c],
        f"{prefix}_auc_last": per_epoch[-1].per_class_auc[c],
        f"{prefix}_f1_last": per_epoch[-1].per_class_f1[c],
        f"{prefix}_auc_at_best_val": at_val.per_class_auc[c],
        f"{prefix}_f1_at_best_val": at_val.per_class_f1[c],
    }
