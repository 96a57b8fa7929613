"""Tables I, II and III of the Flow-Mixup paper, rebuilt from a sweep of training runs.

A *sweep* is any folder; every run below it (at any depth) is a folder holding ``summary.json`` (written last, so
its presence means the run ended), ``metrics.csv`` and ``per_class.csv``. This module reads the summaries and
writes, into ``<sweep_dir>/report/``:

- ``table1.{md,csv,tex}``: datasets whose ``primary_metric`` is ``"auc"`` (the paper's ChestX-ray14): Best, Last
  and Diff. test AUC in percent, one column group per label-noise level;
- ``table2.{md,csv,tex}``: datasets whose ``primary_metric`` is ``"macro_f1"`` (ECG-12, ECG-55, synthetic ECG):
  Best test macro-F1 as a fraction;
- ``table3.{md,csv,tex}``: the Eq. 8 variances of the min-max normalised per-epoch test metric
  (``variance_auc`` for AUC datasets, ``variance_macro_f1`` for macro-F1 datasets);
- ``report.md``: the three Markdown tables under a header counting runs ok / failed / missing, and naming every
  summary left out (unreadable or invalid) with its problem; then, where the runs allow it, the Spearman
  correlations behind Fig. 6 under every normalisation and count (:func:`flowmixup.report.figures.fig6_section`).

Every file is computed in memory first and all are written together at the end
(:func:`flowmixup.report.output.write_files`). :func:`check_sweep` reads and validates every summary (and the
``metrics.csv`` / ``per_class.csv`` the figures read) beforehand, each problem one line naming the file:
``scripts/make_tables.py`` stops on any, unless told to skip them.

Conventions (they are repeated in each table's caption):

- a cell aggregates the seeds of one (dataset, regularizer setting, noise level): **mean ± sample standard
  deviation (ddof = 1)** over the seeds whose run ended with ``status == "ok"``; with one seed only the mean is
  shown. Failed seeds are excluded from mean and std and counted (``n_failed`` in the CSV; ``[k/n]`` in the
  Markdown/LaTeX cell when only k of the n expected seeds are in the mean);
- a cell without any run is ``—`` (missing), never filled in; a cell whose runs all failed reads ``failed``;
- the paper's number for the same cell is printed beside it, ``(paper 77.0)``; datasets, settings or noise
  levels the paper does not report get no paper value;
- best and second best per column (Tables I and II; higher is better) are **bold** / underlined, the lowest
  variance per column in Table III is **bold**, as in the paper. Marks are decided on the numbers *as displayed*
  (rounded), so equal printed numbers share a mark, like the two underlined 76.1 in the paper's Table I;
  Diff. columns are not marked;
- the expected grid comes from ``<sweep_dir>/grid.json`` when it exists (a list of ``{dataset, regularizer,
  alpha, keep_original, noise, seed}``); otherwise it is what was found. The six settings of the paper are always
  listed (in the paper's order) so that a setting never run is visible as a row of ``—``; settings outside them
  are appended after.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "Setting",
    "PAPER_SETTINGS",
    "TABLE3_SETTINGS",
    "collect_runs",
    "check_sweep",
    "SweepCheck",
    "read_summary",
    "summary_problem",
    "primary_metric_of",
    "read_csv_checked",
    "load_paper_tables",
    "load_grid",
    "build_tables",
    "make_report",
]

DDOF = 1  # sample standard deviation over seeds
MISSING = "—"
FAILED = "failed"
_NOISE_DECIMALS = 6
_REGULARIZER_ORDER = {"erm": 0, "mixup": 1, "manifold_mixup": 2, "flowmixup": 3}
_REGULARIZER_NAMES = {"erm": "ERM", "mixup": "Mixup", "manifold_mixup": "Manifold Mixup", "flowmixup": "Flow-Mixup"}
DATASET_NAMES = {"chestxray14": "ChestX-ray14", "ecg12": "ECG-12", "ecg55": "ECG-55", "synth_ecg": "Synthetic ECG"}
# Used only for datasets that appear in grid.json but in no summary.json (so no run says which metric it uses).
DEFAULT_PRIMARY_METRIC = {"chestxray14": "auc", "ecg12": "macro_f1", "ecg55": "macro_f1", "synth_ecg": "macro_f1"}


# --------------------------------------------------------------------------------------------------------------
# Settings and keys
# --------------------------------------------------------------------------------------------------------------
def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_alpha(value: Any) -> float | None:
    if _is_missing(value) or (isinstance(value, str) and value.strip() == ""):
        return None
    return round(float(value), 6)


def _as_bool(value: Any) -> bool | None:
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"", "none", "null", "nan"}:
            return None
        if text in {"true", "1", "yes"}:
            return True
        if text in {"false", "0", "no"}:
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def noise_key(value: Any) -> float:
    """The noise level as a dictionary key: a float rounded to 6 decimals (so 0.1 and 0.1000000001 agree)."""
    return round(float(value), _NOISE_DECIMALS)


@dataclass(frozen=True)
class Setting:
    """One row of the tables: a regularizer with its hyper-parameters.

    ``alpha`` is ``None`` for ERM; ``keep_original`` (the paper's "Op") is only kept for Flow-Mixup and is ``None``
    for every other regularizer, whatever the run wrote.
    """

    regularizer: str
    alpha: float | None = None
    keep_original: bool | None = None

    @classmethod
    def of(cls, regularizer: str, alpha: Any = None, keep_original: Any = None) -> "Setting":
        regularizer = str(regularizer)
        a = None if regularizer == "erm" else _as_alpha(alpha)
        op = _as_bool(keep_original) if regularizer == "flowmixup" else None
        return cls(regularizer, a, op)

    @property
    def label(self) -> str:
        name = _REGULARIZER_NAMES.get(self.regularizer, self.regularizer)
        parts = []
        if self.alpha is not None:
            parts.append(f"α={self.alpha:.1f}" if self.alpha == int(self.alpha) else f"α={self.alpha:g}")
        if self.keep_original is not None:
            parts.append(f"Op={self.keep_original}")
        return f"{name} ({', '.join(parts)})" if parts else name

    @property
    def latex_label(self) -> str:
        name = _REGULARIZER_NAMES.get(self.regularizer, self.regularizer.replace("_", r"\_"))
        parts = []
        if self.alpha is not None:
            value = f"{self.alpha:.1f}" if self.alpha == int(self.alpha) else f"{self.alpha:g}"
            parts.append(f"$\\alpha={value}$")
        if self.keep_original is not None:
            parts.append(f"Op={self.keep_original}")
        return f"{name} ({', '.join(parts)})" if parts else name

    def sort_key(self) -> tuple:
        return (
            _REGULARIZER_ORDER.get(self.regularizer, len(_REGULARIZER_ORDER)),
            self.regularizer,
            -1.0 if self.alpha is None else self.alpha,
            -1 if self.keep_original is None else int(self.keep_original),
        )


PAPER_SETTINGS: tuple[Setting, ...] = (
    Setting("erm"),
    Setting("mixup", 1.0),
    Setting("mixup", 3.0),
    Setting("manifold_mixup", 3.0),
    Setting("flowmixup", 3.0, False),
    Setting("flowmixup", 3.0, True),
)
TABLE3_SETTINGS: tuple[Setting, ...] = (Setting("manifold_mixup", 3.0), Setting("flowmixup", 3.0, False))


def _ordered_settings(first: Sequence[Setting], found: Iterable[Setting]) -> list[Setting]:
    extra = sorted(set(found) - set(first), key=Setting.sort_key)
    return list(first) + extra


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------
REQUIRED_KEYS = ("status", "dataset", "regularizer", "noise", "seed")
"""Keys every ``summary.json`` must hold; an ok run also needs ``best_test_<metric>`` and ``last_test_<metric>``."""
METRICS_COLUMNS = {"auc": "test_auc", "macro_f1": "test_macro_f1"}
"""The per-epoch test-metric column of ``metrics.csv`` that the curves read, per primary metric."""
PER_CLASS_COLUMNS = ("class", "train_count", "train_single_count")
PER_CLASS_METRIC = {"auc": "test_auc", "macro_f1": "test_f1"}
"""``per_class.csv``: the columns Fig. 6 reads besides ``<PER_CLASS_METRIC[metric]>_<best|last|at_best_val>``."""


def _json_problem(exc: json.JSONDecodeError, text: str) -> str:
    if not text.strip():
        return "empty file"
    return f"invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"


def read_summary(path: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a readable ``summary.json`` holding a JSON object, else ``(None, problem)``.

    The problem is one line: ``invalid JSON at line N, column M (...)``, ``empty file``, ``not a JSON object``...
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, _json_problem(exc, text)
    except ValueError as exc:  # e.g. a number too large for Python's int parser
        return None, f"invalid JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"not a JSON object (a {type(record).__name__})"
    return record, None


def primary_metric_of(record: dict[str, Any]) -> str | None:
    """The run's ``primary_metric``, or its dataset's default (:data:`DEFAULT_PRIMARY_METRIC`) when it has none."""
    metric = record.get("primary_metric")
    if _is_missing(metric) or str(metric).strip() == "":
        dataset = record.get("dataset")
        return None if _is_missing(dataset) else DEFAULT_PRIMARY_METRIC.get(str(dataset))
    return str(metric)


def summary_problem(record: dict[str, Any]) -> str | None:
    """Why a parsed summary cannot go into the tables (one line), or None when it can.

    Checks the :data:`REQUIRED_KEYS`, that ``noise``, ``alpha`` and ``keep_original`` read as a number, a number
    and a boolean, and, for an ok run of a dataset whose metric is known, ``best_test_<m>`` and ``last_test_<m>``.
    ``primary_metric`` itself is optional (the dataset's default is used).
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    metric = primary_metric_of(record)
    if record.get("status") == "ok" and metric in METRICS_COLUMNS:
        missing += [k for k in (f"best_test_{metric}", f"last_test_{metric}") if k not in record]
    problems = []
    if missing:
        problems.append(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for key in ("status", "dataset", "regularizer"):
        if key in record and (not isinstance(record[key], str) or not record[key].strip()):
            problems.append(f"{key} must be a non-empty string, got {record[key]!r}")
    if "noise" in record:
        try:
            value = noise_key(record["noise"])
            if not math.isfinite(value):
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"noise must be a number, got {record['noise']!r}")
    if isinstance(record.get("regularizer"), str):
        try:
            Setting.of(record["regularizer"], record.get("alpha"), record.get("keep_original"))
        except (TypeError, ValueError):
            problems.append(f"alpha / keep_original unreadable: alpha={record.get('alpha')!r}, "
                            f"keep_original={record.get('keep_original')!r}")
    return "; ".join(problems) or None


def read_csv_checked(path: str | os.PathLike, columns: Sequence[str] = ()) -> tuple[pd.DataFrame | None, str | None]:
    """``(frame, None)`` when ``path`` reads as CSV with every one of ``columns``, else ``(None, problem)``.

    The problem is one line (``missing``, ``empty file``, ``not a readable CSV (...)``, ``missing columns x, y``).
    """
    path = Path(path)
    if not path.is_file():
        return None, "missing"
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None, "empty file"
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"not a readable CSV ({first})"
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        return None, f"missing column{'s' if len(absent) > 1 else ''} {', '.join(absent)}"
    return frame, None


def run_file_columns(metric: str | None, which: str = "best") -> dict[str, tuple[str, ...]]:
    """The columns the figures read from a run's ``metrics.csv`` and ``per_class.csv`` for ``metric``."""
    if metric not in METRICS_COLUMNS:
        return {"metrics.csv": ("epoch",), "per_class.csv": PER_CLASS_COLUMNS}
    return {"metrics.csv": ("epoch", METRICS_COLUMNS[metric]),
            "per_class.csv": PER_CLASS_COLUMNS + (f"{PER_CLASS_METRIC[metric]}_{which}",)}


def _scan(sweep_dir: Path) -> Iterable[tuple[Path, dict[str, Any] | None, str | None]]:
    for path in sorted(sweep_dir.rglob("summary.json")):
        if not path.is_file():
            continue
        record, problem = read_summary(path)
        if record is not None:
            problem = summary_problem(record)
        yield path, record, problem


def _runs_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        frame = pd.DataFrame(columns=["status", "dataset", "regularizer", "alpha", "keep_original", "noise", "seed",
                                      "run_dir", "summary_mtime"])
    return frame.reset_index(drop=True)


def _stamp(record: dict[str, Any], path: Path) -> dict[str, Any]:
    record = dict(record)
    record["run_dir"] = str(path.parent)
    try:
        record["summary_mtime"] = path.stat().st_mtime
    except OSError:
        record["summary_mtime"] = 0.0
    return record


def collect_runs(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per ``summary.json`` found at any depth below ``sweep_dir``.

    Columns: every key of the summaries, plus ``run_dir`` (the run's folder, as a string) and ``summary_mtime``.
    A summary that cannot be parsed, or lacks a key the tables need (see :func:`summary_problem`), gives a row with
    ``status == "unreadable"`` and the problem in ``reason``. ``alpha``, ``keep_original`` and ``noise`` are left
    as the runs wrote them; see :meth:`Setting.of` and :func:`noise_key` for the normalised forms the tables use.
    Rows are sorted by ``run_dir``.
    """
    records: list[dict[str, Any]] = []
    for path, record, problem in _scan(Path(sweep_dir)):
        if problem is not None:
            record = {"status": "unreadable", "reason": problem}
        records.append(_stamp(record, path))
    return _runs_frame(records)


@dataclass
class SweepCheck:
    """What :func:`check_sweep` found: the usable runs and every bad file, each with its one-line problem."""

    runs: pd.DataFrame  # the valid summaries, as :func:`collect_runs` gives them
    problems: list[tuple[Path, str]]  # (file, problem): bad summaries, grid.json, bad metrics.csv / per_class.csv
    bad_summaries: int
    n_summaries: int
    grid: list | None  # grid.json's entries (None when absent or bad)

    @property
    def lines(self) -> list[str]:
        return [f"{path}: {problem}" for path, problem in self.problems]


def check_sweep(sweep_dir: str | os.PathLike, run_files: bool = True, which: str = "best") -> SweepCheck:
    """Read and validate every ``summary.json`` below ``sweep_dir`` (and ``grid.json``) before anything is built.

    With ``run_files``, the ``metrics.csv`` and ``per_class.csv`` of every ok run are read too: a file that exists
    but cannot be read or lacks a column the figures use is a problem; an absent one is not (it is optional: the
    figures leave that run out and say so).
    """
    sweep_dir = Path(sweep_dir)
    good: list[dict[str, Any]] = []
    problems: list[tuple[Path, str]] = []
    n = bad = 0
    for path, record, problem in _scan(sweep_dir):
        n += 1
        if problem is not None:
            bad += 1
            problems.append((path, problem))
            continue
        good.append(_stamp(record, path))
        if run_files and record.get("status") == "ok":
            for name, columns in run_file_columns(primary_metric_of(record), which).items():
                file = path.parent / name
                if not file.exists():
                    continue
                _, file_problem = read_csv_checked(file, columns)
                if file_problem is not None:
                    problems.append((file, file_problem))
    grid = None
    try:
        grid = load_grid(sweep_dir)
    except ValueError as exc:
        problems.append((sweep_dir / "grid.json", str(exc)))
    return SweepCheck(_runs_frame(good), problems, bad, n, grid)


def load_paper_tables(paper_csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's numbers (``src/flowmixup/report/paper_tables.csv`` unless ``paper_csv`` is given).

    Adds ``setting`` (a :class:`Setting`) and ``noise_key`` columns; ``value`` keeps the paper's units (AUC in
    percent, macro-F1 and variances as fractions).
    """
    if paper_csv is None:
        with resources.as_file(resources.files("flowmixup.report") / "paper_tables.csv") as path:
            frame = pd.read_csv(path, dtype={"keep_original": "string", "alpha": "string"})
    else:
        frame = pd.read_csv(paper_csv, dtype={"keep_original": "string", "alpha": "string"})
    required = {"table", "dataset", "regularizer", "alpha", "keep_original", "noise", "metric", "value"}
    missing = required - set(frame.columns)
    if missing:
        raise ValueError(f"{paper_csv or 'paper_tables.csv'}: missing columns {sorted(missing)}")
    frame["setting"] = [Setting.of(r, a, k) for r, a, k in zip(frame["regularizer"], frame["alpha"],
                                                                frame["keep_original"])]
    frame["noise_key"] = [noise_key(n) for n in frame["noise"]]
    return frame


def load_grid(sweep_dir: str | os.PathLike) -> list[tuple[str, Setting, float, Any]] | None:
    """The expected runs from ``<sweep_dir>/grid.json`` as ``(dataset, setting, noise_key, seed)``; None if absent.

    A grid.json that cannot be used raises ValueError with a one-line message (without the path).
    """
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
    if isinstance(entries, dict) and "runs" in entries:  # tolerate {"runs": [...]}
        entries = entries["runs"]
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of runs")
    grid = []
    for i, entry in enumerate(entries):
        try:
            grid.append((str(entry["dataset"]), Setting.of(entry["regularizer"], entry.get("alpha"),
                                                           entry.get("keep_original")),
                         noise_key(entry["noise"]), _seed_key(entry.get("seed"))))
        except KeyError as exc:
            raise ValueError(f"entry {i} lacks key {exc.args[0]}") from None
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"entry {i} is not a run ({entry!r})") from None
    return grid


def _seed_key(seed: Any) -> Any:
    if _is_missing(seed):
        return None
    try:
        return int(seed)
    except (TypeError, ValueError):
        return str(seed)


# --------------------------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """The aggregate of one table cell."""

    status: str  # "ok", "failed", "missing" or "n/a" (runs ok but the value is absent/NaN)
    values: list[float] = field(default_factory=list)
    n_failed: int = 0
    n_missing: int = 0
    paper: float | None = None
    mark: str = ""  # "best", "second" or ""

    @property
    def n_seeds(self) -> int:
        return len(self.values)

    @property
    def n_expected(self) -> int:
        return self.n_seeds + self.n_failed + self.n_missing

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=DDOF)) if len(self.values) > DDOF else math.nan


@dataclass(frozen=True)
class Column:
    dataset: str
    noise: float
    quantity: str  # "best", "last", "diff", "variance"
    mark: str | None  # "max", "min" or None
    decimals: int
    mark_second: bool = True

    @property
    def noise_label(self) -> str:
        return f"{self.noise * 100:g}%"


@dataclass
class Block:
    """Rows x columns of cells; one dataset (Tables I, II) or all datasets side by side (Table III)."""

    table: str
    title: str
    rows: list[Setting]
    columns: list[Column]
    cells: dict[tuple[Setting, Column], Cell]
    primary_metric: dict[str, str]


@dataclass
class _Runs:
    """The runs of a sweep indexed by cell, after de-duplication."""

    ok: dict[tuple[str, Setting, float], list[dict]]
    failed: dict[tuple[str, Setting, float], list[dict]]
    seeds_seen: dict[tuple[str, Setting, float], set]
    expected_seeds: dict[tuple[str, Setting, float], set] | None
    metric_of: dict[str, str]
    noises_of: dict[str, set]
    settings_of: dict[str, set]


def _index_runs(runs: pd.DataFrame, grid: list | None) -> tuple[_Runs, dict[str, Any]]:
    counts: dict[str, Any] = {"ok": 0, "failed": 0, "unreadable": 0, "duplicates": 0, "not_in_grid": 0}
    unreadable: list[tuple[str, str]] = []
    by_key: dict[tuple, dict] = {}
    for record in runs.to_dict("records"):
        status = record.get("status")
        where = str(Path(str(record.get("run_dir", "?"))) / "summary.json")
        if status == "unreadable" or _is_missing(record.get("dataset")) or _is_missing(record.get("regularizer")):
            counts["unreadable"] += 1
            reason = record.get("reason") if status == "unreadable" else None
            unreadable.append((where, str(reason) if not _is_missing(reason) else "missing dataset or regularizer"))
            continue
        try:
            setting = Setting.of(record["regularizer"], record.get("alpha"), record.get("keep_original"))
            key = (str(record["dataset"]), setting, noise_key(record["noise"]), _seed_key(record.get("seed")))
        except (KeyError, TypeError, ValueError) as exc:
            counts["unreadable"] += 1
            unreadable.append((where, f"unusable values ({type(exc).__name__}: {exc})"))
            continue
        record = dict(record, _setting=setting)
        previous = by_key.get(key)
        if previous is not None:
            counts["duplicates"] += 1
            # keep an ok run over a failed one, then the most recent summary
            rank_new = (record.get("status") == "ok", record.get("summary_mtime", 0))
            rank_old = (previous.get("status") == "ok", previous.get("summary_mtime", 0))
            if rank_new <= rank_old:
                continue
        by_key[key] = record

    ok: dict = {}
    failed: dict = {}
    seeds_seen: dict = {}
    metric_of: dict[str, str] = {}
    noises_of: dict[str, set] = {}
    settings_of: dict[str, set] = {}
    grid_keys = set(grid) if grid is not None else None
    for (dataset, setting, noise, seed), record in by_key.items():
        cell = (dataset, setting, noise)
        target = ok if record.get("status") == "ok" else failed
        counts["ok" if target is ok else "failed"] += 1
        target.setdefault(cell, []).append(record)
        seeds_seen.setdefault(cell, set()).add(seed)
        metric = record.get("primary_metric")
        if not _is_missing(metric) and str(metric).strip():
            metric_of.setdefault(dataset, str(metric))
        noises_of.setdefault(dataset, set()).add(noise)
        settings_of.setdefault(dataset, set()).add(setting)
        if grid_keys is not None and (dataset, setting, noise, seed) not in grid_keys:
            counts["not_in_grid"] += 1

    expected: dict | None = None
    counts["missing"] = None
    if grid is not None:
        expected = {}
        for dataset, setting, noise, seed in grid:
            expected.setdefault((dataset, setting, noise), set()).add(seed)
            noises_of.setdefault(dataset, set()).add(noise)
            settings_of.setdefault(dataset, set()).add(setting)
        counts["missing"] = sum(len(seeds - seeds_seen.get(cell, set())) for cell, seeds in expected.items())
    for dataset in list(noises_of):
        if dataset not in metric_of and dataset in DEFAULT_PRIMARY_METRIC:
            metric_of[dataset] = DEFAULT_PRIMARY_METRIC[dataset]
    counts["failed_runs"] = [(r["run_dir"], str(r.get("reason", ""))) for rs in failed.values() for r in rs]
    counts["failed_runs"].sort()
    counts["unreadable_runs"] = sorted(unreadable)
    return _Runs(ok, failed, seeds_seen, expected, metric_of, noises_of, settings_of), counts


def _finite(value: Any) -> float | None:
    if _is_missing(value):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _make_cell(runs: _Runs, dataset: str, setting: Setting, noise: float, value_of) -> Cell:
    key = (dataset, setting, noise)
    ok_runs = runs.ok.get(key, [])
    n_failed = len(runs.failed.get(key, []))
    n_missing = 0
    if runs.expected_seeds is not None:
        n_missing = len(runs.expected_seeds.get(key, set()) - runs.seeds_seen.get(key, set()))
    values = [v for v in (value_of(r) for r in ok_runs) if v is not None]
    if values:
        status = "ok"
    elif ok_runs:
        status = "n/a"
    elif n_failed:
        status = "failed"
    else:
        status = "missing"
    return Cell(status, values, n_failed, n_missing)


def _value_getter(quantity: str, metric: str, best_from: str):
    scale = 100.0 if metric == "auc" else 1.0
    if best_from == "best":
        best_key = f"best_test_{metric}"
    elif best_from == "at_best_val":
        best_key = f"test_{metric}_at_best_val"
    else:
        raise ValueError(f"best_from must be 'best' or 'at_best_val', not {best_from!r}")
    last_key = f"last_test_{metric}"

    def best(r):
        v = _finite(r.get(best_key))
        return None if v is None else v * scale

    def last(r):
        v = _finite(r.get(last_key))
        return None if v is None else v * scale

    def diff(r):
        b, l = best(r), last(r)
        return None if b is None or l is None else b - l

    def variance(r):
        return _finite(r.get(f"variance_{metric}"))

    return {"best": best, "last": last, "diff": diff, "variance": variance}[quantity]


def _paper_lookup(paper: pd.DataFrame | None) -> dict[tuple, float]:
    table: dict[tuple, float] = {}
    if paper is None:
        return table
    for row in paper.itertuples(index=False):
        table[(str(row.table), str(row.dataset), row.setting, row.noise_key, str(row.metric))] = float(row.value)
    return table


def _paper_value(lookup: dict, table: str, dataset: str, setting: Setting, noise: float, quantity: str,
                 metric: str) -> float | None:
    if table == "I":
        if quantity == "diff":
            b = lookup.get(("I", dataset, setting, noise, "best_auc"))
            l = lookup.get(("I", dataset, setting, noise, "last_auc"))
            return None if b is None or l is None else round(b - l, 1)
        return lookup.get(("I", dataset, setting, noise, f"{quantity}_auc"))
    if table == "II":
        return lookup.get(("II", dataset, setting, noise, f"{quantity}_{metric}"))
    return lookup.get(("III", dataset, setting, noise, "variance"))


def _assign_marks(block: Block) -> None:
    for column in block.columns:
        if column.mark is None:
            continue
        shown = {}
        for setting in block.rows:
            cell = block.cells[(setting, column)]
            if cell.status == "ok":
                shown[setting] = round(cell.mean, column.decimals)
        distinct = sorted(set(shown.values()), reverse=(column.mark == "max"))
        if not distinct:
            continue
        for setting, value in shown.items():
            if value == distinct[0]:
                block.cells[(setting, column)].mark = "best"
            elif column.mark_second and len(distinct) > 1 and value == distinct[1]:
                block.cells[(setting, column)].mark = "second"


def build_tables(runs: pd.DataFrame, grid: list | None = None, paper: pd.DataFrame | None = None,
                 best_from: str = "best") -> tuple[dict[str, list[Block]], dict[str, Any]]:
    """Aggregate ``runs`` (from :func:`collect_runs`) into the blocks of Tables I, II and III.

    Returns ``({"I": [...], "II": [...], "III": [...]}, counts)``; ``counts`` has the numbers of runs ok, failed,
    missing (None without a grid), unreadable, duplicated and outside the grid, and the failed runs' reasons.
    ``best_from="at_best_val"`` fills the "Best" columns with the test metric at the epoch of best validation
    metric instead of the best test metric over epochs (the paper's choice, the default).
    """
    index, counts = _index_runs(runs, grid)
    lookup = _paper_lookup(paper)
    tables: dict[str, list[Block]] = {"I": [], "II": [], "III": []}
    datasets = sorted(index.noises_of, key=lambda d: (list(DATASET_NAMES).index(d) if d in DATASET_NAMES else 99, d))
    unknown = [d for d in datasets if index.metric_of.get(d) not in ("auc", "macro_f1")]
    counts["unknown_metric_datasets"] = unknown

    for dataset in datasets:
        metric = index.metric_of.get(dataset)
        if metric not in ("auc", "macro_f1"):
            continue
        table = "I" if metric == "auc" else "II"
        rows = _ordered_settings(PAPER_SETTINGS, index.settings_of[dataset])
        quantities = ["best", "last", "diff"] if table == "I" else ["best"]
        decimals = 1 if table == "I" else 4
        columns = [Column(dataset, noise, q, None if q == "diff" else "max", decimals)
                   for noise in sorted(index.noises_of[dataset]) for q in quantities]
        cells = {}
        for setting in rows:
            for column in columns:
                cell = _make_cell(index, dataset, setting, column.noise,
                                  _value_getter(column.quantity, metric, best_from))
                cell.paper = _paper_value(lookup, table, dataset, setting, column.noise, column.quantity, metric)
                cells[(setting, column)] = cell
        block = Block(table, DATASET_NAMES.get(dataset, dataset), rows, columns, cells, {dataset: metric})
        _assign_marks(block)
        tables[table].append(block)

    # Table III: every dataset side by side, as in the paper.
    t3_datasets = [d for d in datasets if index.metric_of.get(d) in ("auc", "macro_f1")]
    if t3_datasets:
        found = set().union(*(index.settings_of[d] for d in t3_datasets))
        rows = _ordered_settings(TABLE3_SETTINGS, found)
        columns = [Column(d, noise, "variance", "min", 4, mark_second=False)
                   for d in t3_datasets for noise in sorted(index.noises_of[d])]
        cells = {}
        for setting in rows:
            for column in columns:
                metric = index.metric_of[column.dataset]
                cell = _make_cell(index, column.dataset, setting, column.noise,
                                  _value_getter("variance", metric, best_from))
                cell.paper = _paper_value(lookup, "III", column.dataset, setting, column.noise, "variance", metric)
                cells[(setting, column)] = cell
        block = Block("III", "", rows, columns, cells, {d: index.metric_of[d] for d in t3_datasets})
        _assign_marks(block)
        tables["III"].append(block)
        epochs = {}
        for (dataset, _, _), rs in index.ok.items():
            for r in rs:
                v = _finite(r.get("variance_epochs"))
                if v is not None:
                    epochs.setdefault(dataset, set()).add(int(v))
        counts["variance_epochs"] = {d: sorted(v) for d, v in epochs.items()}
    return tables, counts


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------
def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _cell_text(cell: Cell, decimals: int, latex: bool) -> str:
    pm = r" $\pm$ " if latex else " ± "
    if cell.status == "missing":
        core = "--" if latex else MISSING
    elif cell.status == "failed":
        core = FAILED
    elif cell.status == "n/a":
        core = "n/a"
    else:
        core = _fmt(cell.mean, decimals)
        if cell.n_seeds > DDOF:
            core += pm + _fmt(cell.std, decimals)
        if cell.mark == "best":
            core = f"\\textbf{{{core}}}" if latex else f"**{core}**"
        elif cell.mark == "second":
            core = f"\\underline{{{core}}}" if latex else f"<u>{core}</u>"
        if cell.n_failed or cell.n_missing:
            core += f" [{cell.n_seeds}/{cell.n_expected}]"
    if cell.paper is not None:
        paper = _fmt(cell.paper, decimals)
        core += f" {{\\scriptsize(paper {paper})}}" if latex else f" (paper {paper})"
    return core


def _caption(table: str, counts: dict) -> str:
    common = ("Mean ± sample standard deviation (ddof = 1) over the seeds that ended ok; one seed: mean only. "
              "[k/n]: only k of the n expected seeds are in the mean (the others failed or are missing). "
              f"{MISSING}: no run; failed: every run of the cell failed. (paper x): the number printed in the paper.")
    if table == "I":
        return ("Table I. Test AUC (%) on the AUC datasets: Best = highest test AUC over the epochs, "
                "Last = test AUC at the last epoch, Diff. = Best − Last (per seed, then averaged). "
                "Best and second best per column in **bold** / <u>underlined</u> (Diff. not marked). " + common)
    if table == "II":
        return ("Table II. Best test macro-F1 (fraction) on the macro-F1 datasets. "
                "Best and second best per column in **bold** / <u>underlined</u>. " + common)
    epochs = counts.get("variance_epochs") or {}
    n_text = "; ".join(f"{DATASET_NAMES.get(d, d)}: n = {', '.join(map(str, v))}" for d, v in epochs.items())
    return ("Table III. Variance (Eq. 8, population variance over the first n epochs) of the min-max normalised "
            "per-epoch test metric: AUC for AUC datasets, macro-F1 for macro-F1 datasets. "
            "Lowest per column in **bold**. " + (f"({n_text}.) " if n_text else "") + common)


def _column_header(column: Column, table: str, latex: bool = False) -> str:
    names = {"best": "Best", "last": "Last", "diff": "Diff.", "variance": ""}
    if table == "I":
        return f"{column.noise_label} {names[column.quantity]}".replace("%", r"\%" if latex else "%")
    if table == "II":
        return column.noise_label.replace("%", r"\%" if latex else "%")
    name = DATASET_NAMES.get(column.dataset, column.dataset)
    label = f"{name} {column.noise_label}"
    return label.replace("%", r"\%").replace("_", r"\_") if latex else label


def _groups(blocks: list[Block]) -> list[list[Block]]:
    """Blocks with the same columns (noise levels and quantities) share one table, as Table II does in the paper."""
    groups: list[list[Block]] = []
    for block in blocks:
        signature = [(c.noise, c.quantity) for c in block.columns]
        if groups and [(c.noise, c.quantity) for c in groups[-1][0].columns] == signature and block.table == "II":
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def render_markdown(table: str, blocks: list[Block], counts: dict) -> str:
    title = {"I": "Table I", "II": "Table II", "III": "Table III"}[table]
    lines = [f"## {title}", "", _caption(table, counts), ""]
    if not blocks:
        lines += ["(no runs for this table)", ""]
        return "\n".join(lines)
    for group in _groups(blocks):
        first = group[0]
        with_dataset = table == "II"
        if table == "I":
            lines += [f"### {first.title}", ""]
        header = (["Dataset"] if with_dataset else []) + ["Regularization"] + \
                 [_column_header(c, table) for c in first.columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * (len(header) - len(first.columns)) + [":-:"] * len(first.columns)) + "|")
        for block in group:
            for i, setting in enumerate(block.rows):
                row = ([block.title if i == 0 else ""] if with_dataset else []) + [setting.label]
                row += [_cell_text(block.cells[(setting, c)], c.decimals, latex=False) for c in block.columns]
                lines.append("| " + " | ".join(_md_escape(x) for x in row) + " |")
        lines.append("")
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    return text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")


def render_latex(table: str, blocks: list[Block], counts: dict) -> str:
    caption = _caption(table, counts)
    caption = (caption.replace("**bold**", r"\textbf{bold}").replace("<u>underlined</u>", r"\underline{underlined}")
               .replace("±", r"$\pm$").replace("−", "$-$").replace(MISSING, "--"))
    caption = caption.replace("%", r"\%").replace("_", r"\_")
    out = [r"% generated by flowmixup.report.tables; needs \usepackage{booktabs}", r"\begin{table*}[t]",
           r"\centering", r"\scriptsize", f"\\caption{{{caption}}}", f"\\label{{tab:{table.lower()}}}"]
    if not blocks:
        out += [r"(no runs for this table)", r"\end{table*}", ""]
        return "\n".join(out)
    for group in _groups(blocks):
        first = group[0]
        with_dataset = table == "II"
        n_lead = 2 if with_dataset else 1
        out.append(r"\begin{tabular}{" + "l" * n_lead + "c" * len(first.columns) + "}")
        out.append(r"\toprule")
        if table in ("I", "III"):
            # a first header row grouping the columns, as in the paper
            spans: list[tuple[str, int]] = []
            for c in first.columns:
                label = (c.noise_label if table == "I"
                         else f"{DATASET_NAMES.get(c.dataset, c.dataset)}")
                if spans and spans[-1][0] == label:
                    spans[-1] = (label, spans[-1][1] + 1)
                else:
                    spans.append((label, 1))
            top = [f"\\multicolumn{{{n}}}{{c}}{{{_latex_escape(label)}}}" for label, n in spans]
            lead = first.title if table == "I" else ""
            out.append(_latex_escape(lead) + " & " + " & ".join(top) + r" \\")
            sub = [{"best": "Best", "last": "Last", "diff": "Diff."}.get(c.quantity, _latex_escape(c.noise_label))
                   for c in first.columns]
            out.append("Regularization & " + " & ".join(sub) + r" \\")
        else:
            out.append("Dataset & Regularization & " + " & ".join(_latex_escape(c.noise_label)
                                                                 for c in first.columns) + r" \\")
        out.append(r"\midrule")
        for b, block in enumerate(group):
            if b:
                out.append(r"\midrule")
            for i, setting in enumerate(block.rows):
                row = ([_latex_escape(block.title) if i == 0 else ""] if with_dataset else []) + [setting.latex_label]
                row += [_cell_text(block.cells[(setting, c)], c.decimals, latex=True) for c in block.columns]
                out.append(" & ".join(row) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append("")
    out += [r"\end{table*}", ""]
    return "\n".join(out)


TIDY_COLUMNS = ["table", "dataset", "primary_metric", "setting", "regularizer", "alpha", "keep_original", "noise",
                "quantity", "unit", "status", "mean", "std", "ddof", "n_seeds", "n_failed", "n_missing",
                "n_expected", "paper", "mark", "text"]


def tidy_frame(table: str, blocks: list[Block]) -> pd.DataFrame:
    """One row per cell: its mean, std (ddof = 1), seed counts, the paper's value and the mark."""
    records = []
    for block in blocks:
        for setting in block.rows:
            for column in block.columns:
                cell = block.cells[(setting, column)]
                metric = block.primary_metric[column.dataset]
                unit = ("variance" if column.quantity == "variance"
                        else "auc_percent" if metric == "auc" else "macro_f1")
                records.append({
                    "table": table, "dataset": column.dataset, "primary_metric": metric, "setting": setting.label,
                    "regularizer": setting.regularizer, "alpha": setting.alpha,
                    "keep_original": setting.keep_original, "noise": column.noise, "quantity": column.quantity,
                    "unit": unit, "status": cell.status, "mean": cell.mean, "std": cell.std, "ddof": DDOF,
                    "n_seeds": cell.n_seeds, "n_failed": cell.n_failed, "n_missing": cell.n_missing,
                    "n_expected": cell.n_expected, "paper": cell.paper, "mark": cell.mark,
                    "text": _cell_text(cell, column.decimals, latex=False),
                })
    return pd.DataFrame.from_records(records, columns=TIDY_COLUMNS)


def _report_header(sweep_dir: Path, counts: dict, has_grid: bool) -> str:
    missing = (f"**{counts['missing']} missing** (in grid.json, no summary.json)" if has_grid
               else "missing: n/a (no grid.json, the grid is what was found)")
    lines = [f"# Flow-Mixup report: sweep `{sweep_dir.name}`", "", f"Sweep folder: `{sweep_dir.resolve()}`", "",
             f"Runs: **{counts['ok']} ok**, **{counts['failed']} failed**, {missing}."]
    extras = []
    if counts.get("unfinished"):
        extras.append(f"{counts['unfinished']} unfinished (metrics.csv but no summary.json)")
    if counts.get("unreadable"):
        extras.append(f"{counts['unreadable']} unreadable summary.json (listed below)")
    if counts.get("left_out"):
        extras.append(f"{len(counts['left_out'])} bad run files left out (listed below)")
    if counts.get("duplicates"):
        extras.append(f"{counts['duplicates']} duplicate runs of the same cell and seed (kept: ok over failed, "
                      "then the newest)")
    if has_grid and counts.get("not_in_grid"):
        extras.append(f"{counts['not_in_grid']} runs outside grid.json (included in the tables)")
    if counts.get("unknown_metric_datasets"):
        extras.append("datasets left out (primary metric unknown or not auc/macro_f1): "
                      + ", ".join(counts["unknown_metric_datasets"]))
    if extras:
        lines += ["", "Also: " + "; ".join(extras) + "."]
    left_out = list(counts.get("unreadable_runs") or []) + list(counts.get("left_out") or [])
    if left_out:
        lines += ["", "Left out (unreadable or invalid):", ""]
        lines += [f"- `{path}`: {problem}" for path, problem in left_out]
    if counts["failed_runs"]:
        lines += ["", "Failed runs:", ""]
        shown = counts["failed_runs"][:30]
        lines += [f"- `{run_dir}`: {reason or '(no reason given)'}" for run_dir, reason in shown]
        if len(counts["failed_runs"]) > len(shown):
            lines.append(f"- … and {len(counts['failed_runs']) - len(shown)} more (see table CSVs)")
    lines.append("")
    return "\n".join(lines)


def _count_unfinished(sweep_dir: Path) -> int:
    return sum(1 for p in sweep_dir.rglob("metrics.csv") if not (p.parent / "summary.json").exists())


_FROM_SWEEP = object()


def _curve(run_dir: str, metric: str) -> np.ndarray | None:
    """The per-epoch test values of ``metric`` from a run's metrics.csv (None where it cannot be read)."""
    try:
        frame = pd.read_csv(Path(run_dir) / "metrics.csv")
        return pd.to_numeric(frame[f"test_{metric}"], errors="coerce").to_numpy(dtype=float)
    except (OSError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


def memorisation(runs: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Best vs last epoch of every finished run, averaged over seeds per (dataset, setting, noise): where label noise
    makes a model memorise, its test metric peaks well before the last epoch and the best-last gap grows with the
    noise. Returns a Markdown section and the tidy frame (``memorisation.csv``). Computed from each run's
    metrics.csv, so it covers every dataset, including those whose paper table shows the best value only."""
    rows = []
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs.iloc[0:0]
    for _, run in ok.iterrows():
        metric = primary_metric_of(run.to_dict())
        curve = _curve(run["run_dir"], metric) if metric else None
        if curve is None or not np.isfinite(curve).any():
            continue
        best_epoch = int(np.nanargmax(curve)) + 1
        setting = Setting.of(run["regularizer"], run.get("alpha"), run.get("keep_original"))
        rows.append({"dataset": run["dataset"], "setting": setting.label, "order": setting.sort_key(),
                     "noise": noise_key(run["noise"]), "seed": run.get("seed"), "metric": metric,
                     "best": float(np.nanmax(curve)), "last": float(curve[-1]), "best_epoch": best_epoch,
                     "epochs": len(curve)})
    if not rows:
        return "", pd.DataFrame()
    per_run = pd.DataFrame(rows)
    per_run["diff"] = per_run["best"] - per_run["last"]
    agg = (per_run.groupby(["dataset", "order", "setting", "noise", "metric"], sort=True)
           .agg(best=("best", "mean"), last=("last", "mean"), diff=("diff", "mean"), best_epoch=("best_epoch", "mean"),
                epochs=("epochs", "max"), seeds=("seed", "count")).reset_index())
    lines = ["## Memorisation: best vs last epoch", "",
             "Test value of the primary metric at its best epoch and at the last epoch, and best - last (mean over "
             "seeds; the best epoch is a mean when seeds differ). Under label noise a model that memorises the "
             "corrupted labels peaks early and then declines: the best epoch moves away from the last one and the "
             "gap grows with the noise rate.", ""]
    for dataset, block in agg.groupby("dataset", sort=True):
        noises = sorted(block["noise"].unique())
        metric = block["metric"].iloc[0]
        lines += [f"### {dataset} (test {metric})", "",
                  "| Regularization | " + " | ".join(f"{n:.0%} best (epoch) | {n:.0%} last | {n:.0%} diff."
                                                       for n in noises) + " |",
                  "|---|" + ":-:|" * (3 * len(noises))]
        for (_, label), sub in block.groupby(["order", "setting"], sort=True):
            cells = []
            for n in noises:
                cell = sub[sub["noise"] == n]
                if cell.empty:
                    cells += ["-", "-", "-"]
                    continue
                c = cell.iloc[0]
                cells += [f"{c['best']:.4f} ({c['best_epoch']:.0f}/{c['epochs']:.0f})", f"{c['last']:.4f}",
                          f"{c['diff']:.4f}"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines), agg.drop(columns=["order"])


def make_report(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                paper_csv: str | os.PathLike | None = None, best_from: str = "best", *,
                runs: pd.DataFrame | None = None, grid: Any = _FROM_SWEEP,
                left_out: Sequence[tuple[Any, str]] = (), write: bool = True,
                fig6: bool | dict[str, Any] = True) -> dict[str, Any]:
    """Write Tables I-III (Markdown, tidy CSV, LaTeX) and ``report.md`` for the runs below ``sweep_dir``.

    ``report.md`` ends with a Fig. 6 section (:func:`flowmixup.report.figures.fig6_section`: Spearman's rho under
    every normalisation and count of n_c) when a dataset has the Mixup and Flow-Mixup runs it needs; ``fig6`` may
    be a dict of options for it (``target_noise``, ``r``, ``normalization``, ``eps``, ``count``, ``joint_floor``;
    give the ones the figures were made with), or False to leave the section out.

    ``out_dir`` defaults to ``<sweep_dir>/report``; ``paper_csv`` to the packaged ``paper_tables.csv``. ``runs``
    (default: :func:`collect_runs`) and ``grid`` (default: :func:`load_grid`) may be given, e.g. from
    :func:`check_sweep`; ``left_out`` lists ``(path, problem)`` of bad files skipped, named in ``report.md``.
    Everything is computed first; only then are the files written, all together (:func:`write_files`), so an
    error leaves no half report. ``write=False`` computes without writing (``files`` holds the contents).

    Returns a dict: ``paths`` (name -> Path of every file), ``files`` (Path -> content), ``markdown`` (table ->
    Markdown text), ``report_md`` (the full report text), ``counts`` (runs ok / failed / missing / ...), ``tidy``
    (table -> the tidy DataFrame) and ``runs`` (the :func:`collect_runs` frame).
    """
    from .output import write_files

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    runs = collect_runs(sweep_dir) if runs is None else runs
    grid = load_grid(sweep_dir) if grid is _FROM_SWEEP else grid
    paper = load_paper_tables(paper_csv)
    tables, counts = build_tables(runs, grid, paper, best_from=best_from)
    counts["unfinished"] = _count_unfinished(sweep_dir)
    counts["left_out"] = [(str(path), str(problem)) for path, problem in left_out]

    paths: dict[str, Path] = {}
    files: dict[Path, str] = {}
    markdown: dict[str, str] = {}
    tidy: dict[str, pd.DataFrame] = {}
    for table, stem in (("I", "table1"), ("II", "table2"), ("III", "table3")):
        blocks = tables[table]
        markdown[table] = render_markdown(table, blocks, counts)
        tidy[table] = tidy_frame(table, blocks)
        for ext, text in (("md", markdown[table]), ("csv", tidy[table].to_csv(index=False)),
                          ("tex", render_latex(table, blocks, counts))):
            path = out_dir / f"{stem}.{ext}"
            files[path] = text
            paths[f"{stem}.{ext}"] = path
    report_md = _report_header(sweep_dir, counts, grid is not None) + "\n" + "\n".join(markdown.values())
    memo_md, memo = memorisation(runs)
    if memo_md:
        report_md += "\n" + memo_md
        files[out_dir / "memorisation.csv"] = memo.to_csv(index=False)
        paths["memorisation.csv"] = out_dir / "memorisation.csv"
    if fig6 is not False:
        from .figures import fig6_section  # figures imports this module: import it only when it is needed

        section = fig6_section(sweep_dir, runs=runs, **(fig6 if isinstance(fig6, dict) else {}))
        if section:
            report_md += "\n" + section
    files[out_dir / "report.md"] = report_md
    paths["report.md"] = out_dir / "report.md"
    if write:
        write_files(files)
    return {"paths": paths, "files": files, "markdown": markdown, "report_md": report_md, "counts": counts,
            "tidy": tidy, "runs": runs}
