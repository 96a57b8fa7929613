"""Interruptions, resumption, determinism, failed runs, and writes that fail: nothing finished is ever lost."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import PROJECT_ROOT, TINY
from flowmixup.training import run, trainer
from flowmixup.training.checks import ConfigError

# long enough epochs (~1 s on 2 cores) to interrupt one in its middle
SLOW_TINY = [o for o in TINY if not o.startswith(("dataset.n_records", "trainer.epochs"))] + [
    "dataset.n_records=1200", "trainer.epochs=3", "regularizer=flowmixup", "regularizer.keep_original=true",
    "noise=0.3"]


def train_cmd(run_dir, data_dir):
    return [sys.executable, "train.py", *SLOW_TINY, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def metrics_of(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_time_s")
    return (run_dir / "metrics.csv").read_text(), summary


def start_and_interrupt(run_dir, data_dir, sig):
    """Start a run, wait until epoch 1 is written, then send ``sig`` during epoch 2."""
    proc = subprocess.Popen(train_cmd(run_dir, data_dir), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.csv").is_file() and len(rows(run_dir / "metrics.csv")) >= 1:
            break
        time.sleep(0.01)
    time.sleep(0.25)  # into epoch 2's training steps
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=240)
    return proc.returncode, out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same configuration."""
    base = tmp_path_factory.mktemp("reference")
    res = subprocess.run(train_cmd(base / "run", base / "data"), cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return metrics_of(base / "run")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    code, _ = start_and_interrupt(run_dir, tmp_path / "data", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert len(rows(run_dir / "metrics.csv")) == 1  # killed during epoch 2: epoch 1 is on disk, intact
    res = subprocess.run(train_cmd(run_dir, tmp_path / "data"), cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stdout + res.stderr
    assert metrics_of(run_dir) == reference
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_saves_mid_epoch_and_exits_then_resumes(tmp_path, reference, sig):
    run_dir = tmp_path / "run"
    code, err = start_and_interrupt(run_dir, tmp_path / "data", sig)
    assert code == 128 + sig, err[-2000:]
    assert f"{signal.Signals(sig).name} received at epoch" in err
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["state"].epoch == 1 and ckpt["state"].step > 0  # a mid-epoch checkpoint
    assert not (run_dir / "summary.json").exists()
    res = subprocess.run(train_cmd(run_dir, tmp_path / "data"), cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert metrics_of(run_dir) == reference


def test_resume_refuses_another_configuration(tiny_config, tmp_path):
    run(tiny_config("regularizer=erm", "trainer.epochs=1"), tmp_path / "r")
    (tmp_path / "r" / "summary.json").unlink()
    with pytest.raises(ConfigError, match=r"checkpoint.pt was written by a different configuration \(noise: 0.0 -> 0.5"):
        run(tiny_config("regularizer=erm", "trainer.epochs=1", "noise=0.5"), tmp_path / "r")
    # more epochs is a legitimate continuation
    summary = run(tiny_config("regularizer=erm", "trainer.epochs=2"), tmp_path / "r")
    assert summary["epochs"] == 2 and len(rows(tmp_path / "r" / "metrics.csv")) == 2


def test_resume_true_without_checkpoint(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="trainer.resume=true but .*checkpoint.pt does not exist"):
        run(tiny_config("trainer.resume=true"), tmp_path / "none")


def test_non_finite_loss_fails_cleanly(tiny_config, tmp_path, monkeypatch):
    real = trainer.build_loss

    class Exploding(torch.nn.Module):
        """The real loss, but NaN at its 12th training call: epoch 2, step 5 (112 samples / 16 = 7 steps an epoch)."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, logits, targets):
            value = self.inner(logits, targets)
            if torch.is_grad_enabled():
                self.calls += 1
                if self.calls == 12:
                    return value * float("nan")
            return value

    def exploding_loss(cfg, labels):
        return Exploding(real(cfg, labels))

    monkeypatch.setattr(trainer, "build_loss", exploding_loss)
    summary = run(tiny_config("regularizer=erm", "trainer.epochs=3"), tmp_path / "nan")
    assert summary["status"] == "failed"
    assert summary["reason"] == "non-finite training loss at epoch 2, step 5"
    assert summary["epochs"] == 1  # the good epoch is kept, and its checkpoint
    assert torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)["state"].epoch == 1
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "failed"


def test_failed_cell_does_not_stop_a_multirun_but_a_single_run_exits_1(tmp_path):
    env = {**os.environ}
    common = [*TINY, "trainer.epochs=1", f"paths.data_dir={tmp_path / 'data'}"]
    # trainer.lr=inf makes the first Adam step non-finite
    res = subprocess.run([sys.executable, "train.py", "-m", "trainer.lr=inf,1e-4", *common,
                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert statuses == ["failed", "ok"]
    single = subprocess.run([sys.executable, "train.py", "trainer.lr=inf", *common,
                             f"hydra.run.dir={tmp_path / 'single'}"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300, env=env)
    assert single.returncode == 1 and "non-finite" in single.stdout + single.stderr


def test_a_failing_write_damages_nothing(tiny_config, tmp_path, monkeypatch):
    """A full disk while writing epoch 2's metrics: the error says so, epoch 1's files stay whole."""
    out = tmp_path / "disk"
    real_replace, calls = os.replace, {"metrics": 0}

    def replace(src, dst):
        if str(dst).endswith("metrics.csv"):
            calls["metrics"] += 1
            if calls["metrics"] == 2:
                raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left on device"):
        run(tiny_config("regularizer=erm", "trainer.epochs=3"), out)
    assert [r["epoch"] for r in rows(out / "metrics.csv")] == ["1"]
    assert not list(out.glob(".*.tmp")) and not (out / "summary.json").exists()
    monkeypatch.setattr(os, "replace", real_replace)
    summary = run(tiny_config("regularizer=erm", "trainer.epochs=3"), out)  # resumes and finishes
    assert summary["status"] == "ok" and summary["epochs"] == 3


def test_predictions_and_summary_agree_after_resume(tiny_config, tmp_path):
    cfg2 = tiny_config("regularizer=mixup", "trainer.epochs=2")
    straight = run(cfg2, tmp_path / "a")
    run(tiny_config("regularizer=mixup", "trainer.epochs=1"), tmp_path / "b")
    (tmp_path / "b" / "summary.json").unlink()
    resumed = run(cfg2, tmp_path / "b")
    for key in ("best_test_auc", "last_test_macro_f1", "variance_auc", "test_auc_at_best_val"):
        assert straight[key] == resumed[key]
    a, b = np.load(tmp_path / "a" / "predictions_test_last.npz"), np.load(tmp_path / "b" / "predictions_test_last.npz")
    assert np.array_equal(a["y_score"], b["y_score"])
