"""Run loggers. ``metrics.csv`` is always written by the trainer, whatever the logger: ``logger=csv`` (the default)
means "metrics.csv only" and logs nothing else; ``logger=wandb`` also logs to Weights & Biases, offline unless
``WANDB_MODE`` says otherwise (it never needs the network)."""
from __future__ import annotations

import os
from pathlib import Path


class CsvLogger:
    """``logger=csv``: metrics.csv only (the trainer writes it for every logger), so nothing to do here."""

    def log(self, row: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    def __init__(self, cfg, run_dir: Path, config: dict):
        try:
            import wandb
        except ImportError as err:  # optional dependency
            raise ImportError("logger=wandb needs the wandb package: pip install 'flowmixup[wandb]'") from err
        mode = os.environ.get("WANDB_MODE", cfg.logger.mode)
        self.wandb = wandb
        self.run = wandb.init(project=cfg.logger.project, dir=str(run_dir), config=config, mode=mode,
                              name=cfg.logger.get("name"), reinit="finish_previous")

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def finish(self) -> None:
        self.run.finish()


def make_logger(cfg, run_dir: Path, config: dict):
    name = cfg.logger.name
    if name == "csv":
        return CsvLogger()
    if name == "wandb":
        return WandbLogger(cfg, run_dir, config)
    raise ValueError(f"logger={name} is unknown; allowed: csv, wandb")
