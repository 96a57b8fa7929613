"""What ``scripts/bench.py`` and ``scripts/gpu_check.py`` measure with: one way to build, time and report.

* **Rows** (:func:`paper_rows`, :func:`regularizers`): the paper's table rows, in its order, and the regularizer of
  each under the short name the timing files use (``erm``, ``mixup``, ``manifold_mixup``, ``flowmixup_op_false``,
  ``flowmixup_op_true``: :func:`timing_name`, the name ``reproduce_tables.py --plan`` looks rows up by).
* **Backbones** (:class:`Backbone`, :func:`backbones`): the benchmark models, each a set of overrides composed with
  Hydra from ``conf/`` (``conf/backbone/*.yaml``, the paper's experiments), with the input it is fed.
* **Probes** (:class:`Probe`): one model, regularizer, loss and optimiser built from a composed config by the
  trainer's own functions (:mod:`flowmixup.training.build`), stepped by the trainer's own
  :func:`~flowmixup.training.loop.train_step` on a fixed random batch.
* **Timing** (:func:`measure`, :func:`time_round_robin`): every variant of a backbone built and warmed up, then
  timed round-robin (one step of each in turn, so that drift of the machine hits all alike), medians reported.
* **FLOPs and the matmul peak** (:meth:`Probe.count_flops`, :func:`matmul_peak`, :func:`set_utilisation`).
* **Tables** (:func:`table`): Markdown through ``pandas.DataFrame.to_markdown`` when ``tabulate`` is installed.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

# the regularizers also timed with trainer.compile (the others compile the same way: the whole model or the pieces
# between the same mix points)
COMPILED = ("erm", "flowmixup_op_false")


# ----------------------------------------------------------------------------------------------------------------
# configs: the rows and the backbones
# ----------------------------------------------------------------------------------------------------------------
def conf_dir() -> Path:
    """The project's ``conf/``, found as ``train.py`` finds it (:func:`flowmixup.project.conf_dir`)."""
    from .project import conf_dir as project_conf_dir

    return project_conf_dir()


def compose(overrides: Iterable[str]) -> DictConfig:
    """The config ``train.py`` would run with these overrides (Hydra's compose API over ``conf/``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def paper_rows() -> dict[str, list[str]]:
    """The paper's table rows in its order: row name -> the overrides that make it, as ``conf/reproduce/rows.yaml``
    defines them once (:func:`flowmixup.sweep.rows.row_overrides`)."""
    from .sweep.rows import row_overrides

    return {name: list(overrides) for name, overrides in row_overrides(conf_dir()).items()}


def timing_name(cfg: DictConfig) -> str:
    """A composed config's regularizer as the timing files name it (:func:`flowmixup.sweep.rows.timing_name`: the
    option's ``name``, and for Flow-Mixup its Op). Alpha is not in it: it changes the draw of lambda, not the step."""
    from .sweep.rows import timing_name as name_of

    return name_of(str(cfg.regularizer.name), OmegaConf.select(cfg, "regularizer.keep_original", default=None))


@dataclass(frozen=True)
class Regularizer:
    name: str  # as in the timing files: erm, mixup, manifold_mixup, flowmixup_op_false, flowmixup_op_true
    row: str  # the paper row it is timed as
    overrides: tuple[str, ...]


@lru_cache(maxsize=None)
def _timing_name_of(overrides: tuple[str, ...]) -> str:
    return timing_name(compose(overrides))


def row_names() -> dict[str, str]:
    """Every paper row -> the regularizer name its timing is found under (``mixup_a3`` -> ``mixup``)."""
    return {row: _timing_name_of(tuple(overrides)) for row, overrides in paper_rows().items()}


def regularizers() -> dict[str, Regularizer]:
    """The regularizers to time, from :func:`paper_rows` in its order, under their :func:`timing_name`. Rows with the
    same timing name cost the same step (``mixup_a1``, ``mixup_a3``): the first of them is timed."""
    out: dict[str, Regularizer] = {}
    for row, overrides in paper_rows().items():
        name = _timing_name_of(tuple(overrides))
        out.setdefault(name, Regularizer(name, row, tuple(overrides)))
    return out


@dataclass(frozen=True)
class Backbone:
    label: str  # "backbone" in the JSON files and tables
    overrides: tuple[str, ...]  # composed with every row's
    input: tuple[int, ...]  # one sample: (channels, length) or (channels, height, width)
    classes: int
    full_size: bool = False  # the paper's size: skipped by bench --quick, fewer rounds
    compile: bool = True  # also time trainer.compile (False: minutes to compile, e.g. DenseNet-121)
    graph: bool = True  # also time trainer.cuda_graph on CUDA (False: a large step, not host-bound; a graph per
    # variant keeps its activations' memory, which ten DenseNet-121 variants at 1024 px would pile up)


PRESETS = {
    "bench": (  # small presets for a CPU, and the paper's ECG model
        Backbone("resnet1d (small, 8x500)", ("backbone=resnet1d",), (8, 500), 15),
        Backbone(
            "resnet34_1d (paper, 8x5000)", ("backbone=resnet34_1d",), (8, 5000), 12, full_size=True, compile=False
        ),
        Backbone("densenet_small (1x256x256)", ("backbone=densenet_small",), (1, 256, 256), 14),
    ),
    "paper": (  # the paper's two settings, as their experiments define them
        Backbone(
            "densenet121 + 2 stem convs, 1x1024x1024",
            ("experiment=paper_chestxray14",),
            (1, 1024, 1024),
            14,
            full_size=True,
            compile=False,
            graph=False,
        ),
        Backbone("resnet34_1d, 8x5000", ("experiment=paper_ecg12",), (8, 5000), 12, full_size=True),
    ),
    "paper_toy": (  # the same code paths at toy sizes (a CPU, the test suite)
        Backbone(
            "densenet121_stem (toy: densenet_small, 1x64x64)",
            ("experiment=paper_chestxray14", "backbone=densenet_small", "backbone.stem_convs=1"),
            (1, 64, 64),
            14,
            compile=False,
        ),
        Backbone(
            "resnet34_1d (toy: 8x500, width 8)",
            ("experiment=paper_ecg12", "backbone.width=8", "backbone.blocks=[2,1,1,1]"),
            (8, 500),
            12,
        ),
    ),
}


def backbones(preset: str, quick: bool = False) -> tuple[Backbone, ...]:
    """bench's backbones (``quick``: without the full-size one) or gpu_check's paper ones (``quick``: toy sizes)."""
    if preset == "paper":
        return PRESETS["paper_toy" if quick else "paper"]
    return tuple(b for b in PRESETS[preset] if not (quick and b.full_size))


@dataclass(frozen=True)
class Variant:
    """One timed configuration of a backbone: a regularizer at a precision, compiled or not."""

    reg: Regularizer
    precision: str = "fp32"
    compile: bool = False
    graph: bool = False  # trainer.cuda_graph (CUDA only)
    nchw: bool = False  # trainer.channels_last=false: an image model in PyTorch's default layout (NHWC is the default)

    @property
    def key(self) -> str:
        extra = ("+compile" if self.compile else "") + ("+graph" if self.graph else "") + ("+nchw" if self.nchw else "")
        return f"{self.reg.name}{extra}@{self.precision}"

    def overrides(self, backbone: Backbone, device: torch.device, batch: int, backend: str) -> list[str]:
        return [
            *backbone.overrides,
            *self.reg.overrides,
            f"trainer.device={device}",
            f"trainer.batch_size={batch}",
            f"trainer.precision={self.precision}",
            f"trainer.compile={str(self.compile).lower()}",
            f"trainer.compile_backend={backend}",
            *(["trainer.cuda_graph=true"] if self.graph else []),
            *(["trainer.channels_last=false"] if self.nchw else []),
        ]


def variants(
    precisions: Iterable[str] = ("fp32",), compiled: bool = False, graphed: bool = False, layouts: bool = False
) -> list[Variant]:
    """Every regularizer at every precision; with ``compiled``, :data:`COMPILED` also with ``trainer.compile`` at the
    last precision, each beside its eager row; with ``graphed`` (CUDA), every one also with ``trainer.cuda_graph``;
    with ``layouts`` (image models), ERM also in NCHW at every precision: the {precision} x {NCHW, NHWC} grid."""
    precisions, out = list(precisions), []
    for reg in regularizers().values():
        for precision in precisions:
            out.append(Variant(reg, precision))
            if layouts and reg.name == "erm":
                out.append(Variant(reg, precision, nchw=True))
            if graphed:
                out.append(Variant(reg, precision, graph=True))
            if compiled and precision == precisions[-1] and reg.name in COMPILED:
                out.append(Variant(reg, precision, compile=True))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the device
# ----------------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so that a timer sees the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(device: torch.device) -> None:
    """The trainer's process-wide settings for ``device`` (seeds; on CUDA cuDNN autotuning and TF32, as a training run
    without ``trainer.deterministic`` has them), so that what is measured is what training does."""
    from .training.build import setup_torch

    setup_torch(compose([f"trainer.device={device}"]))


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def release(device: torch.device) -> None:
    """Hand freed memory back (after a probe is dropped, e.g. out of memory), so the next starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# one variant, built as the trainer builds it
# ----------------------------------------------------------------------------------------------------------------
class Probe:
    """A model, regularizer, loss and optimiser built from a composed config by the trainer's own build functions
    (:func:`~flowmixup.training.build.build_network`: the model on its device, channels-last for images, the input
    checked against it, the mix points, the regularizer, ``trainer.compile``), stepped by the trainer's own
    :func:`~flowmixup.training.loop.train_step` on one fixed random batch of ``batch`` samples."""

    def __init__(self, cfg: DictConfig, backbone: Backbone, batch: int):
        from .data.base import LabeledArrays
        from .training import build

        self.device = build.pick_device(str(cfg.trainer.device))
        build.seed_everything(int(cfg.seed))  # every variant starts from the same weights
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *backbone.input), dtype=np.float32)
        labels = (rng.random((max(256, batch), backbone.classes)) < 0.2).astype(np.float32)  # the loss's weights
        data = LabeledArrays(
            x,
            labels[:batch],
            [f"class_{i}" for i in range(backbone.classes)],
            {"train": np.arange(batch), "val": np.arange(0), "test": np.arange(0)},
        )
        sync(self.device)
        self._before = torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0
        self.resident = 0
        self.model, self.mix_points, self.reg, _ = build.build_network(cfg, data, self.device)
        self.criterion = build.build_loss(cfg, labels).to(self.device)
        self.optimizer = build.build_optimizer(cfg, self.model)
        self.model.train()
        self.bf16 = cfg.trainer.precision == "bf16"
        self.x = build.to_input(torch.from_numpy(x), self.device, bool(cfg.trainer.channels_last))
        self.y = torch.from_numpy(labels[:batch]).to(self.device)
        self.graph = None
        if OmegaConf.select(cfg, "trainer.cuda_graph", default=False):  # the trainer's captured step
            from .training.graph import GraphStep

            self.graph = GraphStep(self.reg, self.criterion, self.optimizer, self.model, batch, self.bf16, self.device)

    def step(self) -> None:
        from .training.loop import train_step

        if self.graph is not None:
            self.graph(self.x, self.y)
        else:
            train_step(self.reg, self.criterion, self.optimizer, self.x, self.y, self.bf16)

    def busy_share(self, steps: int) -> tuple[float, str]:
        """(the share of ``steps`` steps' wall time in which the device works, what it is measured from), by
        ``torch.profiler``: on CUDA the kernels' self device time; on CPU, where there is no device to idle, the aten
        operators' self CPU time, the stand-in (the host's Python, dispatch and launch overhead are the rest)."""
        from torch.profiler import ProfilerActivity, profile

        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        sync(self.device)
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                self.step()
            sync(self.device)
            wall = time.perf_counter() - t0
        events = prof.key_averages()
        if cuda:
            busy_us = sum(e.self_device_time_total for e in events)
            return busy_us / 1e6 / wall, "cuda: kernels' self device time (torch.profiler) / wall time"
        busy_us = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::"))
        return busy_us / 1e6 / wall, "cpu stand-in: aten operators' self CPU time (torch.profiler) / wall time"

    def count_syncs(self) -> int | None:
        """Host-device synchronisations in one step (CUDA: ``torch.cuda.set_sync_debug_mode("warn")``, which warns
        at every synchronising call; None on CPU, which has none)."""
        if self.device.type != "cuda":
            return None
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                self.step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message).lower() for w in caught)

    def count_flops(self) -> int:
        """The FLOPs of one training step (forward, loss, backward; ``torch.utils.flop_counter``), by running one."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self.step()
        return int(counter.get_total_flops())

    def warm(self, steps: int) -> float:
        """Run ``steps`` steps (compilation, cuDNN autotuning, the optimiser's state happen here); their seconds. What
        stays allocated after them (weights, gradients, Adam's state, the batch) is this probe's ``resident`` memory."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        if self.device.type == "cuda":
            self.resident = torch.cuda.memory_allocated(self.device) - self._before
        return time.perf_counter() - t0

    def timed_step(self) -> tuple[float, int | None]:
        """(seconds of one step, from an idle device to the step's end; on CUDA the bytes a run training only this
        variant would hold at the step's peak: resident memory plus what the step allocates on top)."""
        cuda = self.device.type == "cuda"
        sync(self.device)
        if cuda:
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        self.step()
        sync(self.device)
        seconds = time.perf_counter() - t0
        peak = self.resident + torch.cuda.max_memory_allocated(self.device) - base if cuda else None
        return seconds, peak


# ----------------------------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and self.error is None else None


def time_round_robin(probes: dict[str, Probe], rounds: int) -> dict[str, Timing]:
    """``rounds`` rounds of one step of each probe in turn, so that drift of the machine (clock, caches, other load)
    hits all of them alike. A probe whose step raises (e.g. out of memory) leaves the rotation with its error, and
    ``probes``, so that its memory is freed for the others."""
    timings = {key: Timing() for key in probes}
    for _ in range(rounds):
        for key in list(probes):
            try:
                seconds, peak = probes[key].timed_step()
            except Exception as err:  # noqa: BLE001 - a variant that does not fit is a result
                timings[key].error = one_line(err)
            else:
                timings[key].seconds.append(seconds)
                if peak is not None:
                    timings[key].peak_bytes = max(peak, timings[key].peak_bytes or 0)
                continue
            release(probes.pop(key).device)  # outside the except clause: its traceback no longer holds the probe
    return timings


def _build(backbone: Backbone, variant: Variant, device, batch: int, backend: str, warmup: int, flops: bool):
    """(probe, its row's build fields): composed, built, FLOPs counted (eager variants), warmed up."""
    cfg = compose(variant.overrides(backbone, device, batch, backend))
    info = {"backbone_name": str(cfg.backbone.name)}
    probe = Probe(cfg, backbone, batch)
    if flops and not variant.compile and not variant.graph:
        info["flops"] = probe.count_flops()  # also a warm-up step
        warmup -= 1
    info["warmup_s"] = round(probe.warm(max(0, warmup) + (2 if variant.compile or variant.graph else 0)), 2)
    return probe, info


def measure(
    backbone: Backbone,
    todo: list[Variant],
    *,
    device: torch.device,
    batch: int,
    rounds: int,
    warmup: int,
    flops: bool = False,
    backend: str = "inductor",
    log: Callable[[str], None] = print,
    profile_steps: int = 0,
) -> list[dict]:
    """Every variant of one backbone built and warmed up (``warmup`` steps; compiled ones 2 more), then timed
    round-robin over ``rounds`` rounds: one row per variant (median ``step_s``, ``samples_per_s``, ``peak_mem_gib`` on
    CUDA, ``flops`` if asked: a compiled or graphed variant has its eager twin's; with ``profile_steps``, each
    variant's ``busy_share`` over that many profiled steps and on CUDA its ``syncs_in_step``: :func:`profile_rows`).
    A variant that fails to build or to step gets ``ok: false`` and its ``error``; the others go on."""
    rows, probes = {}, {}
    for v in todo:
        rows[v.key] = {
            "backbone": backbone.label,
            "backbone_name": None,
            "input": list(backbone.input),
            "row": v.reg.row,
            "regularizer": v.reg.name,
            "precision": v.precision,
            "compile": v.compile,
            "cuda_graph": v.graph,
            "channels_last": not v.nchw,
            "batch": batch,
        }
        try:
            probes[v.key], info = _build(backbone, v, device, batch, backend, warmup, flops)
            rows[v.key].update(info)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory, or a failed compilation
            rows[v.key].update(ok=False, error=one_line(err))
        if v.key not in probes:
            release(device)  # outside the except clause, whose traceback holds the half-built probe
        log(
            f"  {backbone.label[:34]:34s} {v.key:28s} "
            + (f"built, warm-up {rows[v.key]['warmup_s']} s" if v.key in probes else rows[v.key]["error"])
        )
        if flops and (v.compile or v.graph):
            rows[v.key]["flops"] = rows.get(replace(v, compile=False, graph=False, nchw=v.nchw).key, {}).get("flops")
    for key, t in time_round_robin(probes, rounds).items():
        ok = t.median is not None
        rows[key].update(
            ok=ok,
            timed_steps=len(t.seconds),
            **({"step_s": t.median, "samples_per_s": batch / t.median} if ok else {"error": t.error}),
        )
        if t.peak_bytes is not None:
            rows[key]["peak_mem_gib"] = t.peak_bytes / 2**30
    if profile_steps:
        profile_rows(probes, rows, profile_steps)
    probes.clear()
    release(device)
    return list(rows.values())


def profile_rows(probes: dict[str, Probe], rows: dict[str, dict], steps: int) -> None:
    """Each timed variant's ``busy_share`` (:meth:`Probe.busy_share`), ``busy_source``, and on CUDA its
    ``syncs_in_step`` (:meth:`Probe.count_syncs`); a variant whose profiling fails keeps its timing."""
    for key, probe in probes.items():
        if not rows[key].get("ok"):
            continue
        try:
            rows[key]["busy_share"], rows[key]["busy_source"] = probe.busy_share(steps)
            syncs = probe.count_syncs()
        except Exception as err:  # noqa: BLE001 - a profiler that fails leaves the timing standing
            rows[key]["profile_error"] = one_line(err)
            continue
        if syncs is not None:
            rows[key]["syncs_in_step"] = syncs


# ----------------------------------------------------------------------------------------------------------------
# the dense matmul peak, and utilisation against it
# ----------------------------------------------------------------------------------------------------------------
# (m, k, n) of the products searched for the peak: squares, and the tall-skinny and wide shapes that convolutions
# lower to (im2col: many output positions x a short channel-kernel product), so the peak is one they can reach
PEAK_SHAPES = (
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (4096, 4096, 4096),
    (16384, 576, 256),
    (4096, 192, 4096),
    (256, 4096, 4096),
)
QUICK_PEAK_SHAPES = PEAK_SHAPES[:2] + PEAK_SHAPES[3:5]


def matmul_peak(
    device: torch.device, shapes=PEAK_SHAPES, trials: int = 5, dtype: torch.dtype = torch.float32
) -> tuple[float, tuple[int, int, int]]:
    """The machine's peak dense matmul FLOP/s in ``dtype`` (float32 by default) and the shape that reached it: after
    two warm-up products per shape, the best of ``trials`` single products (a peak, not an average: averages over a
    cold start under-state it). On CUDA under the trainer's settings (:func:`setup`), float32 is TF32 where they
    allow it, as training's products."""
    best, best_shape = 0.0, tuple(shapes[0])
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
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


def set_utilisation(rows: list[dict], device: torch.device, shapes, start: tuple) -> dict:
    """Set each row's ``mfu_vs_matmul``: its counted FLOP/s divided by a peak that bounds them all: the best matmul
    at the start (``start``) and at the end of the run; if a workload still runs faster, the peak is measured again
    more thoroughly, and if the workload is still faster (a convolution's counted FLOPs can exceed the arithmetic
    that oneDNN / cuDNN does, e.g. with Winograd), the workload's own rate is the peak and ``how`` says so. Never
    above 1. Returns ``{flop_per_s, shape, how}``."""
    end = matmul_peak(device, shapes)
    rate, shape = max(start, end)
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    how = (
        f"best single float32{' (TF32 allowed)' if tf32 else ''} product of {len(shapes)} GEMM shapes after "
        f"warm-up, measured at the start ({start[0] / 1e9:.1f} GFLOP/s) and at the end ({end[0] / 1e9:.1f}) of "
        f"the run; best shape {'x'.join(map(str, shape))}"
    )
    timed = [r for r in rows if r.get("train_flop_per_s")]
    fastest = max(timed, key=lambda r: r["train_flop_per_s"], default=None)
    if fastest is not None and fastest["train_flop_per_s"] > rate:
        again = matmul_peak(device, shapes, trials=15)
        if again[0] > rate:
            rate, shape = again
            how += f"; re-measured (15 trials per shape) because a workload exceeded it: {rate / 1e9:.1f} GFLOP/s"
        if fastest["train_flop_per_s"] > rate:
            which, fast = f"{fastest['backbone']} / {fastest['regularizer']}", fastest["train_flop_per_s"]
            print(
                f"[bench] {which} runs at {fast / 1e9:.1f} GFLOP/s counted, above the matmul peak "
                f"{rate / 1e9:.1f}: its convolutions do fewer operations than the counted direct form; "
                "utilisation is reported against the workload's rate instead",
                flush=True,
            )
            how += f"; {which} exceeded it at {fast / 1e9:.1f} GFLOP/s (counted FLOPs), which is used as the peak"
            rate = fast
    for r in timed:
        r["mfu_vs_matmul"] = min(1.0, r["train_flop_per_s"] / rate)
    return {"flop_per_s": rate, "shape": list(shape), "how": how}


# the device's own ceiling, as gpu_check measures it: small shapes under --quick (the code path, in seconds)
TOY_PEAK_SHAPES = ((256, 256, 256), (512, 512, 512), (2048, 64, 256))


def copy_bandwidth(device: torch.device, nbytes: int, trials: int = 5) -> float:
    """Device memory bandwidth in bytes/s: the best of ``trials`` copies of an ``nbytes`` buffer into another,
    counted as read plus write (2 x ``nbytes`` moved), after one warm-up copy."""
    src = torch.empty(nbytes // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = 0.0
    for _ in range(trials):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = max(best, 2 * nbytes / (time.perf_counter() - t0))
    del src, dst
    return best


def precision_of_peak(device: torch.device) -> dict[str, str]:
    """Which peak each step precision is measured against: on CUDA fp32 steps against the float32 peak under the
    trainer's settings (TF32 where allowed, so named) and bf16 steps against bf16's; on CPU both against float32."""
    if device.type != "cuda":
        return {"fp32": "fp32", "bf16": "fp32"}
    return {"fp32": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32", "bf16": "bf16"}


def device_ceiling(device: torch.device, quick: bool = False) -> dict:
    """The device's own ceiling, measured in this run: the dense matmul peak per precision of
    :func:`precision_of_peak` (CUDA: TF32 or fp32, and bf16; CPU: fp32) and the copy bandwidth."""
    shapes = TOY_PEAK_SHAPES if quick else PEAK_SHAPES
    nbytes = (16 if quick or device.type != "cuda" else 1024) * 2**20
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
    matmul = {}
    for name in dict.fromkeys(precision_of_peak(device).values()):
        rate, shape = matmul_peak(device, shapes, dtype=dtypes[name])
        matmul[name] = {"flop_per_s": rate, "tflop_per_s": rate / 1e12, "shape": list(shape)}
    return {
        "matmul": matmul,
        "copy_bytes_per_s": copy_bandwidth(device, nbytes),
        "copy_buffer_mib": nbytes // 2**20,
        "how": f"best single product of {len(shapes)} GEMM shapes after warm-up (float32 under the trainer's TF32 "
        f"setting on CUDA); bandwidth: best copy of a {nbytes // 2**20} MiB buffer, read + write counted",
    }


def set_peak_fields(rows: list[dict], ceiling: dict, device: torch.device) -> None:
    """Each timed row with counted ``flops``: ``achieved_tflop_per_s`` (counted FLOPs / median step time), the
    ``peak_tflop_per_s`` of its precision (:func:`precision_of_peak`), ``fraction_of_peak`` and ``peak_used``."""
    which = precision_of_peak(device)
    for r in rows:
        if not r.get("ok") or not r.get("flops") or not r.get("step_s"):
            continue
        peak = ceiling["matmul"].get(which.get(r["precision"], "fp32"))
        r["achieved_tflop_per_s"] = r["flops"] / r["step_s"] / 1e12
        if peak:
            r["peak_used"] = which.get(r["precision"], "fp32")
            r["peak_tflop_per_s"] = peak["tflop_per_s"]
            r["fraction_of_peak"] = r["achieved_tflop_per_s"] / peak["tflop_per_s"]


# ----------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------
def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``: ``cols`` are (key, header, format spec); a missing value is ``n/a``; a column of
    numbers is right-aligned. Through ``pandas.DataFrame.to_markdown`` (``tabulate``) where ``tabulate`` is
    installed, else the same pipe table written here."""
    cells = [["n/a" if r.get(k) is None else format(r[k], f) for k, _, f in cols] for r in rows]
    heads = [h for _, h, _ in cols]
    numeric = [
        all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows if r.get(k) is not None)
        and any(r.get(k) is not None for r in rows)
        for k, _, _ in cols
    ]
    try:
        import tabulate  # noqa: F401 - pandas' to_markdown needs it
    except ImportError:
        lines = ["| " + " | ".join(heads) + " |", "|" + "".join("---:|" if n else "---|" for n in numeric)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    import pandas as pd

    align = ["right" if n else "left" for n in numeric]
    return pd.DataFrame(cells, columns=heads).to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
