"""Checks run before any training starts: each failure is one line naming the key and the allowed values."""
from __future__ import annotations

import math

from omegaconf import DictConfig

from ..data.corruption import KINDS

REGULARIZERS = ("erm", "mixup", "manifold_mixup", "flowmixup")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """An impossible configuration value."""


def check_config(cfg: DictConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(cfg.regularizer.name in REGULARIZERS,
         f"regularizer={cfg.regularizer.name} is unknown; allowed: {', '.join(REGULARIZERS)}")
    if "alpha" in cfg.regularizer:
        a = cfg.regularizer.alpha
        need(isinstance(a, (int, float)) and math.isfinite(a) and a > 0,
             f"regularizer.alpha must be a number > 0 (the Beta(alpha, alpha) parameter), got {a}")
    need(isinstance(cfg.noise, (int, float)) and 0.0 <= cfg.noise <= 1.0,
         f"noise must be a probability in [0, 1], got {cfg.noise}")
    need(cfg.corruption.kind in KINDS, f"corruption.kind={cfg.corruption.kind} is unknown; allowed: {', '.join(KINDS)}")
    t = cfg.trainer
    need(isinstance(t.epochs, int) and t.epochs >= 1, f"trainer.epochs must be an integer >= 1, got {t.epochs}")
    min_batch = 1 if cfg.regularizer.name == "erm" else 2
    need(isinstance(t.batch_size, int) and t.batch_size >= min_batch,
         f"trainer.batch_size must be an integer >= {min_batch} for regularizer={cfg.regularizer.name} "
         f"(mixing needs two samples), got {t.batch_size}")
    need(isinstance(t.lr, (int, float)) and t.lr > 0, f"trainer.lr must be > 0, got {t.lr}")
    need(0 < t.plateau_factor < 1, f"trainer.plateau_factor must be in (0, 1), got {t.plateau_factor}")
    need(t.precision in PRECISIONS, f"trainer.precision={t.precision} is unknown; allowed: {', '.join(PRECISIONS)}")
    need(t.device in DEVICES or str(t.device).startswith("cuda:"),
         f"trainer.device={t.device} is unknown; allowed: {', '.join(DEVICES)}, cuda:N")
    need(isinstance(t.num_workers, int) and t.num_workers >= 0, f"trainer.num_workers must be >= 0, got {t.num_workers}")
    need(str(t.resume).lower() in ("auto", "true", "false"),
         f"trainer.resume={t.resume} is unknown; allowed: auto, true, false")
    need(t.num_threads is None or (isinstance(t.num_threads, int) and t.num_threads >= 1),
         f"trainer.num_threads must be null or an integer >= 1, got {t.num_threads}")
    need(cfg.metrics.variance_epochs >= 2, f"metrics.variance_epochs must be >= 2, got {cfg.metrics.variance_epochs}")
    need(0 < cfg.metrics.threshold < 1, f"metrics.threshold must be in (0, 1), got {cfg.metrics.threshold}")
