"""make bench's utilisation: divided by a peak that bounds every workload, never printed above 1."""
from __future__ import annotations

import importlib.util

import torch

from project_config import PROJECT_ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", PROJECT_ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_utilisation_never_exceeds_one_and_says_why():
    bench = load_bench()
    cpu, shapes = torch.device("cpu"), ((64, 64, 64), (128, 32, 64))
    start = bench.matmul_peak(cpu, shapes, trials=2)
    assert start[0] > 0 and start[1] in shapes
    rows = [{"backbone": "fast", "regularizer": "erm", "train_flop_per_s": 1e18},  # faster than any CPU peak
            {"backbone": "slow", "regularizer": "erm", "train_flop_per_s": 1.0}]
    peak = bench.set_utilisation(rows, cpu, shapes, start)
    assert rows[0]["mfu_vs_matmul"] == 1.0 and 0 < rows[1]["mfu_vs_matmul"] < 1e-6
    assert peak["flop_per_s"] == 1e18 and "exceeded it" in peak["how"] and "used as the peak" in peak["how"]


def test_utilisation_against_the_measured_peak_when_it_bounds_the_workloads():
    bench = load_bench()
    cpu, shapes = torch.device("cpu"), ((64, 64, 64),)
    start = bench.matmul_peak(cpu, shapes, trials=2)
    rows = [{"backbone": "b", "regularizer": "erm", "train_flop_per_s": start[0] / 4}]
    peak = bench.set_utilisation(rows, cpu, shapes, start)
    assert peak["flop_per_s"] >= start[0] and "exceeded" not in peak["how"]
    assert rows[0]["mfu_vs_matmul"] == rows[0]["train_flop_per_s"] / peak["flop_per_s"] <= 0.25
