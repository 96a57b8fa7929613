"""The paper's Fig. 6 (per-class Mixup vs Flow-Mixup) and per-epoch test-metric curves of a sweep.

Files go to ``<sweep_dir>/report/figures/`` (PNG, PDF and the CSV of the numbers drawn), drawn in memory first and
written together. Only ok runs are used; a run without a usable ``per_class.csv`` / ``metrics.csv`` is left out of
the figure that needs it and named in ``notes``. Rows (and so Fig. 6's two methods) are those of
:func:`flowmixup.report.tables.prepare_runs`. How Fig. 6 is read (normalisations, the Independent Ratio's sources
and counts, the classes left out or ignored) is in ``FIG6.md`` beside this module. Matplotlib is used through its
object API with the Agg canvas (no pyplot).
"""
from __future__ import annotations

import functools
import io
import math
import os
import warnings
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from flowmixup.report.output import csv_text, write_files
from flowmixup.report.inputs import (METRICS_COLUMNS, PER_CLASS_COLUMNS, PER_CLASS_METRIC, Setting, builtin_key,
                                     collect_runs, dataset_label, read_csv_checked, run_file_columns)
from flowmixup.report.tables import DDOF, PAPER_SETTINGS, prepare_runs

MIXUP = Setting("mixup", 3.0)
FLOW = Setting("flowmixup", 3.0, False)
DEFAULT_R = {"auc": 10.0, "macro_f1": 1.0}
NORMALIZATIONS = ("none", "joint", "per_method")
DEFAULT_NORMALIZATION = "joint"
JOINT_FLOOR = 0.5
COUNTS = ("literal", "ignore_rhythm")
DEFAULT_COUNT = "ignore_rhythm"
_COUNT_TEXT = {"literal": "literal", "ignore_rhythm": "ignoring rhythm/normal"}
_SETTING_COLORS = dict(zip(PAPER_SETTINGS, ["#7f7f7f", "#9ecae1", "#3182bd", "#e6550d", "#31a354", "#756bb1"]))
_PREDICTION_FILES = ("predictions_test_last.npz", "predictions_test_best.npz")

# class_names.csv (package data): per class its English gloss (tick labels: matplotlib's default fonts lack Chinese
# glyphs), the datasets whose *normal* class it is (left out of Fig. 6, as the paper's Fig. 6(b)), and those where it
# is a rhythm/normal label that the "ignore_rhythm" count of n_c does not count (why: FIG6.md).
with resources.files("flowmixup.report").joinpath("class_names.csv").open("rb") as _fh:
    _CLASSES = pd.read_csv(_fh, dtype=str, keep_default_na=False)
_GLOSS = {k: v for k, v in zip(_CLASSES["class"], _CLASSES["gloss"]) if v}


class _ByDataset(dict):
    """Classes per dataset; ``get`` of a dataset named ``<key>_<variant>`` (``ptbxl_all``) gives its key's."""

    def get(self, dataset, default=()):
        key = builtin_key(str(dataset), self)
        return default if key is None else self[key]


NORMAL_CLASSES, IGNORED_CLASSES = (_ByDataset({d: tuple(_CLASSES["class"][_CLASSES[col].str.split().map(
    lambda ds: d in ds)]) for d in ("ecg12", "ecg55", "synth_ecg", "chestxray14", "nih1000", "ptbxl", "cinc2021")})
                                   for col in ("normal_in", "ignored_in"))


def _glossed(names: Sequence[str]) -> str:
    """``a, b`` for a figure: a Tianchi name as its English gloss (matplotlib's fonts lack Chinese glyphs)."""
    return ", ".join(_GLOSS.get(n, n) for n in names)


def _named(names: Sequence[str]) -> str:
    """``a (gloss), b`` for Markdown: a Tianchi name with its gloss, any other name as it is."""
    return ", ".join(f"{n} ({_GLOSS[n]})" if n in _GLOSS else n for n in names)


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


def normalize_pair(perf_mixup: Sequence[float], perf_flow: Sequence[float], normalization: str = DEFAULT_NORMALIZATION,
                   joint_floor: float = JOINT_FLOOR) -> tuple[np.ndarray, np.ndarray]:
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
        return both[:len(a)], both[len(a):]
    return a, b


def performance_ratio(perf_mixup: Sequence[float], perf_flow: Sequence[float], r: float,
                      normalization: str = DEFAULT_NORMALIZATION, eps: float = 0.0,
                      joint_floor: float = JOINT_FLOOR) -> np.ndarray:
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
    return pd.DataFrame({"count": y.sum(axis=0),
                         "single_literal": (y & (per_record == 1)[:, None]).sum(axis=0),
                         "single_ignore_rhythm": (y & (others == 0)).sum(axis=0)},
                        index=pd.Index(names, name="class")).astype(float)


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


def _ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The ok runs, one per row, noise and seed, with ``_setting``, ``_noise`` and ``_metric``."""
    used = prepare_runs(runs)[0]
    return used[used["status"] == "ok"] if len(used) else used


def _read_per_class(run_dir: str, columns: tuple[str, ...] = ("class",)) -> tuple[pd.DataFrame | None, str | None]:
    frame, problem = read_csv_checked(Path(run_dir) / "per_class.csv", columns)
    if frame is not None:
        frame["class"] = frame["class"].astype(str)
    return frame, problem


def _read_label_file(run_dir: str, classes: Sequence[str], files: Sequence[str] = _PREDICTION_FILES,
                      key: str = "y_true") -> tuple[np.ndarray | None, list[str], str | None]:
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
    return numbers.groupby(stacked["class"], sort=False).sum(min_count=1).set_axis(
        ["count", "single_literal"], axis=1).astype(float)


def _summed(label_sets: list[tuple[np.ndarray, list[str]]], ignored: Sequence[str]) -> pd.DataFrame:
    """:func:`alone_counts` of every distinct label matrix, summed."""
    distinct: list[tuple[np.ndarray, list[str]]] = []
    for y, names in label_sets:
        if not any(names == n and y.shape == d.shape and np.array_equal(y, d) for d, n in distinct):
            distinct.append((y, names))
    counts = [alone_counts(y, names, ignored) for y, names in distinct]
    return functools.reduce(lambda a, b: a.add(b, fill_value=0.0), counts), len(distinct)


def _independent_counts(dataset: str, fig_runs: Sequence[tuple[str, pd.DataFrame]], clean_train: pd.DataFrame | None,
                        noise: float, notes: list[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """n_c (both counts) and m_c per class from the cleanest source there is (FIG6.md), and the source."""
    ignored = IGNORED_CLASSES.get(dataset, ())
    train = [(y, names) for y, names, _ in (_read_label_file(d, list(f["class"]), ("labels_train_clean.npz",), "y")
                                            for d, f in fig_runs) if y is not None]
    if train:
        total, n = _summed(train, ignored)
        return total, {"independent_source": "train_clean", "independent_source_text": "clean training labels "
                       "(labels_train_clean.npz" + (f", {n} different training sets summed)" if n > 1 else ")")}
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
            notes.append(f"Fig. 6 ({dataset}): the runs' test labels differ ({n} test sets); n_c and m_c are summed "
                         "over them")
        sets = "one test set" if n == 1 else f"{n} different test sets, counts summed"
        return total, {"independent_source": "test_clean", "independent_source_text": "clean test labels (y_true of "
                       f"predictions_test_*.npz of {len(test)} run{'s' if len(test) != 1 else ''}: {sets})"}
    if clean_train is not None:
        frame, kind, text = clean_train, "train_clean", "clean training labels (per_class.csv of the noise-0 runs)"
    else:
        frame = _train_counts([f for _, f in fig_runs])
        kind, text = "train_as_trained", (f"training labels as trained on, corrupted at noise {noise:g} "
                                          "(per_class.csv; no clean source found)")
        notes.append(f"Fig. 6 ({dataset}): Independent Ratio from corrupted training labels (no "
                     "predictions_test_*.npz and no noise-0 run)")
    # per_class.csv counts are literal; they are the rhythm-ignoring count too when no ignored class is present
    frame = frame.assign(single_ignore_rhythm=frame["single_literal"] if not set(ignored) & set(frame.index)
                         else np.nan)
    return frame, {"independent_source": kind, "independent_source_text": text}


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


def fig6_data(runs: pd.DataFrame, dataset: str, target_noise: float = 0.1, r: float | None = None,
              normalization: str = DEFAULT_NORMALIZATION, eps: float = 0.0, which: str = "best",
              notes: list[str] | None = None, *, count: str = DEFAULT_COUNT,
              joint_floor: float = JOINT_FLOOR) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """``(per_class, info)`` behind Fig. 6 for ``dataset`` (None without the runs): the per-class numbers under every
    normalisation and count, and Spearman's rho of each pair (``info``, one row of ``fig6_spearman.csv``).

    ``which`` picks the per-class column (``best``, ``last`` or ``at_best_val``); ``r`` defaults to 10 for AUC
    datasets, 1 for macro-F1 ones; ``normalization`` and ``count`` choose what is drawn (FIG6.md). A run without a
    usable ``per_class.csv`` is left out, with a line in ``notes``.
    """
    _check_choice(normalization, NORMALIZATIONS, "normalization")
    _check_choice(count, COUNTS, "count")
    notes = [] if notes is None else notes
    ok = _ok_runs(runs)
    ok = ok[ok["dataset"] == dataset]
    metric = next((m for m in ok["_metric"] if m is not None), None)
    if metric not in PER_CLASS_METRIC:  # also: no ok run
        return None
    column = f"{PER_CLASS_METRIC[metric]}_{which}"
    r = DEFAULT_R[metric] if r is None else float(r)
    needed = tuple(run_file_columns(metric, which)["per_class.csv"])

    per_noise: dict[float, dict[Setting, list[tuple[str, pd.DataFrame]]]] = {}
    for record in ok.to_dict("records"):
        if record["_setting"] not in (MIXUP, FLOW):
            continue
        frame, problem = _read_per_class(record["run_dir"], needed)
        if frame is None:
            notes.append(f"Fig. 6 ({dataset}) leaves out {record['run_dir']}: per_class.csv ({problem})")
            continue
        per_noise.setdefault(record["_noise"], {}).setdefault(record["_setting"], []).append((record["run_dir"], frame))
    usable = [n for n, by in per_noise.items() if MIXUP in by and FLOW in by]
    if not usable:
        return None
    noise = min(usable, key=lambda n: (abs(n - target_noise), n))
    runs_at = per_noise[noise]

    def mean_perf(setting: Setting) -> pd.Series:
        stacked = pd.concat([f[["class", column]] for _, f in runs_at[setting]])
        return pd.to_numeric(stacked[column], errors="coerce").groupby(stacked["class"], sort=False).mean()

    mix, flow = mean_perf(MIXUP), mean_perf(FLOW)
    order = [c for c in runs_at[FLOW][0][1]["class"] if c in mix.index]  # class order as in per_class.csv
    table = pd.DataFrame({"class": order, "perf_mixup": mix.reindex(order).to_numpy(),
                          "perf_flow": flow.reindex(order).to_numpy()})
    normal = [c for c in table["class"] if c in NORMAL_CLASSES.get(dataset, ())]
    table = table[np.isfinite(table["perf_mixup"]) & np.isfinite(table["perf_flow"])
                  & ~table["class"].isin(normal)].reset_index(drop=True)

    for norm in NORMALIZATIONS:
        table[f"ratio_{norm}"] = performance_ratio(table["perf_mixup"], table["perf_flow"], r, norm, eps, joint_floor)
    table["norm_mixup"], table["norm_flow"] = normalize_pair(table["perf_mixup"], table["perf_flow"], normalization,
                                                             joint_floor)
    table["performance_ratio"] = table[f"ratio_{normalization}"]

    fig_runs = [pair for s in (MIXUP, FLOW) for pair in runs_at[s]]
    clean = [f for f, _ in (_read_per_class(d, PER_CLASS_COLUMNS) for d in ok.loc[ok["_noise"] == 0.0, "run_dir"])
             if f is not None]  # the noise-0 runs' literal training counts: clean labels
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

    present_ignored = [c for c in order if c in IGNORED_CLASSES.get(dataset, ())]
    info: dict[str, Any] = {
        "dataset": dataset, "primary_metric": metric, "per_class_column": column, "noise": noise,
        "target_noise": target_noise, "r": r, "normalization": normalization, "count": count,
        "joint_floor": joint_floor, "eps": eps, **source,
        "n_clean_train_runs": len(clean) if cross_check or source["independent_source"] == "train_clean" else 0,
        "normal_classes_left_out": "; ".join(normal), "ignored_classes": "; ".join(present_ignored),
        "n_classes_plotted": len(table), "n_seeds_mixup": len(runs_at[MIXUP]), "n_seeds_flow": len(runs_at[FLOW]),
    }
    pairs = [(c, f"independent_ratio_{c}") for c in COUNTS]
    pairs += [("literal_train_clean", "independent_ratio_train_clean_literal")] if cross_check else []
    for norm in NORMALIZATIONS:
        undefined = ~np.isfinite(table[f"ratio_{norm}"].to_numpy(float))
        info[f"n_dropped_{norm}"] = int(undefined.sum())
        info[f"dropped_{norm}"] = "; ".join(table["class"][undefined])
        for key, independent in pairs:
            info.update(zip((f"spearman_rho_{norm}_{key}", f"spearman_p_{norm}_{key}", f"n_classes_{norm}_{key}"),
                            spearman(table[f"ratio_{norm}"], table[independent])))
    info.update({k: info[f"{k}_{normalization}_{count}"] for k in ("spearman_rho", "spearman_p", "n_classes")})
    return table, info


# ---- Text: the Spearman correlations under every reading, for the figure and report.md -----------------------------
def _rho_text(info: dict[str, Any], key: str) -> str:
    rho, n = info.get(f"spearman_rho_{key}", math.nan), info.get(f"n_classes_{key}", 0)
    return f"{rho:.3f} (n = {n})" if np.isfinite(rho) else f"n/a (n = {n})"


def _norm_text(norm: str, info: dict[str, Any]) -> str:
    return f"joint [{info['joint_floor']:g}, 1]" if norm == "joint" else norm


def _listed(info: dict[str, Any], key: str) -> list[str]:
    """The class names of an ``info`` entry joined with "; "."""
    return [n for n in str(info[key]).split("; ") if n]


def _dropped_text(info: dict[str, Any], norm: str, gloss: bool = False) -> str:
    names = _listed(info, f"dropped_{norm}")
    k = info[f"n_dropped_{norm}"]
    return f"{k}: {_glossed(names) if gloss else _named(names)}" if k else "0"


def _figure_note(info: dict[str, Any]) -> str:
    """The annotation under Fig. 6: ρ for every normalisation and count, what is drawn, where n_c comes from."""
    perf = "AUC" if info["primary_metric"] == "auc" else "F1"
    head = ["normalisation", f"ρ, n_c {_COUNT_TEXT['literal']}", f"ρ, n_c {_COUNT_TEXT['ignore_rhythm']}",
            "classes dropped (ratio undefined)"]
    rows = []
    for norm in NORMALIZATIONS:
        mark = " *" if norm == info["normalization"] else ""
        rows.append([_norm_text(norm, info) + mark] + [_rho_text(info, f"{norm}_{c}") + (
            " *" if (norm, c) == (info["normalization"], info["count"]) else "") for c in COUNTS]
            + [_dropped_text(info, norm, gloss=True)])
    widths = [max(len(line[i]) for line in [head] + rows) for i in range(len(head))]
    lines = [f"Spearman ρ({perf} Ratio, Independent Ratio) over the classes where both are finite (paper: ≈ 0.3):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [head] + rows]
    drawn = (f"* drawn: {_norm_text(info['normalization'], info)} normalisation; Independent Ratio n_c "
             f"{_COUNT_TEXT[info['count']]}")
    if info["count"] == "ignore_rhythm":
        ignored = _listed(info, "ignored_classes")
        drawn += f" ({_glossed(ignored)})" if ignored else " (no rhythm/normal classes here: the two counts agree)"
    lines.append(drawn)
    lines.append(f"n_c, m_c from {info['independent_source_text']}")
    if normal := _listed(info, "normal_classes_left_out"):
        lines.append(f"left out: normal class {_glossed(normal)} (as the paper's Fig. 6(b))")
    return "\n".join(lines)


def fig6_markdown(infos: Sequence[dict[str, Any]]) -> str:
    """The Fig. 6 section of ``report.md`` from :func:`fig6_data`'s ``info`` dicts ("" without any): per dataset, ρ
    under every normalisation and count, and the choices."""
    if not infos:
        return ""
    lines = [f"## Fig. 6: per-class {MIXUP.label} vs {FLOW.label}", "",
             "Spearman ρ between the Performance Ratio (Perf_Mixup / Perf_Flow-Mixup)^r of normalised per-class test "
             "performances and the Independent Ratio n_c / m_c, under every normalisation (`none`: raw; `joint`: one "
             "min-max over both methods onto [floor, 1], the default; `per_method`: each method min-max onto [0, 1], "
             "which gives Mixup's worst class ratio 0 and leaves Flow-Mixup's worst class undefined) and both counts "
             "of n_c (`literal`: records whose only label is c; `ignoring rhythm/normal`: no other label outside the "
             "dataset's rhythm/normal classes, the default). The paper reports ρ ≈ 0.3. `n` is the number of classes "
             "in the correlation; the per-class numbers are in `figures/fig6_<dataset>.csv`.", ""]
    for info in infos:
        name = dataset_label(info["dataset"])
        perf = "AUC" if info["primary_metric"] == "auc" else "F1"
        lines += [f"### {name}: noise {info['noise'] * 100:g}%, test {perf} (`{info['per_class_column']}`), "
                  f"r = {info['r']:g}, {info['n_classes_plotted']} classes", ""]
        if normal := _listed(info, "normal_classes_left_out"):
            lines.append(f"- Left out of the figure: the normal class {_named(normal)}, as in the paper's Fig. 6(b).")
        lines.append(f"- n_c and m_c from {info['independent_source_text']}.")
        ignored = _listed(info, "ignored_classes")
        lines.append("- Rhythm/normal classes ignored by the second count: "
                     + (_named(ignored) if ignored else "none (the two counts agree)") + ".")
        chosen = "default" if (info["normalization"], info["count"]) == (DEFAULT_NORMALIZATION, DEFAULT_COUNT) \
            else "chosen"
        lines.append(f"- {chosen.capitalize()} for the figure: `{info['normalization']}` normalisation"
                     + (f" (floor {info['joint_floor']:g})" if info["normalization"] == "joint" else "")
                     + f", n_c {_COUNT_TEXT[info['count']]}"
                     + (f", eps = {info['eps']:g}" if info["eps"] else "")
                     + " (what a figure drew is in its annotation and in `figures/fig6_spearman.csv`).")
        lines += ["", f"| normalisation | ρ, n_c {_COUNT_TEXT['literal']} | ρ, n_c {_COUNT_TEXT['ignore_rhythm']} "
                      "| classes dropped (ratio undefined) |", "| --- | --- | --- | --- |"]
        for norm in NORMALIZATIONS:
            label = f"**{norm}** ({chosen})" if norm == info["normalization"] else norm
            lines.append(f"| {label} | " + " | ".join(_rho_text(info, f"{norm}_{c}") for c in COUNTS)
                         + f" | {_dropped_text(info, norm)} |")
        if f"spearman_rho_{NORMALIZATIONS[0]}_literal_train_clean" in info:
            lines += ["", f"Cross-check, literal n_c / m_c from the clean training labels of "
                          f"{info['n_clean_train_runs']} noise-0 run(s) (per_class.csv): ρ = "
                      + "; ".join(f"{norm} {_rho_text(info, f'{norm}_literal_train_clean')}"
                                  for norm in NORMALIZATIONS) + "."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---- Drawing -------------------------------------------------------------------------------------------------------
def _render(fig: Figure, stem: Path) -> dict[Path, bytes]:
    """The figure as PNG and PDF bytes, keyed by the paths they go to (written later, all at once)."""
    FigureCanvasAgg(fig)
    out = {}
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight")
        out[stem.with_suffix(f".{ext}")] = buffer.getvalue()
    return out


def _draw_fig6(table: pd.DataFrame, info: dict[str, Any]) -> Figure:
    name = dataset_label(info["dataset"])
    perf = "AUC" if info["primary_metric"] == "auc" else "F1"
    n = len(table)
    note = _figure_note(info)
    note_lines = note.count("\n") + 1
    note_height = 0.13 * note_lines + 0.15
    fig = Figure(figsize=(max(9.0, 0.55 * n + 3), 5.6 + note_height))
    grid = fig.add_gridspec(2, 1, height_ratios=[5.6, note_height])
    ax = fig.add_subplot(grid[0])
    x = np.arange(n)
    width = 0.38
    ax.bar(x - width / 2, table["perf_mixup"], width, label=MIXUP.label, color="#3182bd")
    ax.bar(x + width / 2, table["perf_flow"], width, label=FLOW.label, color="#31a354")
    ax.set_xticks(x)
    ax.set_xticklabels([_GLOSS.get(c, c) for c in table["class"]], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {perf} per class (bars)")
    finite = np.concatenate([table["perf_mixup"].to_numpy(float), table["perf_flow"].to_numpy(float)])
    if np.isfinite(finite).any():
        lo = float(np.nanmin(finite))
        ax.set_ylim(max(0.0, lo - 0.1 * (1 - lo + 1e-9) - 0.05), min(1.0, float(np.nanmax(finite)) + 0.05))
    # The two ratios live on very different scales (r = 10 makes the Performance Ratio span decades), so each gets
    # its own right-hand axis; the second one's spine is moved outwards.
    ax2 = ax.twinx()
    norm_label = _norm_text(info["normalization"], info)
    ax2.plot(x, table["performance_ratio"], "o-", color="#e6550d",
             label=f"{perf} Ratio (r = {info['r']:g}, {norm_label} normalisation)")
    ax2.set_ylabel(f"{perf} Ratio", color="#e6550d")
    ratios = np.asarray(table["performance_ratio"], dtype=float)
    positive = ratios[np.isfinite(ratios)]
    if positive.size and positive.min() > 0 and positive.max() / positive.min() > 20:
        ax2.set_yscale("log")  # a ratio: 1/x and x equally far from 1
        ax2.set_ylabel(f"{perf} Ratio (log)", color="#e6550d")
    elif np.nanmax(np.abs(ratios), initial=0.0) > 50:  # zeros (per_method) and a wide span
        ax2.set_yscale("symlog", linthresh=1.0)
        ax2.set_ylabel(f"{perf} Ratio (symlog)", color="#e6550d")
    ax3 = ax.twinx()
    ax3.spines["right"].set_position(("axes", 1.1))
    count_label = f" ({_COUNT_TEXT[info['count']]})" if info["ignored_classes"] else ""
    ax3.plot(x, table["independent_ratio"], "s--", color="#636363", label=f"Independent Ratio $n_c/m_c${count_label}")
    ax3.set_ylabel("Independent Ratio", color="#636363")
    ax3.set_ylim(-0.03, 1.03)
    handles = [a.get_legend_handles_labels() for a in (ax, ax2, ax3)]
    # above the plot, between it and the title: inside it would hide bars or lines
    ax3.legend(sum((h for h, _ in handles), []), sum((l for _, l in handles), []), fontsize=7, loc="lower center",
               bbox_to_anchor=(0.5, 1.01), ncol=2, frameon=False)
    rho = info["spearman_rho"]
    rho_text = "n/a" if not np.isfinite(rho) else f"{rho:.3f}"
    ax.set_title(f"{name}, noise {info['noise'] * 100:g}%: Spearman ρ({perf} Ratio, Independent Ratio) = "
                 f"{rho_text} over {info['n_classes']} of {n} classes", fontsize=9, pad=32)
    text_ax = fig.add_subplot(grid[1])
    text_ax.axis("off")
    text_ax.text(0.0, 1.0, note, family="DejaVu Sans Mono", fontsize=7, va="top", ha="left",
                 transform=text_ax.transAxes)
    fig.tight_layout()
    return fig


def _fig6_all(runs: pd.DataFrame, r: float | dict[str, float] | None = None, **options: Any
              ) -> tuple[list[tuple[str, pd.DataFrame, dict[str, Any]]], dict[str, str], list[str]]:
    """:func:`fig6_data` for every dataset of ``runs`` (``r``: a number or ``{primary_metric: r}``):
    ``(results, skipped, notes)``."""
    results, skipped, notes = [], {}, []
    used = prepare_runs(runs)[0]
    for dataset in sorted(set(used["dataset"])):
        metric = next((m for m in used.loc[used["dataset"] == dataset, "_metric"] if m), None)
        if metric not in PER_CLASS_METRIC:
            skipped[dataset] = f"primary metric unknown ({metric!r}): set primary_metric in its summaries"
        elif (result := fig6_data(runs, dataset, r=r.get(metric) if isinstance(r, dict) else r, notes=notes,
                                  **options)) is None:
            skipped[dataset] = ("no noise level with ok runs of both Mixup (α=3.0) and Flow-Mixup (α=3.0, Op=False) "
                                "having per_class.csv")
        else:
            results.append((dataset, *result))
    return results, skipped, notes


def fig6_section(sweep_dir: str | os.PathLike, runs: pd.DataFrame | None = None, **options: Any) -> str:
    """The Fig. 6 section of ``report.md`` (:func:`fig6_markdown`, ``options`` as :func:`fig6_data`'s) without
    drawing; "" when no dataset has the runs Fig. 6 needs. Used by :func:`flowmixup.report.tables.make_report`."""
    results = _fig6_all(collect_runs(sweep_dir) if runs is None else runs, **options)[0]
    return fig6_markdown([info for _, _, info in results])


def _fig6_files(runs: pd.DataFrame, out_dir: Path, **options: Any) -> dict[str, Any]:
    """``fig6_<dataset>.{png,pdf,csv}`` (the CSV: every normalisation and count) and ``fig6_spearman.csv`` (one row
    per dataset: the choices drawn, the source of n_c, rho / p / class count of every normalisation x count)."""
    results, skipped, notes = _fig6_all(runs, **options)
    files: dict[Path, Any] = {}
    for dataset, table, info in results:
        files.update(_render(_draw_fig6(table, info), out_dir / f"fig6_{dataset}"))
        files[out_dir / f"fig6_{dataset}.csv"] = csv_text(table)
    infos = [info for _, _, info in results]
    if infos:
        files[out_dir / "fig6_spearman.csv"] = csv_text(pd.DataFrame(infos))
    return {"files": files, "spearman": pd.DataFrame(infos), "markdown": fig6_markdown(infos), "skipped": skipped,
            "notes": notes}


def _curve_table(ok: pd.DataFrame, dataset: str, metric: str, notes: list[str]) -> pd.DataFrame:
    """Per setting, noise and epoch: the mean test metric over the seeds, their number and sample std."""
    column, pieces = METRICS_COLUMNS[metric], []
    for record in ok[ok["dataset"] == dataset].to_dict("records"):
        frame, problem = read_csv_checked(Path(record["run_dir"]) / "metrics.csv", ("epoch", column))
        if frame is None:
            notes.append(f"curves ({dataset}) leave out {record['run_dir']}: metrics.csv ({problem})")
            continue
        pieces.append(pd.DataFrame({"setting": record["_setting"], "noise": record["_noise"], "epoch": frame["epoch"],
                                    "value": pd.to_numeric(frame[column], errors="coerce")
                                    * (100.0 if metric == "auc" else 1.0)}))
    if not pieces:
        return pd.DataFrame()
    data = pd.concat(pieces, ignore_index=True).dropna(subset=["value"])
    grouped = data.groupby(["setting", "noise", "epoch"], sort=False)["value"]
    return grouped.agg(mean="mean", n_seeds="count").reset_index().assign(std=grouped.std(ddof=DDOF).to_numpy())


def _curve_files(runs: pd.DataFrame, out_dir: Path) -> dict[str, Any]:
    """``curves_<dataset>.{png,pdf,csv}``: per noise level a panel, per setting the mean test metric over the ok
    seeds at each epoch, with a band of ± sample std (ddof = 1) where there are 2+ seeds."""
    ok = _ok_runs(runs)
    files: dict[Path, Any] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    for dataset in sorted(set(ok["dataset"].astype(str))):
        metric = next((m for m in ok.loc[ok["dataset"] == dataset, "_metric"] if m is not None), None)
        if metric not in ("auc", "macro_f1"):
            skipped[dataset] = f"unknown primary_metric {metric!r}"
            continue
        curves = _curve_table(ok, dataset, metric, notes)
        if curves.empty:
            skipped[dataset] = "no metrics.csv with a test metric column"
            continue
        noises = sorted(set(curves["noise"]))
        settings = sorted(set(curves["setting"]), key=lambda s: (
            PAPER_SETTINGS.index(s) if s in PAPER_SETTINGS else len(PAPER_SETTINGS), s.sort_key()))
        cols = min(len(noises), 4)
        rows = math.ceil(len(noises) / cols)
        fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.6))
        label = "test AUC (%)" if metric == "auc" else "test macro-F1"
        for i, noise in enumerate(noises):
            ax = fig.add_subplot(rows, cols, i + 1)
            for setting in settings:
                part = curves[(curves["setting"] == setting) & (curves["noise"] == noise)].sort_values("epoch")
                if part.empty:
                    continue
                color = _SETTING_COLORS.get(setting)
                ax.plot(part["epoch"], part["mean"], label=setting.label, color=color, lw=1.2)
                band = part["n_seeds"] > DDOF
                if band.any():
                    ax.fill_between(part["epoch"][band], (part["mean"] - part["std"])[band],
                                    (part["mean"] + part["std"])[band], color=color, alpha=0.2, lw=0)
            ax.set_title(f"{dataset_label(dataset)}, noise {noise * 100:g}%", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7,
                   bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.08 + 0.02 * math.ceil(len(labels) / 3), 1, 1))
        stem = out_dir / f"curves_{dataset}"
        files.update(_render(fig, stem))
        csv = curves.assign(setting=[s.label for s in curves["setting"]])
        files[stem.with_suffix(".csv")] = csv_text(csv)
    return {"files": files, "skipped": skipped, "notes": notes}


def make_figures(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, target_noise: float = 0.1,
                 r: float | dict[str, float] | None = None, normalization: str = DEFAULT_NORMALIZATION,
                 eps: float = 0.0, which: str = "best", runs: pd.DataFrame | None = None, write: bool = True, *,
                 count: str = DEFAULT_COUNT, joint_floor: float = JOINT_FLOOR) -> dict[str, Any]:
    """Fig. 6 and the curves for the runs below ``sweep_dir`` (or ``runs``), into ``out_dir`` (default
    ``<sweep_dir>/report/figures``): every figure is drawn first, the files are written together at the end
    (``write=False``: not at all). Returns ``paths``, ``files``, ``spearman`` (``fig6_spearman.csv``'s frame),
    ``fig6_markdown``, ``skipped`` (``{"fig6": {dataset: why}, "curves": {...}}``) and ``notes`` (runs left out).
    """
    _check_choice(normalization, NORMALIZATIONS, "normalization")
    _check_choice(count, COUNTS, "count")
    out_dir = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "report" / "figures"
    runs = collect_runs(sweep_dir) if runs is None else runs
    fig6 = _fig6_files(runs, out_dir, target_noise=target_noise, r=r, normalization=normalization, eps=eps,
                       which=which, count=count, joint_floor=joint_floor)
    curves = _curve_files(runs, out_dir)
    files = {**fig6["files"], **curves["files"]}
    if write:
        write_files(files)
    return {"paths": list(files), "files": files, "spearman": fig6["spearman"], "fig6_markdown": fig6["markdown"],
            "skipped": {"fig6": fig6["skipped"], "curves": curves["skipped"]},
            "notes": fig6["notes"] + curves["notes"]}
