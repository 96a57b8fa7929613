"""Checks run before any work starts: every failure is one line, ``<key>: <problem>; allowed: <values>``.

``check_config(cfg)`` validates the whole composed configuration (value ranges, seeds, names, the device), so a
bad value stops a run in a second instead of deep inside numpy or after the data is loaded. It imports no torch
unless a CUDA device is named, so the command line can run it before anything heavy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
CORRUPTION_KINDS = ("resample", "flip", "class_conditional")  # flowmixup.data.corruption.KINDS (kept import-free here)
NOISE_PROFILES = ("chestxray14",)  # flowmixup.data.corruption.PACKAGED_PROFILES
ON_BAD_RECORD = ("error", "skip")
CAPTURABLE_REGULARIZERS = ("erm", "mixup", "manifold_mixup", "flowmixup")  # trainer.cuda_graph
SEED_MAX = 2**32 - 1  # numpy's seeds


class ConfigError(ValueError):
    """An impossible configuration value: ``<key>: <problem>; allowed: <values>``."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class UsageError(ConfigError):
    """A command-line mistake (exit code 2): an unknown key or option."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def get(self, key: str):
        return OmegaConf.select(self.cfg, key, default=None, throw_on_missing=False)

    def has(self, key: str) -> bool:
        return OmegaConf.select(self.cfg, key, default="__absent__", throw_on_missing=False) != "__absent__"

    def need(self, ok: bool, key: str, problem: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {problem}; allowed: {allowed}", key=key)

    def int_at_least(self, key: str, low: int, optional: bool = False) -> None:
        if not self.has(key):
            return
        v = self.get(key)
        if optional and v is None:
            return
        self.need(_is_int(v) and v >= low, key, f"got {v!r}", f"an integer >= {low}" + (" or null" if optional else ""))

    def number_in(self, key: str, low: float, high: float, low_open=False, high_open=False) -> None:
        if not self.has(key):
            return
        v = self.get(key)
        ok = _is_num(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        hi_txt = "inf" if high == math.inf else f"{high:g}"
        self.need(ok, key, f"got {v!r}", f"a number in {lo}{low:g}, {hi_txt}{hi}")

    def one_of(self, key: str, values, extra: str = "") -> None:
        if not self.has(key):
            return
        v = self.get(key)
        self.need(v in values, key, f"{v!r} is unknown", ", ".join(map(str, values)) + extra)

    def boolean(self, key: str) -> None:
        if self.has(key):
            v = self.get(key)
            self.need(isinstance(v, bool), key, f"got {v!r}", "true, false")

    def seed(self, key: str) -> None:
        if self.has(key):
            v = self.get(key)
            self.need(_is_int(v) and 0 <= v <= SEED_MAX, key, f"got {v!r}", f"an integer in [0, {SEED_MAX}]")

    def fractions(self, key: str, n: int = 3) -> None:
        if not self.has(key):
            return
        v = self.get(key)
        v = list(v) if isinstance(v, (list, tuple, ListConfig)) else v
        ok = isinstance(v, list) and len(v) == n and all(_is_num(f) and 0 < f < 1 for f in v) and abs(sum(v) - 1) < 1e-6
        self.need(
            ok, key, f"got {v!r}", f"{n} fractions in (0, 1) summing to 1 (train, val, test), e.g. [0.7, 0.1, 0.2]"
        )


def missing_keys(cfg: DictConfig) -> list[str]:
    """Mandatory values (``???``) still unset, e.g. ``dataset.root`` (Hydra's own ``hydra`` node is not looked at;
    nothing is resolved)."""
    out: list[str] = []

    def walk(node, prefix: str) -> None:
        keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
        for key in keys:
            full = f"{prefix}{key}"
            if full == "hydra":
                continue
            if OmegaConf.is_missing(node, key):
                out.append(full)
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation() and not child._is_none():
                walk(child, full + ".")

    walk(cfg, "")
    return sorted(out)


REMOTE_LAUNCHERS = ("slurm", "submitit_slurm")  # jobs run on other machines: their GPUs and paths are not here


def check_config(cfg: DictConfig, local: bool = True) -> None:
    """Raise :class:`ConfigError` naming the first impossible value of ``cfg``.

    ``local=False`` (jobs that a SLURM launcher sends to other machines): the CUDA device and the dataset root are
    not looked for on this machine (a login node has no GPU, and may not mount the data)."""
    for key in missing_keys(cfg):
        if key == "dataset.root":
            raise ConfigError(
                f"dataset.root: is not set; allowed: the folder of the raw {cfg.dataset.name} data "
                f"(dataset.root=/path), or dataset.root=null to train from a ready cache",
                key=key,
            )
        raise ConfigError(f"{key}: is not set (a mandatory value); allowed: any value ({key}=...)", key=key)
    c = _Checker(cfg)
    _check_regularizer_and_labels(c)
    _check_trainer(c, cfg, local)
    c.int_at_least("metrics.variance_epochs", 2)
    c.number_in("metrics.threshold", 0, 1, low_open=True, high_open=True)
    _check_dataset(c, cfg, local)


def _check_regularizer_and_labels(c: "_Checker") -> None:
    c.number_in("regularizer.alpha", 0, math.inf, low_open=True, high_open=True)
    c.boolean("regularizer.keep_original")
    if c.has("regularizer.mix_points"):
        mp = c.get("regularizer.mix_points")
        ok = mp is None or (isinstance(mp, ListConfig) and len(mp) > 0 and all(isinstance(p, str) and p for p in mp))
        c.need(
            ok,
            "regularizer.mix_points",
            f"got {OmegaConf.to_container(mp) if isinstance(mp, ListConfig) else mp!r}",
            "null (the backbone's paper mix points) or a non-empty list of submodule names, e.g. [layer2.0,layer3.0]",
        )
    c.number_in("noise", 0, 1)
    c.one_of("corruption.kind", CORRUPTION_KINDS)
    c.seed("seed")
    c.seed("corruption.seed")
    _check_class_conditional(c)


def _check_class_conditional(c: "_Checker") -> None:
    """corruption.fn_rate / fp_rate / profile: set only with kind=class_conditional, which needs one of them (the
    number of classes and the profile's classes are checked against the data when it is loaded)."""
    rates, profile = ("corruption.fn_rate", "corruption.fp_rate"), c.get("corruption.profile")
    given = [k for k in (*rates, "corruption.profile") if c.get(k) not in (None, "")]
    if c.get("corruption.kind") != "class_conditional":
        if given:
            c.need(
                False,
                given[0],
                f"is set but corruption.kind={c.get('corruption.kind')}",
                "null, or corruption.kind=class_conditional",
            )
        return
    c.need(
        bool(given),
        "corruption.kind",
        "class_conditional without rates",
        "corruption.fn_rate / corruption.fp_rate (a probability or a list by class) or corruption.profile=<csv>",
    )
    if profile not in (None, ""):
        c.need(
            str(profile) in NOISE_PROFILES or Path(str(profile)).expanduser().is_file(),
            "corruption.profile",
            f"{profile} is not a file",
            f"a noise_profile.csv (scripts/noise_profile.py) or a packaged profile: {', '.join(NOISE_PROFILES)}",
        )
    for key in rates:
        v = c.get(key)
        if v in (None, ""):
            continue
        c.need(
            not (profile not in (None, "")),
            key,
            "given together with corruption.profile",
            "either corruption.profile or the rates, not both",
        )
        values = list(v) if isinstance(v, ListConfig) else [v]
        c.need(
            bool(values) and all(_is_num(x) and 0 <= x <= 1 for x in values),
            key,
            f"got {OmegaConf.to_container(v) if isinstance(v, ListConfig) else v!r}",
            "a probability in [0, 1] (every class) or a list of them (one per class)",
        )


def _check_trainer(c: "_Checker", cfg: DictConfig, local: bool) -> None:
    t, reg = "trainer.", cfg.regularizer.name
    c.int_at_least(t + "epochs", 1)
    bs = cfg.trainer.batch_size
    mixes = _is_int(bs) and bs < 2 and regularizer_mixes(cfg)  # imports the class only for a batch of one
    min_batch = 2 if mixes else 1
    c.need(
        _is_int(bs) and bs >= min_batch,
        t + "batch_size",
        f"got {bs!r}" + (f" (regularizer={reg} mixes pairs of samples)" if mixes else ""),
        f"an integer >= {min_batch}",
    )
    c.int_at_least(t + "eval_batch_size", 1)
    c.number_in(t + "lr", 0, math.inf, low_open=True, high_open=True)
    betas = c.get(t + "betas")
    c.need(
        isinstance(betas, ListConfig) and len(betas) == 2 and all(_is_num(b) and 0 <= b < 1 for b in betas),
        t + "betas",
        f"got {OmegaConf.to_container(betas) if isinstance(betas, ListConfig) else betas!r}",
        "two numbers in [0, 1), e.g. [0.9,0.999]",
    )
    c.number_in(t + "weight_decay", 0, math.inf, high_open=True)
    c.number_in(t + "plateau_factor", 0, 1, low_open=True, high_open=True)
    c.int_at_least(t + "plateau_patience", 0)
    c.int_at_least(t + "num_workers", 0)
    c.int_at_least(t + "num_threads", 1, optional=True)
    c.one_of(t + "precision", PRECISIONS)
    dev = c.get(t + "device")
    c.need(
        isinstance(dev, str) and (dev in DEVICES or (dev.startswith("cuda:") and dev[5:].isdigit())),
        t + "device",
        f"{dev!r} is unknown",
        ", ".join(DEVICES) + ", cuda:N",
    )
    for key in ("channels_last", "compile", "cuda_graph", "deterministic", "skip_finished", "progress"):
        c.boolean(t + key)
    _check_cuda_graph(c, dev)
    c.need(
        str(c.get(t + "resume")).lower() in ("auto", "true", "false"),
        t + "resume",
        f"{c.get(t + 'resume')!r} is unknown",
        "auto, true, false",
    )
    if local and isinstance(dev, str) and dev.startswith("cuda"):
        check_cuda(dev)


def _check_cuda_graph(c: "_Checker", dev) -> None:
    """``trainer.cuda_graph=true`` (:mod:`flowmixup.training.graph`): a CUDA device, no ``trainer.compile``, and a
    regularizer whose draws go through the static buffers (checked again on the built objects)."""
    if c.get("trainer.cuda_graph") is not True:
        return
    key, off = "trainer.cuda_graph", "false"
    c.need(dev != "cpu", key, "true needs a CUDA device, got trainer.device=cpu", f"{off}, or trainer.device=cuda")
    c.need(
        c.get("trainer.compile") is not True,
        key,
        "true cannot be combined with trainer.compile=true (a graph captures eager kernels)",
        f"{off}, or trainer.compile=false",
    )
    reg = c.get("regularizer.name")
    c.need(
        reg in CAPTURABLE_REGULARIZERS,
        key,
        f"true cannot capture regularizer={reg} (its draws may not go through the static buffers)",
        f"{off}, or regularizer=" + ", ".join(CAPTURABLE_REGULARIZERS),
    )


def _check_dataset(c: "_Checker", cfg: DictConfig, local: bool) -> None:
    d = "dataset."
    c.seed(d + "split_seed")
    c.seed(d + "generator_seed")
    c.int_at_least(d + "n_records", 10)
    low_rate, low_duration = (50, 2) if cfg.dataset.name == "synth_ecg" else (0, 0)  # synth_ecg's generator needs both
    c.number_in(d + "sampling_rate", low_rate, math.inf, low_open=not low_rate, high_open=True)
    c.number_in(d + "duration", low_duration, math.inf, low_open=not low_duration, high_open=True)
    c.fractions(d + "split")
    c.fractions(d + "split_fractions")
    c.number_in(d + "val_fraction", 0, 1, low_open=True, high_open=True)
    c.int_at_least(d + "resolution", 8)
    c.int_at_least(d + "prepare_workers", 0, optional=True)
    c.one_of(d + "on_bad_record", ON_BAD_RECORD)
    c.boolean(d + "prepare_if_missing")
    expert = c.get(d + "expert_labels")
    if local and expert not in (None, ""):
        c.need(
            (Path(str(expert)).expanduser() / "test_labels.csv").is_file(),
            d + "expert_labels",
            f"{expert} is not a folder with test_labels.csv",
            "null, or the folder of the ChestX-ray14 expert-label release (docs/real-label-noise.md)",
        )
    root = c.get(d + "root")
    if local and root not in (None, "") and c.has(d + "root"):
        c.need(
            Path(str(root)).expanduser().is_dir(),
            d + "root",
            f"{root} is not a folder",
            f"the folder of the raw {cfg.dataset.name} data, or null to train from a ready cache",
        )


def regularizer_mixes(cfg: DictConfig) -> bool:
    """Whether the regularizer mixes samples (so needs two per batch): its class's ``mixes`` attribute
    (:class:`flowmixup.regularizers.base.Regularizer`; True unless the class says otherwise)."""
    target = OmegaConf.select(cfg, "regularizer.module._target_", default=None)
    if target is None:
        raise ConfigError(
            f"regularizer.module._target_: is not set (regularizer={cfg.regularizer.get('name')}); "
            "allowed: the regularizer's class, e.g. flowmixup.FlowMixup",
            key="regularizer.module",
        )
    import hydra.utils

    try:
        return bool(getattr(hydra.utils.get_object(str(target)), "mixes", True))
    except Exception as err:  # noqa: BLE001 - any import failure is the same user error
        raise ConfigError(
            f"regularizer.module._target_: cannot import {target!r} ({' '.join(str(err).split())[:160]}); "
            "allowed: an importable class (is its folder on PYTHONPATH?)",
            key="regularizer.module._target_",
        ) from None


def check_cuda(device: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device: {device} but no CUDA device is available; allowed: cpu, auto", key="trainer.device"
        )
    if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(
            f"trainer.device: {device} but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s); allowed: cuda:0 ... cuda:{torch.cuda.device_count() - 1}, auto",
            key="trainer.device",
        )


def check_writable(folder: str | os.PathLike, key: str) -> None:
    """``folder`` exists and is writable, or can be created (its nearest existing parent is writable)."""
    p = Path(folder).absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{key}: {p} cannot be created ({probe} is not a folder); allowed: a writable folder", key=key
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == p else f" (its parent {probe} is not writable)"
        raise ConfigError(
            f"{key}: {p} is not writable{where}; allowed: a folder you can write to, e.g. {key}=outputs/...", key=key
        )
