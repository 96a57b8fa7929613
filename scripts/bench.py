"""Where the time goes: ``make bench`` (a measurement script, never a timed test).

Measured in one process, printed as a table and written to ``outputs/bench/bench.json``:

* ``step_time_ratio``: the median training-step time (forward, loss, backward, Adam) of each regularizer divided by
  ERM's, same backbone, batch and input, the regularizers timed round-robin; ``flop_ratio`` beside it: the FLOPs of
  that step counted by ``torch.utils.flop_counter`` (layers after a mix point see 2 or 4 flows) divided by ERM's;
  ``overhead`` = step_time_ratio / flop_ratio, the cost beyond the extra flows themselves (1.00 = none).
  The regularizers are the paper's rows (``flowmixup.perf.paper_rows``), under the names the timing files use; the
  backbones are ``conf/backbone/*.yaml`` composed with Hydra (``flowmixup.perf.PRESETS["bench"]``), built and
  stepped by the trainer's own functions.
* ``loader_speedup_vs_raw``: samples/s reading the prepared HDF5 cache (random batches of 32 through the training
  Dataset) divided by samples/s decoding the raw files (real PNGs from ../shared/data for ChestX-ray14 at 256 px,
  a real Tianchi text record for ECG); ``loader_vs_model_throughput``: cache samples/s divided by training
  samples/s of the paper's backbone at that input.
* ``mfu_vs_matmul``: achieved training FLOP/s divided by this machine's peak dense float32 matmul FLOP/s, measured in
  the same run (the best single product over several GEMM shapes, square and convolution-like, at the start and at
  the end); never above 1: a workload faster than that peak triggers a second measurement, and if it is still
  faster its own rate is the peak (printed, and recorded in bench.json's ``peak.how``).

    python scripts/bench.py [--quick] [--device cpu|cuda] [--out outputs/bench/bench.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flowmixup import perf
from flowmixup.io import write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

REG_COLUMNS = [
    ("backbone", "backbone", ""),
    ("regularizer", "regularizer", ""),
    ("step_s", "step (s)", ".4f"),
    ("step_time_ratio", "step_time_ratio", ".2f"),
    ("flop_ratio", "flop_ratio", ".2f"),
    ("overhead", "time/FLOP ratio", ".2f"),
    ("mfu_vs_matmul", "mfu_vs_matmul", ".2f"),
    ("error", "error", ""),
]
LOADER_COLUMNS = [
    ("data", "data", ""),
    ("raw_samples_per_s", "raw decode (samples/s)", ",.0f"),
    ("cache_samples_per_s", "cache (samples/s)", ",.0f"),
    ("loader_speedup_vs_raw", "loader_speedup_vs_raw", ".1f"),
    ("train_samples_per_s", "training (samples/s)", ",.1f"),
    ("loader_vs_model_throughput", "loader_vs_model_throughput", ".1f"),
]


def with_ratios(measured: list[dict]) -> list[dict]:
    """perf.measure's rows of one backbone as bench.json's: FLOP/s, and the ratios to ERM's eager step."""
    erm = next((r for r in measured if r["regularizer"] == "erm" and not r["compile"] and r["ok"]), None)
    out = []
    for r in measured:
        row = {k: r.get(k) for k in ("backbone", "backbone_name", "row", "precision", "compile", "batch", "ok")}
        row["regularizer"] = r["regularizer"] + ("+compile" if r["compile"] else "")
        if not r["ok"]:
            out.append({**row, "error": r.get("error")})
            continue
        seconds, flops = r["step_s"], r.get("flops")
        row.update(
            step_s=seconds,
            samples_per_s=r["samples_per_s"],
            train_flop_per_s=flops / seconds if flops else None,
            step_gflop=flops / 1e9 if flops else None,
        )
        if erm is not None and flops and erm.get("flops"):
            row.update(step_time_ratio=seconds / erm["step_s"], flop_ratio=flops / erm["flops"])
            row["overhead"] = row["step_time_ratio"] / row["flop_ratio"]
        out.append(row)
    return out


def bench_regularizers(
    device, batch: int, quick: bool, bf16: bool, compiled: bool = False, presets=None, rounds: int | None = None
) -> list[dict]:
    """Per backbone: build every regularizer's model, then time their steps round-robin (one step of each in turn),
    so that drift of the machine (clock, caches, other load) hits all of them alike; report medians."""
    rows = []
    for backbone in presets or perf.backbones("bench", quick):
        todo = perf.variants(["bf16" if bf16 else "fp32"], compiled and backbone.compile)
        n = rounds or (4 if backbone.full_size else 25)
        measured = perf.measure(
            backbone, todo, device=device, batch=batch, rounds=n, warmup=1 if backbone.full_size else 2, flops=True
        )
        for r in with_ratios(measured):
            rows.append(r)
            ratios = (
                f"x{r['step_time_ratio']:.2f} time  x{r['flop_ratio']:.2f} FLOPs"
                if r.get("step_time_ratio") is not None
                else ""
            )
            print(
                f"  {r['backbone']:28s} {r['regularizer']:20s} "
                + (f"{r['step_s'] * 1e3:9.1f} ms/step  {ratios}" if r["ok"] else r["error"]),
                flush=True,
            )
    return rows


def profile_step(device, batch: int, rows: int = 12) -> str:
    """The top operators of the first row's (ERM's) training step of the first preset (the small 1-D ResNet), by self
    time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    backbone, reg = perf.backbones("bench", quick=True)[0], next(iter(perf.regularizers().values()))
    cfg = perf.compose(perf.Variant(reg).overrides(backbone, device, batch, "inductor"))
    probe = perf.Probe(cfg, backbone, batch)
    probe.warm(3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            probe.step()
        perf.sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return f"{backbone.label}, {reg.name}:\n" + prof.key_averages().table(sort_by=key, row_limit=rows)


def cache_read_rate(shape, dtype, n_rows: int, batch: int = 32, batches: int = 60) -> float:
    """Samples/s reading random batches from a contiguous HDF5 cache through the training Dataset."""
    import h5py

    from flowmixup.data.base import ArrayDataset, LazyH5Array

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.h5"
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as fh:
            ds = fh.create_dataset("x", shape=(n_rows, *shape), dtype=dtype)
            for start in range(0, n_rows, 256):
                size = (min(n_rows, start + 256) - start, *shape)
                block = rng.integers(0, 255, size) if dtype == np.uint8 else rng.standard_normal(size)
                ds[start : start + size[0]] = block.astype(dtype)
        data = ArrayDataset(LazyH5Array(path, "x"), np.zeros((n_rows, 2), np.float32), np.arange(n_rows))
        order = rng.permutation(n_rows)
        data.__getitems__(order[:batch])  # open the file
        t0 = time.perf_counter()
        for i in range(batches):
            data.__getitems__(order[(i * batch) % (n_rows - batch) :][:batch])
        return batch * batches / (time.perf_counter() - t0)


def raw_rate(fn, items, reps: int) -> float:
    t0 = time.perf_counter()
    for i in range(reps):
        fn(items[i % len(items)])
    return reps / (time.perf_counter() - t0)


def loader_row(data: str, raw: float, cache: float, model: float | None) -> dict:
    return {
        "data": data,
        "raw_samples_per_s": raw,
        "cache_samples_per_s": cache,
        "loader_speedup_vs_raw": cache / raw,
        "train_samples_per_s": model,
        "loader_vs_model_throughput": cache / model if model else None,
    }


def bench_loaders(reg_rows: list[dict]) -> list[dict]:
    """The cache against the raw files (where ../shared/data has them), and against the training speed of the
    backbone trained on them (ERM)."""
    rows = []
    train_rate = {r["backbone_name"]: r["samples_per_s"] for r in reg_rows if r["regularizer"] == "erm" and r["ok"]}
    pngs = sorted((SHARED / "chestxray14" / "images").glob("*.png")) if SHARED.is_dir() else []
    if pngs:
        from flowmixup.data.chestxray14 import load_image

        raw = raw_rate(lambda p: load_image(p, 256), pngs, 24)
        rows.append(
            loader_row(
                "chestxray14 PNG (real, 1024 px) -> 256 px",
                raw,
                cache_read_rate((1, 256, 256), np.uint8, 4096),
                train_rate.get("densenet_small"),
            )
        )
    record = SHARED / "tianchi" / "records" / "2.txt"
    if record.is_file():
        from flowmixup.data.tianchi import read_record

        raw = raw_rate(read_record, [record], 60)
        rows.append(
            loader_row(
                "tianchi text record (real, 8x5000)",
                raw,
                cache_read_rate((8, 5000), np.float32, 2048),
                train_rate.get("resnet34_1d"),
            )
        )
    return rows


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the full-size ResNet-34 (a smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time ERM and Flow-Mixup with trainer.compile's torch.compile (small backbones)",
    )
    ap.add_argument("--profile", action="store_true", help="also print where one training step's time goes")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "bench.json"))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    perf.setup(device)
    started = time.time()
    print(f"[bench] device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    shapes = perf.QUICK_PEAK_SHAPES if args.quick else perf.PEAK_SHAPES
    start = perf.matmul_peak(device, shapes)
    print(f"[bench] dense float32 matmul at the start: {start[0] / 1e9:.1f} GFLOP/s", flush=True)
    reg_rows = bench_regularizers(device, args.batch, args.quick, args.bf16, args.compile)
    peak = perf.set_utilisation(reg_rows, device, shapes, start)
    print(f"[bench] peak used for utilisation: {peak['flop_per_s'] / 1e9:.1f} GFLOP/s ({peak['how']})", flush=True)
    loader_rows = bench_loaders(reg_rows)
    result = {
        "device": str(device),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "bf16": args.bf16,
        "matmul_flop_per_s": peak["flop_per_s"],
        "peak": peak,
        "rows": perf.row_names(),
        "regularizers": reg_rows,
        "loaders": loader_rows,
        "wall_time_s": round(time.time() - started, 1),
    }
    write_json(args.out, result)
    print()
    print(perf.table(reg_rows, REG_COLUMNS if any(not r["ok"] for r in reg_rows) else REG_COLUMNS[:-1]))
    print(perf.table(loader_rows, LOADER_COLUMNS))
    if args.profile:
        print(profile_step(device, args.batch))
    print(f"[bench] wrote {args.out} in {result['wall_time_s']} s")
    return 0 if all(r["ok"] for r in reg_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
