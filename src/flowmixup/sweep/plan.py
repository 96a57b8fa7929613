"""The preflight: a profile's blocks, each composed as ``train.py`` will compose it and checked, before anything runs.

A block is one (dataset, row) pair: one ``train.py -m`` call over noise x seeds. :func:`plan` composes every block's
config with Hydra's compose API and checks it: every override (the profile's, ``--set``'s, ``--hydra``'s, the rows')
is a valid one, each config passes :func:`flowmixup.training.checks.check_config`, and every dataset has its
``dataset.root`` or a prepared cache. Each problem is one line; with any, nothing is launched (:class:`PreflightError`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from ..project import project_root as find_project_root
from .compose import compose, describe, first_line, one_line
from .rows import row_fields

LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local", "local_gpus")
# the metrics a profile's dataset entry may ask tables for (report_metrics: [auc, macro_f1])
REPORT_METRICS = ("auc", "macro_f1")
# what every block's runs get besides the rows' and the user's overrides
RUN_ARGS = ["trainer.skip_finished=true", "trainer.progress=false"]
# set by the sweep itself: the sweep folder (--sweep-dir) and its cells (paths.cell in conf/config.yaml)
SWEEP_OWN = ("hydra.sweep.dir", "hydra.sweep.subdir")


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


def train_overrides(
    experiment: str,
    row_overrides: Sequence[str],
    noise: Sequence[float],
    seeds: Sequence[int],
    overrides: Sequence[str],
    after: Sequence[str] = (),
) -> list[str]:
    """``train.py``'s overrides for a block, in the order it gets them: the experiment, the row's, the noise levels
    and seeds (one each, or the multirun's lists), the dataset's (profile, ``--set``), :data:`RUN_ARGS`, ``after``."""
    return [
        f"experiment={experiment}",
        *row_overrides,
        "noise=" + ",".join(str(n) for n in noise),
        "seed=" + ",".join(str(s) for s in seeds),
        *overrides,
        *RUN_ARGS,
        *after,
    ]


# --------------------------------------------------------------------------------------------------------------
# Data: a dataset.root or a prepared cache
# --------------------------------------------------------------------------------------------------------------
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
        if (
            isinstance(manifest, dict)
            and manifest.get("complete") is True
            and isinstance(manifest.get("config"), dict)
            and manifest["config"].get("dataset") in names
        ):
            return manifest_file
    return None


def display_path(path: Path, project_root: Path) -> str:
    """``path`` relative to the project where it is inside it."""
    try:
        return str(path.relative_to(project_root))
    except ValueError:
        return str(path)


def _check_root(cfg: Any, name: str, project_root: Path, out: Plan, option: str | None = None) -> list[str]:
    """Report a dataset without ``dataset.root`` and without a prepared cache; the overrides to run from a cache.

    (A root that is set is checked by ``check_config``, as ``train.py`` does.)
    """
    if "root" not in cfg.dataset.keys() or not OmegaConf.is_missing(cfg.dataset, "root"):
        return []
    cache = ready_cache(cfg, project_root)
    if cache is not None:
        out.notes.append(
            f"{name}: dataset.root is not set; its runs use the prepared cache "
            f"{display_path(cache.with_suffix('.h5'), project_root)} (dataset.root=null)"
        )
        return ["dataset.root=null"]
    try:
        where = OmegaConf.select(cfg, "dataset.loader.cache_dir", default=None)
    except Exception:  # noqa: BLE001
        where = None
    looked = f" and no prepared cache is in {where}" if where else ""
    out.problems.append(f"{name}: dataset.root is not set{looked}; pass --set {option or name}:dataset.root=/path")
    return []


# --------------------------------------------------------------------------------------------------------------
# The preflight, step by step
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Dataset:
    """A profile's dataset entry, composed once: what its blocks share."""

    entry: dict
    experiment: str
    name: str  # dataset.name (a task of PTB-XL is a dataset of its own: ptbxl_all)
    choice: str  # its dataset config option (ptbxl)
    base: list[str]  # the profile's overrides (with report_metrics)
    user: list[str]  # --set's for it
    origin: dict[str, str]  # override -> where the user gave it (--set ..., --hydra ...)
    noise: list[float]
    cfg0: Any  # the experiment composed with the profile's overrides


class _Preflight:
    """The state of one :func:`plan` call: the launcher's overrides, the names --set may use, the problems."""

    def __init__(self, root: Path, seeds: list[int], extra: dict[str, list[str]], need_data: bool):
        self.root, self.conf, self.extra, self.need_data = root, root / "conf", extra, need_data
        self.out = Plan()
        if not seeds:
            self.out.problems.append("--seeds: no seed given")
        self.seeds = list(seeds) or [0]
        self.launch: list[str] = []  # --launcher and the good --hydra overrides of hydra's own config
        self.per_run: list[str] = []  # the --hydra overrides of the runs' own config
        self.remote = False  # e.g. slurm: the runs do not run on this machine
        self.known: dict[str, str] = {}  # names --set may use -> the dataset they reach
        self.per_dataset: dict[str, list[str]] = {}  # problem -> the datasets (and rows) it hits: one line for all

    def check_launcher(self, launcher: str | None, hydra_args: Sequence[str]) -> None:
        """``--launcher`` and the ``--hydra`` overrides of hydra's own config, checked once against its config."""
        hydra_own = [h for h in hydra_args if h.lstrip("+~").startswith("hydra")]
        self.per_run = [h for h in hydra_args if h not in hydra_own]
        for h in hydra_own:
            if h.lstrip("+~").split("=", 1)[0] in SWEEP_OWN:
                self.out.problems.append(
                    f"--hydra {h}: the sweep sets hydra.sweep.dir (--sweep-dir) and "
                    "hydra.sweep.subdir (paths.cell in conf/config.yaml) itself"
                )
        hydra_own = [h for h in hydra_own if h.lstrip("+~").split("=", 1)[0] not in SWEEP_OWN]
        launch = [f"hydra/launcher={launcher}"] if launcher else []
        launch_ok = True
        if launcher:
            try:
                compose(self.conf, launch)
            except Exception as exc:  # noqa: BLE001 - any composition error is one line for the user
                self.out.problems.append(f"--launcher {launcher}: {one_line(exc)}")
                launch, launch_ok = [], False
        good_hydra = []
        for h in sorted(hydra_own, key=lambda h: "/" not in h.split("=", 1)[0]):  # hydra/launcher=... first
            try:
                compose(self.conf, [*launch, *good_hydra, h])
                good_hydra.append(h)
            except Exception as exc:  # noqa: BLE001
                if launch_ok:
                    self.out.problems.append(f"--hydra {h}: {one_line(exc)}")
        self.launch = launch + good_hydra
        chosen = [launcher or "basic"] + [
            h.split("=", 1)[1] for h in good_hydra if h.lstrip("+~").split("=", 1)[0] == "hydra/launcher"
        ]
        self.remote = chosen[-1] not in LOCAL_LAUNCHERS

    def _base(self, entry: Any) -> list[str] | None:
        """The profile's overrides of a dataset entry (with its report_metrics), or None (a problem said why)."""
        if not isinstance(entry, dict) or "experiment" not in entry or "noise" not in entry:
            self.out.problems.append(f"profile: a dataset entry needs 'experiment' and 'noise', got {entry!r}")
            return None
        base = [str(o) for o in entry.get("overrides", [])]
        metrics = entry.get("report_metrics")
        if metrics is not None:
            if not isinstance(metrics, list) or not metrics or any(m not in REPORT_METRICS for m in metrics):
                self.out.problems.append(
                    f"profile: experiment {entry['experiment']}: report_metrics must be a "
                    f"non-empty list of {', '.join(REPORT_METRICS)}, got {metrics!r}"
                )
                return None
            # display-only (tables.EXECUTION_ONLY): each run's config says which tables its dataset gets
            base.append("++dataset.report_metrics=[" + ",".join(metrics) + "]")
        return base

    def _available(self, entry: dict, exp: str, name: str) -> bool:
        """False for a dataset whose ``needs`` is absent (left out if optional, else a problem)."""
        needs = entry.get("needs")
        if not needs or (self.root / needs).exists() or Path(needs).exists():
            return True
        if entry.get("optional"):
            self.out.skipped.append(f"{exp}: {needs} not found")
        else:
            self.out.problems.append(f"{name}: experiment {exp} needs {needs}, which does not exist")
        return False

    def dataset(self, entry: Any) -> _Dataset | None:
        """A profile's dataset entry composed and checked on its own, or None (a problem or a note says why)."""
        base = self._base(entry)
        if base is None:
            return None
        exp = str(entry["experiment"])
        try:
            cfg0 = compose(self.conf, [f"experiment={exp}", *base])
            name = str(cfg0.dataset.name)
            choice = str(OmegaConf.select(cfg0, "hydra.runtime.choices.dataset", default=None) or name)
        except Exception as exc:  # noqa: BLE001
            self.out.problems.append(f"profile: experiment {exp}: {one_line(exc)}")
            self.known[exp] = exp
            return None
        self.known[exp] = self.known[name] = name
        self.known.setdefault(choice, name)  # the dataset's config option (e.g. ptbxl for ptbxl_all and ptbxl_form)
        if not self._available(entry, exp, name):
            return None
        try:
            noise = [float(n) for n in entry["noise"]]
            if not noise:
                raise ValueError
        except (TypeError, ValueError):
            self.out.problems.append(
                f"{name}: the profile's noise must be a non-empty list of numbers, got {entry['noise']!r}"
            )
            return None
        # --set matches the dataset's config option, its experiment and its name (in that order)
        keys = list(dict.fromkeys((choice, exp, name)))
        origin = {o: f"--hydra {o}" for o in self.per_run}
        for key in (choice, name, exp):
            origin.update({o: f"--set {key}:{o}" for o in self.extra.get(key, [])})
        user = [o for k in keys for o in self.extra.get(k, [])]
        return _Dataset(entry, exp, name, choice, base, user, origin, noise, cfg0)

    def _args(self, ds: _Dataset, row_overrides: list[str], chosen: list[str]) -> list[str]:
        """train.py's overrides for one run of a block (its first noise level and seed), with the user's ``chosen``."""
        return train_overrides(
            ds.experiment,
            row_overrides,
            ds.noise[:1],
            self.seeds[:1],
            [*ds.base, *[o for o in chosen if o not in self.per_run]],
            [*self.launch, *[o for o in chosen if o in self.per_run]],
        )

    def compose_row(self, ds: _Dataset, row: dict, chosen: list[str], by_message: dict) -> Any:
        """A block's config, or None. Hydra names only the first bad override: each of the user's is then tried
        alone, every bad one is reported, and the config is composed without them."""
        try:
            return compose(self.conf, self._args(ds, row["overrides"], chosen))
        except Exception as exc:  # noqa: BLE001 - any composition error is one line for the user
            bad = []
            for override in chosen:
                try:
                    compose(self.conf, self._args(ds, row["overrides"], [override]))
                except Exception as one:  # noqa: BLE001
                    bad.append(override)
                    by_message.setdefault(describe(one, ds.origin.get(override), ds.cfg0), []).append(row["name"])
            if not bad:
                by_message.setdefault(describe(exc, None, ds.cfg0), []).append(row["name"])
                return None
        try:
            return compose(self.conf, self._args(ds, row["overrides"], [o for o in chosen if o not in bad]))
        except Exception:  # noqa: BLE001 - the overrides only fail together: reported above
            return None

    def check_runs(self, cfg: Any, ds: _Dataset, row: str, by_message: dict) -> None:
        """``check_config`` at each noise level, as train.py's preflight does (relative paths from the project)."""
        from flowmixup.training.checks import ConfigError, check_config

        if "root" in cfg.dataset.keys() and OmegaConf.is_missing(cfg.dataset, "root"):
            cfg.dataset.root = None  # reported by _check_root; check_config need not say it again
        for n in ds.noise:
            try:
                cfg.noise = n
                with contextlib.chdir(self.root):  # relative paths mean what they mean to train.py
                    check_config(cfg, local=not self.remote)  # remote: the runs' machines have the GPUs
            except ConfigError as exc:
                by_message.setdefault(first_line(str(exc)), []).append(row)
                return
            except Exception as exc:  # noqa: BLE001 - e.g. a value that cannot be resolved
                by_message.setdefault(one_line(exc), []).append(row)
                return

    def plan_dataset(self, ds: _Dataset, rows: list[dict]) -> None:
        """Compose and check every row's block of one dataset; add the blocks and their cells to the plan."""
        overrides = ds.base + ds.user
        by_message: dict[str, list[str]] = {}
        fields: dict[str, dict] = {}
        configs: dict[str, Any] = {}
        for row in rows:
            chosen = overrides[len(ds.base) :] + self.per_run  # the user's: --set, then --hydra's non-hydra ones
            cfg = self.compose_row(ds, row, chosen, by_message)
            if cfg is None:
                continue
            fields[row["name"]], configs[row["name"]] = row_fields(cfg), cfg
            if len(configs) == 1 and self.need_data:
                overrides += _check_root(cfg, ds.name, self.root, self.out, ds.choice)
            self.check_runs(cfg, ds, row["name"], by_message)
        for message, hit in by_message.items():
            where = ds.name if len(hit) == len(rows) else f"{ds.name} ({', '.join(hit)})"
            self.per_dataset.setdefault(message, []).append(where)
        for row in rows:
            name, row_fields_ = row["name"], fields.get(row["name"], {})
            self.out.blocks.append(
                Block(
                    ds.experiment,
                    ds.name,
                    name,
                    ds.noise,
                    list(self.seeds),
                    list(overrides),
                    row["overrides"],
                    row_fields_,
                    configs.get(name),
                    ds.entry,
                )
            )
            self.out.grid += [
                {"dataset": ds.name, **row_fields_, "noise": n, "seed": s, "row": name}
                for n in ds.noise
                for s in self.seeds
            ]

    def finish(self) -> Plan:
        """The plan, with the per-dataset problems and the ``--set`` names no dataset of the profile answers to."""
        self.out.problems += [f"{', '.join(where)}: {message}" for message, where in self.per_dataset.items()]
        names = sorted(set(self.known.values()))
        for dataset_or_exp, items in self.extra.items():
            if dataset_or_exp not in self.known:
                self.out.problems += [
                    f"--set {dataset_or_exp}:{item}: '{dataset_or_exp}' is not a dataset of this "
                    f"profile; known: {', '.join(names)} (or their experiments)"
                    for item in items
                ]
        return self.out


def plan(
    prof: dict,
    seeds: list[int],
    extra: dict[str, list[str]],
    launcher: str | None = None,
    hydra_args: Sequence[str] = (),
    project_root: str | os.PathLike | None = None,
    need_data: bool = True,
) -> Plan:
    """The blocks to run, the expected grid (for missing-cell detection), the datasets left out and the problems.

    Composes each block's config as ``train.py`` will (``experiment``, the row's overrides, the profile's, the
    ``--set`` ones for the dataset or its experiment, ``--launcher``, ``--hydra``) and checks it. Nothing runs.
    ``need_data=False`` (the planner): a dataset without ``dataset.root`` or a prepared cache is no problem.
    """
    root = Path(project_root) if project_root is not None else find_project_root()
    check = _Preflight(root, seeds, extra, need_data)
    check.check_launcher(launcher, hydra_args)
    for entry in prof["datasets"]:
        ds = check.dataset(entry)
        if ds is not None:
            check.plan_dataset(ds, _entry_rows(prof["rows"], entry, check.out.problems))
    return check.finish()


def _entry_rows(rows: list[dict], entry: dict, problems: list[str]) -> list[dict]:
    """The profile's rows a dataset entry runs: all of them, or those its ``rows: [...]`` names (a block kept small,
    e.g. the mini profile's class-conditional noise block)."""
    wanted = entry.get("rows")
    if wanted is None:
        return rows
    known = [r["name"] for r in rows]
    bad = [w for w in wanted if w not in known] if isinstance(wanted, list) and wanted else [wanted]
    if bad:
        problems.append(
            f"profile: experiment {entry['experiment']}: rows {bad} are not rows of the profile; allowed: a non-empty "
            f"list of {', '.join(known)}"
        )
        return []
    return [r for r in rows if r["name"] in wanted]
