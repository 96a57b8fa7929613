"""The README's journey for the two wfdb datasets: prepare the cache, then train one epoch, as a user types it
(``sys.executable`` from the project root, tiny 1-D ResNet, one thread, CPU).

- PTB-XL: a root in the release's layout with the REAL scp_statements.csv, the first 200 REAL rows of the 521-row
  slice as ptbxl_database.csv, and GENERATED records (``wfdb.wrsamp``) at their records100/ paths.
- CinC 2021: a root in the challenge's packaging (``training/<source>/`` folders of ``.hea`` + MATLAB v4 ``.mat``),
  all GENERATED: Georgia (E, 500 Hz, 10 s), PTB-XL (HR, 500 Hz), St Petersburg (I, 257 Hz, 30 s) and PTB (S,
  1,000 Hz, 20 s) records with real SNOMED-CT codes; the challenge's real weights.csv from ../shared/data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from project_config import PROJECT_ROOT
from wfdb_records import build_ptbxl_tree, write_challenge_record

TIMEOUT = 600
TINY = [
    "backbone.blocks=[2,1,1,1]",
    "backbone.width=4",
    "trainer.epochs=1",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "trainer.num_workers=0",
    "dataset.variance_epochs=2",
    "dataset.prepare_workers=1",
]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLOWMIXUP_DATA_DIR": str(tmp_path / "data"), "FLOWMIXUP_OUTPUT_DIR": str(tmp_path / "out")}
    res = subprocess.run(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    res.out = res.stdout + res.stderr
    return res


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.out[-3000:]
    return res


def only_summary(tmp_path: Path) -> dict:
    found = sorted((tmp_path / "out").rglob("summary.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.mark.slow
def test_ptbxl_prepare_then_train(shared_data, tmp_path):
    root = tmp_path / "ptb-xl"
    build_ptbxl_tree(shared_data, root, 200)
    # training before prepare: one line with the prepare command
    res = cli(tmp_path, "train.py", "experiment=ptbxl_benchmark", f"dataset.root={root}", *TINY)
    assert res.returncode != 0 and "Build it with: python scripts/prepare_data.py experiment=ptbxl_benchmark" in res.out
    assert f"dataset.root={root}" in res.out.split("Build it with:")[1]
    res = ok(
        cli(tmp_path, "scripts/prepare_data.py", "dataset=ptbxl", f"dataset.root={root}", "dataset.prepare_workers=1")
    )
    assert res.stdout.strip().splitlines()[-1] == str(tmp_path / "data" / "ptbxl" / "ptbxl_100hz.h5")
    ok(cli(tmp_path, "train.py", "experiment=ptbxl_benchmark", f"dataset.root={root}", *TINY))
    summary = only_summary(tmp_path)
    assert summary["dataset"] == "ptbxl_superdiagnostic" and summary["primary_metric"] == "auc"
    # a bad task is one line before training
    res = cli(tmp_path, "train.py", "experiment=ptbxl_benchmark", f"dataset.root={root}", "dataset.task=diag", *TINY)
    assert res.returncode != 0 and "dataset.task: 'diag' is unknown" in res.out


@pytest.mark.slow
def test_cinc2021_prepare_then_train(shared_data, tmp_path):
    root = tmp_path / "training"
    rng = np.random.default_rng(0)
    # real SNOMED-CT codes: sinus rhythm, AF, sinus bradycardia, sinus tachycardia, an unscored code
    codes = ["426783006", "164889003", "426177001", "427084000", "164873001"]
    for i in range(90):
        dx = list(rng.choice(codes, size=int(rng.integers(1, 3)), replace=False))
        write_challenge_record(root / "georgia", f"E{i:05d}", 500, 5000, dx, seed=i)
    for i in range(30):
        write_challenge_record(root / "ptb-xl", f"HR{i + 1:05d}", 500, 5000, ["426783006"], seed=100 + i)
    write_challenge_record(root / "st_petersburg_incart", "I0001", 257, 257 * 30, ["164889003"], seed=7)
    write_challenge_record(root / "ptb", "S0001", 1000, 20000, ["426783006"], seed=8)
    weights = shared_data / "cinc2021" / "weights.csv"
    ok(
        cli(
            tmp_path, "scripts/prepare_data.py", "dataset=cinc2021", f"dataset.root={root}", "dataset.prepare_workers=1"
        )
    )
    manifest = json.loads(next((tmp_path / "data" / "cinc2021").glob("*.json")).read_text())
    assert manifest["rows"] == 122 and manifest["row_shape"] == [12, 5000]
    assert manifest["source"]["selection"]["per_source"] == {"georgia": 90, "ptb_xl": 30, "st_petersburg": 1, "ptb": 1}
    ok(
        cli(
            tmp_path,
            "train.py",
            "experiment=cinc2021_noisy",
            f"dataset.root={root}",
            f"dataset.weights_csv={weights}",
            "noise=0.2",
            *TINY,
        )
    )
    summary = only_summary(tmp_path)
    assert summary["dataset"] == "cinc2021" and summary["primary_metric"] == "macro_f1"
    # the challenge metric reaches metrics.csv and summary.json through dataset.extra_metrics: the last epoch's value
    # is the metric of the saved last-epoch test predictions (the metric itself is tested on a hand-computed case)
    from flowmixup.data.cinc2021 import ChallengeScore

    run_dir = next((tmp_path / "out").rglob("summary.json")).parent
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_challenge_score" in header and "test_challenge_score" in header
    pred = np.load(run_dir / "predictions_test_last.npz")
    expected = ChallengeScore(weights, threshold=0.5)(pred["y_true"], pred["y_score"], list(pred["class_names"]))
    assert summary["last_test_challenge_score"] == pytest.approx(expected, abs=1e-12)
    assert summary["best_test_challenge_score"] >= summary["last_test_challenge_score"]
