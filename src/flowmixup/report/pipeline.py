"""A sweep's whole report, computed once and written at once: :func:`build_report` and :func:`write_report`.

``build_report(sweep_dir, options)`` reads the runs (:mod:`~flowmixup.report.runs`), prepares them once, and
computes from that one frame every part of the report: Tables I-III and any extra metric's table
(:mod:`~flowmixup.report.tables`), the best-vs-last section (:mod:`~flowmixup.report.memorisation`), Fig. 6's numbers
(:mod:`~flowmixup.report.fig6`, once, for both its section of ``report.md`` and its figures) and the drawings
(:mod:`~flowmixup.report.figures`). The :class:`Report` holds them all and every file's content; nothing is written
until ``write_report(report, out_dir)`` puts every file in place together (:func:`~flowmixup.report.output.
write_files`), so a failure never leaves half a report. ``scripts/make_tables.py`` and the sweep
(``reproduce_tables.py``) both call exactly these two.

Files (below ``out_dir``, default ``<sweep>/report``): ``table1``, ``table2`` (the paper's protocol),
``table1_val``, ``table2_val`` (model selection on validation), ``table3`` and ``table_<metric>`` as ``.md``, ``.csv``
(the tidy cells, each with its interval) and ``.tex``; ``comparisons.csv`` (every paired comparison,
:mod:`~flowmixup.report.uncertainty`); ``memorisation.csv``; ``report.md`` (the counts, every run left out, failed or
duplicated, the tables, the paired comparisons, memorisation and Fig. 6); ``figures/`` (``fig6_<dataset>``,
``curves_<dataset>``, ``forest_<dataset>`` as PNG, PDF and CSV; ``fig6_spearman.csv``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .expert import expert_tables
from .fig6 import Fig6, Fig6Options, fig6_all
from .figures import Curves, curve_files, fig6_files, forest_files
from .memorisation import Memorisation, memorisation
from .output import Content, csv_text, write_files
from .paper import load_paper_tables, load_published
from .runs import METRICS_COLUMNS, PreparedRuns, SweepCheck, collect_runs, load_grid, prepare_runs
from .tables import Table, mark_differences, render_tables, tidy_tables
from .uncertainty import Resamples, UncertaintyOptions, comparisons, comparisons_csv_frame, comparisons_markdown

FAILED_RUNS_SHOWN = 30  # report.md names at most this many failed runs (the table CSVs count them all)


@dataclass(frozen=True)
class ReportOptions:
    """What a report shows: the paper's numbers (``paper_csv``, default the packaged ``paper_tables.csv``) and other
    papers' (``published_csv``); what the Best columns hold (``best_from``: the best test metric over the epochs,
    as the paper, or ``at_best_val``: the test metric at the best validation epoch; with ``best``, Tables I and II
    also come with model selection on validation); how intervals and paired tests are computed (``uncertainty``);
    with ``figures`` Fig. 6 (its figures and its section of report.md, as ``fig6`` says), the curves and the
    forest plots of the comparisons with ERM."""

    paper_csv: str | os.PathLike | None = None
    published_csv: str | os.PathLike | None = None
    best_from: str = "best"
    figures: bool = True
    fig6: Fig6Options = field(default_factory=Fig6Options)
    uncertainty: UncertaintyOptions = field(default_factory=UncertaintyOptions)

    def __post_init__(self) -> None:
        if self.best_from not in ("best", "at_best_val"):
            raise ValueError(f"best_from must be 'best' or 'at_best_val', not {self.best_from!r}")


@dataclass(frozen=True)
class Report:
    """Every part of a sweep's report, computed once by :func:`build_report`; ``files`` maps each file's path
    below the report folder (``table1.md``, ``figures/fig6_ecg12.png``) to its text or bytes."""

    sweep_dir: Path
    options: ReportOptions
    runs: pd.DataFrame  # collect_runs' frame (or check_sweep's runs)
    prepared: PreparedRuns
    counts: dict[str, Any]
    tables: dict[str, Table]  # I, II, I_val, II_val, III, extra_<metric>
    comparisons: pd.DataFrame  # every paired comparison (uncertainty.COMPARISON_COLUMNS)
    memorisation: Memorisation | None
    fig6: Fig6 | None  # None without figures
    curves: Curves | None  # None without figures
    report_md: str
    files: dict[str, Content]
    notes: list[str]  # runs left out of a figure, datasets without one

    @property
    def tidy(self) -> dict[str, pd.DataFrame]:
        """Per table, its cells (the frame of its CSV)."""
        return {key: table.cells for key, table in self.tables.items()}

    @property
    def markdown(self) -> dict[str, str]:
        """Per table, its Markdown (as in ``report.md``)."""
        return {key: table.markdown for key, table in self.tables.items()}

    @property
    def figure_files(self) -> list[str]:
        """The files of ``figures/``: Fig. 6 and the curves as PNG, PDF and CSV, and ``fig6_spearman.csv``."""
        return [name for name in self.files if name.startswith("figures/")]


def _counts(
    sweep_dir: Path,
    prepared: PreparedRuns,
    grid: list | None,
    metric_of: dict[str, str],
    frames: dict[str, pd.DataFrame],
    left_out: Sequence[tuple[Any, str]],
) -> dict[str, Any]:
    """What report.md's header says: runs ok / failed / missing / unreadable / duplicated / outside the grid /
    unfinished, the bad files left out, and per dataset of Table III the epochs its variances span."""
    used, duplicates = prepared.used, prepared.duplicates
    ok = used["status"] == "ok"
    seen = {
        (d, s.base(), n, e)
        for d, s, n, e in used[["dataset", "_setting", "_noise", "_seed"]].itertuples(index=False, name=None)
    }
    epochs = (
        used[ok & used["dataset"].isin([d for d, m in metric_of.items() if m in METRICS_COLUMNS])]
        .assign(v=pd.to_numeric(used.get("variance_epochs"), errors="coerce"))
        .dropna(subset=["v"])
    )
    reasons = used.loc[~ok].get("reason", pd.Series("", used.index))
    return {
        "ok": int(ok.sum()),
        "failed": int((~ok).sum()),
        "unreadable": len(prepared.unreadable),
        "unreadable_runs": prepared.unreadable,
        "duplicates": len(duplicates),
        "duplicate_runs": sorted(zip(duplicates["run_dir"], duplicates["_kept"])),
        "missing": None if grid is None else len({(d, s, n, e) for d, s, n, e in grid} - seen),
        "not_in_grid": 0 if grid is None else len(seen - set(grid)),
        "failed_runs": sorted(zip(used.loc[~ok, "run_dir"], reasons.fillna("").astype(str).replace("nan", ""))),
        "unknown_metric_datasets": [d for d, m in metric_of.items() if m not in METRICS_COLUMNS],
        # Table III's caption: per dataset (in table order) the epochs its variances span
        "variance_epochs": {
            d: sorted({int(v) for v in epochs.loc[epochs["dataset"] == d, "v"]})
            for d in frames["III"]["dataset"].unique()
            if d in set(epochs["dataset"])
        },
        "unfinished": sum(1 for p in sweep_dir.rglob("metrics.csv") if not (p.parent / "summary.json").exists()),
        "left_out": [(str(path), str(problem)) for path, problem in left_out],
    }


def _also(counts: dict[str, Any], has_grid: bool) -> list[str]:
    """The header's "Also: ..." line: whatever else is worth knowing about the runs, or nothing."""
    extras = [
        text
        for n, text in (
            (counts["unfinished"], f"{counts['unfinished']} unfinished (metrics.csv but no summary.json)"),
            (counts["unreadable"], f"{counts['unreadable']} unreadable summary.json (listed below)"),
            (counts["left_out"], f"{len(counts['left_out'])} bad run files left out (listed below)"),
            (
                counts["duplicates"],
                f"{counts['duplicates']} duplicate runs of the same cell and seed (kept: ok over "
                "failed, then the newest; listed below)",
            ),
            (
                has_grid and counts["not_in_grid"],
                f"{counts['not_in_grid']} runs outside grid.json (included in the tables)",
            ),
            (
                counts["unknown_metric_datasets"],
                "datasets left out (primary metric unknown or not auc/macro_f1): "
                + ", ".join(counts["unknown_metric_datasets"]),
            ),
        )
        if n
    ]
    return ["", "Also: " + "; ".join(extras) + "."] if extras else []


def _listings(counts: dict[str, Any]) -> list[str]:
    """The runs and files left out, the duplicates with the run used instead, the failed runs with their reason."""
    lines = []
    if left_out := counts["unreadable_runs"] + counts["left_out"]:
        lines += ["", "Left out (unreadable or invalid):", ""] + [f"- `{p}`: {why}" for p, why in left_out]
    if counts["duplicate_runs"]:
        lines += ["", "Duplicates (same settings and seed; only the run used is in the tables):", ""]
        lines += [f"- `{dup}`: duplicate of `{kept}` (used)" for dup, kept in counts["duplicate_runs"]]
    if counts["failed_runs"]:
        shown = counts["failed_runs"][:FAILED_RUNS_SHOWN]
        lines += ["", "Failed runs:", ""] + [f"- `{d}`: {why or '(no reason given)'}" for d, why in shown]
        more = len(counts["failed_runs"]) - len(shown)
        lines += [f"- … and {more} more (see table CSVs)"] if more > 0 else []
    return lines


def _report_md(
    sweep_dir: Path, counts: dict[str, Any], has_grid: bool, tables: Sequence[str], sections: Sequence[str]
) -> str:
    """report.md: the header (the runs counted and listed), the tables, then each section that has anything."""
    missing = (
        f"**{counts['missing']} missing** (in grid.json, no summary.json)"
        if has_grid
        else "missing: n/a (no grid.json, the grid is what was found)"
    )
    lines = [
        f"# Flow-Mixup report: sweep `{sweep_dir.name}`",
        "",
        f"Sweep folder: `{sweep_dir.resolve()}`",
        "",
        f"Runs: **{counts['ok']} ok**, **{counts['failed']} failed**, {missing}.",
    ]
    header = "\n".join(lines + _also(counts, has_grid) + _listings(counts) + [""])
    return header + "\n" + "\n".join(tables) + "".join("\n" + section for section in sections if section)


def _files(
    tables: dict[str, Table],
    comps: pd.DataFrame,
    memo: Memorisation | None,
    report_md: str,
    figures: dict[str, Content],
) -> dict[str, Content]:
    """Every file of the report by its path below the report folder, in the order they are written."""
    files: dict[str, Content] = {}
    for table in tables.values():
        files.update(
            {
                f"{table.stem}.md": table.markdown,
                f"{table.stem}.csv": csv_text(table.cells),
                f"{table.stem}.tex": table.latex,
            }
        )
    files["comparisons.csv"] = csv_text(comparisons_csv_frame(comps))
    if memo is not None:
        files["memorisation.csv"] = csv_text(memo.frame)
    files["report.md"] = report_md
    return files | {f"figures/{name}": content for name, content in figures.items()}


def _inputs(sweep_dir: Path, check: SweepCheck | None) -> tuple[pd.DataFrame, list | None, list]:
    """The runs, the grid and the bad files left out: ``check``'s, else every summary.json and grid.json."""
    if check is not None:
        return check.runs, check.grid, check.problems
    try:
        grid = load_grid(sweep_dir)
    except ValueError as exc:
        raise ValueError(f"{sweep_dir / 'grid.json'}: {exc}") from None
    return collect_runs(sweep_dir), grid, []


def _cells_and_comparisons(
    prepared: PreparedRuns, grid: list | None, options: ReportOptions
) -> tuple[dict[str, pd.DataFrame], dict[str, str], pd.DataFrame]:
    """The tidy tables (with their intervals and ▲ / ▼ marks), each dataset's primary metric, and every paired
    comparison: the runs' bootstrap values are computed once and shared by all three."""
    resamples = Resamples(options.uncertainty)
    frames, metric_of = tidy_tables(
        prepared.used,
        grid,
        load_paper_tables(options.paper_csv),
        options.best_from,
        load_published(options.published_csv),
        resamples,
    )
    protocols = ("best", "at_best_val") if options.best_from == "best" else (options.best_from,)
    comps = comparisons(resamples, prepared.ok, metric_of, protocols)
    return mark_differences(frames, comps), metric_of, comps


def _notes(fig6: Fig6 | None, curves: Curves | None) -> list[str]:
    """The runs left out of a figure and the datasets without one (nothing without figures)."""
    if fig6 is None or curves is None:
        return []
    skipped = [
        f"{kind} skipped for {dataset}: {why}"
        for kind, found in (("fig6", fig6.skipped), ("curves", curves.skipped))
        for dataset, why in found.items()
    ]
    return fig6.notes + curves.notes + skipped


def build_report(
    sweep_dir: str | os.PathLike, options: ReportOptions | None = None, *, check: SweepCheck | None = None
) -> Report:
    """Every table, figure and section of the report on the runs below ``sweep_dir``, computed in memory.

    ``check`` (:func:`~flowmixup.report.runs.check_sweep`'s result) gives the runs, the grid and the bad files to
    name as left out; without it every ``summary.json`` below the folder is read (an unreadable one is named in
    report.md) and ``grid.json`` when present. FileNotFoundError / ValueError (one line) on a missing folder, an
    unusable grid.json or paper CSV.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    options = options or ReportOptions()
    runs, grid, left_out = _inputs(sweep_dir, check)
    prepared = prepare_runs(runs)
    frames, metric_of, comps = _cells_and_comparisons(prepared, grid, options)
    counts = _counts(sweep_dir, prepared, grid, metric_of, frames, left_out)
    tables = render_tables(frames, counts["variance_epochs"], options.uncertainty.n_resamples)
    tables.update(expert_tables(prepared.used, options.best_from))  # dataset.expert_labels' table (report/expert.py)
    labels = {d: label for f in frames.values() for d, label in zip(f["dataset"], f["_label"])}
    memo = memorisation(prepared.ok)
    fig6 = fig6_all(prepared, options.fig6) if options.figures else None
    curves = curve_files(prepared.ok) if options.figures else None
    figures = (
        {**fig6_files(fig6), **curves.files, **forest_files(comps)} if fig6 is not None and curves is not None else {}
    )
    report_md = _report_md(
        sweep_dir,
        counts,
        grid is not None,
        [t.markdown for t in tables.values()],
        [
            comparisons_markdown(comps, labels, options.uncertainty.confidence),
            memo.markdown if memo else "",
            fig6.markdown if fig6 else "",
        ],
    )
    return Report(
        sweep_dir,
        options,
        runs,
        prepared,
        counts,
        tables,
        comps,
        memo,
        fig6,
        curves,
        report_md,
        _files(tables, comps, memo, report_md, figures),
        _notes(fig6, curves),
    )


def write_report(report: Report, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write every file of ``report`` below ``out_dir`` (default ``<sweep>/report``) together: all are staged
    first, then put in place (:func:`~flowmixup.report.output.write_files`). Returns the paths written."""
    out_dir = Path(out_dir) if out_dir is not None else report.sweep_dir / "report"
    return write_files({out_dir / name: content for name, content in report.files.items()})
