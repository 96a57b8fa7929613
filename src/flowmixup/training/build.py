"""Everything a run trains with, built from the config: device, data and corrupted labels, loaders, model,
regularizer, loss, optimiser, scheduler, extra metrics. Every configured object is made by
:func:`instantiate` (``hydra.utils.instantiate``) from its ``_target_`` node."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Sampler

from ..data.base import ArrayDataset, DataError, LabeledArrays, batch_collate
from ..data.cache import read_row_data
from ..data.corruption import changed_fraction, class_rates, corrupt_labels
from ..data.expert_labels import MIN_POSITIVES, ExpertSplit, expert_split
from .checks import ConfigError
from .signals import ignore_sigint_in_worker

log = logging.getLogger("flowmixup")


def instantiate(node, **extra):
    """``hydra.utils.instantiate(node, **extra)`` with every config value passed as a plain container.

    Hydra wraps whatever the callee raises in an ``InstantiationException``; the callee's own exception (a
    ``DataError`` of a dataset loader, a ``RegularizerError``...) is raised instead, so a bad value reaches the user
    as the callee's one-line message. A ``_target_`` that does not import is a one-line :class:`ConfigError`.
    """
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, _convert_="all", **extra)
    except InstantiationException as err:
        if str(err).startswith("Error locating target"):
            key = str(err).rsplit("full_key: ", 1)[-1].strip() if "full_key: " in str(err) else "_target_"
            cause = " ".join(str(err.__cause__).split()) if err.__cause__ else ""
            raise ConfigError(
                f"{key}._target_: cannot import {node.get('_target_')!r} ({cause}); allowed: an "
                "importable class or function, module.name (is its folder on PYTHONPATH?)",
                key=f"{key}._target_",
            ) from None
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


# ----------------------------------------------------------------------------------------------------------------
# process-wide settings
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


def setup_torch(cfg: DictConfig) -> torch.device:
    """Seeds, threads, determinism and GPU flags; the device to train on."""
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
    return device


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def load_data(cfg: DictConfig) -> LabeledArrays:
    try:
        data = instantiate(cfg.dataset.loader)
    except DataError as err:
        raise DataError(_prepare_hint_with_overrides(str(err))) from None
    for split in ("train", "val", "test"):
        if len(data.splits[split]) == 0:
            raise DataError(
                f"dataset={cfg.dataset.name}: the {split} split is empty; check the dataset's size and split settings"
            )
    return data


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
    overrides = [
        o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").split("=", 1)[0].split(".")[0].split("/")[0] in keep
    ]
    return message[: message.index(marker)] + " ".join([marker, *overrides])


@dataclass
class Labels:
    """The labels trained on: corruption hits train and validation, never test."""

    clean: np.ndarray  # uint8, every record
    used: np.ndarray  # float32, every record: clean for test, corrupted for train and val
    train: np.ndarray  # the corrupted training labels
    corrupted: float  # the fraction of training labels changed


def corrupt(cfg: DictConfig, data: LabeledArrays) -> Labels:
    y_clean, idx = np.asarray(data.y, dtype=np.uint8), data.splits
    rates = _class_rates(cfg, data.class_names) if cfg.corruption.kind == "class_conditional" else {}
    y_train = corrupt_labels(y_clean[idx["train"]], cfg.noise, cfg.corruption.kind, seed=cfg.corruption.seed, **rates)
    y_val = corrupt_labels(y_clean[idx["val"]], cfg.noise, cfg.corruption.kind, seed=cfg.corruption.seed + 1, **rates)
    y_used = y_clean.astype(np.float32)
    y_used[idx["train"]] = y_train
    y_used[idx["val"]] = y_val
    if len(idx["train"]) < cfg.trainer.batch_size:
        raise DataError(
            f"the train split has {len(idx['train'])} samples, fewer than trainer.batch_size={cfg.trainer.batch_size}"
        )
    return Labels(y_clean, y_used, y_train, changed_fraction(y_clean[idx["train"]], y_train))


def _class_rates(cfg: DictConfig, class_names: list[str]) -> dict[str, np.ndarray]:
    """``corruption.kind=class_conditional``'s per-class rates for this dataset's classes (a profile of other
    classes, or a list of the wrong length, is one line naming the key)."""
    try:
        fn, fp = class_rates(OmegaConf.to_container(cfg.corruption, resolve=True), class_names)
    except ValueError as err:
        key = str(err).split(":", 1)[0]
        raise ConfigError(str(err), key=key) from None
    return {"fn_rate": fn, "fp_rate": fp}


def load_expert(cfg: DictConfig, data: LabeledArrays) -> ExpertSplit | None:
    """``dataset.expert_labels``: the dataset's test images with radiologists' labels, evaluated every epoch beside
    the test split (:mod:`flowmixup.data.expert_labels`); None when the key is unset (the default)."""
    folder = OmegaConf.select(cfg, "dataset.expert_labels", default=None)
    if folder in (None, ""):
        return None
    cache = data.info.get("cache")
    if cache is None:
        raise ConfigError(
            f"dataset.expert_labels: dataset={cfg.dataset.name} has no cache of image names; allowed: null, or a "
            "ChestX-ray14 dataset (dataset=chestxray14)",
            key="dataset.expert_labels",
        )
    names = read_row_data(cache, ["name"])["name"]
    expert = expert_split(Path(str(folder)).expanduser(), names, data.splits, list(data.class_names))
    log.info(
        "expert labels %s: %d test images (%d of the release not in this dataset); classes in the expert means "
        "(>= %d expert positives): %d of %d",
        folder,
        len(expert.rows),
        expert.missing,
        MIN_POSITIVES,
        int(expert.in_mean.sum()),
        len(expert.in_mean),
    )
    return expert


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
            yield self.perm[i * self.batch_size : (i + 1) * self.batch_size].tolist()


def make_loaders(
    cfg: DictConfig, data: LabeledArrays, y_used: np.ndarray, device: torch.device, expert: ExpertSplit | None = None
):
    """(the epoch's batch sampler, {train, val, test} loaders; with ``expert`` also an ``expert`` loader: its
    images against their expert labels, with a generator of its own so the other loaders draw as without it)."""
    idx, workers = data.splits, cfg.trainer.num_workers
    common = dict(
        collate_fn=batch_collate,
        num_workers=workers,
        pin_memory=device.type == "cuda" and workers > 0,  # pinned in the workers' background, copied non-blocking
        persistent_workers=workers > 0,
        worker_init_fn=ignore_sigint_in_worker,
        generator=torch.Generator().manual_seed(cfg.seed + 3),
    )  # worker seeds only
    batches = EpochBatches(len(idx["train"]), cfg.trainer.batch_size)
    loaders = {"train": DataLoader(ArrayDataset(data.x, y_used, idx["train"]), batch_sampler=batches, **common)}
    for split in ("val", "test"):
        loaders[split] = DataLoader(
            ArrayDataset(data.x, y_used, idx[split]), batch_size=cfg.trainer.eval_batch_size, **common
        )
    if expert is not None:
        y_expert = np.zeros_like(y_used)
        y_expert[expert.rows] = expert.y
        own = {**common, "generator": torch.Generator().manual_seed(cfg.seed + 4)}
        loaders["expert"] = DataLoader(
            ArrayDataset(data.x, y_expert, expert.rows), batch_size=cfg.trainer.eval_batch_size, **own
        )
    return batches, loaders


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# ----------------------------------------------------------------------------------------------------------------
# model and regularizer
# ----------------------------------------------------------------------------------------------------------------
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
            raise ConfigError(
                f"regularizer.mix_points: null, but backbone={cfg.backbone.name} has no default mix "
                "points; allowed: a list of its submodule names, e.g. regularizer.mix_points=[...]",
                key="regularizer.mix_points",
            )
        try:
            points = model.paper_mix_points()
        except ValueError as err:
            raise ConfigError(
                f"regularizer.mix_points: null (the paper's), but {err} (backbone={cfg.backbone.name}); "
                "allowed: a larger backbone, or regularizer.mix_points=[...] naming its blocks",
                key="regularizer.mix_points",
            ) from None
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
        raise ConfigError(
            f"backbone: {cfg.backbone.name} cannot take this dataset's input of shape "
            f"{tuple(sample.shape[1:])} ({first}); allowed: a larger input (e.g. dataset.resolution) "
            "or a backbone with fewer down-sampling stages",
            key="backbone",
        ) from None
    finally:
        model.train()


def check_mix_points(cfg: DictConfig) -> None:
    """Build the backbone alone (on the CPU, with 1 input channel and 2 classes: mix-point names depend on neither)
    and check the regularizer's mix points against it, so a multirun stops before its first cell, not in the middle."""
    if "mix_points" not in cfg.regularizer:
        return
    model = build_model(cfg, in_channels=1, num_classes=2)
    resolve_mix_points(cfg, model)


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


# ----------------------------------------------------------------------------------------------------------------
# loss, optimiser, extra metrics
# ----------------------------------------------------------------------------------------------------------------
def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam as the paper (lr 1e-4, betas 0.9/0.999), fused into one kernel per step where PyTorch supports it (CUDA,
    and CPU: measured 5% faster per step than the per-parameter loop for the small 1-D ResNet on CPU). With
    ``trainer.cuda_graph``: fused and capturable, its learning rate a device tensor (:mod:`.graph`)."""
    kwargs = dict(lr=cfg.trainer.lr, betas=tuple(cfg.trainer.betas), weight_decay=cfg.trainer.weight_decay)
    if OmegaConf.select(cfg, "trainer.cuda_graph", default=False):  # a step a CUDA graph can hold
        device = next(model.parameters()).device
        kwargs["lr"] = torch.tensor(float(cfg.trainer.lr), device=device)  # the scheduler rewrites it in place
        return torch.optim.Adam(model.parameters(), fused=True, capturable=True, **kwargs)
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(model.parameters(), **kwargs)


def build_loss(cfg: DictConfig, train_labels: np.ndarray) -> torch.nn.Module:
    return instantiate(cfg.loss.criterion, train_labels=train_labels)


def build_extra_metrics(cfg: DictConfig) -> dict[str, Callable]:
    """``dataset.extra_metrics``: name -> a ``_target_`` node whose instantiation is a callable
    ``(y_true 0/1 (n, C), y_score probabilities (n, C), class_names) -> float``; none by default."""
    nodes = OmegaConf.select(cfg, "dataset.extra_metrics", default=None) or {}
    return {str(name): instantiate(node) for name, node in nodes.items()}


# ----------------------------------------------------------------------------------------------------------------
# all of it
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Built:
    """The objects of one run."""

    device: torch.device
    data: LabeledArrays
    labels: Labels
    model: torch.nn.Module
    mix_points: list[str] | None
    reg: object  # the regularizer: ``logits, targets = reg(x, y)``
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    generators: dict  # the run's own random streams, saved in checkpoints
    batches: EpochBatches
    loaders: dict
    extra_metrics: dict
    resolved: dict  # the resolved config, with the mix points actually used
    expert: ExpertSplit | None = None  # dataset.expert_labels' images (None: not asked)
    graph_step: object = None  # trainer.cuda_graph: the captured step (flowmixup.training.graph.GraphStep)

    @property
    def names(self) -> list[str]:
        return self.data.class_names


def build_network(cfg: DictConfig, data: LabeledArrays, device: torch.device):
    """(model on ``device``, its mix points, the regularizer, its generator)."""
    sample = np.asarray(data.x[np.array([0])])
    model = build_model(cfg, in_channels=sample.shape[1], num_classes=len(data.class_names)).to(device)
    if cfg.trainer.channels_last and sample.ndim == 4:
        model = model.to(memory_format=torch.channels_last)
    check_input_fits(cfg, model, to_input(torch.from_numpy(sample), device, cfg.trainer.channels_last))
    mix_points = resolve_mix_points(cfg, model)
    reg_gen = torch.Generator().manual_seed(cfg.seed + 1)
    reg = build_regularizer(cfg, model, mix_points, reg_gen)
    if cfg.trainer.compile:  # in place: module names, hooks and the state dict stay as they are
        for unit in compile_units(model, mix_points):
            model.get_submodule(unit).compile(backend=cfg.trainer.compile_backend)
    return model, mix_points, reg, reg_gen


def build(cfg: DictConfig) -> Built:
    device = setup_torch(cfg)
    data = load_data(cfg)
    labels = corrupt(cfg, data)
    model, mix_points, reg, reg_gen = build_network(cfg, data, device)
    criterion = build_loss(cfg, labels.train).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.trainer.plateau_factor, patience=cfg.trainer.plateau_patience
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if mix_points is not None:
        resolved["regularizer"]["mix_points"] = list(mix_points)
    generators = {"regularizer": reg_gen, "batches": torch.Generator().manual_seed(cfg.seed + 2)}
    expert = load_expert(cfg, data)
    batches, loaders = make_loaders(cfg, data, labels.used, device, expert)
    graph_step = None
    if OmegaConf.select(cfg, "trainer.cuda_graph", default=False):
        from .graph import GraphStep

        bf16 = cfg.trainer.precision == "bf16"
        graph_step = GraphStep(reg, criterion, optimizer, model, int(cfg.trainer.batch_size), bf16, device)
    return Built(
        device,
        data,
        labels,
        model,
        mix_points,
        reg,
        criterion,
        optimizer,
        scheduler,
        generators,
        batches,
        loaders,
        build_extra_metrics(cfg),
        resolved,
        expert,
        graph_step,
    )
