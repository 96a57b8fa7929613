"""Training: ``run(cfg) -> summary`` and its parts."""
from .trainer import run

__all__ = ["run"]
