"""make bench's utilisation (flowmixup.perf): divided by a peak that bounds every workload, never printed above 1;
and bench.py's ratios over perf.measure's rows."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from flowmixup import perf
from project_config import PROJECT_ROOT


def load_script(name: str):
    """scripts/<name>.py as a module, without putting scripts/ on sys.path."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_utilisation_never_exceeds_one_and_says_why():
    cpu, shapes = torch.device("cpu"), ((64, 64, 64), (128, 32, 64))
    start = perf.matmul_peak(cpu, shapes, trials=2)
    assert start[0] > 0 and start[1] in shapes
    rows = [
        {"backbone": "fast", "regularizer": "erm", "train_flop_per_s": 1e18},  # faster than any CPU peak
        {"backbone": "slow", "regularizer": "erm", "train_flop_per_s": 1.0},
    ]
    peak = perf.set_utilisation(rows, cpu, shapes, start)
    assert rows[0]["mfu_vs_matmul"] == 1.0 and 0 < rows[1]["mfu_vs_matmul"] < 1e-6
    assert peak["flop_per_s"] == 1e18 and "exceeded it" in peak["how"] and "used as the peak" in peak["how"]


def test_utilisation_against_the_measured_peak_when_it_bounds_the_workloads():
    cpu, shapes = torch.device("cpu"), ((64, 64, 64),)
    start = perf.matmul_peak(cpu, shapes, trials=2)
    rows = [
        {"backbone": "b", "regularizer": "erm", "train_flop_per_s": start[0] / 4},
        {"backbone": "b", "regularizer": "mixup", "ok": False, "error": "RuntimeError: out of memory"},
    ]
    peak = perf.set_utilisation(rows, cpu, shapes, start)
    assert peak["flop_per_s"] >= start[0] and "exceeded" not in peak["how"]
    assert rows[0]["mfu_vs_matmul"] == rows[0]["train_flop_per_s"] / peak["flop_per_s"] <= 0.25
    assert "mfu_vs_matmul" not in rows[1]  # a row that was not timed gets no utilisation


def test_ratios_to_erm_and_a_failed_row():
    bench = load_script("bench")
    common = {"backbone": "b (x)", "backbone_name": "b", "precision": "fp32", "batch": 32}
    measured = [
        {
            **common,
            "row": "erm",
            "regularizer": "erm",
            "compile": False,
            "ok": True,
            "step_s": 0.1,
            "samples_per_s": 320.0,
            "flops": 10**9,
        },
        {
            **common,
            "row": "flowmixup_a3_op_true",
            "regularizer": "flowmixup_op_true",
            "compile": False,
            "ok": True,
            "step_s": 0.3,
            "samples_per_s": 320 / 3,
            "flops": 4 * 10**9,
        },
        {
            **common,
            "row": "erm",
            "regularizer": "erm",
            "compile": True,
            "ok": True,
            "step_s": 0.05,
            "samples_per_s": 640.0,
            "flops": 10**9,
        },
        {
            **common,
            "row": "mixup_a1",
            "regularizer": "mixup",
            "compile": False,
            "ok": False,
            "error": "RuntimeError: boom",
        },
    ]
    erm, flow, compiled, failed = bench.with_ratios(measured)
    assert erm["step_time_ratio"] == erm["flop_ratio"] == erm["overhead"] == 1.0
    assert (flow["step_time_ratio"], flow["flop_ratio"], flow["overhead"]) == pytest.approx((3.0, 4.0, 0.75))
    assert flow["train_flop_per_s"] == pytest.approx(4e9 / 0.3) and flow["step_gflop"] == 4.0
    assert compiled["regularizer"] == "erm+compile" and compiled["step_time_ratio"] == pytest.approx(0.5)
    assert failed == {
        **common,
        "row": "mixup_a1",
        "regularizer": "mixup",
        "compile": False,
        "ok": False,
        "error": "RuntimeError: boom",
    }
