"""The expert-label journey (issue 21), through the commands a user types.

A generated NIH root whose official test split is the 810 images of Google's expert-label release: the REAL rows of
``Data_Entry_2017_v2020.csv.gz`` for them and for the first 300 images of the real ``train_val_list.txt``, the real
expert files, GENERATED pixels (the images are not in the fixtures). Then: prepare the cache, train ERM and
Flow-Mixup for one epoch with ``dataset.expert_labels=...``, train ERM once more without it (the expert evaluation
must not change training), and ``scripts/make_tables.py`` shows the expert-label table.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from journey_layouts import TINY_DENSENET
from project_config import PROJECT_ROOT

N_TRAIN_VAL = 300
RUN = ["trainer.epochs=1", "trainer.progress=false", "trainer.device=cpu", "trainer.num_threads=1"]
MODEL = TINY_DENSENET


def cli(*args: str) -> str:
    res = subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"`python {' '.join(args)}` exited {res.returncode}:\n{out[-3000:]}"
    return out


def rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def build_expert_root(nih: Path, root: Path, size: int = 32) -> list[str]:
    """The NIH layout: real table rows and split lists for the expert images (test) and N_TRAIN_VAL train_val
    images, one generated PNG each. Returns the test image names."""
    from PIL import Image

    table = pd.read_csv(nih / "Data_Entry_2017_v2020.csv.gz", dtype=str, keep_default_na=False)
    test = list(pd.read_csv(nih / "expert_labels" / "test_labels.csv", dtype=str)["Image ID"])
    train_val = [n for n in (nih / "train_val_list.txt").read_text().split() if n][:N_TRAIN_VAL]
    keep = set(test) | set(train_val)
    root.mkdir(parents=True)
    table[table["Image Index"].isin(keep)].to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for name in sorted(keep):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(root / "images" / name)
    return test


@pytest.mark.slow
def test_journey_expert_labels(tmp_path, shared_data):
    nih = shared_data / "chestxray14"
    expert = nih / "expert_labels"
    if not (expert / "test_labels.csv").is_file() or not (nih / "Data_Entry_2017_v2020.csv.gz").is_file():
        pytest.skip(f"the NIH table or the expert labels are not in {nih}")
    root = tmp_path / "nih"
    test = build_expert_root(nih, root)
    assert len(test) == 810
    data = f"paths.data_dir={tmp_path / 'data'}"
    dataset = ["dataset=chestxray14", f"dataset.root={root}", "dataset.resolution=32"]
    cli("scripts/prepare_data.py", *dataset, data)

    sweep = tmp_path / "sweep"
    with_expert = [*dataset, f"dataset.expert_labels={expert}", *MODEL, *RUN, data]
    out = cli("train.py", "-m", "regularizer=erm,flowmixup", *with_expert, f"hydra.sweep.dir={sweep}")
    assert "expert labels" in out and "test_expert_auc" in out, out[-3000:]
    summaries = {}
    for path in sorted(sweep.glob("*/summary.json")):
        s = json.loads(path.read_text())
        summaries[s["regularizer"]] = (path.parent, s)
        assert s["status"] == "ok" and s["expert_images"] == 810 and s["expert_images_missing"] == 0
        assert s["expert_positives"]["Atelectasis"] == 303 and s["expert_positives"]["Pneumonia"] == 2
        in_mean = s["expert_classes_in_mean"]
        assert "Pneumonia" not in in_mean and "Hernia" not in in_mean and "Atelectasis" in in_mean
        assert len(in_mean) == sum(v >= s["expert_min_positives"] for v in s["expert_positives"].values())
        for key in ("best_test_expert_auc", "last_test_expert_auc", "test_expert_auc_at_best_val"):
            assert 0.0 <= s[key] <= 1.0, (key, s[key])
        for key in ("best_test_expert_macro_f1", "last_test_expert_auc_all", "test_expert_macro_f1_all_at_best_val"):
            assert key in s, key
        metrics = rows(path.parent / "metrics.csv")
        assert {"test_expert_auc", "test_expert_macro_f1", "test_auc"} <= set(metrics[0])
        assert math.isclose(float(metrics[-1]["test_expert_auc"]), s["last_test_expert_auc"], rel_tol=1e-9)
        per_class = rows(path.parent / "expert_per_class.csv")
        assert [r["class"] for r in per_class][:2] == ["Atelectasis", "Cardiomegaly"] and len(per_class) == 14
        positives = {r["class"]: int(r["expert_positive"]) for r in per_class}
        assert positives == s["expert_positives"]
        assert s["expert_per_class"]["Atelectasis"]["expert_positive"] == 303
        assert math.isclose(
            s["expert_per_class"]["Effusion"]["test_expert_auc_last"],
            float(per_class[2]["test_expert_auc_last"]),
            rel_tol=1e-9,
        )
        assert {r["class"] for r in per_class if r["in_mean"] == "True"} == set(in_mean)
        # the mean over the classes in the rule equals the per-class values' mean
        last = [float(r["test_expert_auc_last"]) for r in per_class if r["in_mean"] == "True"]
        assert math.isclose(np.mean(last), s["last_test_expert_auc"], rel_tol=1e-6)
    assert set(summaries) == {"erm", "flowmixup"}

    # the same ERM run without expert labels trains and scores the test split exactly alike
    plain = tmp_path / "plain"
    cli("train.py", "regularizer=erm", *dataset, *MODEL, *RUN, data, f"hydra.run.dir={plain}")
    erm_dir = summaries["erm"][0]
    common = ["train_loss", "val_loss", "val_auc", "test_auc", "test_macro_f1"]
    a, b = rows(plain / "metrics.csv"), rows(erm_dir / "metrics.csv")
    assert [{k: r[k] for k in common} for r in a] == [{k: r[k] for k in common} for r in b]
    assert "test_expert_auc" not in a[0] and not (plain / "expert_per_class.csv").exists()

    # the report: the expert-label table beside Tables I-III
    out = cli("scripts/make_tables.py", str(sweep))
    report = sweep / "report"
    for ext in ("md", "csv", "tex"):
        assert (report / f"table_expert.{ext}").is_file(), out[-2000:]
    md = (report / "report.md").read_text(encoding="utf-8")
    assert "## Table expert labels" in md and "Expert AUC Best" in md
    cells = rows(report / "table_expert.csv")
    best = {r["setting"]: r for r in cells if r["quantity"] == "expert_auc_best"}
    assert set(best) == {"ERM", "Flow-Mixup (α=3.0, Op=False)"}
    for setting, (_, s) in zip(("ERM", "Flow-Mixup (α=3.0, Op=False)"), (summaries["erm"], summaries["flowmixup"])):
        assert math.isclose(float(best[setting]["mean"]), 100 * s["best_test_expert_auc"], rel_tol=1e-6)
        assert best[setting]["n_seeds"] == "1"
