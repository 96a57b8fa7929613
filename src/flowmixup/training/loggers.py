"""Run loggers. ``metrics.csv`` is always written by the trainer, whatever the logger: ``logger=csv`` (the default)
means "metrics.csv only" and logs nothing else; ``logger=wandb`` also logs to Weights & Biases, offline unless
``WANDB_MODE`` says otherwise (it never needs the network)."""

from __future__ import annotations

import os
from pathlib import Path


class CsvLogger:
    """``logger=csv``: metrics.csv only (the trainer writes it for every logger), so nothing to do here."""

    def __init__(self, run_dir: Path | None = None, run_config: dict | None = None):
        pass

    def log(self, row: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    def __init__(
        self,
        run_dir: Path,
        run_config: dict,
        project: str = "flowmixup",
        mode: str = "offline",
        name: str | None = None,
    ):
        try:
            import wandb
        except ImportError as err:  # optional dependency
            raise ImportError("logger=wandb needs the wandb package: pip install 'flowmixup[wandb]'") from err
        mode = os.environ.get("WANDB_MODE", mode)
        self.wandb = wandb
        self.run = wandb.init(
            project=project, dir=str(run_dir), config=run_config, mode=mode, name=name, reinit="finish_previous"
        )

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def finish(self) -> None:
        self.run.finish()


def make_logger(cfg, run_dir: Path, config: dict):
    """The logger of ``cfg.logger`` (its ``sink`` node), built with the run folder and the resolved config."""
    from .build import instantiate

    # not recursive: run_config holds the _target_ nodes of the run, to be logged, not built
    return instantiate(cfg.logger.sink, run_dir=run_dir, run_config=config, _recursive_=False)
