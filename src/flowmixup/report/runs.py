"""A sweep's run folders read into one DataFrame, and what a run is: its dataset, its table row (:class:`Setting`),
its noise, seed and primary metric.

``summary.json`` files (at any depth below the sweep) -> :func:`collect_runs` (or :func:`check_sweep`, which also
checks every run file and ``grid.json``): one row per run, every summary key and every value of the run's config as
a dotted column (``config.trainer.lr``; the summary's ``config`` key, else ``<run>/config.yaml``) ->
:func:`prepare_runs`: each run's table row, noise, seed and primary metric; runs that differ in a setting other than
the seed get their own rows; true duplicates are set aside.

**No run is dropped silently.** A run's row is its regularizer and the settings its config shows
(``regularizer.label`` / ``regularizer.shown``; older summaries: the built-in names and α / Op). When runs of one
dataset, row and noise level differ in any other result-affecting setting (every config value except
:data:`EXECUTION_ONLY`), each setting value gets its own row, labelled e.g. ``Flow-Mixup (α=3.0, Op=False)
[backbone=resnet34_1d]``. Runs alike in everything including the seed are duplicates: the newest ok one is used
and all are listed in ``report.md``. Every reader returns or raises a one-line problem naming what is wrong, never
a traceback.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

# Built-in display names and primary metrics, for runs whose config does not say (dataset.label,
# dataset.primary_metric). A key also covers the datasets named <key>_<variant> (ptbxl_all: "PTB-XL all").
DATASET_NAMES = {
    "chestxray14": "ChestX-ray14",
    "ecg12": "ECG-12",
    "ecg55": "ECG-55",
    "synth_ecg": "Synthetic ECG",
    "ptbxl": "PTB-XL",
    "cinc2021": "CinC 2021",
}
DEFAULT_PRIMARY_METRIC = {
    "chestxray14": "auc",
    "ecg12": "macro_f1",
    "ecg55": "macro_f1",
    "synth_ecg": "macro_f1",
    "ptbxl": "auc",
    "cinc2021": "macro_f1",
}
_REGULARIZER_NAMES = {"erm": "ERM", "mixup": "Mixup", "manifold_mixup": "Manifold Mixup", "flowmixup": "Flow-Mixup"}
_REGULARIZER_ORDER = list(_REGULARIZER_NAMES)
REQUIRED_KEYS = ("status", "dataset", "regularizer", "noise", "seed")
METRICS_COLUMNS = {"auc": "test_auc", "macro_f1": "test_macro_f1"}
PER_CLASS_COLUMNS = ("class", "train_count", "train_single_count")
PER_CLASS_METRIC = {"auc": "test_auc", "macro_f1": "test_f1"}
DDOF = 1  # the standard deviation over seeds is the sample one, everywhere in the report

# Settings that change how or where a run executes, never its result: they never split a table row. Patterns on
# the config's dotted keys (fnmatch). Everything else in a run's config is result-affecting.
EXECUTION_ONLY = (
    "seed",
    "paths.*",
    "trainer.device",
    "trainer.num_workers",
    "trainer.num_threads",
    "trainer.progress",
    "trainer.resume",
    "trainer.skip_finished",
    "trainer.compile*",
    "trainer.cuda_graph",
    "logger.*",
    "logger",
    "hydra.*",
    "dataset.root",
    "dataset.prepare_workers",
    "*cache_dir",
    "*.cache_dir",
    "run_dir",
    "output_dir",
    "dataset.label",
    "dataset.report_metrics",
    "dataset.expert_labels",  # evaluation beside the test split: training is the same with and without it
)
# Settings that follow the run's seed by default (conf/config.yaml: ``corruption.seed: ${seed}``): part of the
# replicate, not of the row. They split a row only where a run sets them to something other than its own seed.
SEED_FOLLOWERS = ("corruption.seed",)
# Summary keys that are settings, for older summaries without any config (the others are results).
SUMMARY_SETTINGS = ("backbone", "mix_points", "corruption_kind", "epochs_planned")


def latex_escape(text: str) -> str:
    return text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")


def builtin_key(dataset: str, mapping: dict) -> str | None:
    """The key of ``mapping`` that covers ``dataset``: itself, else the longest ``k`` with ``dataset == k_<...>``."""
    if dataset in mapping:
        return dataset
    keys = [k for k in mapping if dataset.startswith(f"{k}_")]
    return max(keys, key=len) if keys else None


def dataset_label(dataset: str, labels: dict | None = None) -> str:
    """A dataset's name in tables: its config's ``dataset.label`` (``labels``), else the built-in name (with the
    variant: ``ptbxl_all`` -> ``PTB-XL all``), else the name itself."""
    if labels and isinstance(labels.get(dataset), str) and labels[dataset].strip():
        return labels[dataset]
    key = builtin_key(dataset, DATASET_NAMES)
    if key is None:
        return dataset
    return DATASET_NAMES[key] + ("" if key == dataset else " " + dataset[len(key) + 1 :])


def default_primary_metric(dataset: str) -> str | None:
    key = builtin_key(dataset, DEFAULT_PRIMARY_METRIC)
    return None if key is None else DEFAULT_PRIMARY_METRIC[key]


def is_missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_alpha(value: Any) -> float | None:
    return None if is_missing(value) or str(value).strip() == "" else round(float(value), 6)


def _as_bool(value: Any) -> bool | None:
    if is_missing(value) or isinstance(value, (bool, np.bool_)):
        return None if is_missing(value) else bool(value)
    text = str(value).strip().lower()
    if text in {"", "none", "null", "nan"}:
        return None
    if text not in {"true", "1", "yes", "false", "0", "no"}:
        raise ValueError(f"not a boolean: {value!r}")
    return text in {"true", "1", "yes"}


def noise_key(value: Any) -> float:
    """The noise level as a key: a float rounded to 6 decimals (so 0.1 and 0.1000000001 agree)."""
    return round(float(value), 6)


def hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return None if is_missing(value) else value


@dataclass(frozen=True)
class Setting:
    """One table row: a regularizer, the settings it shows, and any other setting that tells it from a like row.

    ``params`` and ``extra`` are ``((key, value), ...)``; ``name`` (the config's ``regularizer.label``) only
    changes the display.
    """

    regularizer: str
    alpha: float | None = None
    keep_original: bool | None = None
    params: tuple = ()
    extra: tuple = ()
    name: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, regularizer: str, alpha: Any = None, keep_original: Any = None) -> "Setting":
        """The built-in reading of an older summary: α except for ERM, Op for Flow-Mixup only."""
        regularizer = str(regularizer)
        return cls(
            regularizer,
            None if regularizer == "erm" else _as_alpha(alpha),
            _as_bool(keep_original) if regularizer == "flowmixup" else None,
        )

    def _label(self, latex: bool) -> str:
        esc = latex_escape if latex else str
        name = self.name or _REGULARIZER_NAMES.get(self.regularizer) or esc(self.regularizer)
        a = self.alpha
        parts = (
            [] if a is None else [(r"$\alpha={}$" if latex else "α={}").format(f"{a:.1f}" if a == int(a) else f"{a:g}")]
        )
        parts += [] if self.keep_original is None else [f"Op={self.keep_original}"]
        parts += [esc(f"{k}={v}") for k, v in self.params]
        label = f"{name} ({', '.join(parts)})" if parts else name
        return label + (" [" + esc(", ".join(f"{k}={v}" for k, v in self.extra)) + "]" if self.extra else "")

    label = property(lambda self: self._label(False))
    latex_label = property(lambda self: self._label(True))

    def sort_key(self) -> tuple:
        order = _REGULARIZER_ORDER.index(self.regularizer) if self.regularizer in _REGULARIZER_ORDER else 99
        return (
            order,
            self.regularizer,
            -1.0 if self.alpha is None else self.alpha,
            -1 if self.keep_original is None else int(self.keep_original),
            str(self.params),
            str(self.extra),
        )

    def base(self) -> "Setting":
        return dataclasses.replace(self, extra=())


def setting_of(run: dict) -> Setting:
    """A run's row: from ``config.regularizer.label`` / ``.shown`` when its config has them, else built in."""
    shown = run.get("config.regularizer.shown")
    if not isinstance(shown, (list, tuple)):
        return Setting.of(run["regularizer"], run.get("alpha"), run.get("keep_original"))
    values = {str(k): run.get(f"config.regularizer.{k}", run.get(str(k))) for k in shown}
    label = run.get("config.regularizer.label")
    return Setting(
        str(run["regularizer"]),
        _as_alpha(values.pop("alpha", None)),
        _as_bool(values.pop("keep_original", None)),
        tuple((k, hashable(v)) for k, v in values.items()),
        name=str(label) if isinstance(label, str) and label else None,
    )


def _json_problem(exc: json.JSONDecodeError, text: str) -> str:
    return "empty file" if not text.strip() else f"invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"


def read_summary(path: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a readable ``summary.json`` holding a JSON object, else ``(None, one-line problem)``."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        record = json.loads(text)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, _json_problem(exc, text)
    except ValueError as exc:  # e.g. a number too large for Python's int parser
        return None, f"invalid JSON ({exc})"
    return (record, None) if isinstance(record, dict) else (None, f"not a JSON object (a {type(record).__name__})")


def primary_metric_of(record: dict[str, Any]) -> str | None:
    """The run's ``primary_metric``, else its config's ``dataset.primary_metric``, else its dataset's default."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    for metric in (
        record.get("primary_metric"),
        record.get("config.dataset.primary_metric"),
        (config.get("dataset") or {}).get("primary_metric") if isinstance(config.get("dataset"), dict) else None,
    ):
        if not is_missing(metric) and str(metric).strip():
            return str(metric)
    dataset = record.get("dataset")
    return None if is_missing(dataset) else default_primary_metric(str(dataset))


def summary_problem(record: dict[str, Any]) -> str | None:
    """Why a parsed summary cannot go into the tables (one line), or None. ``primary_metric`` is optional."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    metric = primary_metric_of(record)
    if record.get("status") == "ok" and metric in METRICS_COLUMNS:
        missing += [k for k in (f"best_test_{metric}", f"last_test_{metric}") if k not in record]
    problems = [f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []
    problems += [
        f"{k} must be a non-empty string, got {record[k]!r}"
        for k in ("status", "dataset", "regularizer")
        if k in record and (not isinstance(record[k], str) or not record[k].strip())
    ]
    try:
        if "noise" in record and not math.isfinite(noise_key(record["noise"])):
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"noise must be a number, got {record['noise']!r}")
    try:
        if isinstance(record.get("regularizer"), str):
            Setting.of(record["regularizer"], record.get("alpha"), record.get("keep_original"))
    except (TypeError, ValueError):
        problems.append(
            f"alpha / keep_original unreadable: alpha={record.get('alpha')!r}, "
            f"keep_original={record.get('keep_original')!r}"
        )
    return "; ".join(problems) or None


def read_csv_checked(path: str | os.PathLike, columns: Sequence[str] = ()) -> tuple[pd.DataFrame | None, str | None]:
    """``(frame, None)`` when ``path`` reads as CSV with every one of ``columns``, else ``(None, one-line problem)``."""
    if not Path(path).is_file():
        return None, "missing"
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None, "empty file"
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return None, f"not a readable CSV ({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})"
    absent = [c for c in columns if c not in frame.columns]
    return (None, f"missing column{'s' if len(absent) > 1 else ''} {', '.join(absent)}") if absent else (frame, None)


def run_file_columns(metric: str | None, which: str = "best") -> dict[str, tuple[str, ...]]:
    """The columns the figures read from a run's ``metrics.csv`` and ``per_class.csv`` for ``metric``."""
    if metric not in METRICS_COLUMNS:
        return {"metrics.csv": ("epoch",), "per_class.csv": PER_CLASS_COLUMNS}
    return {
        "metrics.csv": ("epoch", METRICS_COLUMNS[metric]),
        "per_class.csv": PER_CLASS_COLUMNS + (f"{PER_CLASS_METRIC[metric]}_{which}",),
    }


def _config_yaml(run_dir: Path) -> dict | None:
    """An older run's resolved config (``<run>/config.yaml``), or None."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _scan(sweep_dir: Path):
    for path in sorted(p for p in Path(sweep_dir).rglob("summary.json") if p.is_file()):
        record, problem = read_summary(path)
        yield path, record, problem if record is None else summary_problem(record)


def _stamp(record: dict[str, Any], path: Path) -> dict[str, Any]:
    record = dict(record, run_dir=str(path.parent))
    record["summary_mtime"] = path.stat().st_mtime if path.exists() else 0.0
    if not isinstance(record.get("config"), dict):
        record["config"] = _config_yaml(path.parent)
    return record


def _runs_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run; a config dict becomes dotted ``config.*`` columns (``pd.json_normalize``)."""
    if not records:
        return pd.DataFrame(
            columns=[
                "status",
                "dataset",
                "regularizer",
                "alpha",
                "keep_original",
                "noise",
                "seed",
                "run_dir",
                "summary_mtime",
            ]
        )
    configs = pd.json_normalize([r.get("config") or {} for r in records]).add_prefix("config.")
    top = pd.DataFrame.from_records([{k: v for k, v in r.items() if k != "config"} for r in records])
    return pd.concat([top, configs.set_axis(top.index)], axis=1)


def collect_runs(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per ``summary.json`` at any depth below ``sweep_dir`` (sorted by path), with ``run_dir`` and
    ``summary_mtime``; an unusable summary gives ``status == "unreadable"`` and its problem in ``reason``."""
    return _runs_frame(
        [
            _stamp(record if problem is None else {"status": "unreadable", "reason": problem}, path)
            for path, record, problem in _scan(Path(sweep_dir))
        ]
    )


@dataclass
class SweepCheck:
    """What :func:`check_sweep` found: the usable runs and every bad file, each with its one-line problem."""

    runs: pd.DataFrame
    problems: list[tuple[Path, str]]
    bad_summaries: int
    n_summaries: int
    grid: list | None

    @property
    def lines(self) -> list[str]:
        return [f"{path}: {problem}" for path, problem in self.problems]


def check_sweep(sweep_dir: str | os.PathLike, run_files: bool = True, which: str = "best") -> SweepCheck:
    """Read and check every ``summary.json`` below ``sweep_dir`` and ``grid.json``; with ``run_files`` also the
    ``metrics.csv`` / ``per_class.csv`` of every ok run (an absent one is fine: the figures leave that run out)."""
    good, problems, n = [], [], 0
    for n, (path, record, problem) in enumerate(_scan(Path(sweep_dir)), 1):  # noqa: B007 - n: the count, after
        if problem is not None:
            problems.append((path, problem))
            continue
        good.append(_stamp(record, path))
        for name, columns in (
            run_file_columns(primary_metric_of(record), which).items()
            if (run_files and record.get("status") == "ok")
            else ()
        ):
            if (path.parent / name).exists() and (bad := read_csv_checked(path.parent / name, columns)[1]):
                problems.append((path.parent / name, bad))
    bad_summaries = sum(1 for p, _ in problems if p.name == "summary.json")
    grid = None
    try:
        grid = load_grid(sweep_dir)
    except ValueError as exc:
        problems.append((Path(sweep_dir) / "grid.json", str(exc)))
    return SweepCheck(_runs_frame(good), problems, bad_summaries, n, grid)


def seed_key(seed: Any) -> Any:
    if is_missing(seed):
        return None
    try:
        return int(seed)
    except (TypeError, ValueError):
        return str(seed)


def load_grid(sweep_dir: str | os.PathLike) -> list[tuple[str, Setting, float, Any]] | None:
    """``<sweep_dir>/grid.json`` as ``(dataset, setting, noise, seed)``; None if absent; ValueError (one line)."""
    path = Path(sweep_dir) / "grid.json"
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(_json_problem(exc, text)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    entries = entries["runs"] if isinstance(entries, dict) and "runs" in entries else entries
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of runs")
    grid = []
    for i, e in enumerate(entries):
        try:
            grid.append(
                (
                    str(e["dataset"]),
                    Setting.of(e["regularizer"], e.get("alpha"), e.get("keep_original")),
                    noise_key(e["noise"]),
                    seed_key(e.get("seed")),
                )
            )
        except KeyError as exc:
            raise ValueError(f"entry {i} lacks key {exc.args[0]}") from None
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"entry {i} is not a run ({e!r})") from None
    return grid


# ---- Runs -> rows, duplicates --------------------------------------------------------------------------------------
class PreparedRuns(NamedTuple):
    """What :func:`prepare_runs` makes of :func:`collect_runs`' frame."""

    used: pd.DataFrame  # the usable runs, one per dataset, row, noise and seed, with _setting, _noise, _seed, _metric
    duplicates: pd.DataFrame  # the duplicate runs set aside, with _kept: the run_dir used instead
    unreadable: list[tuple[str, str]]  # (summary path, problem) of the rows that cannot be used, sorted

    @property
    def ok(self) -> pd.DataFrame:
        """The used runs that ended ok."""
        return self.used[self.used["status"] == "ok"] if len(self.used) else self.used


def _row_keys(runs: pd.DataFrame) -> tuple[list[dict], list[tuple[str, str]]]:
    """Per usable run its index and ``_setting`` / ``_noise`` / ``_seed`` / ``_metric``; the problems of the others."""
    unreadable, keep = [], []
    for i, r in runs.iterrows():
        where = str(Path(str(r.get("run_dir", "?"))) / "summary.json")
        if r.get("status") == "unreadable" or is_missing(r.get("dataset")) or is_missing(r.get("regularizer")):
            reason = r.get("reason") if r.get("status") == "unreadable" else None
            unreadable.append((where, "missing dataset or regularizer" if is_missing(reason) else str(reason)))
            continue
        try:
            keep.append(
                {
                    "index": i,
                    "_setting": setting_of(r.to_dict()),
                    "_noise": noise_key(r["noise"]),
                    "_seed": seed_key(r.get("seed")),
                    "_metric": primary_metric_of(r.to_dict()),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            unreadable.append((where, f"unusable values ({type(exc).__name__}: {exc})"))
    return keep, sorted(unreadable)


def _split_rows(used: pd.DataFrame) -> pd.DataFrame:
    """``_setting`` with ``extra``: the result-affecting settings (the summary's setting keys, every config value
    not :data:`EXECUTION_ONLY`) that differ between runs of one dataset, row and noise level."""
    columns = [
        c
        for c in used.columns
        if c in SUMMARY_SETTINGS
        or c.startswith("config.")
        and not any(fnmatch.fnmatchcase(c[len("config.") :], p) for p in EXECUTION_ONLY + ("noise", "dataset.name"))
    ]
    values = used[columns].map(hashable)
    for key in SEED_FOLLOWERS:  # the seed's own value is the replicate: the same "setting" for every seed
        if f"config.{key}" in values:
            column = values[f"config.{key}"].astype(object)
            values[f"config.{key}"] = column.where(~column.eq(used["_seed"].astype(object)), "${seed}")
    varies = values.groupby([used["dataset"], used["_setting"], used["_noise"]], sort=False).nunique(dropna=False).gt(1)
    if not varies.any(axis=None):
        return used
    varying = varies.groupby(level=[0, 1], sort=False).any()
    extras = []
    for (dataset, setting), row in zip(zip(used["dataset"], used["_setting"]), values.itertuples(index=False)):
        flags = varying.loc[(dataset, setting)]
        extra = tuple((c.removeprefix("config."), v) for c, v, f in zip(columns, row, flags) if f)
        extras.append(dataclasses.replace(setting, extra=extra))
    return used.assign(_setting=extras)


def _set_aside_duplicates(used: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run per dataset, row, noise and seed (an ok run over a failed one, then the newest) and the others."""
    ranked = used.assign(_ok=used["status"].eq("ok"), _mtime=used.get("summary_mtime", 0.0)).sort_values(
        ["_ok", "_mtime"], kind="stable"
    )
    key = ["dataset", "_setting", "_noise", "_seed"]
    dup = ranked.duplicated(key, keep="last")
    kept = ranked[~dup].set_index(key)["run_dir"]
    duplicates = ranked[dup].assign(_kept=[kept.loc[tuple(k)] for k in ranked.loc[dup, key].itertuples(index=False)])
    return used.loc[ranked.index[~dup]].sort_index(), duplicates


def prepare_runs(runs: pd.DataFrame) -> PreparedRuns:
    """The runs of :func:`collect_runs` as table rows: each run's ``_setting`` (split on every result-affecting
    setting that differs), ``_noise``, ``_seed`` and ``_metric``, duplicates set aside, unusable rows named."""
    keep, unreadable = _row_keys(runs)
    if not keep:
        empty = runs.iloc[0:0].assign(_setting=None, _noise=None, _seed=None, _metric=None, dataset="")
        return PreparedRuns(empty, empty.assign(_kept=None), unreadable)
    used = runs.loc[[k["index"] for k in keep]].assign(
        **{c: [k[c] for k in keep] for c in ("_setting", "_noise", "_seed", "_metric")},
        dataset=lambda f: f["dataset"].astype(str),
    )
    used, duplicates = _set_aside_duplicates(_split_rows(used))
    return PreparedRuns(used, duplicates, unreadable)
