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
    check_keys(args, conf_dir)


def check_keys(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Exit with a one-line message, with the closest existing key, if an override names a key the config lacks."""
    import difflib

    plain = [a for a in args if "=" in a and not a.startswith(("-", "+", "~"))]
    keys = [a.split("=", 1)[0] for a in plain if a.split("=", 1)[0] not in GROUPS and not a.startswith("hydra")]
    if not keys:
        return
    from hydra import compose, initialize_config_dir

    groups = [f"{k}={v.split(',')[0]}" for k, v in (a.split("=", 1) for a in plain)
              if k in GROUPS and k != "hydra/launcher" and "(" not in v]
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=groups)
    for key in keys:
        node, parts = cfg, key.split(".")
        for depth, part in enumerate(parts):
            child = node._get_node(part) if hasattr(node, "keys") and part in list(node.keys()) else None
            if child is None:
                here = ".".join(parts[:depth])
                siblings = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
                close = difflib.get_close_matches(part, siblings, n=1)
                hint = f"; did you mean {(here + '.') if here else ''}{close[0]}?" if close else ""
                where = f"under {here}: " if here else "top-level keys: "
                sys.stderr.write(f"error: {key} is not a config key{hint} ({where}{', '.join(siblings[:25])})\n")
                raise SystemExit(2)
            node = child


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
