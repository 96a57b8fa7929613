"""The numbers and the text of the paper's Fig. 6: per class, Mixup's test performance against Flow-Mixup's (the
Performance Ratio) beside how often the class is the only label of a record (the Independent Ratio), and Spearman's
rho between them under every normalisation and count. How Fig. 6 is read (normalisations, the Independent Ratio's
sources and counts, the classes left out or ignored) is in ``FIG6.md`` beside this module; the drawing is
:mod:`flowmixup.report.figures`. Computed once per report (:func:`fig6_all`) from the ok runs of
:func:`flowmixup.report.runs.prepare_runs`.
"""

from __future__ import annotations

import functools
import math
import warnings
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .output import markdown_table
from .runs import (
    PER_CLASS_COLUMNS,
    PER_CLASS_METRIC,
    PreparedRuns,
    Setting,
    builtin_key,
    dataset_label,
    read_csv_checked,
    run_file_columns,
)

MIXUP = Setting("mixup", 3.0)
FLOW = Setting("flowmixup", 3.0, False)
DEFAULT_R = {"auc": 10.0, "macro_f1": 1.0}
NORMALIZATIONS = ("none", "joint", "per_method")
DEFAULT_NORMALIZATION = "joint"
JOINT_FLOOR = 0.5
COUNTS = ("literal", "ignore_rhythm")
DEFAULT_COUNT = "ignore_rhythm"
COUNT_TEXT = {"literal": "literal", "ignore_rhythm": "ignoring rhythm/normal"}
WHICH = ("best", "last", "at_best_val")  # the per-class column: best epoch, last epoch, at the best validation
_PREDICTION_FILES = ("predictions_test_last.npz", "predictions_test_best.npz")

# class_names.csv (package data): per class its English gloss (tick labels: matplotlib's default fonts lack Chinese
# glyphs), the datasets whose *normal* class it is (left out of Fig. 6, as the paper's Fig. 6(b)), and those where it
# is a rhythm/normal label that the "ignore_rhythm" count of n_c does not count (why: FIG6.md).
with resources.files("flowmixup.report").joinpath("class_names.csv").open("rb") as _fh:
    _CLASSES = pd.read_csv(_fh, dtype=str, keep_default_na=False)
GLOSS = {k: v for k, v in zip(_CLASSES["class"], _CLASSES["gloss"]) if v}


class _ByDataset(dict):
    """Classes per dataset; ``get`` of a dataset named ``<key>_<variant>`` (``ptbxl_all``) gives its key's."""

    def get(self, dataset, default=()):
        key = builtin_key(str(dataset), self)
        return default if key is None else self[key]


NORMAL_CLASSES, IGNORED_CLASSES = (
    _ByDataset(
        {
            d: tuple(_CLASSES["class"][_CLASSES[col].str.split().map(lambda ds, d=d: d in ds)])
            for d in ("ecg12", "ecg55", "synth_ecg", "chestxray14", "nih1000", "ptbxl", "cinc2021")
        }
    )
    for col in ("normal_in", "ignored_in")
)


def _glossed(names: Sequence[str]) -> str:
    """``a, b`` for a figure: a Tianchi name as its English gloss (matplotlib's fonts lack Chinese glyphs)."""
    return ", ".join(GLOSS.get(n, n) for n in names)


def _named(names: Sequence[str]) -> str:
    """``a (gloss), b`` for Markdown: a Tianchi name with its gloss, any other name as it is."""
    return ", ".join(f"{n} ({GLOSS[n]})" if n in GLOSS else n for n in names)


# ---- The numbers of Fig. 6 -----------------------------------------------------------------------------------------
def normalize_minmax(values: Sequence[float], floor: float = 0.0) -> np.ndarray:
    """Min-max normalise ``values`` onto [``floor``, 1]; NaNs stay NaN, a constant vector gives all ``floor``."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.full_like(x, np.nan)
    lo, hi = float(np.min(finite)), float(np.max(finite))
    if hi - lo <= 0:
        return np.where(np.isfinite(x), float(floor), np.nan)
    return floor + (1.0 - floor) * (x - lo) / (hi - lo)


def normalize_pair(
    perf_mixup: Sequence[float],
    perf_flow: Sequence[float],
    normalization: str = DEFAULT_NORMALIZATION,
    joint_floor: float = JOINT_FLOOR,
) -> tuple[np.ndarray, np.ndarray]:
    """The two per-class vectors as ``normalization`` says: ``none``, ``per_method`` (each onto [0, 1]) or ``joint``
    (one min-max over both, onto [``joint_floor``, 1])."""
    a, b = np.asarray(perf_mixup, dtype=float), np.asarray(perf_flow, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"per-class vectors differ in length: {a.shape} vs {b.shape}")
    _check_choice(normalization, NORMALIZATIONS, "normalization")
    if normalization == "per_method":
        return normalize_minmax(a), normalize_minmax(b)
    if normalization == "joint":
        if not 0.0 <= joint_floor < 1.0:
            raise ValueError(f"joint_floor must be in [0, 1), not {joint_floor}")
        both = normalize_minmax(np.concatenate([a, b]), joint_floor)
        return both[: len(a)], both[len(a) :]
    return a, b


def performance_ratio(
    perf_mixup: Sequence[float],
    perf_flow: Sequence[float],
    r: float,
    normalization: str = DEFAULT_NORMALIZATION,
    eps: float = 0.0,
    joint_floor: float = JOINT_FLOOR,
) -> np.ndarray:
    """The paper's "Performance Ratio" per class, ((norm Mixup + eps) / (norm Flow-Mixup + eps)) ** r; NaN where the
    denominator is 0 (``per_method``: Flow-Mixup's worst class; never under ``joint`` with ``joint_floor > 0``)."""
    a, b = normalize_pair(perf_mixup, perf_flow, normalization, joint_floor)
    num, den = a + eps, b + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        ratio = np.where(np.isfinite(ratio), ratio, np.nan) ** r
    return ratio


def independent_ratio(single_count: Sequence[float], count: Sequence[float]) -> np.ndarray:
    """n_c / m_c per class; NaN where m_c is 0 (or either is NaN)."""
    n = np.asarray(single_count, dtype=float)
    m = np.asarray(count, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, n / np.where(m > 0, m, 1.0), np.nan)


def alone_counts(y: np.ndarray, class_names: Sequence[str], ignored: Sequence[str] = ()) -> pd.DataFrame:
    """Per class of the n x C label matrix ``y``: ``count`` (m_c) and the two n_c of the module docstring.

    ``single_literal``: records whose only positive label is c. ``single_ignore_rhythm``: records with c and no
    positive label other than c outside ``ignored`` (for a class in ``ignored`` itself: no positive label outside
    ``ignored``). Labels are positive where ``y >= 0.5``. Indexed by class name.
    """
    y = np.asarray(y, dtype=float) >= 0.5
    names = [str(c) for c in class_names]
    if y.ndim != 2 or y.shape[1] != len(names):
        raise ValueError(f"labels of shape {y.shape} do not match {len(names)} class names")
    counted = ~np.isin(np.array(names, dtype=object), list(ignored))  # the labels that can keep c from being alone
    per_record = y.sum(axis=1)
    others = y[:, counted].sum(axis=1)[:, None] - (y & counted[None, :])  # counted labels other than c
    return pd.DataFrame(
        {
            "count": y.sum(axis=0),
            "single_literal": (y & (per_record == 1)[:, None]).sum(axis=0),
            "single_ignore_rhythm": (y & (others == 0)).sum(axis=0),
        },
        index=pd.Index(names, name="class"),
    ).astype(float)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman's rho and p-value over the pairs where both are finite, and their number (NaN with < 3 pairs)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3:
        return math.nan, math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        result = stats.spearmanr(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue), n


def _read_per_class(run_dir: str, columns: tuple[str, ...] = ("class",)) -> tuple[pd.DataFrame | None, str | None]:
    frame, problem = read_csv_checked(Path(run_dir) / "per_class.csv", columns)
    if frame is not None:
        frame["class"] = frame["class"].astype(str)
    return frame, problem


def _read_label_file(
    run_dir: str, classes: Sequence[str], files: Sequence[str] = _PREDICTION_FILES, key: str = "y_true"
) -> tuple[np.ndarray | None, list[str], str | None]:
    """``(labels, class names, None)`` from the first of ``files`` a run has (its test predictions by default), or
    ``(None, [], problem)``; ``classes`` (per_class.csv's order) names the columns of a file without ``class_names``."""
    for name in files:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                y = np.asarray(data[key])
                names = [str(c) for c in data["class_names"]] if "class_names" in data.files else list(classes)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            return None, [], f"{name} unreadable ({type(exc).__name__})"
        if y.ndim != 2 or y.shape[1] != len(names):
            return None, [], f"{name}: y_true of shape {y.shape} does not match {len(names)} classes"
        return y, names, None
    return None, [], "no " + " or ".join(files)


def _train_counts(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """per_class.csv training counts summed over runs: ``count``, ``single_literal``, indexed by class."""
    stacked = pd.concat([f[list(PER_CLASS_COLUMNS)] for f in frames])
    numbers = stacked[["train_count", "train_single_count"]].apply(pd.to_numeric, errors="coerce")
    return (
        numbers.groupby(stacked["class"], sort=False)
        .sum(min_count=1)
        .set_axis(["count", "single_literal"], axis=1)
        .astype(float)
    )


def _summed(label_sets: list[tuple[np.ndarray, list[str]]], ignored: Sequence[str]) -> pd.DataFrame:
    """:func:`alone_counts` of every distinct label matrix, summed."""
    distinct: list[tuple[np.ndarray, list[str]]] = []
    for y, names in label_sets:
        if not any(names == n and y.shape == d.shape and np.array_equal(y, d) for d, n in distinct):
            distinct.append((y, names))
    counts = [alone_counts(y, names, ignored) for y, names in distinct]
    return functools.reduce(lambda a, b: a.add(b, fill_value=0.0), counts), len(distinct)


def _independent_counts(
    dataset: str,
    fig_runs: Sequence[tuple[str, pd.DataFrame]],
    clean_train: pd.DataFrame | None,
    noise: float,
    notes: list[str],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """n_c (both counts) and m_c per class from the cleanest source there is (FIG6.md), and the source."""
    ignored = IGNORED_CLASSES.get(dataset, ())
    train = [
        (y, names)
        for y, names, _ in (
            _read_label_file(d, list(f["class"]), ("labels_train_clean.npz",), "y") for d, f in fig_runs
        )
        if y is not None
    ]
    if train:
        total, n = _summed(train, ignored)
        return total, {
            "independent_source": "train_clean",
            "independent_source_text": "clean training labels "
            "(labels_train_clean.npz" + (f", {n} different training sets summed)" if n > 1 else ")"),
        }
    test = []
    for run_dir, per_class in fig_runs:
        y, names, problem = _read_label_file(run_dir, list(per_class["class"]))
        if y is not None:
            test.append((y, names))
        else:
            notes.append(f"Fig. 6 ({dataset}): no clean test labels from {run_dir} ({problem})")
    if test:
        total, n = _summed(test, ignored)
        if n > 1:
            notes.append(
                f"Fig. 6 ({dataset}): the runs' test labels differ ({n} test sets); n_c and m_c are summed over them"
            )
        sets = "one test set" if n == 1 else f"{n} different test sets, counts summed"
        return total, {
            "independent_source": "test_clean",
            "independent_source_text": "clean test labels (y_true of "
            f"predictions_test_*.npz of {len(test)} run{'s' if len(test) != 1 else ''}: {sets})",
        }
    if clean_train is not None:
        frame, kind, text = clean_train, "train_clean", "clean training labels (per_class.csv of the noise-0 runs)"
    else:
        frame = _train_counts([f for _, f in fig_runs])
        kind, text = (
            "train_as_trained",
            (f"training labels as trained on, corrupted at noise {noise:g} (per_class.csv; no clean source found)"),
        )
        notes.append(
            f"Fig. 6 ({dataset}): Independent Ratio from corrupted training labels (no "
            "predictions_test_*.npz and no noise-0 run)"
        )
    # per_class.csv counts are literal; they are the rhythm-ignoring count too when no ignored class is present
    frame = frame.assign(
        single_ignore_rhythm=frame["single_literal"] if not set(ignored) & set(frame.index) else np.nan
    )
    return frame, {"independent_source": kind, "independent_source_text": text}


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


@dataclass(frozen=True)
class Fig6Options:
    """How Fig. 6 is computed and drawn (FIG6.md): the noise level closest to ``target_noise``; the exponent ``r``
    (None: 10 for AUC datasets, 1 for macro-F1 ones); the ``normalization`` and ``count`` drawn (every one is in
    the CSVs and report.md); ``eps`` added to both normalised performances; ``which`` per-class column."""

    target_noise: float = 0.1
    r: float | None = None
    normalization: str = DEFAULT_NORMALIZATION
    count: str = DEFAULT_COUNT
    eps: float = 0.0
    joint_floor: float = JOINT_FLOOR
    which: str = "best"

    def __post_init__(self) -> None:
        _check_choice(self.normalization, NORMALIZATIONS, "normalization")
        _check_choice(self.count, COUNTS, "count")
        _check_choice(self.which, WHICH, "which")
        if not 0.0 <= self.joint_floor < 1.0:
            raise ValueError(f"joint_floor must be in [0, 1), not {self.joint_floor}")
        for name in ("target_noise", "eps") + (("r",) if self.r is not None else ()):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number, not {getattr(self, name)!r}")


_RunFrames = dict[Setting, list[tuple[str, pd.DataFrame]]]  # per method, (run_dir, per_class.csv) of each seed


def _runs_per_noise(
    ok: pd.DataFrame, dataset: str, needed: tuple[str, ...], notes: list[str]
) -> dict[float, _RunFrames]:
    """The per_class.csv of every ok Mixup / Flow-Mixup run of ``dataset``, by noise level and method."""
    per_noise: dict[float, _RunFrames] = {}
    for record in ok.to_dict("records"):
        if record["_setting"] not in (MIXUP, FLOW):
            continue
        frame, problem = _read_per_class(record["run_dir"], needed)
        if frame is None:
            notes.append(f"Fig. 6 ({dataset}) leaves out {record['run_dir']}: per_class.csv ({problem})")
            continue
        per_noise.setdefault(record["_noise"], {}).setdefault(record["_setting"], []).append((record["run_dir"], frame))
    return per_noise


def _performance(
    runs_at: _RunFrames, dataset: str, column: str, r: float, options: Fig6Options
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per class (per_class.csv's order) both methods' seed-averaged performance and the Performance Ratio under
    every normalisation; the normal classes left out and the ignored (rhythm/normal) classes present."""

    def mean_perf(setting: Setting) -> pd.Series:
        stacked = pd.concat([f[["class", column]] for _, f in runs_at[setting]])
        return pd.to_numeric(stacked[column], errors="coerce").groupby(stacked["class"], sort=False).mean()

    mix, flow = mean_perf(MIXUP), mean_perf(FLOW)
    order = [c for c in runs_at[FLOW][0][1]["class"] if c in mix.index]  # class order as in per_class.csv
    table = pd.DataFrame(
        {"class": order, "perf_mixup": mix.reindex(order).to_numpy(), "perf_flow": flow.reindex(order).to_numpy()}
    )
    normal = [c for c in table["class"] if c in NORMAL_CLASSES.get(dataset, ())]
    table = table[
        np.isfinite(table["perf_mixup"]) & np.isfinite(table["perf_flow"]) & ~table["class"].isin(normal)
    ].reset_index(drop=True)
    for norm in NORMALIZATIONS:
        table[f"ratio_{norm}"] = performance_ratio(
            table["perf_mixup"], table["perf_flow"], r, norm, options.eps, options.joint_floor
        )
    table["norm_mixup"], table["norm_flow"] = normalize_pair(
        table["perf_mixup"], table["perf_flow"], options.normalization, options.joint_floor
    )
    table["performance_ratio"] = table[f"ratio_{options.normalization}"]
    return table, normal, [c for c in order if c in IGNORED_CLASSES.get(dataset, ())]


def _add_independent(
    table: pd.DataFrame, dataset: str, ok: pd.DataFrame, runs_at: _RunFrames, noise: float, count: str, notes: list[str]
) -> dict[str, Any]:
    """n_c, m_c and the Independent Ratio of both counts into ``table`` (and the literal one from the clean training
    labels as a cross-check, when the main source is the test labels); returns the source's entries of ``info``."""
    fig_runs = [pair for s in (MIXUP, FLOW) for pair in runs_at[s]]
    clean = [
        f
        for f, _ in (_read_per_class(d, PER_CLASS_COLUMNS) for d in ok.loc[ok["_noise"] == 0.0, "run_dir"])
        if f is not None
    ]  # the noise-0 runs' literal training counts: clean labels
    clean_train = _train_counts(clean) if clean else None
    counts, source = _independent_counts(dataset, fig_runs, clean_train, noise, notes)
    counts = counts.reindex(table["class"])
    table["count"] = counts["count"].to_numpy(dtype=float)
    for c in COUNTS:
        table[f"single_count_{c}"] = counts[f"single_{c}"].to_numpy(dtype=float)
        table[f"independent_ratio_{c}"] = independent_ratio(table[f"single_count_{c}"], table["count"])
    table["single_count"] = table[f"single_count_{count}"]
    table["independent_ratio"] = table[f"independent_ratio_{count}"]
    cross_check = source["independent_source"] == "test_clean" and clean_train is not None
    if cross_check:
        train = clean_train.reindex(table["class"])
        table["independent_ratio_train_clean_literal"] = independent_ratio(train["single_literal"], train["count"])
    used_clean = cross_check or source["independent_source"] == "train_clean"
    return {**source, "n_clean_train_runs": len(clean) if used_clean else 0}


def _correlations(table: pd.DataFrame) -> dict[str, Any]:
    """Per normalisation the classes whose ratio is undefined, and Spearman's rho / p / class count against every
    Independent Ratio in ``table``."""
    pairs = [(c, f"independent_ratio_{c}") for c in COUNTS]
    if "independent_ratio_train_clean_literal" in table:
        pairs.append(("literal_train_clean", "independent_ratio_train_clean_literal"))
    info: dict[str, Any] = {}
    for norm in NORMALIZATIONS:
        undefined = ~np.isfinite(table[f"ratio_{norm}"].to_numpy(float))
        info[f"n_dropped_{norm}"] = int(undefined.sum())
        info[f"dropped_{norm}"] = "; ".join(table["class"][undefined])
        for key, independent in pairs:
            info.update(
                zip(
                    (f"spearman_rho_{norm}_{key}", f"spearman_p_{norm}_{key}", f"n_classes_{norm}_{key}"),
                    spearman(table[f"ratio_{norm}"], table[independent]),
                )
            )
    return info


def fig6_data(
    ok: pd.DataFrame, dataset: str, options: Fig6Options = Fig6Options(), notes: list[str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """``(per_class, info)`` behind Fig. 6 for ``dataset`` from the ok runs of
    :func:`~flowmixup.report.runs.prepare_runs` (None without the runs it needs): the per-class numbers under every
    normalisation and count, and Spearman's rho of each pair (``info``, one row of ``fig6_spearman.csv``). A run
    without a usable ``per_class.csv`` is left out, with a line in ``notes``."""
    notes = [] if notes is None else notes
    ok = ok[ok["dataset"] == dataset]
    metric = next((m for m in ok["_metric"] if m is not None), None)
    if metric not in PER_CLASS_METRIC:  # also: no ok run
        return None
    column = f"{PER_CLASS_METRIC[metric]}_{options.which}"
    r = DEFAULT_R[metric] if options.r is None else float(options.r)
    per_noise = _runs_per_noise(ok, dataset, tuple(run_file_columns(metric, options.which)["per_class.csv"]), notes)
    usable = [n for n, by in per_noise.items() if MIXUP in by and FLOW in by]
    if not usable:
        return None
    noise = min(usable, key=lambda n: (abs(n - options.target_noise), n))
    table, normal, ignored = _performance(per_noise[noise], dataset, column, r, options)
    source = _add_independent(table, dataset, ok, per_noise[noise], noise, options.count, notes)
    info: dict[str, Any] = {
        "dataset": dataset,
        "primary_metric": metric,
        "per_class_column": column,
        "noise": noise,
        "target_noise": options.target_noise,
        "r": r,
        "normalization": options.normalization,
        "count": options.count,
        "joint_floor": options.joint_floor,
        "eps": options.eps,
        **source,
        "normal_classes_left_out": "; ".join(normal),
        "ignored_classes": "; ".join(ignored),
        "n_classes_plotted": len(table),
        "n_seeds_mixup": len(per_noise[noise][MIXUP]),
        "n_seeds_flow": len(per_noise[noise][FLOW]),
        **_correlations(table),
    }
    chosen = f"{options.normalization}_{options.count}"
    info.update({k: info[f"{k}_{chosen}"] for k in ("spearman_rho", "spearman_p", "n_classes")})
    return table, info


# ---- Text: the Spearman correlations under every reading, for the figure and report.md -----------------------------
def _rho_text(info: dict[str, Any], key: str) -> str:
    rho, n = info.get(f"spearman_rho_{key}", math.nan), info.get(f"n_classes_{key}", 0)
    return f"{rho:.3f} (n = {n})" if np.isfinite(rho) else f"n/a (n = {n})"


def norm_text(norm: str, info: dict[str, Any]) -> str:
    return f"joint [{info['joint_floor']:g}, 1]" if norm == "joint" else norm


def _listed(info: dict[str, Any], key: str) -> list[str]:
    """The class names of an ``info`` entry joined with "; "."""
    return [n for n in str(info[key]).split("; ") if n]


def _dropped_text(info: dict[str, Any], norm: str, gloss: bool = False) -> str:
    names = _listed(info, f"dropped_{norm}")
    k = info[f"n_dropped_{norm}"]
    return f"{k}: {_glossed(names) if gloss else _named(names)}" if k else "0"


def _rho_columns() -> list[str]:
    """The columns of Fig. 6's Spearman tables (the annotation's and report.md's)."""
    counts = [f"ρ, n_c {COUNT_TEXT[c]}" for c in ("literal", "ignore_rhythm")]
    return ["normalisation", *counts, "classes dropped (ratio undefined)"]


def figure_note(info: dict[str, Any]) -> str:
    """The annotation under Fig. 6: ρ for every normalisation and count, what is drawn, where n_c comes from."""
    perf = "AUC" if info["primary_metric"] == "auc" else "F1"
    drawn = (info["normalization"], info["count"])
    rows = [
        [norm_text(norm, info) + (" *" if norm == drawn[0] else "")]
        + [_rho_text(info, f"{norm}_{c}") + (" *" if (norm, c) == drawn else "") for c in COUNTS]
        + [_dropped_text(info, norm, gloss=True)]
        for norm in NORMALIZATIONS
    ]
    frame = pd.DataFrame(rows, columns=_rho_columns())
    text = frame.to_markdown(index=False, tablefmt="plain", disable_numparse=True)
    lines = [f"Spearman ρ({perf} Ratio, Independent Ratio) over the classes where both are finite (paper: ≈ 0.3):"]
    lines += ["  " + line.rstrip() for line in text.splitlines()]
    drawn_text = (
        f"* drawn: {norm_text(info['normalization'], info)} normalisation; Independent Ratio n_c "
        f"{COUNT_TEXT[info['count']]}"
    )
    if info["count"] == "ignore_rhythm":
        ignored = _listed(info, "ignored_classes")
        drawn_text += f" ({_glossed(ignored)})" if ignored else " (no rhythm/normal classes here: the two counts agree)"
    lines += [drawn_text, f"n_c, m_c from {info['independent_source_text']}"]
    if normal := _listed(info, "normal_classes_left_out"):
        lines.append(f"left out: normal class {_glossed(normal)} (as the paper's Fig. 6(b))")
    return "\n".join(lines)


FIG6_INTRO = (
    "Spearman ρ between the Performance Ratio (Perf_Mixup / Perf_Flow-Mixup)^r of normalised per-class test "
    "performances and the Independent Ratio n_c / m_c, under every normalisation (`none`: raw; `joint`: one "
    "min-max over both methods onto [floor, 1], the default; `per_method`: each method min-max onto [0, 1], "
    "which gives Mixup's worst class ratio 0 and leaves Flow-Mixup's worst class undefined) and both counts "
    "of n_c (`literal`: records whose only label is c; `ignoring rhythm/normal`: no other label outside the "
    "dataset's rhythm/normal classes, the default). The paper reports ρ ≈ 0.3. `n` is the number of classes "
    "in the correlation; the per-class numbers are in `figures/fig6_<dataset>.csv`."
)


def _dataset_section(info: dict[str, Any]) -> list[str]:
    """One dataset's part of the Fig. 6 section: what was read and chosen, and ρ under every reading."""
    perf = "AUC" if info["primary_metric"] == "auc" else "F1"
    lines = [
        f"### {dataset_label(info['dataset'])}: noise {info['noise'] * 100:g}%, test {perf} "
        f"(`{info['per_class_column']}`), r = {info['r']:g}, {info['n_classes_plotted']} classes",
        "",
    ]
    if normal := _listed(info, "normal_classes_left_out"):
        lines.append(f"- Left out of the figure: the normal class {_named(normal)}, as in the paper's Fig. 6(b).")
    lines.append(f"- n_c and m_c from {info['independent_source_text']}.")
    ignored = _listed(info, "ignored_classes")
    lines.append(
        "- Rhythm/normal classes ignored by the second count: "
        + (_named(ignored) if ignored else "none (the two counts agree)")
        + "."
    )
    chosen = "default" if (info["normalization"], info["count"]) == (DEFAULT_NORMALIZATION, DEFAULT_COUNT) else "chosen"
    lines.append(
        f"- {chosen.capitalize()} for the figure: `{info['normalization']}` normalisation"
        + (f" (floor {info['joint_floor']:g})" if info["normalization"] == "joint" else "")
        + f", n_c {COUNT_TEXT[info['count']]}"
        + (f", eps = {info['eps']:g}" if info["eps"] else "")
        + " (what a figure drew is in its annotation and in `figures/fig6_spearman.csv`)."
    )
    rows = [
        [f"**{norm}** ({chosen})" if norm == info["normalization"] else norm]
        + [_rho_text(info, f"{norm}_{c}") for c in COUNTS]
        + [_dropped_text(info, norm)]
        for norm in NORMALIZATIONS
    ]
    frame = pd.DataFrame(rows, columns=_rho_columns())
    lines += ["", markdown_table(frame, lead=frame.shape[1])]
    if f"spearman_rho_{NORMALIZATIONS[0]}_literal_train_clean" in info:
        lines += [
            "",
            f"Cross-check, literal n_c / m_c from the clean training labels of "
            f"{info['n_clean_train_runs']} noise-0 run(s) (per_class.csv): ρ = "
            + "; ".join(f"{norm} {_rho_text(info, f'{norm}_literal_train_clean')}" for norm in NORMALIZATIONS)
            + ".",
        ]
    return lines + [""]


def fig6_markdown(infos: Sequence[dict[str, Any]]) -> str:
    """The Fig. 6 section of ``report.md`` from :func:`fig6_data`'s ``info`` dicts ("" without any): per dataset, ρ
    under every normalisation and count, and the choices."""
    if not infos:
        return ""
    lines = [f"## Fig. 6: per-class {MIXUP.label} vs {FLOW.label}", "", FIG6_INTRO, ""]
    for info in infos:
        lines += _dataset_section(info)
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Fig6:
    """Fig. 6 of a sweep, computed once: per dataset that has the runs, its per-class table and ``info``; why the
    other datasets have none; the runs left out."""

    results: list[tuple[str, pd.DataFrame, dict[str, Any]]]
    skipped: dict[str, str]
    notes: list[str]

    @property
    def spearman(self) -> pd.DataFrame:
        """``fig6_spearman.csv``: one row per dataset."""
        return pd.DataFrame([info for _, _, info in self.results])

    @property
    def markdown(self) -> str:
        return fig6_markdown([info for _, _, info in self.results])


def fig6_all(prepared: PreparedRuns, options: Fig6Options = Fig6Options()) -> Fig6:
    """:func:`fig6_data` for every dataset of the prepared runs."""
    results, skipped, notes = [], {}, []
    used = prepared.used
    for dataset in sorted(set(used["dataset"])):
        metric = next((m for m in used.loc[used["dataset"] == dataset, "_metric"] if m), None)
        if metric not in PER_CLASS_METRIC:
            skipped[dataset] = f"primary metric unknown ({metric!r}): set primary_metric in its summaries"
        elif (result := fig6_data(prepared.ok, dataset, options, notes)) is None:
            skipped[dataset] = (
                f"no noise level with ok runs of both {MIXUP.label} and {FLOW.label} having per_class.csv"
            )
        else:
            results.append((dataset, *result))
    return Fig6(results, skipped, notes)
