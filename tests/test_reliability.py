"""Interruptions, resumption, determinism, failed runs, and writes that fail: nothing finished is ever lost."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowmixup.training import build, run
from flowmixup.training.checks import ConfigError
from project_config import PROJECT_ROOT, TINY

# 280 training samples / 16 = 17 steps an epoch; interruptions are delivered by the run itself at a known step
# (FLOWMIXUP_FAULT_AT, flowmixup.faults), never by a sleep that a loaded machine would turn into a race
SLOW_TINY = [o for o in TINY if not o.startswith(("dataset.n_records", "trainer.epochs"))] + [
    "dataset.n_records=400",
    "trainer.epochs=3",
    "regularizer=flowmixup",
    "regularizer.keep_original=true",
    "noise=0.3",
]
AT = (2, 5)  # epoch 2, step 5


def train_cmd(run_dir, data_dir):
    return [sys.executable, "train.py", *SLOW_TINY, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def metrics_of(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_time_s")
    summary.pop("speed")  # throughput: a measurement of this process, not a result
    # the run's config, compared too, except the data folder: each test run has its own (tmp_path)
    summary["config"].pop("paths")
    summary["config"]["dataset"]["loader"].pop("cache_dir")
    return (run_dir / "metrics.csv").read_text(), summary


def run_cli(run_dir, data_dir, fault: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "FLOWMIXUP_FAULT_AT"}
    if fault:
        env["FLOWMIXUP_FAULT_AT"] = fault
    return subprocess.run(
        train_cmd(run_dir, data_dir), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env
    )


def start_and_interrupt(run_dir, data_dir, sig, at=AT):
    """Run until the process signals itself right after step ``at[1]`` of epoch ``at[0]``."""
    res = run_cli(run_dir, data_dir, f"{signal.Signals(sig).name}@{at[0]}:{at[1]}")
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same configuration."""
    base = tmp_path_factory.mktemp("reference")
    res = run_cli(base / "run", base / "data")
    assert res.returncode == 0, res.stderr[-2000:]
    return metrics_of(base / "run")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    code, _ = start_and_interrupt(run_dir, tmp_path / "data", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert len(rows(run_dir / "metrics.csv")) == 1  # killed during epoch 2: epoch 1 is on disk, intact
    res = subprocess.run(
        train_cmd(run_dir, tmp_path / "data"), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stdout + res.stderr
    assert metrics_of(run_dir) == reference
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_saves_mid_epoch_and_exits_then_resumes(tmp_path, reference, sig):
    """SIGTERM / SIGUSR1 (SLURM, submitit) and Ctrl-C: finish the step, save, say how to resume, exit 128+sig."""
    run_dir = tmp_path / "run"
    code, out = start_and_interrupt(run_dir, tmp_path / "data", sig)
    assert code == 128 + sig, out[-2000:]
    name = signal.Signals(sig).name
    assert f"{name} received: checkpoint saved at epoch 2, step 5 in {run_dir}; run the same command again" in out
    assert "Traceback" not in out
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert (ckpt["state"]["epoch"], ckpt["state"]["step"]) == (1, 5)  # exactly where the signal came
    assert not (run_dir / "summary.json").exists()
    res = run_cli(run_dir, tmp_path / "data")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stdout + res.stderr
    assert metrics_of(run_dir) == reference


@pytest.mark.slow
def test_second_ctrl_c_aborts_at_once(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(run_dir, tmp_path / "data", "SIGINT@2:5,SIGINT@2:5")
    assert res.returncode == 130
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted" in errors[0] and "Traceback" not in res.stderr
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert (ckpt["state"]["epoch"], ckpt["state"]["step"]) == (1, 0)  # nothing saved at the abort: epoch 1's is kept


@pytest.mark.slow
def test_damaged_checkpoint_is_one_line_with_the_ways_out(tmp_path):
    run_dir = tmp_path / "run"
    code, _ = start_and_interrupt(run_dir, tmp_path / "data", signal.SIGKILL, at=(3, 2))
    assert code == -signal.SIGKILL
    assert (run_dir / "checkpoint.prev.pt").is_file()  # the last two end-of-epoch checkpoints are kept
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])  # truncated
    res = run_cli(run_dir, tmp_path / "data")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: {ckpt}: damaged checkpoint (")
    assert "trainer.resume=false" in res.stderr and f"mv {run_dir / 'checkpoint.prev.pt'} {ckpt}" in res.stderr
    # the second way out works: the previous checkpoint (end of epoch 1) resumes
    os.replace(run_dir / "checkpoint.prev.pt", ckpt)
    res = run_cli(run_dir, tmp_path / "data")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stdout + res.stderr and len(rows(run_dir / "metrics.csv")) == 3


@pytest.mark.slow
def test_a_live_run_directory_is_refused_and_a_dead_lock_taken_over(tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale_tmp = run_dir / ".checkpoint.pt.abc123.tmp"  # another run's write in progress
    stale_tmp.write_bytes(b"partial")
    lock = run_dir / ".lock"
    with open(lock, "w") as fh:  # this test process is the live holder
        fh.write("424242\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = run_cli(run_dir, tmp_path / "data")
        assert res.returncode == 1
        assert res.stderr.count("\n") == 1
        assert res.stderr.startswith(f"error: {run_dir} is in use by another training run (PID 424242)")
        assert stale_tmp.exists()  # not ours to clean while another process holds the folder
        assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.csv").exists()
    # the holder is gone (its flock went with it) but its PID is still in the file: taken over, and logged
    res = run_cli(run_dir, tmp_path / "data")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "taking over the lock left by PID 424242" in res.stdout + res.stderr
    assert not stale_tmp.exists()  # cleaned once the lock is ours
    assert lock.read_text() == ""  # a clean end leaves no holder


@pytest.mark.slow
def test_outputs_and_cache_follow_the_umask(tiny_config, tmp_path):
    """Files are readable by others as any normal write would make them (not mkstemp's 0600)."""
    old = os.umask(0o027)
    try:
        cfg = tiny_config("regularizer=erm", "trainer.epochs=1")
        run(cfg, tmp_path / "run")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    files += [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"summary.json", "metrics.csv", "checkpoint.pt", "per_class.csv", "config.yaml"} <= names
    assert any(p.suffix == ".npz" and "synth_ecg" in str(p) for p in files)  # the dataset cache
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o640)}, modes


@pytest.mark.slow
def test_resume_refuses_another_configuration(tiny_config, tmp_path):
    run(tiny_config("regularizer=erm", "trainer.epochs=1"), tmp_path / "r")
    (tmp_path / "r" / "summary.json").unlink()
    with pytest.raises(ConfigError, match=r"checkpoint.pt: written by a different configuration \(noise: 0.0 -> 0.5"):
        run(tiny_config("regularizer=erm", "trainer.epochs=1", "noise=0.5"), tmp_path / "r")
    # more epochs is a legitimate continuation
    summary = run(tiny_config("regularizer=erm", "trainer.epochs=2"), tmp_path / "r")
    assert summary["epochs"] == 2 and len(rows(tmp_path / "r" / "metrics.csv")) == 2


def test_resume_true_without_checkpoint(tiny_config, tmp_path):
    with pytest.raises(
        ConfigError, match="trainer.resume: true but .*checkpoint.pt does not exist; allowed: auto, false"
    ):
        run(tiny_config("trainer.resume=true"), tmp_path / "none")


@pytest.mark.slow
def test_non_finite_loss_fails_cleanly(tiny_config, tmp_path, monkeypatch):
    real = build.build_loss

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

    monkeypatch.setattr(build, "build_loss", exploding_loss)
    summary = run(tiny_config("regularizer=erm", "trainer.epochs=3"), tmp_path / "nan")
    assert summary["status"] == "failed"
    assert summary["reason"] == "non-finite training loss at epoch 2, step 5"
    assert summary["epochs"] == 1  # the good epoch is kept, and its checkpoint
    assert torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)["state"]["epoch"] == 1
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_failed_cell_does_not_stop_a_multirun_but_a_single_run_exits_1(tmp_path):
    env = {**os.environ}
    common = [*TINY, "trainer.epochs=1", f"paths.data_dir={tmp_path / 'data'}"]
    # trainer.lr=1e30 makes the weights, then the loss, non-finite within the first epoch
    res = subprocess.run(
        [sys.executable, "train.py", "-m", "trainer.lr=1e30,1e-4", *common, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert statuses == ["failed", "ok"]
    single = subprocess.run(
        [sys.executable, "train.py", "trainer.lr=1e30", *common, f"hydra.run.dir={tmp_path / 'single'}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 1 and "non-finite" in single.stdout + single.stderr


@pytest.mark.slow
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
    from flowmixup.io import WriteError

    with pytest.raises(WriteError, match=r"metrics.csv: writing metrics.csv failed \(no space left on device; ") as err:
        run(tiny_config("regularizer=erm", "trainer.epochs=3"), out)
    assert (
        f"the checkpoint of epoch 2 is saved in {out / 'checkpoint.pt'}; free some space and run the same "
        "command again to resume from it" in str(err.value)
    )
    assert [r["epoch"] for r in rows(out / "metrics.csv")] == ["1"]
    assert not list(out.glob(".*.tmp")) and not (out / "summary.json").exists()
    monkeypatch.setattr(os, "replace", real_replace)
    summary = run(tiny_config("regularizer=erm", "trainer.epochs=3"), out)  # resumes and finishes
    assert summary["status"] == "ok" and summary["epochs"] == 3


@pytest.mark.slow
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


def test_prepared_cache_follows_the_umask(shared_data, tmp_path):
    """A cache prepared once on shared storage must be readable by the other users of the group."""
    from flowmixup.data import chestxray14

    old = os.umask(0o027)
    try:
        path = chestxray14.prepare(shared_data / "nih1000", tmp_path / "cache", resolution=16, prepare_workers=0)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert path in files and path.with_suffix(".json") in files
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o640)}


def test_report_files_follow_the_umask(tmp_path):
    from flowmixup.report.output import write_files

    old = os.umask(0o022)
    try:
        written = write_files(
            {tmp_path / "report" / "table.md": "| a |\n", tmp_path / "report" / "fig.png": b"\x89PNG"}
        )
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o644)}
