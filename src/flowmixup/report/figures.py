"""The drawings of a report: the paper's Fig. 6 (per-class Mixup vs Flow-Mixup, its numbers from
:mod:`flowmixup.report.fig6`) and the per-epoch test-metric curves of a sweep.

Every figure is drawn in memory as PNG and PDF bytes, beside the CSV of the numbers drawn, keyed by its file name
in ``<report>/figures/``; :func:`flowmixup.report.pipeline.write_report` writes them with the tables, all at once.
Only ok runs are used; a run without a usable ``metrics.csv`` is left out of the curves and named in the notes.
Matplotlib is used through its object API with the Agg canvas (no pyplot, so importing this module never changes
the global backend).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .fig6 import COUNT_TEXT, FLOW, GLOSS, MIXUP, Fig6, figure_note, norm_text
from .output import Content, csv_text
from .paper import PAPER_SETTINGS
from .runs import DDOF, METRICS_COLUMNS, dataset_label, read_csv_checked

_SETTING_COLORS = dict(zip(PAPER_SETTINGS, ["#7f7f7f", "#9ecae1", "#3182bd", "#e6550d", "#31a354", "#756bb1"]))


def _render(fig: Figure, stem: str) -> dict[str, bytes]:
    """The figure as PNG and PDF bytes, keyed by their file names (written later, all at once)."""
    FigureCanvasAgg(fig)
    out = {}
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight")
        out[f"{stem}.{ext}"] = buffer.getvalue()
    return out


# ---- Fig. 6 --------------------------------------------------------------------------------------------------------
def _ratio_axis(ax: Axes, x: np.ndarray, table: pd.DataFrame, info: dict[str, Any], perf: str) -> Axes:
    """The Performance Ratio on its own right-hand axis, log (or symlog) where it spans decades."""
    ax2 = ax.twinx()
    ax2.plot(
        x,
        table["performance_ratio"],
        "o-",
        color="#e6550d",
        label=f"{perf} Ratio (r = {info['r']:g}, {norm_text(info['normalization'], info)} normalisation)",
    )
    ax2.set_ylabel(f"{perf} Ratio", color="#e6550d")
    ratios = np.asarray(table["performance_ratio"], dtype=float)
    positive = ratios[np.isfinite(ratios)]
    if positive.size and positive.min() > 0 and positive.max() / positive.min() > 20:
        ax2.set_yscale("log")  # a ratio: 1/x and x equally far from 1
        ax2.set_ylabel(f"{perf} Ratio (log)", color="#e6550d")
    elif np.nanmax(np.abs(ratios), initial=0.0) > 50:  # zeros (per_method) and a wide span
        ax2.set_yscale("symlog", linthresh=1.0)
        ax2.set_ylabel(f"{perf} Ratio (symlog)", color="#e6550d")
    return ax2


def _bars(ax: Axes, x: np.ndarray, table: pd.DataFrame, perf: str) -> None:
    """Both methods' per-class performance as bars, the y range fitted to them."""
    width = 0.38
    ax.bar(x - width / 2, table["perf_mixup"], width, label=MIXUP.label, color="#3182bd")
    ax.bar(x + width / 2, table["perf_flow"], width, label=FLOW.label, color="#31a354")
    ax.set_xticks(x)
    ax.set_xticklabels([GLOSS.get(c, c) for c in table["class"]], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {perf} per class (bars)")
    finite = np.concatenate([table["perf_mixup"].to_numpy(float), table["perf_flow"].to_numpy(float)])
    if np.isfinite(finite).any():
        lo = float(np.nanmin(finite))
        ax.set_ylim(max(0.0, lo - 0.1 * (1 - lo + 1e-9) - 0.05), min(1.0, float(np.nanmax(finite)) + 0.05))


def _draw_fig6(table: pd.DataFrame, info: dict[str, Any]) -> Figure:
    """Bars of both methods' per-class performance, the Performance Ratio and the Independent Ratio on their own
    axes (their scales differ by decades), and the annotation of every reading under the plot."""
    perf = "AUC" if info["primary_metric"] == "auc" else "F1"
    n = len(table)
    note = figure_note(info)
    note_height = 0.13 * (note.count("\n") + 1) + 0.15
    fig = Figure(figsize=(max(9.0, 0.55 * n + 3), 5.6 + note_height))
    grid = fig.add_gridspec(2, 1, height_ratios=[5.6, note_height])
    ax = fig.add_subplot(grid[0])
    x = np.arange(n)
    _bars(ax, x, table, perf)
    ax2 = _ratio_axis(ax, x, table, info, perf)
    ax3 = ax.twinx()
    ax3.spines["right"].set_position(("axes", 1.1))  # the second right-hand axis, moved outwards
    count_label = f" ({COUNT_TEXT[info['count']]})" if info["ignored_classes"] else ""
    ax3.plot(x, table["independent_ratio"], "s--", color="#636363", label=f"Independent Ratio $n_c/m_c${count_label}")
    ax3.set_ylabel("Independent Ratio", color="#636363")
    ax3.set_ylim(-0.03, 1.03)
    handles, labels = zip(*(a.get_legend_handles_labels() for a in (ax, ax2, ax3)))
    # above the plot, between it and the title: inside it would hide bars or lines
    ax3.legend(
        sum(handles, []),
        sum(labels, []),
        fontsize=7,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.01),
        ncol=2,
        frameon=False,
    )
    rho = info["spearman_rho"]
    ax.set_title(
        f"{dataset_label(info['dataset'])}, noise {info['noise'] * 100:g}%: Spearman ρ({perf} Ratio, "
        f"Independent Ratio) = {'n/a' if not np.isfinite(rho) else f'{rho:.3f}'} over {info['n_classes']} "
        f"of {n} classes",
        fontsize=9,
        pad=32,
    )
    text_ax = fig.add_subplot(grid[1])
    text_ax.axis("off")
    text_ax.text(
        0.0, 1.0, note, family="DejaVu Sans Mono", fontsize=7, va="top", ha="left", transform=text_ax.transAxes
    )
    fig.tight_layout()
    return fig


def fig6_files(fig6: Fig6) -> dict[str, Content]:
    """``fig6_<dataset>.{png,pdf,csv}`` (the CSV: every normalisation and count) and ``fig6_spearman.csv`` (one row
    per dataset: the choices drawn, the source of n_c, rho / p / class count of every normalisation x count)."""
    files: dict[str, Content] = {}
    for dataset, table, info in fig6.results:
        files.update(_render(_draw_fig6(table, info), f"fig6_{dataset}"))
        files[f"fig6_{dataset}.csv"] = csv_text(table)
    if fig6.results:
        files["fig6_spearman.csv"] = csv_text(fig6.spearman)
    return files


# ---- Curves --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curves:
    """The curve figures of a sweep (file name -> bytes or CSV text), the datasets without any and why, the runs
    left out."""

    files: dict[str, Content]
    skipped: dict[str, str]
    notes: list[str]


def _curve_table(ok: pd.DataFrame, dataset: str, metric: str, notes: list[str]) -> pd.DataFrame:
    """Per setting, noise and epoch: the mean test metric over the seeds, their number and sample std."""
    column, pieces = METRICS_COLUMNS[metric], []
    for record in ok[ok["dataset"] == dataset].to_dict("records"):
        frame, problem = read_csv_checked(Path(record["run_dir"]) / "metrics.csv", ("epoch", column))
        if frame is None:
            notes.append(f"curves ({dataset}) leave out {record['run_dir']}: metrics.csv ({problem})")
            continue
        pieces.append(
            pd.DataFrame(
                {
                    "setting": record["_setting"],
                    "noise": record["_noise"],
                    "epoch": frame["epoch"],
                    "value": pd.to_numeric(frame[column], errors="coerce") * (100.0 if metric == "auc" else 1.0),
                }
            )
        )
    if not pieces:
        return pd.DataFrame()
    data = pd.concat(pieces, ignore_index=True).dropna(subset=["value"])
    grouped = data.groupby(["setting", "noise", "epoch"], sort=False)["value"]
    return grouped.agg(mean="mean", n_seeds="count").reset_index().assign(std=grouped.std(ddof=DDOF).to_numpy())


def _curve_panel(ax: Axes, curves: pd.DataFrame, settings: list, noise: float, dataset: str, label: str) -> None:
    """One noise level: per setting the mean curve, with a band of ± sample std where there are 2+ seeds."""
    for setting in settings:
        part = curves[(curves["setting"] == setting) & (curves["noise"] == noise)].sort_values("epoch")
        if part.empty:
            continue
        color = _SETTING_COLORS.get(setting)
        ax.plot(part["epoch"], part["mean"], label=setting.label, color=color, lw=1.2)
        band = part["n_seeds"] > DDOF
        if band.any():
            ax.fill_between(
                part["epoch"][band],
                (part["mean"] - part["std"])[band],
                (part["mean"] + part["std"])[band],
                color=color,
                alpha=0.2,
                lw=0,
            )
    ax.set_title(f"{dataset_label(dataset)}, noise {noise * 100:g}%", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _draw_curves(curves: pd.DataFrame, dataset: str, metric: str) -> Figure:
    """A panel per noise level (at most 4 a row), the paper's rows first, one legend below them all."""
    noises = sorted(set(curves["noise"]))
    settings = sorted(
        set(curves["setting"]),
        key=lambda s: (PAPER_SETTINGS.index(s) if s in PAPER_SETTINGS else len(PAPER_SETTINGS), s.sort_key()),
    )
    cols = min(len(noises), 4)
    rows = math.ceil(len(noises) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.6))
    label = "test AUC (%)" if metric == "auc" else "test macro-F1"
    for i, noise in enumerate(noises):
        _curve_panel(fig.add_subplot(rows, cols, i + 1), curves, settings, noise, dataset, label)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.08 + 0.02 * math.ceil(len(labels) / 3), 1, 1))
    return fig


def curve_files(ok: pd.DataFrame) -> Curves:
    """``curves_<dataset>.{png,pdf,csv}`` for the ok runs of :func:`~flowmixup.report.runs.prepare_runs`: per noise
    level a panel, per setting the mean test metric over the ok seeds at each epoch, with a band of ± sample std
    (ddof = 1) where there are 2+ seeds."""
    files: dict[str, Content] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    for dataset in sorted(set(ok["dataset"].astype(str))):
        metric = next((m for m in ok.loc[ok["dataset"] == dataset, "_metric"] if m is not None), None)
        if metric not in METRICS_COLUMNS:
            skipped[dataset] = f"unknown primary_metric {metric!r}"
            continue
        curves = _curve_table(ok, dataset, metric, notes)
        if curves.empty:
            skipped[dataset] = "no metrics.csv with a test metric column"
            continue
        files.update(_render(_draw_curves(curves, dataset, metric), f"curves_{dataset}"))
        files[f"curves_{dataset}.csv"] = csv_text(curves.assign(setting=[s.label for s in curves["setting"]]))
    return Curves(files, skipped, notes)


# ---- Forest plots of the paired comparisons with ERM ---------------------------------------------------------------
def _forest_panel(ax: Axes, part: pd.DataFrame, title: str, unit: str) -> None:
    """One protocol: a line per row and noise level, Δ against ERM with its interval, significant ones filled."""
    part = part.iloc[::-1]
    y = np.arange(len(part))
    for yi, row in zip(y, part.to_dict("records")):
        if row["status"] != "ok":
            ax.text(0.0, yi, f"  {row['status']}", va="center", fontsize=6, color="#888888")
            continue
        color = _SETTING_COLORS.get(row["setting"], "#444444")
        ax.plot([row["low"], row["high"]], [yi, yi], color=color, lw=1.4)
        ax.plot(
            [row["delta"]],
            [yi],
            "o",
            color=color,
            markerfacecolor=color if row["significant"] else "white",
            markersize=5,
        )
    ax.axvline(0.0, color="#333333", lw=0.8, ls="--")
    ax.xaxis.set_major_locator(MaxNLocator(5))  # wide labels (-0.125) must not run into each other
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r['setting'].label}, {r['noise'] * 100:g}%" for r in part.to_dict("records")], fontsize=7)
    ax.set_xlabel(f"Δ vs ERM ({unit})")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def forest_files(comparisons: pd.DataFrame) -> dict[str, Content]:
    """``forest_<dataset>.{png,pdf,csv}``: per dataset, Δ against ERM with its interval for every row and noise
    level, one panel per protocol; a filled dot is significant after Holm, an open one is not."""
    from .uncertainty import PROTOCOLS, comparisons_csv_frame

    files: dict[str, Content] = {}
    vs_erm = comparisons[comparisons["family"] == "vs ERM"]
    for dataset, part in vs_erm.groupby("dataset", sort=True):
        if not (part["status"] == "ok").any():
            continue
        protocols = list(dict.fromkeys(part["protocol"]))
        fig = Figure(figsize=(5.0 * len(protocols), 0.28 * len(part) / len(protocols) + 1.6))
        unit = "AUC points" if part["primary_metric"].iloc[0] == "auc" else "macro-F1"
        for i, protocol in enumerate(protocols):
            ax = fig.add_subplot(1, len(protocols), i + 1)
            title = ("paper's protocol (best test epoch)", "selection on validation")[protocol == "at_best_val"]
            _forest_panel(ax, part[part["protocol"] == protocol], f"{dataset_label(dataset)}: {title}", unit)
            if i:
                ax.set_yticklabels([])
        fig.tight_layout()
        files.update(_render(fig, f"forest_{dataset}"))
        data = comparisons_csv_frame(part).assign(protocol_text=[PROTOCOLS[p] for p in part["protocol"]])
        files[f"forest_{dataset}.csv"] = csv_text(data)
    return files
