"""Figures of a sweep: the paper's Fig. 6 (per-class Mixup vs Flow-Mixup) and per-epoch test-metric curves.

Everything goes to ``<sweep_dir>/report/figures/`` as PNG and PDF (plus the CSV of the numbers plotted): every
figure is drawn in memory first, then the files are written together (:func:`flowmixup.report.output.write_files`),
so an error never leaves half of them. Only runs whose ``summary.json`` says ``status == "ok"`` are used; a run
without a usable ``per_class.csv`` or ``metrics.csv`` is left out of the figure that needs it, and named in the
result's ``notes``; a run without ``primary_metric`` gets its dataset's default. Matplotlib is used through
its object API with the Agg canvas (no pyplot, so importing this module never changes the global backend).

Fig. 6, as read here
--------------------
For one dataset, the per-class test performance (``test_auc_best`` for AUC datasets, ``test_f1_best`` for
macro-F1 datasets, from ``per_class.csv``) of Mixup (α = 3) and Flow-Mixup (α = 3, Op = False) at the noise level
closest to 0.1 (``target_noise``; ties go to the lower level) where both have runs. With several seeds the
per-class values are averaged over the seeds first. Classes whose performance is NaN for either method (no
positive test sample) are left out.

The paper defines, per class c, "Performance Ratio" = (Perf_Mixup / Perf_Flow-Mixup)^r (r = 10 for CXR, 1 for ECG)
and says "the performances are normalized before computing the Performance Ratio", and elsewhere that its
normalisation is min-max. That sentence is ambiguous (normalised over what? jointly or per method? and min-max
makes the worst class exactly 0, so a ratio of normalised values divides by zero for one class). We read it as:

1. ``normalization="per_method"`` (default): each method's per-class vector is min-max normalised over the
   classes on its own, ``p'_c = (p_c - min_k p_k) / (max_k p_k - min_k p_k)``; a constant vector gives all 0.
   (``"joint"`` uses one min and max over both methods' values, ``"none"`` skips the step.)
2. ratio_c = ((p'_mixup,c + eps) / (p'_flow,c + eps)) ** r, ``eps = 0`` by default. Where the denominator is 0
   (the class Flow-Mixup does worst on, after per-method min-max) the ratio is undefined: it is NaN, drawn as a
   gap, and left out of the Spearman correlation; 0/0 is NaN too. Pass ``eps > 0`` to keep every class instead
   (it changes the plotted ratios, strongly so with r = 10).

"Independent Ratio" = n_c / m_c with n_c = ``train_single_count`` (images with only class c) and m_c =
``train_count`` (images with class c) from ``per_class.csv``; with several runs (seeds, both methods) it is
sum(n_c) / sum(m_c) over them; m_c = 0 gives NaN.

The Spearman correlation (``scipy.stats.spearmanr``) is between the Performance Ratio and the Independent Ratio
over the classes where both are finite (NaN with fewer than 3 such classes). Spearman works on ranks, and x -> x^r
is increasing for x >= 0, so r changes the plot but not the correlation.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from flowmixup.report.output import write_files
from flowmixup.report.tables import (DATASET_NAMES, DDOF, PAPER_SETTINGS, Setting, _is_missing, collect_runs,
                                     noise_key, primary_metric_of, read_csv_checked, run_file_columns)

__all__ = [
    "MIXUP", "FLOW", "DEFAULT_R",
    "normalize_minmax", "performance_ratio", "independent_ratio", "spearman",
    "fig6_data", "make_fig6", "make_curves", "make_figures",
]

MIXUP = Setting("mixup", 3.0)
FLOW = Setting("flowmixup", 3.0, False)
DEFAULT_R = {"auc": 10.0, "macro_f1": 1.0}
_PER_CLASS_PREFIX = {"auc": "test_auc", "macro_f1": "test_f1"}
_SETTING_COLORS = dict(zip(PAPER_SETTINGS, ["#7f7f7f", "#9ecae1", "#3182bd", "#e6550d", "#31a354", "#756bb1"]))


# --------------------------------------------------------------------------------------------------------------
# The numbers of Fig. 6
# --------------------------------------------------------------------------------------------------------------
def normalize_minmax(values: Sequence[float], lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max normalise ``values`` to [0, 1] (over themselves, or with the given ``lo``/``hi``).

    NaNs stay NaN and are ignored for min and max; a constant vector (max == min) gives all 0.
    """
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.full_like(x, np.nan)
    lo = float(np.min(finite)) if lo is None else lo
    hi = float(np.max(finite)) if hi is None else hi
    if hi - lo <= 0:
        return np.where(np.isfinite(x), 0.0, np.nan)
    return (x - lo) / (hi - lo)


def performance_ratio(perf_mixup: Sequence[float], perf_flow: Sequence[float], r: float,
                      normalization: str = "per_method", eps: float = 0.0) -> np.ndarray:
    """The paper's "Performance Ratio" per class, ((norm Mixup + eps) / (norm Flow-Mixup + eps)) ** r.

    See the module docstring for the reading of "normalized before computing" and the division-by-zero rule
    (a zero denominator gives NaN).
    """
    a = np.asarray(perf_mixup, dtype=float)
    b = np.asarray(perf_flow, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"per-class vectors differ in length: {a.shape} vs {b.shape}")
    if normalization == "per_method":
        a, b = normalize_minmax(a), normalize_minmax(b)
    elif normalization == "joint":
        both = np.concatenate([a, b])
        both = both[np.isfinite(both)]
        if both.size:
            a, b = normalize_minmax(a, both.min(), both.max()), normalize_minmax(b, both.min(), both.max())
    elif normalization != "none":
        raise ValueError(f"normalization must be 'per_method', 'joint' or 'none', not {normalization!r}")
    num, den = a + eps, b + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        ratio = np.where(np.isfinite(ratio), ratio, np.nan) ** r
    return ratio


def independent_ratio(single_count: Sequence[float], count: Sequence[float]) -> np.ndarray:
    """n_c / m_c per class; NaN where m_c is 0."""
    n = np.asarray(single_count, dtype=float)
    m = np.asarray(count, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, n / np.where(m > 0, m, 1.0), np.nan)


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


_OK_COLUMNS = ["status", "dataset", "regularizer", "alpha", "keep_original", "noise", "seed", "run_dir",
               "_setting", "_noise", "_metric"]


def _ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The ok runs with ``_setting``, ``_noise`` and ``_metric`` (the run's primary metric or its dataset's default).

    A row lacking what identifies its cell (dataset, regularizer, noise) or with unreadable values is left out.
    """
    records = []
    if not runs.empty and "status" in runs:
        for record in runs[runs["status"] == "ok"].to_dict("records"):
            if any(_is_missing(record.get(k)) for k in ("dataset", "regularizer", "noise", "run_dir")):
                continue
            try:
                setting = Setting.of(record["regularizer"], record.get("alpha"), record.get("keep_original"))
                noise = noise_key(record["noise"])
            except (TypeError, ValueError):
                continue
            records.append(dict(record, dataset=str(record["dataset"]), _setting=setting, _noise=noise,
                                _metric=primary_metric_of(record)))
    columns = list(dict.fromkeys(_OK_COLUMNS + [k for r in records for k in r]))
    return pd.DataFrame.from_records(records, columns=columns)


def _dataset_metric(runs: pd.DataFrame, dataset: str) -> str | None:
    """The primary metric of ``dataset``: the first run that names one, else the dataset's default."""
    if not runs.empty and "dataset" in runs:
        for record in runs[runs["dataset"].astype(str) == dataset].to_dict("records"):
            if record.get("status") == "unreadable":
                continue
            metric = primary_metric_of(record)
            if metric is not None:
                return metric
    return primary_metric_of({"dataset": dataset})


def _read_per_class(run_dir: str, columns: tuple[str, ...] = ("class",)) -> tuple[pd.DataFrame | None, str | None]:
    """``(per_class.csv, None)`` or ``(None, problem)`` (``missing``, unreadable, a column missing)."""
    frame, problem = read_csv_checked(Path(run_dir) / "per_class.csv", columns)
    if frame is not None:
        frame["class"] = frame["class"].astype(str)
    return frame, problem


def fig6_data(runs: pd.DataFrame, dataset: str, target_noise: float = 0.1, r: float | None = None,
              normalization: str = "per_method", eps: float = 0.0, which: str = "best",
              notes: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The per-class table behind Fig. 6 for ``dataset`` and its Spearman correlation; None without the runs.

    ``runs`` is :func:`flowmixup.report.tables.collect_runs`'s frame. ``which`` picks the per-class column
    (``best``, ``last`` or ``at_best_val``); ``r`` defaults to 10 for AUC datasets and 1 for macro-F1 ones.
    Returns ``(per_class, info)``: one row per class with ``perf_mixup, perf_flow, norm_mixup, norm_flow,
    performance_ratio, single_count, count, independent_ratio``; ``info`` has ``dataset, primary_metric, noise,
    r, normalization, eps, spearman_rho, spearman_p, n_classes`` (the classes in the correlation) and the seeds.
    A run whose ``per_class.csv`` is missing, unreadable or lacks a column is left out, with a line appended to
    ``notes`` (when given) saying so. The primary metric is the runs' ``primary_metric``, or the dataset's default.
    """
    ok = _ok_runs(runs)
    ok = ok[ok["dataset"] == dataset] if not ok.empty else ok
    if ok.empty:
        return None
    metric = next((m for m in ok["_metric"] if m is not None), None)
    if metric not in _PER_CLASS_PREFIX:
        return None
    column = f"{_PER_CLASS_PREFIX[metric]}_{which}"
    r = DEFAULT_R[metric] if r is None else float(r)
    needed = tuple(run_file_columns(metric, which)["per_class.csv"])

    per_noise: dict[float, dict[Setting, list[pd.DataFrame]]] = {}
    for record in ok.to_dict("records"):
        if record["_setting"] not in (MIXUP, FLOW):
            continue
        frame, problem = _read_per_class(record["run_dir"], needed)
        if frame is None:
            if notes is not None:
                notes.append(f"Fig. 6 ({dataset}) leaves out {record['run_dir']}: per_class.csv ({problem})")
            continue
        per_noise.setdefault(record["_noise"], {}).setdefault(record["_setting"], []).append(frame)
    usable = [n for n, by in per_noise.items() if MIXUP in by and FLOW in by]
    if not usable:
        return None
    noise = min(usable, key=lambda n: (abs(n - target_noise), n))
    frames = per_noise[noise]

    def mean_perf(setting: Setting) -> pd.Series:
        stacked = pd.concat([f[["class", column]] for f in frames[setting]])
        stacked[column] = pd.to_numeric(stacked[column], errors="coerce")
        return stacked.groupby("class", sort=False)[column].mean()

    mix, flow = mean_perf(MIXUP), mean_perf(FLOW)
    counts = pd.concat([f[["class", "train_single_count", "train_count"]] for s in (MIXUP, FLOW) for f in frames[s]])
    counts = counts.groupby("class", sort=False)[["train_single_count", "train_count"]].sum()
    order = [c for c in frames[FLOW][0]["class"] if c in mix.index]  # class order as in per_class.csv
    table = pd.DataFrame({"class": order, "perf_mixup": mix.reindex(order).to_numpy(),
                          "perf_flow": flow.reindex(order).to_numpy()})
    table = table[np.isfinite(table["perf_mixup"]) & np.isfinite(table["perf_flow"])].reset_index(drop=True)
    table["norm_mixup"], table["norm_flow"] = _normalized(table["perf_mixup"], table["perf_flow"], normalization)
    table["performance_ratio"] = performance_ratio(table["perf_mixup"], table["perf_flow"], r, normalization, eps)
    table["single_count"] = counts["train_single_count"].reindex(table["class"]).to_numpy(dtype=float)
    table["count"] = counts["train_count"].reindex(table["class"]).to_numpy(dtype=float)
    table["independent_ratio"] = independent_ratio(table["single_count"], table["count"])
    rho, p, n = spearman(table["performance_ratio"], table["independent_ratio"])
    info = {"dataset": dataset, "primary_metric": metric, "per_class_column": column, "noise": noise,
            "target_noise": target_noise, "r": r, "normalization": normalization, "eps": eps,
            "spearman_rho": rho, "spearman_p": p, "n_classes": n, "n_classes_plotted": len(table),
            "n_seeds_mixup": len(frames[MIXUP]), "n_seeds_flow": len(frames[FLOW])}
    return table, info


def _normalized(a: pd.Series, b: pd.Series, normalization: str) -> tuple[np.ndarray, np.ndarray]:
    if normalization == "per_method":
        return normalize_minmax(a), normalize_minmax(b)
    if normalization == "joint":
        both = np.concatenate([a.to_numpy(float), b.to_numpy(float)])
        lo, hi = (np.nanmin(both), np.nanmax(both)) if np.isfinite(both).any() else (None, None)
        return normalize_minmax(a, lo, hi), normalize_minmax(b, lo, hi)
    return a.to_numpy(float), b.to_numpy(float)


# --------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------
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
    name = DATASET_NAMES.get(info["dataset"], info["dataset"])
    perf = "AUC" if info["primary_metric"] == "auc" else "F1"
    n = len(table)
    fig = Figure(figsize=(max(6.0, 0.55 * n + 2), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    width = 0.38
    ax.bar(x - width / 2, table["perf_mixup"], width, label=MIXUP.label, color="#3182bd")
    ax.bar(x + width / 2, table["perf_flow"], width, label=FLOW.label, color="#31a354")
    ax.set_xticks(x)
    ax.set_xticklabels(table["class"], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {perf} per class")
    finite = np.concatenate([table["perf_mixup"].to_numpy(float), table["perf_flow"].to_numpy(float)])
    if np.isfinite(finite).any():
        lo = float(np.nanmin(finite))
        ax.set_ylim(max(0.0, lo - 0.1 * (1 - lo + 1e-9) - 0.05), min(1.0, float(np.nanmax(finite)) + 0.05))
    # The two ratios live on very different scales (r = 10 makes the Performance Ratio span decades), so each gets
    # its own right-hand axis; the second one's spine is moved outwards.
    ax2 = ax.twinx()
    ax2.plot(x, table["performance_ratio"], "o-", color="#e6550d", label=f"{perf} Ratio (r = {info['r']:g})")
    ax2.set_ylabel(f"{perf} Ratio", color="#e6550d")
    ratios = np.asarray(table["performance_ratio"], dtype=float)
    if np.nanmax(np.abs(ratios), initial=0.0) > 50:  # r = 10 after min-max normalising spans many decades
        ax2.set_yscale("symlog", linthresh=1.0)
        ax2.set_ylabel(f"{perf} Ratio (symlog)", color="#e6550d")
    ax3 = ax.twinx()
    ax3.spines["right"].set_position(("axes", 1.12))
    ax3.plot(x, table["independent_ratio"], "s--", color="#636363", label="Independent Ratio $n_c/m_c$")
    ax3.set_ylabel("Independent Ratio", color="#636363")
    handles = [a.get_legend_handles_labels() for a in (ax, ax2, ax3)]
    fig.legend(sum((h for h, _ in handles), []), sum((l for _, l in handles), []), fontsize=7, loc="lower center",
               ncol=4, frameon=False)  # below the plot: inside it would hide the bars
    rho = info["spearman_rho"]
    rho_text = "n/a" if not np.isfinite(rho) else f"{rho:.3f}"
    ax.set_title(f"{name}, noise {info['noise'] * 100:g}%: Spearman ρ({perf} Ratio, Independent Ratio) = "
                 f"{rho_text} over {info['n_classes']} classes", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def make_fig6(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, target_noise: float = 0.1,
              r: float | dict[str, float] | None = None, normalization: str = "per_method", eps: float = 0.0,
              which: str = "best", runs: pd.DataFrame | None = None, write: bool = True) -> dict[str, Any]:
    """Fig. 6 for every dataset that has Mixup (α=3) and Flow-Mixup (α=3, Op=False) runs with ``per_class.csv``.

    Writes ``fig6_<dataset>.{png,pdf,csv}`` (the CSV: the per-class numbers plotted) and ``fig6_spearman.csv``
    (one row per dataset: noise, r, normalisation, Spearman rho and p, classes used) into ``out_dir`` (default
    ``<sweep_dir>/report/figures``), all at once after every figure is drawn (``write=False``: not at all).
    ``r`` may be a number or a ``{primary_metric: r}`` dict. Returns ``{"paths": [...], "files": {path: bytes},
    "spearman": DataFrame, "skipped": {dataset: reason}, "notes": [...]}`` (``notes``: runs left out, and why).
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report" / "figures"
    runs = collect_runs(sweep_dir) if runs is None else runs
    files: dict[Path, Any] = {}
    infos: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    notes: list[str] = []
    datasets = sorted(set(runs["dataset"].dropna().astype(str))) if "dataset" in runs else []
    for dataset in datasets:
        metric = _dataset_metric(runs, dataset)
        if metric not in _PER_CLASS_PREFIX:
            skipped[dataset] = f"primary metric unknown ({metric!r}): set primary_metric in its summaries"
            continue
        r_here = r.get(metric) if isinstance(r, dict) else r
        result = fig6_data(runs, dataset, target_noise, r_here, normalization, eps, which, notes=notes)
        if result is None:
            skipped[dataset] = ("no noise level with ok runs of both Mixup (α=3.0) and Flow-Mixup (α=3.0, Op=False) "
                                "having per_class.csv")
            continue
        table, info = result
        stem = out_dir / f"fig6_{dataset}"
        files.update(_render(_draw_fig6(table, info), stem))
        files[stem.with_suffix(".csv")] = table.to_csv(index=False)
        infos.append(info)
    spearman_frame = pd.DataFrame(infos)
    if infos:
        files[out_dir / "fig6_spearman.csv"] = spearman_frame.to_csv(index=False)
    if write:
        write_files(files)
    return {"paths": list(files), "files": files, "spearman": spearman_frame, "skipped": skipped, "notes": notes}


def _curve_table(ok: pd.DataFrame, dataset: str, metric: str, notes: list[str] | None = None) -> pd.DataFrame:
    column = "test_auc" if metric == "auc" else "test_macro_f1"
    scale = 100.0 if metric == "auc" else 1.0
    pieces = []
    for record in ok[ok["dataset"] == dataset].to_dict("records"):
        frame, problem = read_csv_checked(Path(record["run_dir"]) / "metrics.csv", ("epoch", column))
        if frame is None:
            if notes is not None:
                notes.append(f"curves ({dataset}) leave out {record['run_dir']}: metrics.csv ({problem})")
            continue
        pieces.append(pd.DataFrame({"setting": record["_setting"], "noise": record["_noise"],
                                    "seed": record.get("seed"), "epoch": frame["epoch"],
                                    "value": pd.to_numeric(frame[column], errors="coerce") * scale}))
    if not pieces:
        return pd.DataFrame(columns=["setting", "noise", "epoch", "mean", "std", "n_seeds"])
    data = pd.concat(pieces, ignore_index=True).dropna(subset=["value"])
    grouped = data.groupby(["setting", "noise", "epoch"], sort=False)["value"]
    out = grouped.agg(mean="mean", n_seeds="count").reset_index()
    out["std"] = grouped.std(ddof=DDOF).to_numpy()
    return out


def make_curves(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                runs: pd.DataFrame | None = None, write: bool = True) -> dict[str, Any]:
    """Per-epoch test metric (AUC in % or macro-F1) of every regularizer setting, from the runs' ``metrics.csv``.

    One figure per dataset (``curves_<dataset>.{png,pdf}``) with one panel per noise level; a line per setting is
    the mean over the ok seeds at each epoch, the band mean ± sample std (ddof = 1) where there are 2+ seeds.
    The plotted numbers go to ``curves_<dataset>.csv``. A run without a usable ``metrics.csv`` is left out (and
    named in ``notes``). Files are written all at once at the end (``write=False``: not at all). Returns
    ``{"paths": [...], "files": {path: bytes}, "skipped": {...}, "notes": [...]}``.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report" / "figures"
    runs = collect_runs(sweep_dir) if runs is None else runs
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
        settings = sorted(set(curves["setting"]), key=lambda s: (s not in PAPER_SETTINGS,
                                                                  PAPER_SETTINGS.index(s) if s in PAPER_SETTINGS
                                                                  else 0, s.sort_key()))
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
            ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}, noise {noise * 100:g}%", fontsize=9)
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
        files[stem.with_suffix(".csv")] = csv.to_csv(index=False)
    if write:
        write_files(files)
    return {"paths": list(files), "files": files, "skipped": skipped, "notes": notes}


def make_figures(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, target_noise: float = 0.1,
                 r: float | dict[str, float] | None = None, normalization: str = "per_method", eps: float = 0.0,
                 which: str = "best", runs: pd.DataFrame | None = None, write: bool = True) -> dict[str, Any]:
    """Fig. 6 and the curves for the runs below ``sweep_dir``; see :func:`make_fig6` and :func:`make_curves`.

    ``runs`` defaults to :func:`collect_runs`. Every figure is drawn first; the files are written together at the
    end (``write=False``: not at all). Returns ``{"paths": [...], "files": {...}, "spearman": DataFrame,
    "skipped": {"fig6": {...}, "curves": {...}}, "notes": [...]}``.
    """
    runs = collect_runs(sweep_dir) if runs is None else runs
    fig6 = make_fig6(sweep_dir, out_dir, target_noise, r, normalization, eps, which, runs=runs, write=False)
    curves = make_curves(sweep_dir, out_dir, runs=runs, write=False)
    files = {**fig6["files"], **curves["files"]}
    if write:
        write_files(files)
    return {"paths": list(files), "files": files, "spearman": fig6["spearman"],
            "skipped": {"fig6": fig6["skipped"], "curves": curves["skipped"]},
            "notes": fig6["notes"] + curves["notes"]}
