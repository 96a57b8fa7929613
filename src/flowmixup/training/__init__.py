"""Training: ``run(cfg) -> summary`` and its parts.

run.py (the run, top to bottom) - build.py (every object from the config) - loop.py (train_step, train_epoch,
evaluate) - checkpoint.py (a plain-dict checkpoint, RNG states, resumability) - records.py (best values,
metrics.csv, predictions, per_class.csv, summary.json) - signals.py, rundir.py, checks.py, losses.py, metrics.py,
loggers.py (fault injection for tests: flowmixup.faults).
"""

from .run import run

__all__ = ["run"]
