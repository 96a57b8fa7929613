"""``make gpu-check``: does the paper profile run well on this GPU? Minutes of measurement before days of training.

Four sections, each written to ``outputs/gpu_check/gpu_check.json`` as soon as it ends (a cut-short check keeps
what it measured) and printed as a table:

1. ``steps``: per backbone at the paper's settings (its experiments: DenseNet-121 behind its two stride-2 stem
   convolutions on 1024-px images; 1-D ResNet-34 on 8 x 5,000 ECGs; batch 32) and per regularizer of the paper's
   rows (``flowmixup.perf.paper_rows``: ERM, Mixup, Manifold Mixup, Flow-Mixup Op=False/True): the median
   training-step time in fp32 and bf16 autocast (and with ``trainer.compile`` for ERM and Flow-Mixup), the peak GPU
   memory a run of that configuration alone holds (its weights, gradients, Adam state and batch, plus the step's
   ``torch.cuda.max_memory_allocated`` above them), samples/s. Models are built and stepped by the trainer's own
   functions (:mod:`flowmixup.training.build`, :func:`flowmixup.training.loop.train_step`); the configurations of
   a backbone are timed round-robin, one step of each in turn (:func:`flowmixup.perf.measure`).
2. ``loader``: a short real training (``train.py``, the paper's ChestX-ray14 experiment) on a generated
   ChestX-ray14 root in NIH's layout (synthetic 1024-px PNGs, NIH's table and split lists) prepared into the HDF5
   cache by ``prepare_data.py``, with ``trainer.num_workers`` > 0: the fraction of training time spent waiting
   for the next batch (``data_wait_fraction`` in the run's summary), so you see whether the loader keeps up.
3. ``shared_gpu``: 1, 2 and 4 ECG runs at once on the one GPU (Hydra's joblib launcher): their summed training
   samples/s against one run alone.
4. ``deterministic``: two runs with ``trainer.deterministic=true`` give identical metrics.

    python scripts/gpu_check.py                       # on a GPU: about 6-8 minutes
    python scripts/gpu_check.py --device cpu --quick  # the same code paths at toy sizes (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flowmixup import perf
from flowmixup.io import write_json

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------ helpers
def device_info(device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            name=p.name,
            memory_gib=round(p.total_memory / 2**30, 1),
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16=torch.cuda.is_bf16_supported(),
        )
    else:
        info.update(name=platform.processor() or platform.machine(), cpus=os.cpu_count())
    return info


class Report:
    """The JSON file, rewritten after every section so that a check cut short keeps what it measured."""

    def __init__(self, path: Path, header: dict):
        self.path, self.data = path, dict(header)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write()

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        write_json(self.path, self.data)


# ------------------------------------------------------------------------------------------ 1. training steps
STEP_FIELDS = (
    "backbone",
    "backbone_name",
    "input",
    "row",
    "regularizer",
    "precision",
    "compile",
    "cuda_graph",
    "channels_last",
    "batch",
    "warmup_s",
    "timed_steps",
    "step_ms",
    "samples_per_s",
    "ok",
    "peak_mem_gib",
    "flops",
    "achieved_tflop_per_s",
    "peak_used",
    "peak_tflop_per_s",
    "fraction_of_peak",
    "busy_share",
    "busy_source",
    "syncs_in_step",
    "profile_error",
    "error",
)


def with_vs_erm(measured: list[dict]) -> list[dict]:
    """perf.measure's rows of one backbone as gpu_check.json's: ``step_ms``, and ``vs_erm`` against ERM's row at the
    same precision, compile and cuda_graph."""
    rows = []
    for r in measured:
        r = {**r, "step_ms": 1000 * r["step_s"] if r["ok"] else None}
        rows.append({k: r[k] for k in STEP_FIELDS if r.get(k) is not None or k in ("backbone_name", "ok")})

    def same(r):
        return r["precision"], r["compile"], r.get("cuda_graph", False), r.get("channels_last", True)

    base = {same(r): r["step_ms"] for r in rows if r["ok"] and r["regularizer"] == "erm"}
    for r in rows:
        if r["ok"] and same(r) in base:
            r["vs_erm"] = r["step_ms"] / base[same(r)]
    return rows


def section_peak(args, device, report: Report) -> dict:
    """The device's own ceiling in this run: dense matmul peak per precision (CUDA: TF32 and bf16; CPU: fp32) and
    copy bandwidth (flowmixup.perf.device_ceiling); the steps section's fraction_of_peak is against it."""
    ceiling = perf.device_ceiling(device, args.quick)
    for name, m in ceiling["matmul"].items():
        print(f"  matmul peak {name}: {m['tflop_per_s']:.3f} TFLOP/s ({'x'.join(map(str, m['shape']))})", flush=True)
    print(f"  copy bandwidth: {ceiling['copy_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
    report.set("peak", ceiling)
    return ceiling


def section_steps(args, device, report: Report) -> list[dict]:
    """Per paper backbone: every row x precision (and trainer.compile), built and stepped by the trainer's own
    functions, timed round-robin (flowmixup.perf.measure)."""
    rows = []
    precisions = ["fp32", "bf16"] if device.type == "cuda" or args.quick else ["fp32"]
    graphed = args.graph and device.type == "cuda"
    for backbone in perf.backbones("paper", args.quick):
        compiled = args.compile and (backbone.compile or args.compile_all)
        todo = perf.variants(
            precisions, compiled, graphed and backbone.graph, args.layouts and len(backbone.input) == 3
        )
        timed = perf.measure(
            backbone,
            todo,
            device=device,
            batch=args.batch,
            rounds=args.steps,
            warmup=args.warmup,
            backend=args.compile_backend,
            flops=True,
            profile_steps=args.profile_steps,
        )
        if report.data.get("peak"):
            perf.set_peak_fields(timed, report.data["peak"], device)
        measured = with_vs_erm(timed)
        for r in measured:
            print(
                f"  {r['backbone'][:28]:28s} {r['regularizer']:20s} {r['precision']:4s} compile={r['compile']!s:5s} "
                f"graph={r['cuda_graph']!s:5s} " + (f"{r['step_ms']:8.1f} ms" if r["ok"] else r["error"]),
                flush=True,
            )
        rows += measured
        report.set("steps", rows)
    return rows


# ------------------------------------------------------------------------------------------ train.py as a user
def train(args_list: list[str], env: dict, log: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), *args_list]
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)


def summary_of(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise RuntimeError(f"{run_dir}: no summary.json (see the log beside it)")
    return json.loads(path.read_text())


def _nih_image(i: int, size: int) -> tuple[int, bytes]:
    """One synthetic grey PNG in NIH's format (8-bit, size x size): smooth gradients plus noise, seeded by i."""
    import io

    from PIL import Image

    rng = np.random.default_rng(i)
    g = np.linspace(0, 1, size, dtype=np.float32)
    img = 90 + 80 * np.outer(np.sin(3 * g + rng.uniform(0, 3)), np.cos(2 * g + rng.uniform(0, 3)))
    img += rng.normal(0, 6, size=(size, size))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(buf, format="PNG", compress_level=1)
    return i, buf.getvalue()


def write_nih_root(root: Path, n: int, size: int, workers: int) -> None:
    """A ChestX-ray14 root in NIH's layout: Data_Entry_2017_v2020.csv, the two split lists, images/*.png."""
    from concurrent.futures import ProcessPoolExecutor

    from flowmixup.data.chestxray14 import CLASSES

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"{1 + i // 4:08d}_{i % 4:03d}.png" for i in range(n)]
    rows = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    ]
    for i, name in enumerate(names):
        found = [c for c in CLASSES if rng.random() < 0.08]
        rows.append(f"{name},{'|'.join(found) or 'No Finding'},{i % 4},{1 + i // 4},50,M,PA,{size},{size},0.14,0.14")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
    cut = int(0.85 * n) // 4 * 4  # patient-wise, as NIH's lists are
    (root / "train_val_list.txt").write_text("\n".join(names[:cut]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[cut:]) + "\n")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, data in pool.map(_nih_image, range(n), [size] * n, chunksize=16):
            (root / "images" / names[i]).write_bytes(data)


def prepare_nih(args, work: Path, env: dict) -> tuple[list[str], dict]:
    """A generated ChestX-ray14 root prepared into its HDF5 cache: (the data overrides, what it took)."""
    n, size = (120, 64) if args.quick else (args.xray_images, 1024)
    root = work / "nih"
    t0 = time.perf_counter()
    write_nih_root(root, n, size, workers=max(1, os.cpu_count() or 1))
    generated = time.perf_counter() - t0
    data = [f"paths.data_dir={work / 'data'}", f"dataset.root={root}", f"dataset.resolution={size}"]
    workers = "dataset.prepare_workers=" + str(max(1, (os.cpu_count() or 2) - 1))
    prepare = [sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "dataset=chestxray14", *data, workers]
    prep = subprocess.run(prepare, cwd=ROOT, env=env, capture_output=True, text=True)
    if prep.returncode != 0:
        raise RuntimeError(f"prepare_data.py failed: {prep.stderr.strip().splitlines()[-1:]}")
    took = {"generate_s": round(generated, 1), "prepare_s": round(time.perf_counter() - t0 - generated, 1)}
    return data, {"images": n, "resolution": size, **took}


def section_loader(args, device, work: Path, env: dict, report: Report) -> dict:
    """A short real ChestX-ray14 training at the paper's settings (the steps section's X-ray model), with DataLoader
    workers: is the GPU fed?"""
    data, made = prepare_nih(args, work, env)
    run_dir, log = work / "loader_run", work / "loader.log"
    xray = next(b for b in perf.backbones("paper", args.quick) if "experiment=paper_chestxray14" in b.overrides)
    workers = 2 if args.quick else args.num_workers
    run = [
        *xray.overrides,
        *data,
        f"trainer.device={device}",
        f"trainer.precision={args.loader_precision}",
        f"trainer.epochs={args.epochs}",
        f"trainer.num_workers={workers}",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        *([f"trainer.num_threads={args.threads}"] if args.threads else []),
    ]
    proc = train(run, env, log)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed (exit {proc.returncode}); log: {log}")
    summary = summary_of(run_dir)
    speed = summary["speed"]
    out = {
        "images": made["images"],
        "resolution": made["resolution"],
        "num_workers": workers,
        "epochs": args.epochs,
        "precision": args.loader_precision,
        "train_steps": speed["train_steps"],
        "data_wait_fraction": speed["data_wait_fraction"],
        "train_samples_per_s": speed["train_samples_per_s"],
        "generate_s": made["generate_s"],
        "prepare_s": made["prepare_s"],
        "wall_s": summary["wall_time_s"],
    }
    report.set("loader", out)
    return out


def ecg_args(args, work: Path, device) -> list[str]:
    """The ECG runs of sections 3 and 4: synthetic 8-lead records at the paper's 8 x 5,000 (toy under --quick)."""
    size = (
        [
            "dataset.n_records=240",
            "dataset.sampling_rate=50",
            "dataset.duration=10",
            "backbone.width=8",
            "backbone.blocks=[2,1,1,1]",
        ]
        if args.quick
        else [f"dataset.n_records={args.ecg_records}", "dataset.sampling_rate=500", "dataset.duration=10"]
    )
    return [
        "dataset=synth_ecg",
        "backbone=resnet34_1d",
        "loss=bce",
        *size,
        f"paths.data_dir={work / 'data'}",
        f"trainer.device={device}",
        f"trainer.epochs={args.epochs}",
        "trainer.progress=false",
        "trainer.batch_size=32",
        *([f"trainer.num_threads={args.threads}"] if args.threads else []),
    ]


def section_shared(args, device, work: Path, env: dict, report: Report) -> list[dict]:
    """1, 2, 4 ECG runs at once on one GPU through the joblib launcher: summed samples/s vs one run alone."""
    rows, log = [], work / "shared.log"
    base = (
        ecg_args(args, work, device)
        + [f"trainer.epochs={args.shared_epochs}"]
        + (["trainer.precision=bf16"] if device.type == "cuda" else [])
    )
    for k in args.shared:
        sweep = work / f"shared_{k}"
        t0 = time.perf_counter()
        proc = train(
            [
                "-m",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={k}",
                f"hydra.sweep.dir={sweep}",
                "seed=" + ",".join(str(s) for s in range(k)),
                *base,
            ],
            env,
            log,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{k} runs at once failed (exit {proc.returncode}); log: {log}")
        per_run = [
            summary_of(d)["speed"]["train_samples_per_s"]
            for d in sorted(p.parent for p in sweep.glob("*/summary.json"))
        ]
        if len(per_run) != k:
            raise RuntimeError(f"{k} runs at once: {len(per_run)} summaries in {sweep}; log: {log}")
        rows.append(
            {
                "runs_at_once": k,
                "per_run_samples_per_s": per_run,
                "aggregate_samples_per_s": sum(per_run),
                "wall_s": round(wall, 1),
            }
        )
        rows[-1]["vs_one_run"] = rows[-1]["aggregate_samples_per_s"] / rows[0]["aggregate_samples_per_s"]
        report.set("shared_gpu", rows)
    return rows


def section_deterministic(args, device, work: Path, env: dict, report: Report) -> dict:
    """Two identical runs with trainer.deterministic=true: identical metrics.csv values (time columns aside)."""
    log, frames = work / "deterministic.log", []
    base = ecg_args(args, work, device) + ["trainer.deterministic=true", "trainer.num_workers=2"]
    for name in ("a", "b"):
        proc = train([*base, f"hydra.run.dir={work / ('det_' + name)}"], env, log)
        if proc.returncode != 0:
            raise RuntimeError(f"deterministic run {name} failed (exit {proc.returncode}); log: {log}")
        import pandas as pd

        frames.append(pd.read_csv(work / f"det_{name}" / "metrics.csv"))
    cols = [c for c in frames[0].columns if not c.endswith("_s") and c != "lr"]
    same = frames[0][cols].equals(frames[1][cols])
    out = {
        "identical": bool(same),
        "compared_columns": cols,
        "a": frames[0][cols].iloc[-1].to_dict(),
        "b": frames[1][cols].iloc[-1].to_dict(),
    }
    report.set("deterministic", out)
    return out


# ----------------------------------------------------------------------------------------------------- main
SECTIONS = ("peak", "steps", "loader", "shared", "deterministic")


def step_options(p: argparse.ArgumentParser) -> None:
    """The steps section's options."""
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 10; 3 quick)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the trainer.compile rows")
    p.add_argument(
        "--no-graph", dest="graph", action="store_false", help="skip the trainer.cuda_graph rows (CUDA, ECG)"
    )
    p.add_argument(
        "--layouts", action="store_true", help="image models: ERM also in NCHW (trainer.channels_last=false)"
    )
    profiled = "for busy_share, and on CUDA one under torch.cuda.set_sync_debug_mode('warn') for syncs_in_step"
    p.add_argument(
        "--profile-steps", type=int, help=f"steps profiled per configuration {profiled} (3; 2 quick; 0 none)"
    )
    p.add_argument(
        "--compile-all",
        action="store_true",
        help="also compile DenseNet-121 (minutes of compilation; by default only the ECG backbone)",
    )
    p.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default inductor; eager under --quick: the code path, not the codegen)",
    )


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--quick", action="store_true", help="toy sizes: the code paths in seconds, e.g. on a CPU")
    p.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check" / "gpu_check.json"))
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (run in that order: peak before steps, so that the "
        "steps have their fraction of peak)",
    )
    step_options(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs of the short runs (default 2; 1 quick)")
    p.add_argument("--loader-precision", default="fp32", help="trainer.precision of the loader check (default fp32)")
    p.add_argument("--xray-images", type=int, default=3000, help="generated 1024-px images for the loader check")
    p.add_argument("--ecg-records", type=int, default=3000, help="generated 8x5000 records for sections 3 and 4")
    p.add_argument(
        "--shared-epochs",
        type=int,
        default=None,
        help="epochs of each run sharing the GPU (default 4, long enough for the runs to overlap; 1 quick)",
    )
    p.add_argument("--num-workers", type=int, default=8, help="trainer.num_workers of the loader check")
    p.add_argument("--shared", default="1,2,4", help="runs at once to compare (default 1,2,4; 1,2 quick)")
    p.add_argument("--threads", type=int, default=None, help="trainer.num_threads of every run (default: PyTorch's)")
    p.add_argument("--keep", action="store_true", help="keep the generated data and runs (printed path)")
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 10)
    args.profile_steps = (2 if args.quick else 3) if args.profile_steps is None else args.profile_steps
    args.compile_backend = args.compile_backend or ("eager" if args.quick else "inductor")
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.shared_epochs = args.shared_epochs or (1 if args.quick else 4)
    args.shared = [int(k) for k in (args.shared if not args.quick or args.shared != "1,2,4" else "1,2").split(",")]
    asked = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(asked) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in asked]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device {args.device}: no CUDA device is visible; allowed: cpu (with --quick for toy sizes)",
            file=sys.stderr,
        )
        return 2
    perf.setup(device)  # the trainer's settings: cuDNN autotuning and TF32 on CUDA
    started = time.perf_counter()
    report = Report(
        Path(args.out),
        {
            "device": device_info(device),
            "quick": args.quick,
            "batch": args.batch,
            "sections": args.sections,
            "rows": perf.row_names(),
        },
    )
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print(f"gpu_check on {report.data['device'].get('name')} ({device}); writing {args.out}", flush=True)
    sections = {
        "peak": lambda: section_peak(args, device, report),
        "steps": lambda: section_steps(args, device, report),
        "loader": lambda: section_loader(args, device, work, env, report),
        "shared": lambda: section_shared(args, device, work, env, report),
        "deterministic": lambda: section_deterministic(args, device, work, env, report),
    }
    failed = []
    for name in args.sections:
        t0 = time.perf_counter()
        print(f"[{name}]", flush=True)
        try:
            sections[name]()
        except Exception as err:
            failed.append(name)
            report.set(f"{name}_error", f"{type(err).__name__}: {err}")
            print(f"  {name} failed: {err}", flush=True)
        report.set("section_s", {**report.data.get("section_s", {}), name: round(time.perf_counter() - t0, 1)})
    report.set("wall_s", round(time.perf_counter() - started, 1))
    print_tables(report.data)
    if args.keep:
        print(f"generated data and runs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def print_tables(d: dict) -> None:
    dev = d["device"]
    print(f"\n## gpu_check: {dev.get('name')} ({dev['device']}, torch {dev['torch']}), wall {d.get('wall_s')} s")
    if d.get("steps"):
        print("\n### Training step, batch", d["batch"])
        print(
            perf.table(
                d["steps"],
                [
                    ("backbone", "backbone", ""),
                    ("regularizer", "regularizer", ""),
                    ("precision", "precision", ""),
                    ("compile", "compile", ""),
                    ("cuda_graph", "graph", ""),
                    ("channels_last", "NHWC", ""),
                    ("step_ms", "step ms", ".1f"),
                    ("vs_erm", "vs ERM", ".2f"),
                    ("samples_per_s", "samples/s", ".0f"),
                    ("achieved_tflop_per_s", "TFLOP/s", ".3f"),
                    ("fraction_of_peak", "of peak", ".1%"),
                    ("busy_share", "busy", ".0%"),
                    ("syncs_in_step", "syncs", ""),
                    ("peak_mem_gib", "peak GiB", ".2f"),
                    ("error", "error", ""),
                ],
            )
        )
    print_ceiling(d)
    if d.get("loader"):
        print("\n### Loader during a real ChestX-ray14 training")
        print(
            perf.table(
                [d["loader"]],
                [
                    ("images", "images", ""),
                    ("resolution", "px", ""),
                    ("num_workers", "workers", ""),
                    ("train_steps", "steps", ""),
                    ("data_wait_fraction", "waiting for data", ".1%"),
                    ("train_samples_per_s", "samples/s", ".0f"),
                ],
            )
        )
    if d.get("shared_gpu"):
        print("\n### Several ECG runs on one GPU (joblib launcher)")
        print(
            perf.table(
                d["shared_gpu"],
                [
                    ("runs_at_once", "runs at once", ""),
                    ("aggregate_samples_per_s", "total samples/s", ".0f"),
                    ("vs_one_run", "vs one run", ".2f"),
                    ("wall_s", "wall s", ".0f"),
                ],
            )
        )
    if d.get("deterministic"):
        print(f"\n### trainer.deterministic=true: identical metrics in two runs: {d['deterministic']['identical']}")
    for key in [k for k in d if k.endswith("_error")]:
        print(f"\n{key}: {d[key]}")


def print_ceiling(d: dict) -> None:
    """The device's own ceiling (the peak section) and what the steps' busy share is measured from."""
    if d.get("peak"):
        rates = ", ".join(f"{k} {m['tflop_per_s']:.3f}" for k, m in d["peak"]["matmul"].items())
        print(f"\nDevice ceiling: matmul peak TFLOP/s {rates}; copy {d['peak']['copy_bytes_per_s'] / 1e9:.1f} GB/s")
    sources = sorted({r["busy_source"] for r in d.get("steps") or [] if r.get("busy_source")})
    for source in sources:
        print(f"busy = {source}")


if __name__ == "__main__":
    sys.exit(main())
