"""``make reproduce-tables``: run the paper's grid (or its mini version) as Hydra multiruns into one sweep folder,
one subfolder per cell, skipping finished cells, then write Tables I-III and the figures beside the paper's numbers.

A profile (``conf/reproduce/<name>.yaml``) lists the table rows (each a ``name`` and the ``overrides`` that make
it; a bare name refers to a row defined in any profile there) and, per dataset, an experiment config and its noise
levels. Adding a regularizer to the tables is a row in a profile: no Python here changes. Each (dataset, row) pair is one ``train.py -m`` call over noise x seeds. A cell whose folder already
holds ``summary.json`` is skipped by the run itself (``trainer.skip_finished=true``), so an interrupted sweep goes
on where it stopped and a finished one only re-aggregates.

Before any block starts, a preflight (:func:`plan`) composes every block's config with Hydra's compose API, as
``train.py`` will, and checks it: every override (the profile's, ``--set``'s, the rows') is a valid one, each
config passes :func:`flowmixup.training.checks.check_config`, and every dataset has its ``dataset.root`` or a
prepared cache. Each problem is one line; with any, nothing is launched (:class:`PreflightError`). After the
blocks, a cell without ``summary.json`` or whose status is not ``ok`` counts as failed, and is named with its log.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from ..io import write_json

PROJECT_ENV = "FLOWMIXUP_PROJECT_ROOT"

# one folder per cell, the same on every call, so that finished cells are found again
CELL_DIR = ("'${dataset.name}/${regularizer.name}_a${oc.select:regularizer.alpha,none}"
            "_op${oc.select:regularizer.keep_original,none}/noise${noise}_seed${seed}'")
LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local", "local_gpus")
# the metrics a profile's dataset entry may ask tables for (report_metrics: [auc, macro_f1])
REPORT_METRICS = ("auc", "macro_f1")
# what every block's runs get besides the rows' and the user's overrides
RUN_ARGS = ["trainer.skip_finished=true", "trainer.progress=false"]


# --------------------------------------------------------------------------------------------------------------
# Where the project is
# --------------------------------------------------------------------------------------------------------------
def _is_project(path: Path) -> bool:
    return (path / "train.py").is_file() and (path / "conf" / "config.yaml").is_file()


def find_project_root(*starts: str | os.PathLike) -> Path:
    """The folder holding ``train.py`` and ``conf/``: ``$FLOWMIXUP_PROJECT_ROOT`` if set, else the first such folder
    at or above each of ``starts``, this package's folder (an editable install) and the current folder, in turn."""
    env = os.environ.get(PROJECT_ENV)
    if env:
        if _is_project(Path(env)):
            return Path(env).resolve()
        raise SystemExit(f"error: {PROJECT_ENV}={env} holds no train.py and conf/config.yaml")
    for start in (*starts, Path(__file__).resolve().parent, Path.cwd()):
        start = Path(start).resolve()
        for path in (start, *start.parents):
            if _is_project(path):
                return path
    raise SystemExit("error: cannot find the project (a folder holding train.py and conf/config.yaml) above this "
                     f"package or the current folder; run from the repository or set {PROJECT_ENV}")


# --------------------------------------------------------------------------------------------------------------
# Profiles and plans
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Block:
    """One (dataset, row) pair: a single multirun over noise x seeds."""

    experiment: str
    dataset: str
    row: str
    noise: list[float]
    seeds: list[int]
    overrides: list[str]
    row_overrides: list[str] = field(default_factory=list)  # the row's, from the profile
    fields: dict = field(default_factory=dict)  # the row's regularizer, alpha, keep_original (its cell folders)
    config: Any = field(default=None, repr=False, compare=False)  # the row's composed config (first noise, seed)
    entry: dict = field(default_factory=dict, repr=False, compare=False)  # the profile's dataset entry


@dataclass
class Plan:
    """What :func:`plan` found: the blocks to run, the expected grid, the datasets left out, the problems."""

    blocks: list[Block] = field(default_factory=list)
    grid: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # optional datasets left out, with why
    notes: list[str] = field(default_factory=list)  # e.g. a dataset that runs from its prepared cache
    problems: list[str] = field(default_factory=list)  # one line each; any of them: nothing is launched


class PreflightError(Exception):
    """The preflight found problems (``problems``: one line each); nothing was launched."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s) before launching: " + "; ".join(problems))
        self.problems = problems


def known_rows(conf_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Every row a profile under ``conf/reproduce`` defines (``{name, overrides}``): name -> overrides."""
    conf_dir = Path(conf_dir) if conf_dir is not None else find_project_root() / "conf"
    rows: dict[str, list[str]] = {}
    for path in sorted((conf_dir / "reproduce").glob("*.yaml")):
        for row in (OmegaConf.to_container(OmegaConf.load(path)) or {}).get("rows") or []:
            if isinstance(row, dict) and isinstance(row.get("name"), str):
                rows.setdefault(row["name"], [str(o) for o in row.get("overrides") or []])
    return rows


def load_profile(profile: str, conf_dir: str | os.PathLike | None = None) -> dict:
    """A profile with its ``rows`` as ``[{"name": ..., "overrides": [...]}, ...]`` (bare names resolved)."""
    conf_dir = Path(conf_dir) if conf_dir is not None else find_project_root() / "conf"
    path = Path(profile) if profile.endswith(".yaml") else conf_dir / "reproduce" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir / "reproduce").glob("*.yaml"))
        raise SystemExit(f"error: profile '{profile}' not found; known profiles: {', '.join(known)} (or a .yaml path)")
    prof = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(prof, dict) or not isinstance(prof.get("rows"), list) or not isinstance(prof.get("datasets"),
                                                                                               list):
        raise SystemExit(f"error: {path}: a profile needs 'rows' (a list) and 'datasets' (a list)")
    catalog = known_rows(conf_dir)
    rows = []
    for row in prof["rows"]:
        if isinstance(row, dict) and isinstance(row.get("name"), str) and isinstance(row.get("overrides", []), list):
            rows.append({"name": row["name"], "overrides": [str(o) for o in row.get("overrides", [])]})
        elif isinstance(row, str) and row in catalog:
            rows.append({"name": row, "overrides": catalog[row]})
        else:
            raise SystemExit(f"error: {path}: row {row!r} is neither {{name: ..., overrides: [...]}} nor a row a "
                             f"profile defines; defined: {', '.join(catalog)}")
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: {path}: rows named twice: {sorted({n for n in names if names.count(n) > 1})}")
    prof["rows"] = rows
    return prof


def row_fields(cfg: Any) -> dict:
    """What a row's runs write to summary.json and grid.json about the regularizer (and their cell folder)."""
    return {"regularizer": str(OmegaConf.select(cfg, "regularizer.name", default=None)),
            "alpha": OmegaConf.select(cfg, "regularizer.alpha", default=None),
            "keep_original": OmegaConf.select(cfg, "regularizer.keep_original", default=None)}


@functools.lru_cache(maxsize=None)
def _named_row_fields(row: str, conf_dir: str) -> tuple:
    return tuple(row_fields(_compose(Path(conf_dir), known_rows(conf_dir)[row])).items())


def parse_sets(items: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--set DATASET:KEY=VALUE`` items as ``{dataset: [override, ...]}``, and one problem line per bad item."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    extra: dict[str, list[str]] = {}
    problems = []
    for item in items:
        name, sep, override = item.partition(":")
        if not sep or not name or "=" not in override or override.startswith("="):
            problems.append(f"--set {item}: expected DATASET:KEY=VALUE, e.g. --set chestxray14:dataset.root=/data/nih")
            continue
        try:
            parser.parse_overrides([override])
        except OverrideParseException as exc:
            problems.append(f"--set {item}: not a valid override ({_first_line(str(exc))})")
            continue
        extra.setdefault(name, []).append(override)
    return extra, problems


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _one_line(exc: BaseException) -> str:
    """An exception of Hydra's compose API (or of OmegaConf) as one line."""
    from hydra.errors import MissingConfigException

    text = str(exc).strip()
    if isinstance(exc, MissingConfigException):
        lines = text.splitlines()
        head = re.sub(r"^In '[^']*': ", "", lines[0].strip()) if lines else "config not found"
        options, inside = [], False
        for line in lines[1:]:
            if line.startswith("Available options"):
                inside = True
            elif line.startswith("Config search path"):
                break
            elif inside and line.strip():
                options.append(line.strip())
        return head + (f"; available: {', '.join(options)}" if options else "")
    cause = exc.__cause__ or exc.__context__
    full_key = re.search(r"full_key: (\S+)", str(cause)) if cause is not None else None
    if full_key and re.search(r"not in struct|not in '|Key '[^']*' not", str(cause)):
        return f"{full_key.group(1)} is not a config key"
    head = _first_line(text).rstrip(".") or type(exc).__name__
    if cause is not None and _first_line(str(cause)):
        head += f" ({_first_line(str(cause))})"
    return head


def _describe(exc: BaseException, override: str | None, cfg0: Any) -> str:
    """A composition error as one line, with the override that caused it and the closest existing key."""
    message = _one_line(exc)
    key = re.match(r"(\S+) is not a config key$", message)
    if key:
        message += _key_hint(cfg0, key.group(1))
    return message + (f" (from {override})" if override else "")


def _key_hint(cfg: Any, full_key: str) -> str:
    """``; did you mean X?`` for a key that is not in ``cfg`` (the closest sibling), or ``""``."""
    from ..cli import where_key_leaves

    gap = where_key_leaves(cfg, full_key)
    parts = full_key.split(".")
    if gap is None or gap[0] != ".".join(parts[:-1]) or gap[2] is None:  # only a misspelt last part gets a hint
        return ""
    return f"; did you mean {'.'.join(parts[:-1] + [gap[2]])}?"


def _compose(conf_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def dataset_name(experiment: str, overrides: list[str], conf_dir: str | os.PathLike | None = None) -> str:
    conf_dir = Path(conf_dir) if conf_dir is not None else find_project_root() / "conf"
    return str(_compose(conf_dir, [f"experiment={experiment}", *overrides]).dataset.name)


def ready_cache(cfg: Any, project_root: Path) -> Path | None:
    """The manifest of a complete prepared cache for ``cfg``'s dataset, or None.

    Looks for ``<dataset.loader.cache_dir>/*.json`` whose manifest says ``complete: true`` and whose
    ``config.dataset`` is the dataset's name (or its config group's, e.g. ``chestxray14`` for nih1000).
    """
    from flowmixup.data.cache import read_manifest

    try:
        cache_dir = OmegaConf.select(cfg, "dataset.loader.cache_dir", default=None)
    except Exception:  # an interpolation that cannot be resolved: no cache to find
        return None
    if not cache_dir:
        return None
    cache_dir = Path(str(cache_dir))
    cache_dir = cache_dir if cache_dir.is_absolute() else project_root / cache_dir
    names = {str(cfg.dataset.name)}
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.dataset", default=None)
    if choice:
        names.add(str(choice))
    for manifest_file in sorted(cache_dir.glob("*.json")) if cache_dir.is_dir() else []:
        manifest = read_manifest(manifest_file.with_suffix(".h5"))
        if (isinstance(manifest, dict) and manifest.get("complete") is True
                and isinstance(manifest.get("config"), dict) and manifest["config"].get("dataset") in names):
            return manifest_file
    return None


def _display(path: Path, project_root: Path) -> str:
    try:
        return str(path.relative_to(project_root))
    except ValueError:
        return str(path)


def plan(prof: dict, seeds: list[int], extra: dict[str, list[str]], launcher: str | None = None,
         hydra_args: Sequence[str] = (), project_root: str | os.PathLike | None = None, need_data: bool = True
         ) -> Plan:
    """The blocks to run, the expected grid (for missing-cell detection), the datasets left out and the problems.

    Composes each block's config as ``train.py`` will (``experiment``, the profile's overrides, the row's, the
    ``--set`` ones for the dataset or its experiment, ``--hydra``, ``--launcher``) and checks it. Nothing runs.
    ``need_data=False`` (the planner): a dataset without ``dataset.root`` or a prepared cache is no problem.
    """
    from flowmixup.training.checks import ConfigError, check_config

    root_dir = Path(project_root) if project_root is not None else find_project_root()
    conf_dir = root_dir / "conf"
    out = Plan()
    if not seeds:
        out.problems.append("--seeds: no seed given")
        seeds = [0]

    # --launcher and the --hydra overrides of hydra's own config: checked once, against the launcher's config
    hydra_own = [h for h in hydra_args if h.lstrip("+~").startswith("hydra")]
    per_run = [h for h in hydra_args if h not in hydra_own]
    launch = [f"hydra/launcher={launcher}"] if launcher else []
    launch_ok = True
    if launcher:
        try:
            _compose(conf_dir, launch)
        except Exception as exc:  # noqa: BLE001 - any composition error is one line for the user
            out.problems.append(f"--launcher {launcher}: {_one_line(exc)}")
            launch, launch_ok = [], False
    good_hydra = []
    groups_first = sorted(hydra_own, key=lambda h: "/" not in h.split("=", 1)[0])  # hydra/launcher=... first
    for h in groups_first:
        try:
            _compose(conf_dir, [*launch, *good_hydra, h])
            good_hydra.append(h)
        except Exception as exc:  # noqa: BLE001
            if launch_ok:
                out.problems.append(f"--hydra {h}: {_one_line(exc)}")
    launch += good_hydra
    chosen_launchers = [launcher or "basic"] + [h.split("=", 1)[1] for h in good_hydra
                                                if h.lstrip("+~").split("=", 1)[0] == "hydra/launcher"]
    remote = chosen_launchers[-1] not in LOCAL_LAUNCHERS  # e.g. slurm: the runs do not run on this machine

    known: dict[str, str] = {}  # names --set may use -> the dataset they reach
    per_dataset: dict[str, list[str]] = {}  # problem -> the datasets (and rows) it hits: one line for all of them
    for entry in prof["datasets"]:
        if not isinstance(entry, dict) or "experiment" not in entry or "noise" not in entry:
            out.problems.append(f"profile: a dataset entry needs 'experiment' and 'noise', got {entry!r}")
            continue
        exp = str(entry["experiment"])
        base = [str(o) for o in entry.get("overrides", [])]
        metrics = entry.get("report_metrics")
        if metrics is not None:
            if not isinstance(metrics, list) or not metrics or any(m not in REPORT_METRICS for m in metrics):
                out.problems.append(f"profile: experiment {exp}: report_metrics must be a non-empty list of "
                                    f"{', '.join(REPORT_METRICS)}, got {metrics!r}")
                continue
            # display-only (tables.EXECUTION_ONLY): each run's config says which tables its dataset gets
            base.append("++dataset.report_metrics=[" + ",".join(metrics) + "]")
        try:
            cfg0 = _compose(conf_dir, [f"experiment={exp}", *base])
            name = str(cfg0.dataset.name)
            choice = str(OmegaConf.select(cfg0, "hydra.runtime.choices.dataset", default=None) or name)
        except Exception as exc:  # noqa: BLE001
            out.problems.append(f"profile: experiment {exp}: {_one_line(exc)}")
            known[exp] = exp
            continue
        known[exp] = known[name] = name
        known.setdefault(choice, name)  # the dataset's config option (e.g. ptbxl for ptbxl_all and ptbxl_form)
        needs = entry.get("needs")
        if needs and not (root_dir / needs).exists() and not Path(needs).exists():
            if entry.get("optional"):
                out.skipped.append(f"{exp}: {needs} not found")
            else:
                out.problems.append(f"{name}: experiment {exp} needs {needs}, which does not exist")
            continue
        # --set matches the dataset's config option, its experiment and its name (in that order)
        keys = list(dict.fromkeys(k for k in (choice, exp, name)))
        user = [o for k in keys for o in extra.get(k, [])]
        origin = {o: f"--hydra {o}" for o in per_run}
        origin.update({o: f"--set {choice}:{o}" for o in extra.get(choice, [])})
        origin.update({o: f"--set {name}:{o}" for o in extra.get(name, [])})
        origin.update({o: f"--set {exp}:{o}" for o in extra.get(exp, [])})
        overrides = base + user
        try:
            noise = [float(n) for n in entry["noise"]]
            if not noise:
                raise ValueError
        except (TypeError, ValueError):
            out.problems.append(f"{name}: the profile's noise must be a non-empty list of numbers, "
                                f"got {entry['noise']!r}")
            continue

        by_message: dict[str, list[str]] = {}
        root_checked = False
        fields: dict[str, dict] = {}
        configs: dict[str, Any] = {}
        for row_def in prof["rows"]:
            row = row_def["name"]

            def args(chosen: list[str]) -> list[str]:
                # in the order train.py gets them (see run_profile), with one noise level and one seed
                return [f"experiment={exp}", *row_def["overrides"], f"noise={noise[0]}",  # noqa: B023
                        f"seed={seeds[0]}",
                        *base, *[o for o in chosen if o not in per_run], *RUN_ARGS, *launch,
                        *[o for o in chosen if o in per_run]]

            chosen = overrides[len(base):] + per_run  # the user's: --set, then --hydra's non-hydra ones
            try:
                cfg = _compose(conf_dir, args(chosen))
            except Exception as exc:  # noqa: BLE001 - any composition error is one line for the user
                # Hydra names only the first bad override: try each alone, report every bad one, go on without them
                bad = []
                for override in chosen:
                    try:
                        _compose(conf_dir, args([override]))
                    except Exception as one:  # noqa: BLE001
                        bad.append(override)
                        by_message.setdefault(_describe(one, origin.get(override), cfg0), []).append(row)
                if not bad:
                    by_message.setdefault(_describe(exc, None, cfg0), []).append(row)
                    continue
                try:
                    cfg = _compose(conf_dir, args([o for o in chosen if o not in bad]))
                except Exception:  # noqa: BLE001 - the overrides only fail together: reported above
                    continue
            fields[row] = row_fields(cfg)
            configs[row] = cfg
            if not root_checked and need_data:
                root_checked = True
                overrides += _check_root(cfg, name, root_dir, out, choice)
            if "root" in cfg.dataset.keys() and OmegaConf.is_missing(cfg.dataset, "root"):
                cfg.dataset.root = None  # reported by _check_root; check_config need not say it again
            for n in noise:
                try:
                    cfg.noise = n
                    with contextlib.chdir(root_dir):  # relative paths mean what they mean to train.py
                        check_config(cfg, local=not remote)  # remote: the runs' machines have the GPUs
                except ConfigError as exc:
                    by_message.setdefault(_first_line(str(exc)), []).append(row)
                    break
                except Exception as exc:  # noqa: BLE001 - e.g. a value that cannot be resolved
                    by_message.setdefault(_one_line(exc), []).append(row)
                    break
        for message, rows in by_message.items():
            where = name if len(rows) == len(prof["rows"]) else f"{name} ({', '.join(rows)})"
            per_dataset.setdefault(message, []).append(where)
        for row_def in prof["rows"]:
            row, row_fields_ = row_def["name"], fields.get(row_def["name"], {})
            out.blocks.append(Block(exp, name, row, noise, list(seeds), list(overrides), row_def["overrides"],
                                    row_fields_, configs.get(row), entry))
            for n in noise:
                for s in seeds:
                    out.grid.append({"dataset": name, **row_fields_, "noise": n, "seed": s, "row": row})

    out.problems += [f"{', '.join(where)}: {message}" for message, where in per_dataset.items()]
    for dataset_or_exp, items in extra.items():
        if dataset_or_exp not in known:
            names = sorted({v for v in known.values()})
            for item in items:
                out.problems.append(f"--set {dataset_or_exp}:{item}: '{dataset_or_exp}' is not a dataset of this "
                                    f"profile; known: {', '.join(names)} (or their experiments)")
    return out


def _check_root(cfg: Any, name: str, project_root: Path, out: Plan, option: str | None = None) -> list[str]:
    """Report a dataset without ``dataset.root`` and without a prepared cache; the overrides to run from a cache.

    (A root that is set is checked by ``check_config``, as ``train.py`` does.)
    """
    if "root" not in cfg.dataset.keys() or not OmegaConf.is_missing(cfg.dataset, "root"):
        return []
    cache = ready_cache(cfg, project_root)
    if cache is not None:
        out.notes.append(f"{name}: dataset.root is not set; its runs use the prepared cache "
                         f"{_display(cache.with_suffix('.h5'), project_root)} (dataset.root=null)")
        return ["dataset.root=null"]
    try:
        where = OmegaConf.select(cfg, "dataset.loader.cache_dir", default=None)
    except Exception:  # noqa: BLE001
        where = None
    looked = f" and no prepared cache is in {where}" if where else ""
    out.problems.append(f"{name}: dataset.root is not set{looked}; pass --set {option or name}:dataset.root=/path")
    return []


def cell_dir(sweep: Path, dataset: str, row: str | dict, noise: float, seed: int) -> Path:
    """The folder CELL_DIR gives a cell (kept in step with it; checked by the tests). ``row``: its fields
    (:func:`row_fields`) or the name of a row a profile defines."""
    fields = row if isinstance(row, dict) else dict(_named_row_fields(row, str(find_project_root() / "conf")))
    alpha = "none" if fields.get("alpha") is None else str(float(fields["alpha"]))
    keep = "none" if fields.get("keep_original") is None else str(bool(fields["keep_original"]))
    return sweep / dataset / f"{fields['regularizer']}_a{alpha}_op{keep}" / f"noise{float(noise)}_seed{int(seed)}"


def block_log(sweep: Path, dataset: str, row: str) -> Path:
    """Where a block's ``train.py -m`` output (stdout and stderr) goes."""
    return sweep / "logs" / f"{dataset}__{row}.log"


def count_done(sweep: Path) -> int:
    return sum(1 for _ in sweep.rglob("summary.json")) if sweep.exists() else 0


def _row_of(cell: dict) -> str:
    """A grid cell's row name (grid.json names it; older grids: the defined row with the same fields)."""
    if "row" in cell:
        return str(cell["row"])
    conf = str(find_project_root() / "conf")
    wanted = {k: cell.get(k) for k in ("regularizer", "alpha", "keep_original")}
    return next((r for r in known_rows(conf) if dict(_named_row_fields(r, conf)) == wanted), str(cell["regularizer"]))


def failed_cells(sweep: Path, grid: list[dict]) -> list[tuple[Path, str, Path]]:
    """``(cell folder, why, log)`` for each cell of ``grid`` without ``summary.json`` or whose status is not ok.

    ``log`` is the cell's own Hydra log (``<cell>/train.log``) where there is one, else its block's log.
    """
    failed = []
    for cell in grid:
        row = _row_of(cell)
        folder = cell_dir(sweep, cell["dataset"], cell, cell["noise"], cell["seed"])
        summary = folder / "summary.json"
        why = None
        if not summary.is_file():
            why = "no summary.json (the run did not end)"
        else:
            try:
                record = json.loads(summary.read_text(encoding="utf-8"))
                status = record.get("status") if isinstance(record, dict) else None
                if status != "ok":
                    reason = record.get("reason") if isinstance(record, dict) else None
                    why = f"status {status}" + (f": {reason}" if reason else "")
            except (OSError, ValueError) as exc:
                why = f"unreadable summary.json ({exc})"
        if why is not None:
            logs = sorted(folder.glob("*.log")) if folder.is_dir() else []
            failed.append((folder, why, logs[0] if logs else block_log(sweep, cell["dataset"], row)))
    return failed


def _last_error_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    lines = [line for line in lines if not line.startswith("Set the environment variable HYDRA_FULL_ERROR")]
    return lines[-1] if lines else ""


def _block_command(b: Block, sweep: Path, root_dir: Path, launcher: str | None, hydra_args: Sequence[str]) -> list:
    cmd = [sys.executable, str(root_dir / "train.py"), "-m", f"experiment={b.experiment}", *b.row_overrides,
           "noise=" + ",".join(str(n) for n in b.noise), "seed=" + ",".join(str(s) for s in b.seeds),
           *b.overrides, *RUN_ARGS, f"hydra.sweep.dir={sweep}", f"hydra.sweep.subdir={CELL_DIR}"]
    return cmd + ([f"hydra/launcher={launcher}"] if launcher else []) + list(hydra_args)


def _run_blocks(todo: list, n_blocks: int, total: int, sweep: Path, root_dir: Path, launcher: str | None,
                hydra_args: Sequence[str], at_once: int) -> None:
    """Run the blocks ``todo`` ((number, Block) pairs), ``at_once`` of them at a time, each logging into its file."""
    running: list[tuple[int, Block, subprocess.Popen, Any, Path, float]] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < at_once:
            i, b = queue.pop(0)
            cmd = _block_command(b, sweep, root_dir, launcher, hydra_args)
            log = block_log(sweep, b.dataset, b.row)
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "w", encoding="utf-8")
            fh.write(" ".join(cmd) + "\n\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=root_dir, stdout=fh, stderr=subprocess.STDOUT, text=True)
            running.append((i, b, proc, fh, log, time.time()))
        done = _wait_any([r[2] for r in running])
        i, b, proc, fh, log, t0 = running.pop(done)
        fh.close()
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; log {log})"
        print(f"[reproduce] block {i}/{n_blocks} {b.dataset} {b.row}: {status} in {time.time() - t0:.0f}s; "
              f"{count_done(sweep)}/{total} cells finished", flush=True)
        if proc.returncode != 0 and _last_error_line(log):
            print(f"[reproduce]   {_last_error_line(log)}", file=sys.stderr, flush=True)


def _wait_any(procs: list, poll_s: float = 0.5) -> int:
    """The index of the first of ``procs`` to end (waits for it)."""
    while True:
        for k, proc in enumerate(procs):
            if proc.poll() is not None:
                return k
        time.sleep(poll_s)


def run_profile(profile: str, seeds: list[int], sweep: Path, launcher: str | None = None,
                hydra_args: Sequence[str] = (), extra: dict[str, list[str]] | None = None,
                sets: Sequence[str] = (), project_root: str | os.PathLike | None = None,
                blocks_at_once: int = 1) -> int:
    """Check, then run every block of ``profile`` into ``sweep`` and aggregate; returns the number of failed cells.

    ``sets`` are raw ``DATASET:KEY=VALUE`` strings (``--set``), ``extra`` the same already split. Raises
    :class:`PreflightError` (nothing launched, nothing written) when the preflight finds a problem.
    ``blocks_at_once`` > 1 runs that many blocks (``train.py -m`` calls) side by side: with ``--launcher local_gpus``
    their jobs share the GPU slots of the sweep folder, so every GPU stays busy even when a block has fewer runs
    than there are GPUs.
    """
    from ..report import figures, tables

    started = time.time()
    root_dir = Path(project_root) if project_root is not None else find_project_root()
    prof = load_profile(profile, root_dir / "conf")
    parsed, problems = parse_sets(sets)
    merged: dict[str, list[str]] = {k: list(v) for k, v in (extra or {}).items()}
    for key, values in parsed.items():
        merged.setdefault(key, []).extend(values)
    checked = plan(prof, seeds, merged, launcher, hydra_args, root_dir)
    problems += checked.problems
    if problems:
        raise PreflightError(problems)
    blocks, grid = checked.blocks, checked.grid

    sweep.mkdir(parents=True, exist_ok=True)
    write_json(sweep / "grid.json", grid)
    for note in checked.skipped:
        print(f"[reproduce] left out {note}", flush=True)
    for note in checked.notes:
        print(f"[reproduce] {note}", flush=True)
    total = len(grid)
    print(f"[reproduce] profile {profile}: {len(blocks)} blocks, {total} cells, {count_done(sweep)} already finished, "
          f"into {sweep}", flush=True)
    todo = []
    for i, b in enumerate(blocks, 1):
        if all((cell_dir(sweep, b.dataset, b.fields, n, s) / "summary.json").is_file() for n in b.noise for s in b.seeds):
            print(f"[reproduce] block {i}/{len(blocks)} {b.dataset} {b.row}: all cells finished, skipped", flush=True)
        else:
            todo.append((i, b))
    _run_blocks(todo, len(blocks), total, sweep, root_dir, launcher, hydra_args, max(1, int(blocks_at_once)))
    tables.make_report(sweep)
    figs = figures.make_figures(sweep)
    print((sweep / "report" / "report.md").read_text(), flush=True)
    print(f"[reproduce] report: {sweep / 'report'} ({len(figs.get('paths', []))} figure files); "
          f"wall time {time.time() - started:.0f}s", flush=True)
    write_json(sweep / "report" / "wall_time.json", {"wall_time_s": round(time.time() - started, 1)})

    failed = failed_cells(sweep, grid)
    if failed:
        unfinished = sum(1 for _, why, _ in failed if why.startswith("no summary.json"))
        print(f"error: {len(failed)} of {total} cells failed ({unfinished} without summary.json, "
              f"{len(failed) - unfinished} with a status other than ok); each cell's log is named below, every block's "
              f"output is in {sweep / 'logs'}; a cell holding summary.json is not run again (delete its folder to "
              "retry it)", file=sys.stderr, flush=True)
        shown = failed[:20]
        for folder, why, log in shown:
            print(f"  {folder}: {why}; log: {log}", file=sys.stderr, flush=True)
        if len(failed) > len(shown):
            print(f"  ... and {len(failed) - len(shown)} more", file=sys.stderr, flush=True)
    return len(failed)
