"""Every mistake a user can type gets one line on stderr naming the key (or file) and what is allowed, exit code 1
(2 for usage: an unknown key or option), no traceback, and nothing written. Run through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from project_config import PROJECT_ROOT, TINY


def cli(script, *args, timeout=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("FLOWMIXUP_FAULT_AT", None)
    return subprocess.run(
        [sys.executable, script, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_one_line(res, code, *needles):
    assert res.returncode == code, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


CASES = {
    "noise": (["noise=1.5"], 1, ["noise: got 1.5", "allowed: a number in [0, 1]"]),
    "alpha": (
        ["regularizer=mixup", "regularizer.alpha=0"],
        1,
        ["regularizer.alpha: got 0", "allowed: a number in (0, inf)"],
    ),
    "mix_points": (
        ["regularizer.mix_points=[nope]", *TINY],
        1,
        ["regularizer.mix_points: unknown submodule 'nope'", "allowed: input, conv1"],
    ),
    "batch": (["trainer.batch_size=0"], 1, ["trainer.batch_size: got 0", "allowed: an integer >= 2"]),
    "lr": (["trainer.lr=-1"], 1, ["trainer.lr: got -1", "allowed: a number in (0, inf)"]),
    "precision": (["trainer.precision=fp8"], 1, ["trainer.precision: 'fp8' is unknown", "allowed: fp32, bf16"]),
    "seed": (["seed=-5"], 1, ["seed: got -5", "allowed: an integer in [0, 4294967295]"]),
    "no_root": (["dataset=ecg55"], 1, ["dataset.root: is not set", "dataset.root=null to train from a ready cache"]),
    "bad_root": (
        ["dataset=chestxray14", "dataset.root=/nonexistent/nih"],
        1,
        ["dataset.root: /nonexistent/nih is not a folder"],
    ),
    "resume": (["trainer.resume=maybe"], 1, ["trainer.resume: 'maybe' is unknown", "allowed: auto, true, false"]),
    "multirun_cell": (["-m", "noise=0.1,1.5"], 1, ["noise: got 1.5", "(in the multirun cell noise=1.5)"]),
    "paper_points_in_a_small_backbone": (
        ["-m", "regularizer=erm,flowmixup", "backbone.blocks=[1,1,1,1]"],
        1,
        [
            "regularizer.mix_points: null (the paper's), but the paper's mix points need at least 5 residual blocks",
            "(in the multirun cell regularizer=flowmixup)",
        ],
    ),
    "mix_points_in_a_multirun": (
        ["-m", "regularizer=flowmixup,manifold_mixup", "regularizer.mix_points=[layer9.0]"],
        1,
        ["regularizer.mix_points: unknown submodule 'layer9.0'"],
    ),
    "unknown_key": (["trainer.epoch=3"], 2, ["trainer.epoch: is not a config key; did you mean trainer.epochs?"]),
    "unknown_option": (
        ["regularizer=flowmix"],
        2,
        ["regularizer: 'flowmix' is not a known option", "allowed: erm, flowmixup, manifold_mixup, mixup"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_train_bad_value_is_one_line(tmp_path, case):
    args, code, needles = CASES[case]
    res = cli(
        "train.py",
        *args,
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert_one_line(res, code, *needles)
    assert not (tmp_path / "run" / "metrics.csv").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_gpu_is_one_line(tmp_path):
    res = cli("train.py", "trainer.device=cuda", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line(res, 1, "trainer.device: cuda but no CUDA device is available; allowed: cpu, auto")


@pytest.mark.slow
def test_unwritable_run_directory_is_one_line(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run directory should go")
    res = cli("train.py", *TINY, f"hydra.run.dir={blocker / 'run'}")
    assert_one_line(res, 1, f"hydra.run.dir: {blocker / 'run'} cannot be created ({blocker} is not a folder)")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,code,needles",
    [
        (["dataset=ecg12"], 1, ["dataset.root: is not set"]),
        (["dataset=synth_ecg"], 2, ["dataset: synth_ecg has no prepare step"]),
        (["dataset=ecg12", "dataset.root={tmp}"], 1, ["hf_round1_label.txt: label file unreadable"]),
        (["dataset=chestxray14", "dataset.root={tmp}", "dataset.resolution=3"], 1, ["dataset.resolution: got 3"]),
    ],
)
def test_prepare_bad_input_is_one_line(tmp_path, args, code, needles):
    args = [a.format(tmp=tmp_path) for a in args]
    res = cli(
        "scripts/prepare_data.py", *args, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_one_line(res, code, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_slurm_jobs_may_name_a_gpu_from_a_login_node_without_one():
    """The jobs run on the cluster's GPU nodes: the submitting machine's lack of CUDA is no error there..."""
    from flowmixup.cli import preflight

    preflight(["-m", "hydra/launcher=slurm", "trainer.device=cuda", "noise=0.1,0.4"], run=False)
    # ...but it is for jobs that run here
    with pytest.raises(SystemExit) as info:
        preflight(["-m", "trainer.device=cuda", "noise=0.1,0.4"], run=False)
    assert info.value.code == 1
