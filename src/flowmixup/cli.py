"""Command-line glue for ``train.py`` and ``prepare_data.py``: one-line errors, and exit codes.

Before Hydra starts, :func:`preflight` checks what the user typed: unknown options and misspelt keys (exit 2), then
every job of the command (each cell of a multirun) composed and validated as a whole (value ranges, seeds, the
device, a writable run directory: exit 1). Inside the job, :func:`guarded` turns the errors a user can cause (bad
data, a damaged checkpoint, a busy run directory) into one line on stderr. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from .project import PROJECT_ENV, ProjectNotFound, project_root

GROUPS = ("dataset", "backbone", "regularizer", "loss", "logger", "paths", "experiment", "hydra/launcher")


def find_conf_dir(script_dir: str | os.PathLike | None = None) -> Path:
    """The project's ``conf/``, found by :func:`flowmixup.project.project_root`'s rules (``script_dir``: the calling
    script's folder; train.py passes its own). Where there is no project (the package installed and run away from
    the repository) a ``conf/`` that does not exist: the preflight then has nothing to check against. A wrong
    ``$FLOWMIXUP_PROJECT_ROOT`` is one line (:class:`~flowmixup.project.ProjectNotFound`)."""
    try:
        return project_root(*([script_dir] if script_dir else [])) / "conf"
    except ProjectNotFound:
        if os.environ.get(PROJECT_ENV):
            raise
        return Path(script_dir or Path.cwd()).resolve() / "conf"


def search_dirs(args: list[str]) -> list[Path]:
    """The folders that ``hydra.searchpath=[file://...]`` overrides add (``pkg://`` entries are not folders)."""
    out = []
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra.searchpath":
            for entry in value.strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    out.append(Path(entry[len("file://") :]))
    return out


def available_options(group: str, conf_dir: Path | None = None, extra_dirs: list[Path] = ()) -> list[str]:
    """The options of a config group: its YAML files in ``conf_dir`` and in every searchpath folder (files whose
    name starts with ``_``, such as a shared base, are not options)."""
    found = set()
    for root in [conf_dir or find_conf_dir(), *extra_dirs]:
        folder = Path(root) / group
        if folder.is_dir():
            found |= {p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")}
    return sorted(found)


def check_overrides(args: list[str], conf_dir: Path | None = None) -> None:
    """Exit with a one-line message if an override names an option that no config group has.

    Handles multirun lists (``regularizer=erm,flowmixup``); sweep functions (``choice(...)``) are left to Hydra.
    """
    conf_dir = conf_dir or find_conf_dir()
    if not conf_dir.is_dir():  # installed without the repository's conf/: nothing to check against
        return
    extra_dirs = search_dirs(args)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+~").split("=", 1)
        if key not in GROUPS or "(" in value or value in ("null", ""):
            continue
        allowed = available_options(key, conf_dir, extra_dirs)
        if key == "hydra/launcher":
            allowed = sorted(set(allowed) | {"basic", "joblib", "submitit_local", "submitit_slurm"})
        for option in value.split(","):
            if option not in allowed:
                fail(f"{key}: {option!r} is not a known option; allowed: {', '.join(allowed)}", 2)
    check_keys(args, conf_dir)


def check_keys(args: list[str], conf_dir: Path | None = None) -> None:
    """Exit with a one-line message, with the closest existing key, if an override names a key the config lacks."""
    plain = [a for a in args if "=" in a and not a.startswith(("-", "+", "~"))]
    keys = [a.split("=", 1)[0] for a in plain if a.split("=", 1)[0] not in GROUPS and not a.startswith("hydra")]
    if not keys:
        return
    from hydra import compose, initialize_config_dir

    groups = [
        f"{k}={v.split(',')[0]}"
        for k, v in (a.split("=", 1) for a in plain)
        if k in GROUPS and k != "hydra/launcher" and "(" not in v
    ]
    groups += [a for a in args if a.split("=", 1)[0] == "hydra.searchpath"]
    with initialize_config_dir(config_dir=str(conf_dir or find_conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=groups)
    for key in keys:
        gap = where_key_leaves(cfg, key)
        if gap is not None:
            here, siblings, close = gap
            hint = f"; did you mean {(here + '.') if here else ''}{close}?" if close else ""
            where = f"under {here}: " if here else "top-level keys: "
            fail(f"{key}: is not a config key{hint}; allowed: {where}{', '.join(siblings[:25])}", 2)


def where_key_leaves(cfg, key: str) -> tuple[str, list[str], str | None] | None:
    """Where the dotted ``key`` leaves ``cfg``: (the part that exists, e.g. ``trainer``; the keys there; the one
    closest to the missing part, or None), or None when ``cfg`` has the key."""
    import difflib

    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        child = node._get_node(part) if hasattr(node, "keys") and part in list(node.keys()) else None
        if child is None:
            siblings = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
            close = difflib.get_close_matches(part, siblings, n=1)
            return ".".join(parts[:depth]), siblings, close[0] if close else None
        node = child
    return None


def fail(message: str, code: int = 1) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    sys.stderr.write("error: " + " ".join(str(message).split("\n")).strip() + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


# Flags after which the command does not train (Hydra prints something and exits): no preflight then.
_INFO_FLAGS = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--resolve",
    "--shell-completion",
    "-sc",
    "--version",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
)


def job_overrides(args: list[str]) -> tuple[list[list[str]], bool]:
    """The override list of every job the command would run (one for a single run, the grid for ``-m``)."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    if not multirun:
        return [overrides], False
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.split("=", 1)[0].lstrip("+~") == "hydra/sweeper" for a in overrides):
        return [], True  # another sweeper draws its own values: each job is checked when it starts
    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [job for batch in batches for job in batch], True


def check_syntax(args: list[str]) -> None:
    """Exit 2 with one line for an override that Hydra's grammar cannot read (a value holding a space before ``(``,
    a quote, ``#``, ``=``, brackets, non-ASCII letters...), showing the same override quoted so that it can."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as err:
            key, _, value = arg.partition("=")
            if value[:1] in "'\"" and value[-1:] == value[:1]:
                fail(
                    f"{arg}: Hydra cannot read this override ({str(err).splitlines()[0]}); see "
                    "https://hydra.cc/docs/advanced/override_grammar/basic/",
                    2,
                )
            quoted = f'{key}="' + value.replace('"', '\\"') + '"'
            try:
                readable = parser.parse_overrides([quoted])[0].value() == value
            except OverrideParseException:
                readable = False
            way = (
                f"quote it for Hydra inside the shell's quotes: {shlex.quote(quoted)}"
                if readable
                else "see https://hydra.cc/docs/advanced/override_grammar/basic/ for the characters it accepts"
            )
            fail(f"{arg}: Hydra cannot read this value ({str(err).splitlines()[0]}); {way}", 2)


def preflight(args: list[str], conf_dir: Path | None = None, config_name: str = "config", run: bool = True) -> None:
    """Check the command before Hydra starts: exit 2 on an unknown option or key, exit 1 on an impossible value
    (of any cell of a multirun) or an unwritable run directory, each as one line."""
    conf_dir = conf_dir or find_conf_dir()
    if any(a.split("=", 1)[0] in _INFO_FLAGS for a in args) or not conf_dir.is_dir():
        return
    check_syntax(args)
    check_overrides([a for a in args if not a.startswith("-")], conf_dir)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .regularizers.base import RegularizerError
    from .training.build import check_mix_points
    from .training.checks import ConfigError, UsageError, check_config, check_writable

    models_checked: set = set()
    try:
        jobs, multirun = job_overrides(args)
    except HydraException as err:
        fail(f"cannot read the overrides: {err}", 2)
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        for n, job in enumerate(jobs):
            try:
                cfg = compose(config_name, overrides=job, return_hydra_config=True)
                launcher = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
                check_config(cfg, local="Slurm" not in launcher)
                key = (OmegaConf.to_yaml(cfg.backbone), str(OmegaConf.select(cfg, "regularizer.mix_points")))
                if "mix_points" in cfg.regularizer and key not in models_checked:
                    models_checked.add(key)
                    check_mix_points(cfg)
                if n == 0 and run:
                    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
                    check_writable(OmegaConf.select(cfg, key), key)
            except (ConfigError, RegularizerError) as err:
                varying = {o.split("=", 1)[0] for o in job if any(o not in other for other in jobs)}
                shown = " ".join(o for o in job if o.split("=", 1)[0] in varying)
                cell = f" (in the multirun cell {shown})" if multirun and len(jobs) > 1 else ""
                fail(f"{err}{cell}", 2 if isinstance(err, UsageError) else 1)
            except (HydraException, OmegaConfBaseException) as err:
                fail(f"{type(err).__name__}: {err}", 2)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a user's input causes, reported as one line (anything else keeps its traceback)."""
    from .data.base import DataError
    from .io import WriteError
    from .regularizers.base import RegularizerError
    from .training.checkpoint import CheckpointError
    from .training.checks import ConfigError
    from .training.rundir import RunDirBusy

    return (ConfigError, DataError, RegularizerError, CheckpointError, RunDirBusy, WriteError)


def guarded(fn):
    """Wrap a Hydra task function: user errors become one line on stderr (exit 1); a second Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            fail(
                "interrupted again: stopped at once, without saving (the last checkpoint in the run directory "
                "is kept; the same command resumes from it)",
                130,
            )
        except user_errors() as err:
            fail(str(err), 1)

    return wrapper


def finish(summary: dict) -> float | None:
    """After a run: in a single run, a failed run exits non-zero; in a multirun the sweep goes on. Returns the
    validation value of the dataset's primary metric at the epoch of lowest validation loss (Hydra hands it to
    the sweeper)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if summary.get("status") != "ok":
        logging.getLogger("flowmixup").error("run failed: %s", summary.get("reason"))
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise SystemExit(1)
        return None
    # what a sweeper (Optuna, Ax, Nevergrad) optimises: a VALIDATION value, never a test one, so hyper-parameters
    # are never tuned on the test set. The epoch is the one of lowest validation loss (the model one would keep).
    return summary.get(f"val_{summary.get('primary_metric', 'macro_f1')}_at_best_val")
