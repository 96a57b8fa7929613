"""End-to-end training runs at tiny size: outputs, metrics against scikit-learn, determinism, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from flowmixup import stats
from flowmixup.data import DataError
from flowmixup.regularizers import RegularizerError
from flowmixup.training import run
from flowmixup.training.checks import ConfigError
from project_config import PROJECT_ROOT, TINY

SETTINGS = {
    "erm": ["regularizer=erm"],
    "mixup": ["regularizer=mixup", "regularizer.alpha=3.0"],
    "manifold_mixup": ["regularizer=manifold_mixup"],
    "flowmixup_op_false": ["regularizer=flowmixup", "regularizer.keep_original=false"],
    "flowmixup_op_true": ["regularizer=flowmixup", "regularizer.keep_original=true"],
}
SUMMARY_KEYS = {
    "status",
    "dataset",
    "backbone",
    "regularizer",
    "alpha",
    "keep_original",
    "noise",
    "corruption_kind",
    "seed",
    "epochs",
    "best_test_auc",
    "last_test_auc",
    "best_test_macro_f1",
    "last_test_macro_f1",
    "test_auc_at_best_val",
    "test_macro_f1_at_best_val",
    "variance_auc",
    "variance_macro_f1",
    "variance_epochs",
    "corrupted_fraction",
    "wall_time_s",
    "primary_metric",
}


def read_metrics(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_run_writes_every_output_and_metrics_match_sklearn(tiny_config, tmp_path, name):
    cfg = tiny_config(*SETTINGS[name])
    out = tmp_path / "run"
    summary = run(cfg, out)
    for f in (
        "config.yaml",
        "metrics.csv",
        "per_class.csv",
        "predictions_test_last.npz",
        "predictions_test_best.npz",
        "predictions_test_at_best_val.npz",
        "checkpoint.pt",
        "summary.json",
    ):
        assert (out / f).is_file(), f
    assert SUMMARY_KEYS <= set(summary) and summary["status"] == "ok"
    # the run's own bootstrap intervals are those of its saved predictions (float32 there: a small tolerance)
    boot = summary["bootstrap"]
    assert (boot["n_resamples"], boot["confidence"]) == (stats.N_RESAMPLES, stats.CONFIDENCE)
    for which in ("last", "at_best_val"):
        saved = np.load(out / f"predictions_test_{which}.npz")
        values = stats.bootstrap_metric(saved["y_true"], saved["y_score"], "auc")
        assert boot["test_auc"][which] == pytest.approx(list(stats.percentile_interval(values)), abs=1e-2)
    assert ("best" in boot["test_auc"]) == (summary["primary_metric"] == "auc")
    at_val = np.load(out / "predictions_test_at_best_val.npz")  # the report's intervals for model selection on val
    assert int(at_val["epoch"]) == summary["best_val_epoch"]
    yv, pv = at_val["y_true"], at_val["y_score"]
    valid_v = [c for c in range(yv.shape[1]) if 0 < yv[:, c].sum() < len(yv)]
    assert summary["test_auc_at_best_val"] == pytest.approx(
        np.mean([roc_auc_score(yv[:, c], pv[:, c]) for c in valid_v]), abs=1e-6
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert summary["best_test_auc"] == pytest.approx(max(float(r["test_auc"]) for r in rows))
    assert summary["last_test_macro_f1"] == pytest.approx(float(rows[-1]["test_macro_f1"]))

    pred = np.load(out / "predictions_test_last.npz")
    y, p = pred["y_true"], pred["y_score"]
    valid = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    assert summary["last_test_auc"] == pytest.approx(
        np.mean([roc_auc_score(y[:, c], p[:, c]) for c in valid]), abs=1e-6
    )
    with_pos = [c for c in range(y.shape[1]) if y[:, c].sum() > 0]
    f1 = f1_score(y, p >= 0.5, average="macro", labels=with_pos, zero_division=0)
    assert summary["last_test_macro_f1"] == pytest.approx(f1, abs=1e-6)
    assert list(pred["class_names"])[0] == "sinus_rhythm"
    resolved = (out / "config.yaml").read_text()
    if name not in ("erm", "mixup"):
        assert "layer2.0" in resolved and "layer4.0" in resolved  # 3rd and 5th of blocks [2,1,1,1]
        assert summary["mix_points"] == ["layer2.0", "layer4.0"]
    assert "${" not in resolved


@pytest.mark.slow
def test_same_seed_same_metrics_and_seed_matters(tiny_config, tmp_path):
    cfg = tiny_config("regularizer=flowmixup", "regularizer.keep_original=true", "noise=0.3")
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    a, b = (tmp_path / "a" / "metrics.csv").read_text(), (tmp_path / "b" / "metrics.csv").read_text()
    assert a == b
    run(tiny_config("regularizer=flowmixup", "regularizer.keep_original=true", "noise=0.3", "seed=1"), tmp_path / "c")
    assert (tmp_path / "c" / "metrics.csv").read_text() != a


@pytest.mark.slow
def test_noise_corrupts_train_never_test(tiny_config, tmp_path):
    clean = run(tiny_config("regularizer=erm"), tmp_path / "clean")
    noisy = run(tiny_config("regularizer=erm", "noise=0.6"), tmp_path / "noisy")
    assert clean["corrupted_fraction"] == 0.0 and 0.2 < noisy["corrupted_fraction"] < 0.6
    y_clean = np.load(tmp_path / "clean" / "predictions_test_last.npz")["y_true"]
    y_noisy = np.load(tmp_path / "noisy" / "predictions_test_last.npz")["y_true"]
    assert np.array_equal(y_clean, y_noisy)
    # the clean training labels (dataset statistics such as Fig. 6's) are the same whatever the noise
    train_clean = np.load(tmp_path / "clean" / "labels_train_clean.npz")
    train_noisy = np.load(tmp_path / "noisy" / "labels_train_clean.npz")
    assert np.array_equal(train_clean["y"], train_noisy["y"]) and train_clean["y"].shape == (112, 15)
    assert train_noisy["class_names"].tolist() == train_clean["class_names"].tolist()
    flip = run(tiny_config("regularizer=erm", "noise=0.2", "corruption.kind=flip"), tmp_path / "flip")
    assert flip["corruption_kind"] == "flip" and flip["corrupted_fraction"] > 0.9  # 15 entries, each 20%


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        (
            ["regularizer=mixup", "regularizer.alpha=0"],
            ConfigError,
            r"^regularizer.alpha: got 0; allowed: a number in \(0, inf\)$",
        ),
        (["noise=1.5"], ConfigError, r"^noise: got 1.5; allowed: a number in \[0, 1\]$"),
        (
            ["regularizer=flowmixup", "trainer.batch_size=1"],
            ConfigError,
            r"^trainer.batch_size: got 1 .*allowed: an integer >= 2$",
        ),
        (
            ["regularizer.mix_points=[layer9.0]"],
            RegularizerError,
            r"^regularizer.mix_points: unknown submodule 'layer9.0' \(did you mean layer4.0\?\); allowed: input, conv1",
        ),
        (["dataset.split=[0.95,0.01,0.04]", "dataset.n_records=20"], DataError, r"the val split is empty"),
        (["trainer.precision=fp8"], ConfigError, r"^trainer.precision: 'fp8' is unknown; allowed: fp32, bf16$"),
        (
            ["corruption.kind=swap"],
            ConfigError,
            r"^corruption.kind: 'swap' is unknown; allowed: resample, flip, class_conditional$",
        ),
        (["seed=-5"], ConfigError, r"^seed: got -5; allowed: an integer in \[0, 4294967295\]$"),
        (
            ["dataset.split=[1.0,0.0,0.0]"],
            ConfigError,
            r"^dataset.split: .*allowed: 3 fractions in \(0, 1\) summing to 1",
        ),
        (
            ["dataset.sampling_rate=20"],
            ConfigError,
            r"^dataset.sampling_rate: got 20; allowed: a number in \[50, inf\)$",
        ),
    ],
)
def test_bad_values_fail_before_training_with_one_line(tiny_config, tmp_path, overrides, error, match):
    with pytest.raises(error, match=match) as info:
        run(tiny_config(*overrides), tmp_path / "bad")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad" / "metrics.csv").exists()


def test_an_input_too_small_for_the_backbone_is_one_line(tmp_path):
    """A 2-D DenseNet on 1-D ECG records: one line naming the backbone and the input shape, before training."""
    from project_config import compose_config

    cfg = compose_config(
        tmp_path,
        [
            "backbone=densenet_small",
            "dataset.n_records=160",
            "trainer.epochs=1",
            "trainer.progress=false",
            "trainer.num_threads=1",
        ],
        tiny=False,
    )
    with pytest.raises(
        ConfigError,
        match=r"^backbone: densenet_small cannot take this dataset's input of shape "
        r"\(8, 500\) \(.*\); allowed: a larger input",
    ) as info:
        run(cfg, tmp_path / "bad")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad" / "metrics.csv").exists()


def test_weighted_bce_loss_matches_formula():
    import torch

    from flowmixup.training.losses import WeightedBCE

    y_train = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    loss = WeightedBCE(y_train)
    logits, t = torch.tensor([[0.3, -1.0]]), torch.tensor([[1.0, 0.0]])
    s = torch.sigmoid(logits)
    # class 0: P=1, N=3 -> w_pos=4, w_neg=4/3; class 1: P=2, N=2 -> 2, 2
    expected = -(4 * torch.log(s[0, 0]) + 2 * torch.log(1 - s[0, 1])) / 2
    torch.testing.assert_close(loss(logits, t), expected)


@pytest.mark.slow
def test_wandb_logger_offline(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = run(tiny_config("logger=wandb", "trainer.epochs=1"), tmp_path / "w")
    assert summary["status"] == "ok"
    assert list((tmp_path / "w" / "wandb").glob("offline-run-*"))


def cli(*args, cwd=PROJECT_ROOT, timeout=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "arg,allowed",
    [
        ("regularizer=cutmix", "erm, flowmixup, manifold_mixup, mixup"),
        ("dataset=mnist", "synth_ecg"),
        ("backbone=vit", "resnet1d"),
    ],
)
def test_cli_unknown_option_one_line(arg, allowed):
    res = cli(arg)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and allowed in res.stderr and arg.split("=")[0] in res.stderr


@pytest.mark.slow
def test_cli_multirun_two_cells(tmp_path):
    res = cli(
        "-m",
        "regularizer=erm,flowmixup",
        "noise=0,0.4",
        *TINY,
        "trainer.epochs=1",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")]
    cells = sorted((s["regularizer"], s["noise"]) for s in summaries)
    assert cells == [("erm", 0.0), ("erm", 0.4), ("flowmixup", 0.0), ("flowmixup", 0.4)]


@pytest.mark.slow
def test_nih1000_real_run_end_to_end(shared_data, tmp_path):
    """The README's real CPU run, shortened: prepares the cache from the real PNGs, then trains a DenseNet."""
    from project_config import compose_config

    cfg = compose_config(
        tmp_path,
        [
            "experiment=nih1000_cpu",
            f"dataset.root={shared_data / 'nih1000'}",
            "trainer.epochs=2",
            "trainer.progress=false",
        ],
        tiny=False,
    )
    summary = run(cfg, tmp_path / "nih")
    assert summary["status"] == "ok" and summary["dataset"] == "nih1000" and summary["backbone"] == "densenet_small"
    assert summary["mix_points"] == ["features.denseblock2", "features.denseblock3"]
    pred = np.load(tmp_path / "nih" / "predictions_test_last.npz")
    assert pred["y_true"].shape == (310, 14)  # the official test split of the subset
    assert (tmp_path / "data" / "nih1000" / "chestxray14_64.h5").is_file()


@pytest.mark.slow
def test_cli_multirun_submitit_local_launcher(tmp_path):
    """The SLURM path's launcher (submitit) exercised locally: each job in its own process."""
    res = cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "regularizer=erm,mixup",
        *TINY,
        "trainer.epochs=1",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summaries = sorted(json.loads(p.read_text())["regularizer"] for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert summaries == ["erm", "mixup"]


def test_slurm_launcher_config_composes(tmp_path):
    from hydra import compose, initialize_config_dir

    from project_config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 60, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arg,hint",
    [
        ("trainer.epoch=3", "did you mean trainer.epochs?"),
        ("nois=0.3", "did you mean noise?"),
        ("regularizer.alpha=2", "under regularizer: name, label, shown, module"),
    ],
)
def test_cli_wrong_key_one_line_with_suggestion(arg, hint):
    res = cli("regularizer=erm", arg) if arg.startswith("regularizer") else cli(arg)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and f"error: {arg.split('=')[0]}: is not a config key" in res.stderr
    assert hint in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["erm", "flowmixup_op_true"])
def test_compile_traces_between_mix_points_and_changes_nothing(tiny_config, tmp_path, name):
    """trainer.compile runs dynamo over the pieces between mix points (backend 'eager' here: the tracing without
    code generation, so the numbers must equal the uncompiled run's)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    plain = run(tiny_config(*SETTINGS[name], "trainer.epochs=1"), tmp_path / "plain")
    counters.clear()
    compiled = run(
        tiny_config(*SETTINGS[name], "trainer.epochs=1", "trainer.compile=true", "trainer.compile_backend=eager"),
        tmp_path / "compiled",
    )
    # the same numbers, to a float tolerance rather than by their text (no test compares float reprs)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "compiled" / "metrics.csv"),
        pd.read_csv(tmp_path / "plain" / "metrics.csv"),
        rtol=1e-9,
        atol=1e-12,
    )
    assert compiled["mix_points"] == plain["mix_points"]
    assert counters["stats"]["unique_graphs"] >= (1 if name == "erm" else 5)  # dynamo compiled the pieces
    torch._dynamo.reset()


@pytest.mark.slow
def test_multirun_returns_validation_values_to_the_sweeper(tmp_path):
    """Hydra hands each job's return value to the sweeper (Optuna, Ax...): it must be a validation value, or
    hyper-parameters would be tuned on the test set."""
    record = tmp_path / "returns.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "tests" / "support"), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "regularizer=erm,mixup",
            *TINY,
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "+hydra.callbacks.record._target_=record_returns.RecordReturns",
            f"+hydra.callbacks.record.path={record}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    returns = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(returns) == 2
    for r in returns:
        summary = json.loads((Path(r["dir"]) / "summary.json").read_text())
        with open(Path(r["dir"]) / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        best = min(rows, key=lambda row: float(row["val_loss"]))  # the epoch of lowest validation loss
        assert summary["primary_metric"] == "macro_f1"
        assert r["value"] == pytest.approx(float(best["val_macro_f1"]), abs=1e-9)
        assert r["value"] == summary["val_macro_f1_at_best_val"]


def mean_score_of_positives(y_true, y_score, class_names) -> float:
    """A throw-away extra metric: the mean probability given to the true labels."""
    assert y_true.dtype == np.uint8 and y_true.shape == y_score.shape and len(class_names) == y_true.shape[1]
    return float(y_score[y_true == 1].mean())


@pytest.mark.slow
def test_extra_metrics_hook(tiny_config, tmp_path):
    """dataset.extra_metrics: val_/test_ columns in metrics.csv, best/last/at-best-val keys in summary.json, each
    checked against the metric recomputed from the saved test predictions."""
    node = "{pos:{_target_:hydra.utils.get_method,path:test_train.mean_score_of_positives}}"
    summary = run(tiny_config("regularizer=erm", f"+dataset.extra_metrics={node}"), tmp_path / "x")
    rows = read_metrics(tmp_path / "x" / "metrics.csv")
    assert list(rows[0])[-2:] == ["val_pos", "test_pos"]
    last = np.load(tmp_path / "x" / "predictions_test_last.npz")
    expected = float(last["y_score"][last["y_true"] == 1].mean())
    assert float(rows[-1]["test_pos"]) == pytest.approx(expected, rel=1e-6)
    assert summary["last_test_pos"] == pytest.approx(expected, rel=1e-6)
    assert summary["best_test_pos"] == max(float(r["test_pos"]) for r in rows)
    assert summary["test_pos_at_best_val"] == float(rows[summary["best_val_epoch"] - 1]["test_pos"])
    plain = run(tiny_config("regularizer=erm"), tmp_path / "plain")
    assert list(read_metrics(tmp_path / "plain" / "metrics.csv")[0]) == [
        "epoch",
        "lr",
        "train_loss",
        "val_loss",
        "val_auc",
        "val_macro_f1",
        "test_auc",
        "test_macro_f1",
    ]
    assert not any(k.endswith("_pos") or "_pos_" in k for k in plain)
    assert plain["config"]["regularizer"]["label"] == "ERM" and plain["config"]["dataset"]["name"] == "synth_ecg"


def test_instantiate_lets_the_callees_error_through():
    """Hydra's InstantiationException is unwrapped: the user sees the callee's own one-line error."""
    import torch
    from omegaconf import OmegaConf

    from flowmixup.training.build import instantiate

    cfg = OmegaConf.create(
        {
            "regularizer": {"alpha": -1.0, "module": {"_target_": "flowmixup.Mixup", "alpha": "${..alpha}"}},
            "backbone": {"net": {"_target_": "flowmixup.models.NoSuchNet"}},
        }
    )
    with pytest.raises(RegularizerError, match=r"^regularizer.alpha must be > 0"):
        instantiate(cfg.regularizer.module, model=torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"^backbone.net._target_: cannot import 'flowmixup.models.NoSuchNet'") as err:
        instantiate(cfg.backbone.net)
    assert "\n" not in str(err.value)
