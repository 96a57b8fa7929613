"""Where the time goes: ``make bench`` (a measurement script, never a timed test).

Measured in one process, printed as a table and written to ``outputs/bench/bench.json``:

* ``step_time_ratio``: the median training-step time (forward, loss, backward, Adam) of each regularizer divided by
  ERM's, same backbone, batch and input, the regularizers timed round-robin; ``flop_ratio`` beside it: the FLOPs of that step counted by
  ``torch.utils.flop_counter`` (layers after a mix point see 2 or 4 flows) divided by ERM's; ``overhead`` =
  step_time_ratio / flop_ratio, the cost beyond the extra flows themselves (1.00 = none).
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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from flowmixup import ERM  # noqa: E402
from flowmixup.data.base import ArrayDataset, LazyH5Array  # noqa: E402
from flowmixup.models import ResNet1d, StemDenseNet  # noqa: E402
from flowmixup.io import write_json  # noqa: E402
from flowmixup.sweep.rows import timed_rows  # noqa: E402
from flowmixup.training.build import build_regularizer, compile_units  # noqa: E402
from flowmixup.training.loop import train_step  # noqa: E402


def regularizer_factory(row):
    """(model, mix points) -> the row's regularizer, built by the trainer's build function from the row's config."""

    def make(model, mix_points):
        points = mix_points if "mix_points" in row.config.regularizer else None
        return build_regularizer(row.config, model, points, torch.Generator().manual_seed(0))

    return make


# the paper's rows (conf/reproduce/rows.yaml), one per timing name: erm, mixup, manifold_mixup, flowmixup_op_*
REGULARIZERS = {name: regularizer_factory(row) for name, row in timed_rows(ROOT / "conf").items()}


def adam(model):
    """The trainer's optimiser: Adam, fused where PyTorch has the kernel."""
    try:
        return torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=1e-4)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def backbones(quick: bool):
    """(name, model factory, input shape, classes): the presets the issue names, sized for a CPU run."""
    yield "resnet1d (small, 8x500)", lambda: ResNet1d(8, 15, blocks=(2, 2, 2, 2), width=16), (8, 500), 15
    if not quick:
        yield "resnet34_1d (paper, 8x5000)", lambda: ResNet1d(8, 12), (8, 5000), 12
    yield ("densenet_small (1x256x256)",
           lambda: StemDenseNet(1, 14, growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=24,
                                stem_channels=8), (1, 256, 256), 14)


def step_fn(reg, model, optimizer, x, y, device, bf16):
    """The trainer's own step (flowmixup.training.loop.train_step) with plain BCE on logits."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step():
        train_step(reg, bce, optimizer, x, y, bf16)
    return step


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def bench_regularizers(device, batch: int, quick: bool, bf16: bool, compiled: bool = False) -> list[dict]:
    """Per backbone: build every regularizer's model, then time their steps round-robin (one step of each in turn),
    so that drift of the machine (clock, caches, other load) hits all of them alike; report medians."""
    rows = []
    for name, make, shape, classes in backbones(quick):
        x = torch.randn(batch, *shape, device=device)
        if len(shape) == 3:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (batch, classes), device=device).float()
        big = "5000" in name
        steps, flops = {}, {}
        variants = [(r, False) for r in REGULARIZERS]
        if compiled and not big:
            variants += [("erm", True), ("flowmixup_op_false", True)]
        for reg_name, compile_it in variants:
            make_reg = REGULARIZERS[reg_name]
            torch.manual_seed(0)
            model = make().to(device)
            if len(shape) == 3:
                model = model.to(memory_format=torch.channels_last)
            model.train()
            reg = make_reg(model, model.paper_mix_points())
            if compile_it:
                for unit in compile_units(model, getattr(reg, "mix_points", None)):
                    model.get_submodule(unit).compile()
                reg_name += "+compile"
            optimizer = adam(model)
            steps[reg_name] = step_fn(reg, model, optimizer, x, y, device, bf16)
            if compile_it:
                for _ in range(3):  # compilation happens here, outside the timing
                    steps[reg_name]()
                flops[reg_name] = flops[reg_name.split("+")[0]]
            else:
                flops[reg_name] = count_flops(steps[reg_name])  # also the first warm-up step
            if not big:
                steps[reg_name]()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(4 if big else 25):
            for reg_name, step in steps.items():
                sync(device)
                t0 = time.perf_counter()
                step()
                sync(device)
                times[reg_name].append(time.perf_counter() - t0)
        base_time, base_flops = statistics.median(times["erm"]), flops["erm"]
        for reg_name in steps:
            seconds = statistics.median(times[reg_name])
            rows.append({
                "backbone": name, "regularizer": reg_name, "batch": batch, "step_s": seconds,
                "samples_per_s": batch / seconds, "train_flop_per_s": flops[reg_name] / seconds,
                "step_gflop": flops[reg_name] / 1e9, "step_time_ratio": seconds / base_time,
                "flop_ratio": flops[reg_name] / base_flops,
                "overhead": (seconds / base_time) / (flops[reg_name] / base_flops),
            })
            print(f"  {name:28s} {reg_name:20s} {seconds * 1e3:9.1f} ms/step  x{seconds / base_time:.2f} time  "
                  f"x{flops[reg_name] / base_flops:.2f} FLOPs", flush=True)
    return rows


def profile_step(device, batch: int, rows: int = 12) -> str:
    """The top operators of one ERM training step of the small 1-D ResNet, by self time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = ResNet1d(8, 15, blocks=(2, 2, 2, 2), width=16).to(device).train()
    optimizer = adam(model)
    x, y = torch.randn(batch, 8, 500, device=device), torch.randint(0, 2, (batch, 15), device=device).float()
    step = step_fn(ERM(model), model, optimizer, x, y, device, False)
    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


# (m, k, n) of the products searched for the peak: squares, and the tall-skinny and wide shapes that convolutions
# lower to (im2col: many output positions x a short channel-kernel product), so the peak is one they can reach
PEAK_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (16384, 576, 256), (4096, 192, 4096),
               (256, 4096, 4096))
QUICK_PEAK_SHAPES = PEAK_SHAPES[:2] + PEAK_SHAPES[3:5]


def matmul_peak(device, shapes=PEAK_SHAPES, trials: int = 5) -> tuple[float, tuple[int, int, int]]:
    """The machine's peak dense float32 matmul FLOP/s and the shape that reached it: after two warm-up products per
    shape, the best of ``trials`` single products (a peak, not an average: averages over a cold start
    under-state it)."""
    best, best_shape = 0.0, shapes[0]
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        for _ in range(2):
            a @ b
        for _ in range(trials):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            rate = 2 * m * k * n / (time.perf_counter() - t0)
            if rate > best:
                best, best_shape = rate, (m, k, n)
        del a, b
    return best, best_shape


def set_utilisation(reg_rows: list[dict], device, shapes, start: tuple) -> dict:
    """Divide each workload's counted FLOP/s by a peak that bounds them all: the best matmul at the start and at the
    end of the run; if a workload still runs faster than that, the peak is measured again more thoroughly, and if
    the workload is still faster (a convolution's counted FLOPs can exceed the arithmetic that oneDNN / cuDNN does,
    e.g. with Winograd), the workload's own rate is the peak and the report says so. Never above 1."""
    end = matmul_peak(device, shapes)
    rate, shape = max(start, end)
    how = (f"best single float32 product of {len(shapes)} GEMM shapes after warm-up, measured at the start "
           f"({start[0] / 1e9:.1f} GFLOP/s) and at the end ({end[0] / 1e9:.1f}) of the run; best shape "
           f"{'x'.join(map(str, shape))}")
    fastest = max(reg_rows, key=lambda r: r["train_flop_per_s"])
    if fastest["train_flop_per_s"] > rate:
        again = matmul_peak(device, shapes, trials=15)
        if again[0] > rate:
            rate, shape = again
            how += f"; re-measured (15 trials per shape) because a workload exceeded it: {rate / 1e9:.1f} GFLOP/s"
        if fastest["train_flop_per_s"] > rate:
            print(f"[bench] {fastest['backbone']} / {fastest['regularizer']} runs at "
                  f"{fastest['train_flop_per_s'] / 1e9:.1f} GFLOP/s counted, above the matmul peak "
                  f"{rate / 1e9:.1f}: its convolutions do fewer operations than the counted direct form; "
                  "utilisation is reported against the workload's rate instead", flush=True)
            how += (f"; {fastest['backbone']} / {fastest['regularizer']} exceeded it at "
                    f"{fastest['train_flop_per_s'] / 1e9:.1f} GFLOP/s (counted FLOPs), which is used as the peak")
            rate = fastest["train_flop_per_s"]
    for r in reg_rows:
        r["mfu_vs_matmul"] = min(1.0, r["train_flop_per_s"] / rate)
    return {"flop_per_s": rate, "shape": list(shape), "how": how}


def cache_read_rate(shape, dtype, n_rows: int, batch: int = 32, batches: int = 60) -> float:
    """Samples/s reading random batches from a contiguous HDF5 cache through the training Dataset."""
    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.h5"
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as fh:
            ds = fh.create_dataset("x", shape=(n_rows, *shape), dtype=dtype)
            for start in range(0, n_rows, 256):
                stop = min(n_rows, start + 256)
                block = rng.integers(0, 255, (stop - start, *shape)) if dtype == np.uint8 else \
                    rng.standard_normal((stop - start, *shape))
                ds[start:stop] = block.astype(dtype)
        data = ArrayDataset(LazyH5Array(path, "x"), np.zeros((n_rows, 2), np.float32), np.arange(n_rows))
        order = rng.permutation(n_rows)
        data.__getitems__(order[:batch])  # open the file
        t0 = time.perf_counter()
        for i in range(batches):
            idx = order[(i * batch) % (n_rows - batch):][:batch]
            data.__getitems__(idx)
        return batch * batches / (time.perf_counter() - t0)


def raw_rate(fn, items, reps: int) -> float:
    t0 = time.perf_counter()
    for i in range(reps):
        fn(items[i % len(items)])
    return reps / (time.perf_counter() - t0)


def bench_loaders(reg_rows: list[dict]) -> list[dict]:
    rows = []
    train_rate = {r["backbone"]: r["samples_per_s"] for r in reg_rows if r["regularizer"] == "erm"}
    pngs = sorted((SHARED / "chestxray14" / "images").glob("*.png")) if SHARED.is_dir() else []
    if pngs:
        from flowmixup.data.chestxray14 import load_image

        raw = raw_rate(lambda p: load_image(p, 256), pngs, 24)
        cache = cache_read_rate((1, 256, 256), np.uint8, 4096)
        model = next((v for k, v in train_rate.items() if "densenet" in k), None)
        rows.append({"data": "chestxray14 PNG (real, 1024 px) -> 256 px", "raw_samples_per_s": raw,
                     "cache_samples_per_s": cache, "loader_speedup_vs_raw": cache / raw,
                     "train_samples_per_s": model, "loader_vs_model_throughput": cache / model if model else None})
    record = SHARED / "tianchi" / "records" / "2.txt"
    if record.is_file():
        from flowmixup.data.tianchi import read_record

        raw = raw_rate(read_record, [record], 60)
        cache = cache_read_rate((8, 5000), np.float32, 2048)
        model = next((v for k, v in train_rate.items() if "5000" in k), None)
        rows.append({"data": "tianchi text record (real, 8x5000)", "raw_samples_per_s": raw,
                     "cache_samples_per_s": cache, "loader_speedup_vs_raw": cache / raw,
                     "train_samples_per_s": model, "loader_vs_model_throughput": cache / model if model else None})
    return rows


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for r in rows:
        body += "| " + " | ".join("n/a" if r.get(k) is None else format(r[k], f) for k, _, f in cols) + " |\n"
    return head + body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the full-size ResNet-34 (a smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    ap.add_argument("--compile", action="store_true",
                    help="also time ERM and Flow-Mixup with trainer.compile's torch.compile (small backbones)")
    ap.add_argument("--profile", action="store_true", help="also print where one training step's time goes")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "bench.json"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    started = time.time()
    print(f"[bench] device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    shapes = QUICK_PEAK_SHAPES if args.quick else PEAK_SHAPES
    start = matmul_peak(device, shapes)
    print(f"[bench] dense float32 matmul at the start: {start[0] / 1e9:.1f} GFLOP/s", flush=True)
    reg_rows = bench_regularizers(device, args.batch, args.quick, args.bf16, args.compile)
    peak = set_utilisation(reg_rows, device, shapes, start)
    matmul = peak["flop_per_s"]
    print(f"[bench] peak used for utilisation: {matmul / 1e9:.1f} GFLOP/s ({peak['how']})", flush=True)
    loader_rows = bench_loaders(reg_rows)
    result = {"device": str(device), "host": platform.node(), "cpu_count": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch,
              "bf16": args.bf16, "matmul_flop_per_s": matmul, "peak": peak, "regularizers": reg_rows, "loaders": loader_rows,
              "wall_time_s": round(time.time() - started, 1)}
    write_json(args.out, result)
    print()
    print(table(reg_rows, [("backbone", "backbone", "s"), ("regularizer", "regularizer", "s"),
                           ("step_s", "step (s)", ".4f"), ("step_time_ratio", "step_time_ratio", ".2f"),
                           ("flop_ratio", "flop_ratio", ".2f"), ("overhead", "time/FLOP ratio", ".2f"),
                           ("mfu_vs_matmul", "mfu_vs_matmul", ".2f")]))
    print(table(loader_rows, [("data", "data", "s"), ("raw_samples_per_s", "raw decode (samples/s)", ",.0f"),
                              ("cache_samples_per_s", "cache (samples/s)", ",.0f"),
                              ("loader_speedup_vs_raw", "loader_speedup_vs_raw", ".1f"),
                              ("train_samples_per_s", "training (samples/s)", ",.1f"),
                              ("loader_vs_model_throughput", "loader_vs_model_throughput", ".1f")]))
    if args.profile:
        print(profile_step(device, args.batch))
    print(f"[bench] wrote {args.out} in {result['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
