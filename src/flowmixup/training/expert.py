"""Evaluation on expert labels (``dataset.expert_labels``, ChestX-ray14): what each epoch adds to metrics.csv, what
``expert_per_class.csv`` and ``summary.json`` hold.

Every epoch the model is scored on the dataset's expert-labelled test images against the radiologists' majority
(:class:`~flowmixup.data.expert_labels.ExpertSplit`), beside the usual test split and its NLP-mined labels:

- ``test_expert_auc``, ``test_expert_macro_f1``: the means over the classes with at least
  :data:`~flowmixup.data.expert_labels.MIN_POSITIVES` expert positives among the evaluated images (the rule: fewer
  positives make a class's AUC and F1 noise: on the 810 images of the release Pneumonia has 2, Hernia 5,
  Emphysema 7);
- ``test_expert_auc_all``, ``test_expert_macro_f1_all``: the means over every class with a positive (as
  ``test_auc``);
- ``summary.json``: ``best_test_<m>``, ``last_test_<m>`` and ``test_<m>_at_best_val`` of each, ``expert_images``,
  ``expert_images_missing``, ``expert_min_positives``, ``expert_positives`` (per class),
  ``expert_classes_in_mean`` and ``expert_per_class`` (the CSV's values by class);
- ``expert_per_class.csv``: per class its expert positives, whether it enters the means, and its AUC / F1 at the
  best epoch, the last and the best-validation epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.expert_labels import MIN_POSITIVES, ExpertSplit
from .metrics import Scores, class_at_epochs

EXPERT_METRICS = ["expert_auc", "expert_macro_f1", "expert_auc_all", "expert_macro_f1_all"]
EXPERT_COLUMNS = [f"test_{m}" for m in EXPERT_METRICS]
EXPERT_PER_CLASS_COLUMNS = [
    "class",
    "expert_positive",
    "in_mean",
    "test_expert_auc_best",
    "test_expert_f1_best",
    "test_expert_auc_last",
    "test_expert_f1_last",
    "test_expert_auc_at_best_val",
    "test_expert_f1_at_best_val",
]


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)[np.asarray(mask, dtype=bool)]
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def expert_row(scores: Scores, expert: ExpertSplit) -> dict[str, float]:
    """The metrics.csv values of one epoch's expert scores."""
    return {
        "test_expert_auc": _mean(scores.per_class_auc, expert.in_mean),
        "test_expert_macro_f1": _mean(scores.per_class_f1, expert.in_mean),
        "test_expert_auc_all": scores.auc,
        "test_expert_macro_f1_all": scores.macro_f1,
    }


def _plain(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def expert_summary(
    expert: ExpertSplit, names: list[str], per_epoch: list[Scores] = (), history=(), best_val_epoch: int = -1
) -> dict:
    """summary.json's facts about the expert evaluation (the metrics come with the extra metrics' keys), with
    ``expert_per_class`` (expert_per_class.csv's values by class) once an epoch is scored."""
    out = {
        "expert_images": int(len(expert.rows)),
        "expert_images_missing": int(expert.missing),
        "expert_min_positives": MIN_POSITIVES,
        "expert_positives": {n: int(p) for n, p in zip(names, expert.positives)},
        "expert_classes_in_mean": [n for n, keep in zip(names, expert.in_mean) if keep],
    }
    if per_epoch:
        rows = expert_per_class_rows(names, expert, list(per_epoch), list(history), best_val_epoch)
        out["expert_per_class"] = {
            r["class"]: {k: _plain(float(v)) if k.startswith("test_") else v for k, v in r.items() if k != "class"}
            for r in rows
        }
    return out


def _epoch_of(history: list[dict], column: str) -> int:
    values = [r.get(column, math.nan) for r in history]
    finite = [i for i, v in enumerate(values) if isinstance(v, float) and math.isfinite(v)]
    return max(finite, key=lambda i: values[i]) if finite else len(history) - 1


def expert_per_class_rows(
    names: list[str], expert: ExpertSplit, per_epoch: list[Scores], history: list[dict], best_val_epoch: int
) -> list[dict]:
    """expert_per_class.csv's rows: best = the epoch of the best ``test_expert_auc`` (AUC) / ``_macro_f1`` (F1)."""
    auc_e, f1_e = _epoch_of(history, "test_expert_auc"), _epoch_of(history, "test_expert_macro_f1")
    return [
        {
            "class": name,
            "expert_positive": int(expert.positives[c]),
            "in_mean": bool(expert.in_mean[c]),
            **class_at_epochs(per_epoch, c, auc_e, f1_e, best_val_epoch, prefix="test_expert"),
        }
        for c, name in enumerate(names)
    ]


def write_expert_per_class(
    run_dir: Path, names: list[str], expert: ExpertSplit, per_epoch: list[Scores], history, best_val_epoch
) -> None:
    from .records import write_csv

    rows = expert_per_class_rows(names, expert, per_epoch, history, best_val_epoch)
    write_csv(run_dir / "expert_per_class.csv", rows, EXPERT_PER_CLASS_COLUMNS)
