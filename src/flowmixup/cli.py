"""Command-line glue for ``train.py``: friendly one-line errors before Hydra starts, and exit codes."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("dataset", "backbone", "regularizer", "loss", "logger", "experiment", "hydra/launcher")


def available_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    folder = conf_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_overrides(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Exit with a one-line message if an override names an option that no config group has.

    Handles multirun lists (``regularizer=erm,flowmixup``); sweep functions (``choice(...)``) are left to Hydra.
    """
    if not conf_dir.is_dir():  # installed without the repository's conf/: nothing to check against
        return
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+~").split("=", 1)
        if key not in GROUPS or "(" in value or value in ("null", ""):
            continue
        allowed = available_options(key, conf_dir)
        if key == "hydra/launcher":
            allowed = sorted(set(allowed) | {"basic", "joblib", "submitit_local", "submitit_slurm"})
        for option in value.split(","):
            if option not in allowed:
                sys.stderr.write(f"error: {key}={option} is not a known option; allowed: {', '.join(allowed)}\n")
                raise SystemExit(2)


def finish(summary: dict) -> float | None:
    """After a run: in a single run, a failed run exits non-zero; in a multirun the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if summary.get("status") != "ok":
        logging.getLogger("flowmixup").error("run failed: %s", summary.get("reason"))
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise SystemExit(1)
        return None
    key = "best_test_auc" if summary.get("primary_metric") == "auc" else "best_test_macro_f1"
    return summary.get(key)
