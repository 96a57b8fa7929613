"""``run(cfg) -> summary``: one training run, top to bottom.

data -> label corruption -> backbone -> regularizer -> Adam + ReduceLROnPlateau -> for each epoch: train, evaluate
validation AND test, checkpoint -> per-class table, predictions, and ``summary.json`` written last (its presence
means the run ended). Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..data.base import ArrayDataset, DataError, LabeledArrays, batch_collate
from ..data.corruption import changed_fraction, corrupt_labels
from ..io import atomic_path, write_json, write_text
from . import faults
from .checks import ConfigError, check_config, check_writable
from .losses import BCE, WeightedBCE
from .loggers import make_logger
from .metrics import Scores, normalized_variance, score

log = logging.getLogger("flowmixup")

LOSSES = {"bce": BCE, "weighted_bce": WeightedBCE}
METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "val_macro_f1", "test_auc", "test_macro_f1"]


class NonFiniteLoss(RuntimeError):
    pass


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, another format): one line with its path and the ways out."""


class RunDirBusy(RuntimeError):
    """Another live process is training in this run directory."""


class RunDirLock:
    """An exclusive lock on ``<run_dir>/.lock`` for the whole run (``flock``: the kernel drops it when its process
    dies, however it dies). A second run in the same folder stops at once naming the holder's PID; a lock file left
    by a dead process is taken over, and the log says so. The file holds the holder's PID while it runs."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunDirLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            raise RunDirBusy(f"{self.path.parent} is in use by another training run (PID "
                             f"{holder[0] if holder else 'unknown'}); wait for it to end, or give this run its own "
                             "folder (hydra.run.dir=...)") from None
        previous = os.pread(fd, 64, 0).decode(errors="replace").split()
        if previous and previous[0] != str(os.getpid()):
            log.warning("%s: taking over the lock left by PID %s, which is no longer running", self.path.parent,
                        previous[0])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a clean end leaves no holder behind
            os.close(self.fd)  # releases the flock
            self.fd = None


def ignore_sigint_in_worker(_worker_id: int) -> None:
    """DataLoader workers share the terminal's process group: leave Ctrl-C to the main process, which saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        from .checks import check_cuda

        check_cuda(name)
    return torch.device(name)


def instantiate(node, **extra):
    """``hydra.utils.instantiate(node, **extra)`` with every config value passed as a plain container.

    Hydra wraps whatever the callee raises in an ``InstantiationException``; the callee's own exception (a
    ``DataError`` of a dataset loader, a ``RegularizerError``...) is raised instead, so a bad value reaches the user
    as the callee's one-line message.
    """
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, _convert_="all", **extra)
    except InstantiationException as err:
        if str(err).startswith("Error locating target"):  # a _target_ that does not import
            key = str(err).rsplit("full_key: ", 1)[-1].strip() if "full_key: " in str(err) else "_target_"
            cause = " ".join(str(err.__cause__).split()) if err.__cause__ else ""
            raise ConfigError(f"{key}._target_: cannot import {node.get('_target_')!r} ({cause}); allowed: an "
                              "importable class or function, module.name (is its folder on PYTHONPATH?)",
                              key=f"{key}._target_") from None
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def load_data(cfg: DictConfig) -> LabeledArrays:
    try:
        data = instantiate(cfg.dataset.loader)
    except DataError as err:
        raise DataError(_prepare_hint_with_overrides(str(err))) from None
    for split in ("train", "val", "test"):
        if len(data.splits[split]) == 0:
            raise DataError(f"dataset={cfg.dataset.name}: the {split} split is empty; check the dataset's size and split settings")
    return data


def build_model(cfg: DictConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    return instantiate(cfg.backbone.net, in_channels=in_channels, num_classes=num_classes)


def resolve_mix_points(cfg: DictConfig, model: torch.nn.Module) -> list[str] | None:
    """The mix points of the regularizer: its own list, else the backbone's paper mix points (checked by name)."""
    if "mix_points" not in cfg.regularizer:
        return None
    if cfg.regularizer.mix_points is not None:
        points = list(cfg.regularizer.mix_points)
    else:
        if not hasattr(model, "paper_mix_points"):
            raise ConfigError(f"regularizer.mix_points: null, but backbone={cfg.backbone.name} has no default mix "
                              "points; allowed: a list of its submodule names, e.g. regularizer.mix_points=[...]",
                              key="regularizer.mix_points")
        try:
            points = model.paper_mix_points()
        except ValueError as err:
            raise ConfigError(f"regularizer.mix_points: null (the paper's), but {err} (backbone={cfg.backbone.name}); "
                              "allowed: a larger backbone, or regularizer.mix_points=[...] naming its blocks",
                              key="regularizer.mix_points") from None
    from ..regularizers.base import resolve_mix_points as check_names

    return check_names(model, points)


def check_input_fits(cfg: DictConfig, model: torch.nn.Module, sample: torch.Tensor) -> None:
    """One sample through the model (eval mode, no gradient: no random draw, no BatchNorm update), so an input too
    small for the backbone's down-sampling is one line before training, not a traceback from inside a layer."""
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"backbone: {cfg.backbone.name} cannot take this dataset's input of shape "
                          f"{tuple(sample.shape[1:])} ({first}); allowed: a larger input (e.g. dataset.resolution) "
                          "or a backbone with fewer down-sampling stages", key="backbone") from None
    finally:
        model.train()


def check_mix_points(cfg: DictConfig) -> None:
    """Build the backbone alone (on the CPU, with 1 input channel and 2 classes: mix-point names depend on neither)
    and check the regularizer's mix points against it, so a multirun stops before its first cell, not in the middle."""
    if "mix_points" not in cfg.regularizer:
        return
    model = build_model(cfg, in_channels=1, num_classes=2)
    resolve_mix_points(cfg, model)


def _prepare_hint_with_overrides(message: str) -> str:
    """A loader's "Build it with: python scripts/prepare_data.py ..." hint, redone from the user's own overrides, so
    that the printed command builds the cache where this command looks for it (paths.data_dir, experiment...)."""
    marker = "python scripts/prepare_data.py"
    if marker not in message:
        return message
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return message
    keep = ("dataset", "paths", "experiment")
    overrides = [o for o in HydraConfig.get().overrides.task
                 if o.lstrip("+~").split("=", 1)[0].split(".")[0].split("/")[0] in keep]
    return message[: message.index(marker)] + " ".join([marker, *overrides])


def build_regularizer(cfg: DictConfig, model: torch.nn.Module, mix_points, generator: torch.Generator):
    extra = {"mix_points": mix_points} if mix_points is not None else {}
    return instantiate(cfg.regularizer.module, model=model, generator=generator, **extra)


def compile_units(model: torch.nn.Module, mix_points: list[str] | None) -> list[str]:
    """The largest submodules that contain no mix point: what ``trainer.compile`` compiles.

    Compiling the whole model would trace into the mixing hooks (Python state, a new lambda every step: endless
    recompilation); compiling the pieces between mix points keeps the hooks eager and everything else compiled.
    Without mix points (ERM, Mixup) the unit is the whole model (``""``).
    """
    points = [p for p in (mix_points or []) if p != "input"]
    if not points:
        return [""]

    def holds_point(name: str) -> bool:
        return any(p == name or p.startswith(name + ".") for p in points) if name else True

    units = []

    def visit(name: str, module: torch.nn.Module) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if holds_point(full):
                visit(full, child)
            elif any(True for _ in child.parameters()) or any(True for _ in child.children()):
                units.append(full)

    visit("", model)
    return units


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam as the paper (lr 1e-4, betas 0.9/0.999), fused into one kernel per step where PyTorch supports it
    (measured 5% faster per step than the per-parameter loop for the small 1-D ResNet on CPU)."""
    kwargs = dict(lr=cfg.trainer.lr, betas=tuple(cfg.trainer.betas), weight_decay=cfg.trainer.weight_decay)
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(model.parameters(), **kwargs)


def build_loss(cfg: DictConfig, train_labels: np.ndarray) -> torch.nn.Module:
    name = cfg.loss.name if cfg.loss.name != "auto" else cfg.dataset.get("loss_default", "bce")
    if name not in LOSSES:
        raise ValueError(f"loss={name} is unknown; allowed: auto, {', '.join(LOSSES)}")
    return LOSSES[name](train_labels)


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def save_predictions(path: Path, y_true: np.ndarray, y_score: np.ndarray, class_names: list[str], epoch: int) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, y_true=y_true.astype(np.uint8), y_score=y_score.astype(np.float32),
                     class_names=np.array(class_names), epoch=np.array(epoch))


def save_labels(path: Path, y: np.ndarray, class_names: list[str]) -> None:
    """The clean (uncorrupted) training labels, for dataset statistics such as Fig. 6's Independent Ratio."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, y=np.asarray(y, dtype=np.uint8), class_names=np.array(class_names))


# ----------------------------------------------------------------------------------------------------------------
# one epoch
# ----------------------------------------------------------------------------------------------------------------
class EpochBatches(Sampler):
    """The training batches of one epoch: ``perm`` cut into full batches, from batch ``start`` on.

    The trainer draws ``perm`` from its own generator at the start of each epoch and keeps it in mid-epoch
    checkpoints, so a resumed run sees exactly the batches the interrupted one would have seen.
    """

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size
        self.perm = torch.arange(n)
        self.start = 0

    def __len__(self) -> int:
        return self.n // self.batch_size - self.start

    def __iter__(self):
        for i in range(self.start, self.n // self.batch_size):
            yield self.perm[i * self.batch_size:(i + 1) * self.batch_size].tolist()


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGUSR1 arrived: a checkpoint was saved; the run exits and resumes from it later."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalWatch:
    """Turns Ctrl-C (SIGINT), SIGTERM and SIGUSR1 (SLURM preemption, submitit's timeout signal) into a flag the loop
    checks after each step. A second Ctrl-C aborts at once (KeyboardInterrupt). On exit, the previous handlers come
    back; for SIGTERM / SIGUSR1 a Python handler that was there (submitit's requeue) is then called with the
    signal, after our checkpoint is safely on disk."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                getattr(signal, "SIGUSR1", None)) if s)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._flag)
        return self

    def _flag(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.signum is not None:
                raise KeyboardInterrupt
            sys.stderr.write("\nCtrl-C: finishing this step and saving a checkpoint (Ctrl-C again aborts at once)\n")
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        handler = self.previous.get(self.signum)
        if self.signum != signal.SIGINT and callable(handler):
            handler(self.signum, None)


def train_epoch(state: "RunState", reg, model, loader, criterion, optimizer, device, cfg, watch: SignalWatch,
                save: Callable[[], None]) -> float:
    """Train from ``state.step`` to the end of epoch ``state.epoch + 1``; return its mean training loss."""
    model.train()
    epoch = state.epoch + 1
    precision_bf16 = cfg.trainer.precision == "bf16"
    check_every = 1 if device.type == "cpu" else 50
    pending: list[torch.Tensor] = []
    total = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
    n_batches = state.step + len(loader)

    def flush() -> None:
        if pending:
            bad = ~torch.isfinite(torch.stack(pending))
            if bool(bad.any()):
                first = state.step - len(pending) + 1 + int(bad.nonzero()[0, 0])
                raise NonFiniteLoss(f"non-finite training loss at epoch {epoch}, step {first}")
            pending.clear()

    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.trainer.epochs}", leave=False, initial=state.step, total=n_batches,
               disable=not cfg.trainer.progress, dynamic_ncols=True)
    for x, y in bar:
        x = to_input(x, device, cfg.trainer.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_bf16):
            logits, targets = reg(x, y)
        loss = criterion(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        faults.after_step(epoch, state.step)
        pending.append(loss.detach())
        total += loss.detach().double()
        if state.step % check_every == 0 or state.step == n_batches:
            flush()
            if cfg.trainer.progress:
                bar.set_postfix(loss=f"{float(total) / state.step:.4f}", refresh=False)
        if watch.signum is not None and state.step < n_batches:
            flush()
            state.loss_sum = float(total)
            save()
            bar.close()
            raise StopRequested(watch.signum)
    bar.close()
    return float(total) / max(n_batches, 1)


@torch.inference_mode()
def evaluate(model, loader, criterion, device, cfg) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss against the split's labels, and (labels, probabilities) as numpy arrays."""
    model.eval()
    loss_sum, n = 0.0, 0
    probs, labels = [], []
    for x, y in loader:
        x = to_input(x, device, cfg.trainer.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16"):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(criterion(logits, y)) * len(y)
        n += len(y)
        probs.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    return loss_sum / max(n, 1), np.concatenate(labels), np.concatenate(probs)


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the last one: the way back if the last one is damaged
CHECKPOINT_KEYS = ("config", "state", "model", "optimizer", "scheduler", "rng")
# keys that may differ between an interrupted run and its resumption (everything else must match)
RESUMABLE_CHANGES = ("trainer.epochs", "trainer.progress", "trainer.num_workers", "trainer.num_threads", "trainer.resume",
                     "trainer.skip_finished", "trainer.device", "logger", "paths")


@dataclass
class RunState:
    """Everything a checkpoint holds besides the model, optimiser and scheduler."""

    epoch: int = 0                      # completed epochs
    step: int = 0                       # completed steps of epoch ``epoch + 1`` (a mid-epoch checkpoint)
    loss_sum: float = 0.0               # training loss summed over those steps
    perm: torch.Tensor | None = None    # the batch order of epoch ``epoch + 1`` once drawn
    history: list[dict] = field(default_factory=list)
    per_epoch: list[Scores] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"auc": (-1.0, None), "macro_f1": (-1.0, None)})
    best_val: tuple = (math.inf, -1)    # (validation loss, epoch)
    last_probs: np.ndarray | None = None
    y_test: np.ndarray | None = None


def save_rotating(ckpt: dict, run_dir: Path) -> None:
    """Write ``checkpoint.pt`` atomically, keeping the one before as ``checkpoint.prev.pt``.

    Order: the new file is complete on disk (temporary name) -> the current one becomes the previous one -> the new
    one takes its name. A crash between the two renames leaves ``checkpoint.prev.pt`` alone, which :func:`run`
    then resumes from."""
    path = run_dir / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
        if path.is_file():
            os.replace(path, run_dir / PREVIOUS)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """The checkpoint at ``path``; a :class:`CheckpointError` in one line if it is damaged."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        problem = None if isinstance(ckpt, dict) and all(k in ckpt for k in CHECKPOINT_KEYS) else "not a flowmixup checkpoint"
    except Exception as err:  # truncated zip, a pickle of something else, a text file...
        problem = " ".join(f"{type(err).__name__}: {err}".split())[:160]
    if problem is None:
        return ckpt
    prev = path.with_name(PREVIOUS)
    way_back = f", or resume from the checkpoint before it: mv {prev} {path}" if prev.is_file() else ""
    raise CheckpointError(f"{path}: damaged checkpoint ({problem}); start over with trainer.resume=false{way_back}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_resumable(saved: dict, now: dict, path: Path) -> None:
    a, b = _flat(saved), _flat(now)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                    and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES))
    if differ:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ[:4])
        raise ConfigError(f"{path}: written by a different configuration ({shown}); use another run directory "
                          "or trainer.resume=false to start over")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train one configuration; write every output into ``run_dir`` (the Hydra run dir by default).

    If ``run_dir`` holds a checkpoint of the same configuration and no ``summary.json``, the run resumes from it
    (``trainer.resume=auto``, the default): an interrupted run ends with the same metrics as an uninterrupted one.
    """
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    check_config(cfg)
    check_writable(run_dir, "hydra.run.dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunDirLock(run_dir):
        return _run_locked(cfg, run_dir)


def _run_locked(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    started = time.time()
    done = run_dir / "summary.json"
    if cfg.trainer.skip_finished and done.is_file():
        summary = json.loads(done.read_text())
        log.info("%s already finished (status %s): skipped", run_dir, summary.get("status"))
        return summary
    seed_everything(cfg.seed)
    if cfg.trainer.num_threads:  # several runs side by side (joblib launcher): share the cores, don't oversubscribe
        torch.set_num_threads(int(cfg.trainer.num_threads))
    device = pick_device(cfg.trainer.device)
    if cfg.trainer.deterministic:  # bitwise-repeatable GPU runs, at some cost in speed
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.trainer.deterministic  # fixed input sizes: autotune convolutions
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not cfg.trainer.deterministic

    # data and labels: corruption hits train and validation, never test
    data = load_data(cfg)
    names = data.class_names
    y_clean = np.asarray(data.y, dtype=np.uint8)
    idx = data.splits
    y_train = corrupt_labels(y_clean[idx["train"]], cfg.noise, cfg.corruption.kind, seed=cfg.corruption.seed)
    y_val = corrupt_labels(y_clean[idx["val"]], cfg.noise, cfg.corruption.kind, seed=cfg.corruption.seed + 1)
    y_used = y_clean.astype(np.float32)
    y_used[idx["train"]] = y_train
    y_used[idx["val"]] = y_val
    corrupted = changed_fraction(y_clean[idx["train"]], y_train)
    if len(idx["train"]) < cfg.trainer.batch_size:
        raise DataError(f"the train split has {len(idx['train'])} samples, fewer than trainer.batch_size={cfg.trainer.batch_size}")

    # model, regularizer, loss, optimiser
    sample = np.asarray(data.x[np.array([0])])
    sample_shape = sample.shape
    model = build_model(cfg, in_channels=sample_shape[1], num_classes=len(names)).to(device)
    if cfg.trainer.channels_last and len(sample_shape) == 4:
        model = model.to(memory_format=torch.channels_last)
    check_input_fits(cfg, model, to_input(torch.from_numpy(sample), device, cfg.trainer.channels_last))
    mix_points = resolve_mix_points(cfg, model)
    reg_gen = torch.Generator().manual_seed(cfg.seed + 1)
    reg = build_regularizer(cfg, model, mix_points, reg_gen)
    if cfg.trainer.compile:  # in place: module names, hooks and the state dict stay as they are
        for unit in compile_units(model, mix_points):
            model.get_submodule(unit).compile(backend=cfg.trainer.compile_backend)
    criterion = build_loss(cfg, y_train).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.trainer.plateau_factor,
                                                           patience=cfg.trainer.plateau_patience)

    # the resolved config, with the mix points actually used
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if mix_points is not None:
        resolved["regularizer"]["mix_points"] = list(mix_points)

    batch_gen = torch.Generator().manual_seed(cfg.seed + 2)
    pin = device.type == "cuda"
    common = dict(collate_fn=batch_collate, num_workers=cfg.trainer.num_workers, pin_memory=pin,
                  persistent_workers=cfg.trainer.num_workers > 0, worker_init_fn=ignore_sigint_in_worker,
                  generator=torch.Generator().manual_seed(cfg.seed + 3))  # worker seeds only
    batches = EpochBatches(len(idx["train"]), cfg.trainer.batch_size)
    train_loader = DataLoader(ArrayDataset(data.x, y_used, idx["train"]), batch_sampler=batches, **common)
    val_loader = DataLoader(ArrayDataset(data.x, y_used, idx["val"]), batch_size=cfg.trainer.eval_batch_size, **common)
    test_loader = DataLoader(ArrayDataset(data.x, y_used, idx["test"]), batch_size=cfg.trainer.eval_batch_size, **common)

    def save_checkpoint() -> None:
        ckpt = {"config": resolved, "state": state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": {
                    "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "regularizer": reg_gen.get_state(), "batches": batch_gen.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
        save_rotating(ckpt, run_dir)

    state = RunState()
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.is_file() and (run_dir / PREVIOUS).is_file():  # cut between the two renames of a save
        os.replace(run_dir / PREVIOUS, ckpt_path)
    resume = str(cfg.trainer.resume).lower()
    if resume == "true" and not ckpt_path.is_file():
        raise ConfigError(f"trainer.resume: true but {ckpt_path} does not exist; allowed: auto, false",
                          key="trainer.resume")
    if resume in ("auto", "true") and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, device)
        check_resumable(ckpt["config"], resolved, ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        reg_gen.set_state(rng["regularizer"])
        batch_gen.set_state(rng["batches"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        state = ckpt["state"]
        log.info("resuming %s from epoch %d, step %d", run_dir, state.epoch + 1, state.step)
    for stale in run_dir.glob(f".{CHECKPOINT}.*.tmp"):  # left by a write that a SIGKILL cut short (we hold the lock)
        stale.unlink(missing_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))

    log.info("dataset=%s (%d train / %d val / %d test, %d classes) backbone=%s %s noise=%s (%.1f%% of training "
             "labels changed) device=%s", cfg.dataset.name, len(idx["train"]), len(idx["val"]), len(idx["test"]),
             len(names), cfg.backbone.name, reg, cfg.noise, 100 * corrupted, device)

    logger = make_logger(cfg, run_dir, resolved)
    status, reason = "ok", None
    try:
        with SignalWatch() as watch:
            while state.epoch < cfg.trainer.epochs:
                epoch = state.epoch + 1
                t0 = time.time()
                if state.perm is None:
                    state.perm, state.step, state.loss_sum = torch.randperm(batches.n, generator=batch_gen), 0, 0.0
                batches.perm, batches.start = state.perm, state.step
                train_loss = train_epoch(state, reg, model, train_loader, criterion, optimizer, device, cfg, watch,
                                         save_checkpoint)
                val_loss, yv, pv = evaluate(model, val_loader, criterion, device, cfg)
                _, state.y_test, state.last_probs = evaluate(model, test_loader, criterion, device, cfg)
                if not math.isfinite(val_loss):
                    raise NonFiniteLoss(f"non-finite validation loss at epoch {epoch}")
                vs = score(yv, pv, names, cfg.metrics.threshold)
                ts = score(state.y_test, state.last_probs, names, cfg.metrics.threshold)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step(val_loss)
                state.per_epoch.append(ts)
                row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss, "val_auc": vs.auc,
                       "val_macro_f1": vs.macro_f1, "test_auc": ts.auc, "test_macro_f1": ts.macro_f1}
                state.history.append(row)
                for metric in state.best:
                    value = getattr(ts, metric)
                    if math.isfinite(value) and value > state.best[metric][0]:
                        state.best[metric] = (value, state.last_probs.copy())
                if val_loss < state.best_val[0]:
                    state.best_val = (val_loss, epoch)
                state.epoch, state.step, state.perm, state.loss_sum = epoch, 0, None, 0.0
                save_checkpoint()
                write_csv(run_dir / "metrics.csv", state.history, METRIC_COLUMNS)
                logger.log(row)
                log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  test_auc %.4f  test_macro_f1 %.4f  lr %.1e "
                         "(%.1fs)", epoch, cfg.trainer.epochs, train_loss, val_loss, ts.auc, ts.macro_f1, lr,
                         time.time() - t0)
                if watch.signum is not None and state.epoch < cfg.trainer.epochs:
                    raise StopRequested(watch.signum)
    except NonFiniteLoss as err:
        status, reason = "failed", str(err)
        log.error("%s; stopping (the last good checkpoint is kept in %s)", err, run_dir)
    except StopRequested as stop:
        where = f"epoch {state.epoch + 1}, step {state.step}" if state.step else f"the end of epoch {state.epoch}"
        log.warning("%s received: checkpoint saved at %s in %s; run the same command again (same run directory) "
                    "to resume", stop, where, run_dir)
        watch.forward()
        raise SystemExit(128 + stop.signum) from None
    finally:
        logger.finish()

    summary = _summarize(cfg, resolved, state.history, state.per_epoch, state.best, state.best_val, corrupted,
                         status, reason, started)
    if state.history:
        primary = cfg.dataset.primary_metric
        best_probs = state.best[primary][1] if state.best[primary][1] is not None else state.last_probs
        save_predictions(run_dir / "predictions_test_last.npz", state.y_test, state.last_probs, names,
                         len(state.history))
        save_labels(run_dir / "labels_train_clean.npz", y_clean[idx["train"]], names)
        save_predictions(run_dir / "predictions_test_best.npz", state.y_test, best_probs, names,
                         int(np.nanargmax([getattr(sc, primary) for sc in state.per_epoch])) + 1)
        write_csv(run_dir / "per_class.csv",
                  _per_class_rows(names, y_train, state.y_test, state.per_epoch, state.best_val[1]),
                  ["class", "train_count", "train_single_count", "test_count", "test_auc_best", "test_f1_best",
                   "test_auc_last", "test_f1_last", "test_auc_at_best_val", "test_f1_at_best_val"])
    write_json(run_dir / "summary.json", summary)
    return summary


def _per_class_rows(names, y_train, y_test, per_epoch: list[Scores], best_val_epoch: int) -> list[dict]:
    y_train = np.asarray(y_train) >= 0.5
    single = y_train.sum(axis=1) == 1
    auc_epoch = int(np.nanargmax([s.auc for s in per_epoch])) if any(np.isfinite(s.auc) for s in per_epoch) else -1
    f1_epoch = int(np.nanargmax([s.macro_f1 for s in per_epoch])) if any(np.isfinite(s.macro_f1) for s in per_epoch) else -1
    bv = per_epoch[best_val_epoch - 1] if best_val_epoch >= 1 else per_epoch[-1]
    rows = []
    for c, name in enumerate(names):
        rows.append({
            "class": name,
            "train_count": int(y_train[:, c].sum()),
            "train_single_count": int((y_train[:, c] & single).sum()),
            "test_count": int((np.asarray(y_test)[:, c] >= 0.5).sum()),
            "test_auc_best": per_epoch[auc_epoch].per_class_auc[c],
            "test_f1_best": per_epoch[f1_epoch].per_class_f1[c],
            "test_auc_last": per_epoch[-1].per_class_auc[c],
            "test_f1_last": per_epoch[-1].per_class_f1[c],
            "test_auc_at_best_val": bv.per_class_auc[c],
            "test_f1_at_best_val": bv.per_class_f1[c],
        })
    return rows


def _summarize(cfg, resolved, history, per_epoch, best, best_val, corrupted, status, reason, started) -> dict:
    reg = resolved["regularizer"]
    test_auc = [r["test_auc"] for r in history]
    test_f1 = [r["test_macro_f1"] for r in history]
    n_var = int(cfg.metrics.variance_epochs)
    var_auc, used = normalized_variance(test_auc, n_var)
    var_f1, _ = normalized_variance(test_f1, n_var)
    at = history[best_val[1] - 1] if best_val[1] >= 1 else None
    nan = float("nan")
    summary = {
        "status": status,
        "dataset": cfg.dataset.name,
        "primary_metric": cfg.dataset.primary_metric,
        "backbone": cfg.backbone.name,
        "regularizer": reg["name"],
        "alpha": reg.get("alpha"),
        "keep_original": reg.get("keep_original"),
        "mix_points": reg.get("mix_points"),
        "noise": float(cfg.noise),
        "corruption_kind": cfg.corruption.kind,
        "seed": int(cfg.seed),
        "epochs": len(history),
        "epochs_planned": int(cfg.trainer.epochs),
        "best_test_auc": max(test_auc, default=nan),
        "last_test_auc": test_auc[-1] if history else nan,
        "best_test_macro_f1": max(test_f1, default=nan),
        "last_test_macro_f1": test_f1[-1] if history else nan,
        "best_val_epoch": best_val[1] if history else None,
        "test_auc_at_best_val": at["test_auc"] if at else nan,
        "test_macro_f1_at_best_val": at["test_macro_f1"] if at else nan,
        "val_auc_at_best_val": at["val_auc"] if at else nan,
        "val_macro_f1_at_best_val": at["val_macro_f1"] if at else nan,
        "variance_auc": var_auc,
        "variance_macro_f1": var_f1,
        "variance_epochs": used,
        "corrupted_fraction": corrupted,
        "auc_excluded_classes": per_epoch[-1].auc_excluded if per_epoch else [],
        "f1_excluded_classes": per_epoch[-1].f1_excluded if per_epoch else [],
        "wall_time_s": round(time.time() - started, 2),
    }
    if reason:
        summary["reason"] = reason
    summary["config"] = resolved  # every setting of the run (as its config.yaml), for the report to group on
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
