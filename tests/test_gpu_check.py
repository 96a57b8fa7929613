"""scripts/gpu_check.py: the GPU readiness check's code paths, at toy sizes on CPU, so the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flowmixup import perf
from project_config import PROJECT_ROOT


def gpu_check_cpu(tmp_path, *args: str) -> tuple[dict, str]:
    """``gpu_check.py --device cpu --quick`` with ``args``, as a user runs it; its JSON and what it printed."""
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--quick", *args, "--out", str(out)]
    proc = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_gpu_check_quick_on_cpu_writes_every_section(tmp_path):
    d, stdout = gpu_check_cpu(tmp_path, "--threads", "1")
    assert d["device"]["device"] == "cpu" and d["quick"] is True
    steps = d["steps"]
    # every backbone x regularizer of the paper's rows x precision, plus the compiled rows, each measured
    regs = perf.regularizers()
    assert d["rows"] == perf.row_names() and set(d["rows"]) == set(perf.paper_rows())
    assert (
        [r["regularizer"] for r in steps if r["precision"] == "fp32" and "densenet" in r["backbone_name"]]
        == list(regs)
        == ["erm", "mixup", "manifold_mixup", "flowmixup_op_false", "flowmixup_op_true"]
    )
    assert all(r["row"] == regs[r["regularizer"]].row for r in steps)
    assert {r["backbone_name"] for r in steps} == {"densenet_small", "resnet34_1d"}  # from conf/backbone/*.yaml
    assert {r["precision"] for r in steps} == {"fp32", "bf16"}
    assert any(r["compile"] for r in steps)
    assert all(r["ok"] for r in steps), [r.get("error") for r in steps if not r["ok"]]
    for r in steps:
        assert r["step_ms"] > 0 and r["samples_per_s"] == pytest.approx(r["batch"] / (r["step_ms"] / 1000))
    erm = [r for r in steps if r["regularizer"] == "erm"]
    assert all(r["vs_erm"] == pytest.approx(1.0) for r in erm)
    loader = d["loader"]
    assert loader["num_workers"] > 0 and loader["train_steps"] > 0
    assert 0.0 <= loader["data_wait_fraction"] <= 1.0
    shared = d["shared_gpu"]
    assert [r["runs_at_once"] for r in shared] == [1, 2]
    assert len(shared[1]["per_run_samples_per_s"]) == 2
    assert shared[0]["vs_one_run"] == pytest.approx(1.0)
    assert d["deterministic"]["identical"] is True
    assert "test_macro_f1" in d["deterministic"]["compared_columns"]
    # the printed tables
    for title in ("Training step", "Loader during a real ChestX-ray14 training", "Several ECG runs on one GPU"):
        assert title in stdout


@pytest.mark.slow
def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path / "g.json")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --device cuda: no CUDA device is visible")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_gpu_check_peak_and_steps_have_the_ceiling_fraction_and_busy_fields(tmp_path):
    """``--sections steps,peak`` (run peak first whatever the order asked): the device's own ceiling, and per step
    row its counted FLOPs, achieved TFLOP/s, fraction of that ceiling and busy share (CPU: the stand-in, so named)."""
    d, stdout = gpu_check_cpu(tmp_path, "--sections", "steps,peak", "--layouts")
    assert d["sections"] == ["peak", "steps"]
    peak = d["peak"]
    assert set(peak["matmul"]) == {"fp32"} and peak["matmul"]["fp32"]["tflop_per_s"] > 0
    assert peak["copy_bytes_per_s"] > 0
    for r in d["steps"]:
        assert r["ok"] and r["flops"] > 0 and r["cuda_graph"] is False  # no graph rows without CUDA
        assert r["achieved_tflop_per_s"] == pytest.approx(r["flops"] / (r["step_ms"] / 1000) / 1e12)
        assert r["peak_used"] == "fp32" and r["peak_tflop_per_s"] == peak["matmul"]["fp32"]["tflop_per_s"]
        assert 0 < r["fraction_of_peak"] <= 1.5
        assert r["fraction_of_peak"] == pytest.approx(r["achieved_tflop_per_s"] / r["peak_tflop_per_s"])
        assert 0 < r["busy_share"] <= 1.5 and r["busy_source"].startswith("cpu stand-in")
    assert "Device ceiling: matmul peak TFLOP/s fp32" in stdout and "busy = cpu stand-in" in stdout
    # --layouts: the image model's ERM also in NCHW, at each precision (the {fp32, bf16} x {NCHW, NHWC} grid)
    nchw = [(r["backbone_name"], r["regularizer"], r["precision"]) for r in d["steps"] if not r["channels_last"]]
    assert nchw == [("densenet_small", "erm", "fp32"), ("densenet_small", "erm", "bf16")]
    assert all(r["vs_erm"] == pytest.approx(1.0) for r in d["steps"] if not r["channels_last"])
