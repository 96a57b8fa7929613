"""The golden report fixture: a fixed sweep of synthetic run folders (no real data), written deterministically.

``python tests/data/report_golden/make_fixture.py OUT`` writes it; the golden test calls :func:`make_fixture` into a
temporary folder. Layout as ``make reproduce-tables`` leaves a sweep: ``<dataset>/<reg>_a<alpha>_op<keep>/
noise<n>_seed<s>/`` holding ``summary.json``, ``metrics.csv``, ``per_class.csv`` and, for the Mixup / Flow-Mixup
runs Fig. 6 reads, ``labels_train_clean.npz`` (ECG-12) or ``predictions_test_last.npz`` (ECG-55); ChestX-ray14 has
neither (Fig. 6 then counts n_c from its noise-0 runs' per_class.csv). Every ok ECG-12 run also holds its test
predictions at the three epochs the report resamples (``predictions_test_{best,at_best_val,last}.npz``: one test set
for all, each row's scores a little sharper than the one before), for the intervals and paired comparisons.
Numbers come from seeded generators and are rounded, so the files are the same on every machine. The sweep holds the
paper's six rows, one row outside them (Mixup alpha=2), failed runs, a cell in grid.json without any run, and
grid.json as reproduce writes it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROWS = [
    ("erm", None, None),
    ("mixup", 1.0, None),
    ("mixup", 3.0, None),
    ("manifold_mixup", 3.0, None),
    ("flowmixup", 3.0, False),
    ("flowmixup", 3.0, True),
]
EXTRA_ROW = ("mixup", 2.0, None)  # run for ECG-12 only, outside the paper's rows and outside grid.json
DATASETS = {  # dataset -> (primary metric, noise levels, seeds, classes)
    "chestxray14": (
        "auc",
        [0.0, 0.1, 0.3],
        [0, 1, 2],
        ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule"],
    ),
    "ecg12": (
        "macro_f1",
        [0.0, 0.1, 0.4],
        [0, 1],
        ["窦性心律", "T波改变", "正常ECG", "心房颤动", "房性早搏", "ST段改变", "电轴左偏"],
    ),
    "ecg55": (
        "macro_f1",
        [0.0, 0.4],
        [0, 1],
        ["窦性心律", "窦性心动过缓", "室性早搏", "QRS低电压", "T波改变", "临界ECG"],
    ),
}
FAILED = {("chestxray14", "manifold_mixup", 0.3, 1), ("ecg12", "erm", 0.4, 0), ("ecg12", "erm", 0.4, 1)}
MISSING = {("ecg55", "flowmixup", True, 0.4, 1)}  # in grid.json, never run
EPOCHS = 6


def cell_name(regularizer, alpha, keep) -> str:
    a = "none" if alpha is None else str(float(alpha))
    k = "none" if keep is None else str(bool(keep))
    return f"{regularizer}_a{a}_op{k}"


def _r(x, d=4):
    return [round(float(v), d) for v in np.atleast_1d(x)]


def _labels(rng, n, classes):
    y = (rng.random((n, len(classes))) < np.linspace(0.5, 0.1, len(classes))).astype(np.float32)
    return y


def _predictions(run: Path, row, noise, seed, classes) -> None:
    """The three prediction files of an ok ECG-12 run, from a generator of its own (the shared one is untouched)."""
    y = _labels(np.random.default_rng(7), 150, classes).astype(np.uint8)  # one test set for every run
    sharp = 0.15 + 0.05 * (ROWS.index(row) if row in ROWS else 2.5) - 0.1 * noise
    rng = np.random.default_rng([ROWS.index(row) if row in ROWS else 9, int(noise * 10), seed])
    for which, shift in (("best", 0.0), ("at_best_val", -0.02), ("last", -0.05)):
        score = np.clip(0.3 + (sharp + shift) * (2 * y - 1) + rng.normal(0, 0.2, y.shape), 0, 1)
        np.savez(
            run / f"predictions_test_{which}.npz",
            y_true=y,
            y_score=np.round(score, 2).astype(np.float32),
            class_names=np.array(classes),
            epoch=np.array(EPOCHS),
        )


def write_run(root: Path, rng, dataset, row, noise, seed, status="ok"):
    metric, _, _, classes = DATASETS[dataset]
    regularizer, alpha, keep = row
    run = root / dataset / cell_name(*row) / f"noise{float(noise)}_seed{seed}"
    run.mkdir(parents=True)
    base = (0.74 if metric == "auc" else 0.55) + 0.01 * (ROWS.index(row) if row in ROWS else 2.5) - 0.08 * noise
    rise = np.minimum(1.0, np.arange(1, EPOCHS + 1) / 3)
    decay = noise * 0.05 * np.maximum(0, np.arange(1, EPOCHS + 1) - 3)
    auc = np.round(base + 0.05 * rise - decay + rng.normal(0, 0.006, EPOCHS), 4)
    f1 = np.round(base - 0.1 + 0.06 * rise - decay + rng.normal(0, 0.006, EPOCHS), 4)
    n_epochs = EPOCHS if status == "ok" else 3
    auc, f1 = auc[:n_epochs], f1[:n_epochs]
    pd.DataFrame(
        {
            "epoch": np.arange(1, n_epochs + 1),
            "lr": 0.001,
            "train_loss": _r(np.linspace(0.7, 0.3, n_epochs)),
            "val_loss": _r(np.linspace(0.6, 0.4, n_epochs)),
            "val_auc": auc,
            "val_macro_f1": f1,
            "test_auc": auc,
            "test_macro_f1": f1,
        }
    ).to_csv(run / "metrics.csv", index=False)
    values = auc if metric == "auc" else f1
    summary = {
        "status": status,
        "dataset": dataset,
        "primary_metric": metric,
        "backbone": "resnet18",
        "regularizer": regularizer,
        "alpha": alpha,
        "keep_original": keep,
        "mix_points": None if regularizer in ("erm", "mixup") else [0, 1],
        "noise": float(noise),
        "corruption_kind": "flip",
        "seed": seed,
        "epochs": n_epochs,
        "epochs_planned": EPOCHS,
        "best_test_auc": float(auc.max()),
        "last_test_auc": float(auc[-1]),
        "best_test_macro_f1": float(f1.max()),
        "last_test_macro_f1": float(f1[-1]),
        "best_val_epoch": int(np.argmax(values)) + 1,
        "test_auc_at_best_val": float(auc[np.argmax(values)]),
        "test_macro_f1_at_best_val": float(f1[np.argmax(values)]),
        "variance_auc": round(float(rng.uniform(0.03, 0.12)), 4),
        "variance_macro_f1": round(float(rng.uniform(0.03, 0.12)), 4),
        "variance_epochs": 5,
        "corrupted_fraction": float(noise),
        "wall_time_s": 1.0,
    }
    if status != "ok":
        summary["status"] = "failed"
        summary["reason"] = "loss became NaN at epoch 4"
        for key in list(summary):
            if key.startswith(("best_test", "last_test", "variance_a", "variance_m")):
                summary[key] = None
    else:
        n = len(classes)
        per_class = pd.DataFrame(
            {
                "class": classes,
                "train_count": [int(v) for v in rng.integers(40, 200, n)],
                "train_single_count": [int(v) for v in rng.integers(0, 40, n)],
                "test_count": 20,
                "test_auc_best": _r(rng.uniform(0.6, 0.9, n)),
                "test_f1_best": _r(rng.uniform(0.2, 0.8, n)),
                "test_auc_last": _r(rng.uniform(0.6, 0.9, n)),
                "test_f1_last": _r(rng.uniform(0.2, 0.8, n)),
                "test_auc_at_best_val": _r(rng.uniform(0.6, 0.9, n)),
                "test_f1_at_best_val": _r(rng.uniform(0.2, 0.8, n)),
            }
        )
        per_class.to_csv(run / "per_class.csv", index=False)
        fig6_row = row in (("mixup", 3.0, None), ("flowmixup", 3.0, False))
        label_rng = np.random.default_rng(len(dataset))  # the same labels for every run of a dataset
        if dataset == "ecg12":
            _predictions(run, row, noise, seed, classes)
        if fig6_row and dataset == "ecg12":
            np.savez(run / "labels_train_clean.npz", y=_labels(label_rng, 120, classes), class_names=np.array(classes))
        if fig6_row and dataset == "ecg55":
            y = _labels(label_rng, 80, classes)
            np.savez(
                run / "predictions_test_last.npz",
                y_true=y,
                y_prob=np.full(y.shape, 0.5, np.float32),
                class_names=np.array(classes),
            )
    (run / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return run


def make_fixture(root: str | Path) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    grid = []
    for dataset, (_, noises, seeds, _) in DATASETS.items():
        for row in ROWS:
            for noise in noises:
                for seed in seeds:
                    grid.append(
                        {
                            "dataset": dataset,
                            "regularizer": row[0],
                            "alpha": row[1],
                            "keep_original": row[2],
                            "noise": noise,
                            "seed": seed,
                        }
                    )
                    if (dataset, row[0], row[2], noise, seed) in MISSING:
                        continue
                    failed = (dataset, row[0], noise, seed) in FAILED
                    write_run(root, rng, dataset, row, noise, seed, "failed" if failed else "ok")
    for noise in DATASETS["ecg12"][1]:
        for seed in DATASETS["ecg12"][2]:
            write_run(root, rng, "ecg12", EXTRA_ROW, noise, seed)
    (root / "grid.json").write_text(json.dumps(grid, indent=2), encoding="utf-8")
    return root


if __name__ == "__main__":
    print(make_fixture(sys.argv[1] if len(sys.argv) > 1 else "golden_sweep"))
