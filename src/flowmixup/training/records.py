"""What a run records: its progress and best values (:class:`RunState`), ``metrics.csv``, the test predictions,
``per_class.csv``, ``labels_train_clean.npz`` and ``summary.json`` (:class:`Summary`). Every file is written
atomically."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypedDict

import numpy as np
import torch

from .. import stats
from ..io import atomic_path, write_text
from .metrics import Scores, class_at_epochs, normalized_variance

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "val_macro_f1", "test_auc", "test_macro_f1"]
PER_CLASS_COLUMNS = [
    "class",
    "train_count",
    "train_single_count",
    "test_count",
    "test_auc_best",
    "test_f1_best",
    "test_auc_last",
    "test_f1_last",
    "test_auc_at_best_val",
    "test_f1_at_best_val",
]


def metric_columns(extra: list[str]) -> list[str]:
    """metrics.csv's columns: the fixed ones, then ``val_<name>``, ``test_<name>`` of each extra metric."""
    return METRIC_COLUMNS + [f"{split}_{name}" for name in extra for split in ("val", "test")]


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def _array(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.numpy()


@dataclass
class Speed:
    """Training throughput measured in this process (after a resume: since the resume). Not checkpointed."""

    steps: int = 0
    samples: int = 0
    train_s: float = 0.0  # wall time inside the training loop, waiting for data included
    data_wait_s: float = 0.0  # of which: waiting for the DataLoader's next batch

    def as_dict(self) -> dict:
        return {
            "train_steps": self.steps,
            "train_samples": self.samples,
            "train_s": round(self.train_s, 3),
            "data_wait_s": round(self.data_wait_s, 3),
            "train_samples_per_s": self.samples / self.train_s if self.train_s > 0 else None,
            "data_wait_fraction": self.data_wait_s / self.train_s if self.train_s > 0 else None,
        }


@dataclass
class RunState:
    """Everything a checkpoint holds besides the model, optimiser, scheduler and random states."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps of epoch ``epoch + 1`` (a mid-epoch checkpoint)
    loss_sum: float = 0.0  # training loss summed over those steps
    perm: torch.Tensor | None = None  # the batch order of epoch ``epoch + 1`` once drawn
    history: list[dict] = field(default_factory=list)  # the rows of metrics.csv
    per_epoch: list[Scores] = field(default_factory=list)  # test scores of each epoch
    best: dict = field(default_factory=lambda: {"auc": (-1.0, None), "macro_f1": (-1.0, None)})
    best_val: tuple = (math.inf, -1)  # (validation loss, epoch)
    best_val_probs: np.ndarray | None = None  # the test probabilities at the epoch of lowest validation loss
    last_probs: np.ndarray | None = None
    y_test: np.ndarray | None = None
    speed: Speed = field(default_factory=Speed)  # this process's throughput (not part of the checkpoint)
    expert: list[Scores] = field(default_factory=list)  # expert-label scores of each epoch (dataset.expert_labels)

    def record(self, row: dict, test: Scores, probs: np.ndarray) -> None:
        """One evaluated epoch: its metrics.csv row, its test scores and probabilities; the best values so far."""
        self.history.append(row)
        self.per_epoch.append(test)
        self.last_probs = probs
        for metric in self.best:
            value = getattr(test, metric)
            if math.isfinite(value) and value > self.best[metric][0]:
                self.best[metric] = (value, probs.copy())
        if row["val_loss"] < self.best_val[0]:
            self.best_val = (row["val_loss"], row["epoch"])
            self.best_val_probs = probs.copy()
        self.epoch, self.step, self.perm, self.loss_sum = row["epoch"], 0, None, 0.0

    def to_dict(self) -> dict:
        """Tensors and primitives only (a checkpoint loaded with ``weights_only=True``)."""
        expert = {"expert": [_scores_dict(s) for s in self.expert]} if self.expert else {}
        return {
            **expert,
            "epoch": self.epoch,
            "step": self.step,
            "loss_sum": self.loss_sum,
            "perm": self.perm,
            "history": self.history,
            "per_epoch": [
                {**vars(s), "per_class_auc": _tensor(s.per_class_auc), "per_class_f1": _tensor(s.per_class_f1)}
                for s in self.per_epoch
            ],
            "best": {k: [v, _tensor(p)] for k, (v, p) in self.best.items()},
            "best_val": list(self.best_val),
            "best_val_probs": _tensor(self.best_val_probs),
            "last_probs": _tensor(self.last_probs),
            "y_test": _tensor(self.y_test),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        per_epoch = [
            Scores(**{**s, "per_class_auc": _array(s["per_class_auc"]), "per_class_f1": _array(s["per_class_f1"])})
            for s in d["per_epoch"]
        ]
        expert = [
            Scores(**{**s, "per_class_auc": _array(s["per_class_auc"]), "per_class_f1": _array(s["per_class_f1"])})
            for s in d.get("expert", [])
        ]
        return cls(
            expert=expert,
            epoch=d["epoch"],
            step=d["step"],
            loss_sum=d["loss_sum"],
            perm=d["perm"],
            history=d["history"],
            per_epoch=per_epoch,
            best={k: (v, _array(p)) for k, (v, p) in d["best"].items()},
            best_val=tuple(d["best_val"]),
            best_val_probs=_array(d.get("best_val_probs")),  # absent from checkpoints written before it was kept
            last_probs=_array(d["last_probs"]),
            y_test=_array(d["y_test"]),
        )


def _scores_dict(s: Scores) -> dict:
    return {**vars(s), "per_class_auc": _tensor(s.per_class_auc), "per_class_f1": _tensor(s.per_class_f1)}


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def save_predictions(path: Path, y_true: np.ndarray, y_score: np.ndarray, class_names: list[str], epoch: int) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                y_true=y_true.astype(np.uint8),
                y_score=y_score.astype(np.float32),
                class_names=np.array(class_names),
                epoch=np.array(epoch),
            )


def save_labels(path: Path, y: np.ndarray, class_names: list[str]) -> None:
    """The clean (uncorrupted) training labels, for dataset statistics such as Fig. 6's Independent Ratio."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, y=np.asarray(y, dtype=np.uint8), class_names=np.array(class_names))


def write_final_files(
    run_dir: Path, state: RunState, names: list[str], primary: str, y_train_clean: np.ndarray, y_train: np.ndarray
) -> None:
    """Test predictions (last epoch, best epoch of the primary metric, epoch of lowest validation loss), the clean
    training labels and per_class.csv (after >= 1 epoch). The report's intervals resample these predictions."""
    best_probs = state.best[primary][1] if state.best[primary][1] is not None else state.last_probs
    save_predictions(run_dir / "predictions_test_last.npz", state.y_test, state.last_probs, names, len(state.history))
    save_labels(run_dir / "labels_train_clean.npz", y_train_clean, names)
    save_predictions(
        run_dir / "predictions_test_best.npz",
        state.y_test,
        best_probs,
        names,
        int(np.nanargmax([getattr(sc, primary) for sc in state.per_epoch])) + 1,
    )
    if state.best_val_probs is not None:  # a run resumed from a checkpoint older than this file lacks them
        save_predictions(
            run_dir / "predictions_test_at_best_val.npz", state.y_test, state.best_val_probs, names, state.best_val[1]
        )
    write_csv(
        run_dir / "per_class.csv",
        per_class_rows(names, y_train, state.y_test, state.per_epoch, state.best_val[1]),
        PER_CLASS_COLUMNS,
    )


def _best_epoch(values: list[float]) -> int:
    return int(np.nanargmax(values)) if any(np.isfinite(v) for v in values) else -1


def per_class_rows(names, y_train, y_test, per_epoch: list[Scores], best_val_epoch: int) -> list[dict]:
    y_train = np.asarray(y_train) >= 0.5
    single = y_train.sum(axis=1) == 1
    auc_epoch = _best_epoch([s.auc for s in per_epoch])
    f1_epoch = _best_epoch([s.macro_f1 for s in per_epoch])
    return [
        {
            "class": name,
            "train_count": int(y_train[:, c].sum()),
            "train_single_count": int((y_train[:, c] & single).sum()),
            "test_count": int((np.asarray(y_test)[:, c] >= 0.5).sum()),
            **class_at_epochs(per_epoch, c, auc_epoch, f1_epoch, best_val_epoch),
        }
        for c, name in enumerate(names)
    ]


class Summary(TypedDict, total=False):
    """The keys of ``summary.json`` (README, "Run outputs"). NaN is written as null. With extra metrics
    (``dataset.extra_metrics``), each ``<name>`` adds ``best_test_<name>``, ``last_test_<name>`` and
    ``test_<name>_at_best_val``; with expert labels (``dataset.expert_labels``) the same for ``expert_auc``,
    ``expert_macro_f1`` and their ``_all`` variants, and the facts of
    :func:`flowmixup.training.expert.expert_summary`."""

    status: str  # ok | failed
    dataset: str
    primary_metric: str  # auc | macro_f1
    backbone: str
    regularizer: str
    alpha: Optional[float]
    keep_original: Optional[bool]
    mix_points: Optional[list]
    noise: float
    corruption_kind: str
    seed: int
    epochs: int  # epochs trained
    epochs_planned: int
    best_test_auc: Optional[float]
    last_test_auc: Optional[float]
    best_test_macro_f1: Optional[float]
    last_test_macro_f1: Optional[float]
    best_val_epoch: Optional[int]
    test_auc_at_best_val: Optional[float]
    test_macro_f1_at_best_val: Optional[float]
    val_auc_at_best_val: Optional[float]
    val_macro_f1_at_best_val: Optional[float]
    variance_auc: Optional[float]
    variance_macro_f1: Optional[float]
    variance_epochs: int
    corrupted_fraction: float
    auc_excluded_classes: list
    f1_excluded_classes: list
    wall_time_s: float
    speed: dict  # this process's throughput: train_steps, train_samples, train_s, data_wait_s,
    #                               train_samples_per_s, data_wait_fraction (is the loader keeping up?)
    bootstrap: dict  # 95% percentile intervals over the test records (:func:`bootstrap_intervals`)
    reason: str  # only when status is failed
    config: dict  # the resolved config (the run's config.yaml)


def bootstrap_intervals(state: RunState, primary: str, threshold: float) -> dict:
    """The run's own uncertainty: the percentile bootstrap interval over the test records of its test AUC and
    macro-F1 at the epochs the report uses (the same predictions as the ``predictions_test_*.npz`` files):
    ``last``, ``at_best_val`` and, for the primary metric, ``best`` (the epoch of its best test value). Settings
    and samples are :mod:`flowmixup.stats`' defaults, which the report checks before using them."""
    out: dict[str, Any] = {
        "n_resamples": stats.N_RESAMPLES,
        "confidence": stats.CONFIDENCE,
        "seed": stats.SEED,
        "method": "percentile; test records resampled",
    }
    if state.y_test is None or state.last_probs is None:
        return out
    epochs = {"last": state.last_probs, "at_best_val": state.best_val_probs, "best": state.best[primary][1]}
    for metric in stats.METRICS:
        found = {}
        for which, probs in epochs.items():
            if probs is None or (which == "best" and metric != primary):
                continue
            values = stats.bootstrap_metric(state.y_test, probs, metric, threshold=threshold)
            low, high = stats.percentile_interval(values)
            found[which] = None if math.isnan(low) else [low, high]
        out[f"test_{metric}"] = found
    return out


def _extra_summary(history: list[dict], at: dict | None, extra: list[str]) -> dict:
    out, nan = {}, float("nan")
    for name in extra:
        values = [r[f"test_{name}"] for r in history if math.isfinite(r[f"test_{name}"])]
        out[f"best_test_{name}"] = max(values, default=nan)
        out[f"last_test_{name}"] = history[-1][f"test_{name}"] if history else nan
        out[f"test_{name}_at_best_val"] = at[f"test_{name}"] if at else nan
    return out


def summarize(
    cfg,
    resolved: dict,
    state: RunState,
    corrupted: float,
    status: str,
    reason: str | None,
    started: float,
    extra: list[str] = (),
    facts: dict | None = None,
) -> Summary:
    history, reg, nan = state.history, resolved["regularizer"], float("nan")
    test_auc = [r["test_auc"] for r in history]
    test_f1 = [r["test_macro_f1"] for r in history]
    var_auc, used = normalized_variance(test_auc, int(cfg.metrics.variance_epochs))
    var_f1, _ = normalized_variance(test_f1, int(cfg.metrics.variance_epochs))
    at = history[state.best_val[1] - 1] if state.best_val[1] >= 1 else None
    summary: dict[str, Any] = {
        "status": status,
        "dataset": cfg.dataset.name,
        "primary_metric": cfg.dataset.primary_metric,
        "backbone": cfg.backbone.name,
        "regularizer": reg["name"],
        "alpha": reg.get("alpha"),
        "keep_original": reg.get("keep_original"),
        "mix_points": reg.get("mix_points"),
        "noise": float(cfg.noise),
        "corruption_kind": cfg.corruption.kind,
        "seed": int(cfg.seed),
        "epochs": len(history),
        "epochs_planned": int(cfg.trainer.epochs),
        "best_test_auc": max(test_auc, default=nan),
        "last_test_auc": test_auc[-1] if history else nan,
        "best_test_macro_f1": max(test_f1, default=nan),
        "last_test_macro_f1": test_f1[-1] if history else nan,
        "best_val_epoch": state.best_val[1] if history else None,
        "test_auc_at_best_val": at["test_auc"] if at else nan,
        "test_macro_f1_at_best_val": at["test_macro_f1"] if at else nan,
        "val_auc_at_best_val": at["val_auc"] if at else nan,
        "val_macro_f1_at_best_val": at["val_macro_f1"] if at else nan,
        "variance_auc": var_auc,
        "variance_macro_f1": var_f1,
        "variance_epochs": used,
        "corrupted_fraction": corrupted,
        "auc_excluded_classes": state.per_epoch[-1].auc_excluded if state.per_epoch else [],
        "f1_excluded_classes": state.per_epoch[-1].f1_excluded if state.per_epoch else [],
        "wall_time_s": round(time.time() - started, 2),
        "speed": state.speed.as_dict(),
        **_extra_summary(history, at, list(extra)),
        "bootstrap": bootstrap_intervals(state, cfg.dataset.primary_metric, float(cfg.metrics.threshold)),
        **(facts or {}),  # e.g. the expert evaluation's images and classes (training.expert)
    }
    if reason:
        summary["reason"] = reason
    summary["config"] = resolved  # every setting of the run (as its config.yaml), for the report to group on
    return Summary(**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()})
