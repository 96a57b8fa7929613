"""Tables I, II and III of the Flow-Mixup paper from a sweep of runs, as a tidy pandas pipeline.

``summary.json`` files (at any depth below the sweep) -> :func:`collect_runs`: one row per run, every summary key
and every value of the run's config as a dotted column (``config.trainer.lr``; the summary's ``config`` key, else
``<run>/config.yaml``) -> :func:`prepare_runs`: each run's table row (:class:`Setting`), noise, seed and primary
metric; runs that differ in a setting other than the seed get their own rows; true duplicates are set aside ->
:func:`tidy_tables`: per cell (dataset, row, noise, quantity) the mean, sample std (ddof = 1) and counts over seeds,
the paper's number and the marks -> Markdown, CSV and LaTeX (:func:`make_report`, into ``<sweep>/report``).
Reading and checking the run folders is :mod:`flowmixup.report.inputs`.

Conventions (repeated in each caption): a cell is the **mean ± sample std (ddof = 1)** over the seeds that ended
ok (one seed: mean only); ``[k/n]`` when only k of n expected seeds are in it; ``—`` no run, ``failed`` every run
failed; ``(paper x)`` the paper's number; best / second best per column **bold** / underlined (Table III: the
lowest variance bold), decided on the printed numbers; Diff. columns unmarked. The expected grid is
``<sweep>/grid.json`` when present. The paper's rows (in the order of ``paper_tables.csv``) are always listed;
other rows follow.

**No run is dropped silently.** A run's row is its regularizer and the settings its config shows
(``regularizer.label`` / ``regularizer.shown``; older summaries: the built-in names and α / Op). When runs of one
dataset, row and noise level differ in any other result-affecting setting (every config value except
:data:`EXECUTION_ONLY`), each setting value gets its own row, labelled e.g. ``Flow-Mixup (α=3.0, Op=False)
[backbone=resnet34_1d]``. Runs alike in everything including the seed are duplicates: the newest ok one is used
and all are listed in ``report.md``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .inputs import (DATASET_NAMES, METRICS_COLUMNS, Setting, builtin_key, collect_runs, dataset_label,
                     default_primary_metric, hashable, is_missing, latex_escape, load_grid, load_paper_tables,
                     load_published, noise_key, primary_metric_of, read_csv_checked, seed_key, setting_of)
from .inputs import check_sweep  # noqa: F401  (scripts/make_tables.py and the tests import it from here)
from .output import csv_text

DDOF = 1  # sample standard deviation over seeds
MISSING = "—"
FAILED = "failed"

# Settings that change how or where a run executes, never its result: they never split a table row. Patterns on
# the config's dotted keys (fnmatch). Everything else in a run's config is result-affecting.
EXECUTION_ONLY = ("seed", "paths.*", "trainer.device", "trainer.num_workers", "trainer.num_threads",
                  "trainer.progress", "trainer.resume", "trainer.skip_finished", "trainer.compile*", "logger.*",
                  "logger", "hydra.*", "dataset.root", "dataset.prepare_workers", "*cache_dir", "*.cache_dir",
                  "run_dir", "output_dir", "dataset.label", "dataset.report_metrics")
# Summary keys that are settings, for older summaries without any config (the others are results).
SUMMARY_SETTINGS = ("backbone", "mix_points", "corruption_kind", "epochs_planned")


def _paper_rows(table: str | None = None) -> tuple[Setting, ...]:
    paper = load_paper_tables()
    return tuple(dict.fromkeys(paper["setting"] if table is None else paper.loc[paper["table"] == table, "setting"]))


# ---- Runs -> rows, duplicates --------------------------------------------------------------------------------------
def prepare_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """``(used, duplicates, unreadable)``: the usable runs with ``_setting``, ``_noise``, ``_seed``, ``_metric``
    (one per dataset, row, noise and seed), the duplicate runs set aside (with ``_kept``: the run used instead),
    and ``(summary path, problem)`` of rows that cannot be used."""
    unreadable, keep = [], []
    for i, r in runs.iterrows():
        where = str(Path(str(r.get("run_dir", "?"))) / "summary.json")
        if r.get("status") == "unreadable" or is_missing(r.get("dataset")) or is_missing(r.get("regularizer")):
            reason = r.get("reason") if r.get("status") == "unreadable" else None
            unreadable.append((where, "missing dataset or regularizer" if is_missing(reason) else str(reason)))
            continue
        try:
            keep.append({"index": i, "_setting": setting_of(r.to_dict()), "_noise": noise_key(r["noise"]),
                         "_seed": seed_key(r.get("seed")), "_metric": primary_metric_of(r.to_dict())})
        except (KeyError, TypeError, ValueError) as exc:
            unreadable.append((where, f"unusable values ({type(exc).__name__}: {exc})"))
    if not keep:
        empty = runs.iloc[0:0].assign(_setting=None, _noise=None, _seed=None, _metric=None, dataset="")
        return empty, empty.assign(_kept=None), sorted(unreadable)
    used = runs.loc[[k["index"] for k in keep]].assign(
        **{c: [k[c] for k in keep] for c in ("_setting", "_noise", "_seed", "_metric")}, dataset=lambda f:
        f["dataset"].astype(str))
    # result-affecting settings (the summary's setting keys, every config value not EXECUTION_ONLY) that differ
    # between runs of one dataset, row and noise level -> extra rows
    columns = [c for c in used.columns if c in SUMMARY_SETTINGS or c.startswith("config.") and not any(
        fnmatch.fnmatchcase(c[len("config."):], p) for p in EXECUTION_ONLY + ("noise", "dataset.name"))]
    values = used[columns].map(hashable)
    varies = values.groupby([used["dataset"], used["_setting"], used["_noise"]], sort=False).nunique(dropna=False).gt(1)
    if varies.any(axis=None):
        varying = varies.groupby(level=[0, 1], sort=False).any()
        extras = []
        for (dataset, setting), row in zip(zip(used["dataset"], used["_setting"]), values.itertuples(index=False)):
            flags = varying.loc[(dataset, setting)]
            extra = tuple((c.removeprefix("config."), v) for c, v, f in zip(columns, row, flags) if f)
            extras.append(dataclasses.replace(setting, extra=extra))
        used = used.assign(_setting=extras)
    # duplicates: the same dataset, row, noise and seed; keep an ok run over a failed one, then the newest
    ranked = used.assign(_ok=used["status"].eq("ok"), _mtime=used.get("summary_mtime", 0.0)).sort_values(
        ["_ok", "_mtime"], kind="stable")
    key = ["dataset", "_setting", "_noise", "_seed"]
    dup = ranked.duplicated(key, keep="last")
    kept = ranked[~dup].set_index(key)["run_dir"]
    duplicates = ranked[dup].assign(_kept=[kept.loc[tuple(k)] for k in ranked.loc[dup, key].itertuples(index=False)])
    return used.loc[ranked.index[~dup]].sort_index(), duplicates, sorted(unreadable)


# ---- Rows -> cells (the tidy tables) -------------------------------------------------------------------------------
TIDY_COLUMNS = ["table", "dataset", "primary_metric", "setting", "regularizer", "alpha", "keep_original", "noise",
                "quantity", "unit", "status", "mean", "std", "ddof", "n_seeds", "n_failed", "n_missing",
                "n_expected", "paper", "mark", "text"]
_QUANTITY_LABELS = {"best": "Best", "last": "Last", "diff": "Diff.", "variance": ""}
_QUANTITIES = {"I": ["best", "last", "diff"], "II": ["best"], "III": ["variance"]}  # the columns of a layout


def _values(runs: pd.DataFrame, quantity: str, metric: str, best_from: str) -> pd.Series:
    """Per run, the number a cell averages: AUC in percent, macro-F1 and variances as fractions (NaN if absent)."""
    if best_from not in ("best", "at_best_val"):
        raise ValueError(f"best_from must be 'best' or 'at_best_val', not {best_from!r}")

    def col(name: str) -> pd.Series:
        return pd.to_numeric(runs.get(name, pd.Series(np.nan, runs.index)), errors="coerce").astype(float)

    scale = 100.0 if metric == "auc" else 1.0
    best = col(f"best_test_{metric}" if best_from == "best" else f"test_{metric}_at_best_val") * scale
    last = col(f"last_test_{metric}") * scale
    value = {"best": best, "last": last, "diff": best - last, "variance": col(f"variance_{metric}")}[quantity]
    return value.where(np.isfinite(value))


def _cell_records(table: str, dataset: str, metric: str, rows: list[Setting], columns: list[tuple[float, str]],
                  runs: pd.DataFrame, expected: dict, paper: dict, best_from: str, layout: str,
                  published: dict | None = None, label: str | None = None) -> list[dict]:
    """The cells of one dataset in ``table``, laid out as ``layout`` (``I`` / ``II`` / ``III``; an extra table's
    differs), ``published`` other papers' numbers by ``(dataset, metric, regularizer, noise, quantity)``."""
    here = runs[runs["dataset"] == dataset]
    records = []
    for setting in rows:
        for noise, quantity in columns:
            cell = here[(here["_setting"] == setting) & (here["_noise"] == noise)]
            ok = cell[cell["status"] == "ok"]
            values = _values(ok, quantity, metric, best_from).dropna().to_numpy()
            n_failed = int((cell["status"] != "ok").sum())
            n_missing = len(expected.get((dataset, setting.base(), noise), set()) - set(cell["_seed"]))
            status = "ok" if len(values) else "n/a" if len(ok) else FAILED if n_failed else "missing"
            records.append({
                "table": table, "dataset": dataset, "primary_metric": metric, "setting": setting.label,
                "regularizer": setting.regularizer, "alpha": setting.alpha, "keep_original": setting.keep_original,
                "noise": noise, "quantity": quantity,
                "unit": "variance" if quantity == "variance" else "auc_percent" if metric == "auc" else "macro_f1",
                "status": status, "mean": float(np.mean(values)) if len(values) else math.nan,
                "std": float(np.std(values, ddof=DDOF)) if len(values) > DDOF else math.nan, "ddof": DDOF,
                "n_seeds": len(values), "n_failed": n_failed, "n_missing": n_missing,
                "n_expected": len(values) + n_failed + n_missing,
                "paper": _paper_value(paper, table, dataset, setting.base(), noise, quantity, metric)
                if layout == table else None, "mark": "",
                "_setting": setting, "_decimals": 1 if layout == "I" else 4, "_label": label or dataset_label(dataset),
                **_published_value(published, dataset, metric, setting, noise, quantity)})
    return records


def _paper_value(paper: dict, table: str, dataset: str, setting: Setting, noise: float, quantity: str,
                 metric: str) -> float | None:
    if table == "I" and quantity == "diff":
        b, l = (paper.get(("I", dataset, setting, noise, f"{q}_auc")) for q in ("best", "last"))
        return None if b is None or l is None else round(b - l, 1)
    name = {"I": f"{quantity}_auc", "II": f"{quantity}_{metric}", "III": "variance"}[table]
    return paper.get((table, dataset, setting, noise, name))


def _published_value(published: dict | None, dataset: str, metric: str, setting: Setting, noise: float,
                     quantity: str) -> dict:
    """``published`` / ``published_source`` of a cell: only beside the plain row of the regularizer named."""
    hit = (published or {}).get((dataset, metric, setting.regularizer, noise, quantity)) if (
        setting.alpha is None and setting.keep_original is None and not setting.params and not setting.extra) else None
    if hit is None:
        return {"published": math.nan, "published_source": None}
    return {"published": hit[0] * (100.0 if metric == "auc" else 1.0), "published_source": hit[1]}


def _mark(cells: pd.DataFrame, lowest: bool, second: bool) -> pd.Series:
    """best / second per column, on the numbers as printed (equal printed numbers share a mark)."""
    shown = cells["mean"].round(cells["_decimals"].iloc[0]).where(cells["status"] == "ok")
    distinct = sorted(shown.dropna().unique(), reverse=not lowest)
    marks = pd.Series("", index=cells.index)
    if distinct:
        marks[shown == distinct[0]] = "best"
        if second and len(distinct) > 1:
            marks[shown == distinct[1]] = "second"
    return marks


def _ordered(first: Sequence[Setting], found) -> list[Setting]:
    return list(first) + sorted(set(found) - set(first), key=Setting.sort_key)


def _per_dataset(runs: pd.DataFrame, column: str) -> dict:
    """Per dataset, the first value of a config column its runs have (e.g. ``config.dataset.label``)."""
    if column not in runs.columns:
        return {}
    first = runs[[isinstance(v, (str, list, tuple, np.ndarray)) for v in runs[column]]].drop_duplicates("dataset")
    return dict(zip(first["dataset"], first[column]))


EXTRA_TABLE_PREFIX = "extra_"  # the key of an additional metric's table: extra_<metric> (files table_<metric>.*)


def tidy_tables(runs: pd.DataFrame, grid: list | None, paper: pd.DataFrame | None, best_from: str = "best",
                published: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The tidy frames of Tables I-III (one row per cell, :data:`TIDY_COLUMNS` plus private ``_`` columns) and
    each dataset's primary metric.

    A dataset whose runs' config lists ``dataset.report_metrics`` (e.g. ``[auc, macro_f1]``) also gets, for each
    listed metric other than its primary one, a cell in the table ``extra_<metric>`` (laid out as Table I for
    AUC, as Table II for macro-F1). ``published`` (:func:`load_published`) puts other papers' numbers beside cells.
    """
    expected: dict = {}
    for dataset, setting, noise, seed in grid or []:
        expected.setdefault((dataset, setting, noise), set()).add(seed)
    found = runs[["dataset", "_setting", "_noise"]].itertuples(index=False, name=None)
    cells = set(found) | {(d, s, n) for d, s, n in expected}
    order = list(DATASET_NAMES)
    datasets = sorted({d for d, _, _ in cells}, key=lambda d: (
        order.index(builtin_key(d, DATASET_NAMES)) if builtin_key(d, DATASET_NAMES) else 99, d))
    metric_of = {d: next((m for m in runs.loc[runs["dataset"] == d, "_metric"] if m), None)
                 or default_primary_metric(d) for d in datasets}
    labels = {d: dataset_label(d, _per_dataset(runs, "config.dataset.label")) for d in datasets}
    asked = _per_dataset(runs, "config.dataset.report_metrics")
    lookup = {} if paper is None else {(str(r.table), str(r.dataset), r.setting, r.noise_key, str(r.metric)):
                                       float(r.value) for r in paper.itertuples(index=False)}
    tables: dict[str, list[dict]] = {"I": [], "II": [], "III": []}
    known = [d for d in datasets if metric_of[d] in METRICS_COLUMNS]
    rows3 = _ordered(TABLE3_SETTINGS, {s for d, s, _ in cells if d in known})

    def add(table: str, dataset: str, metric: str, layout: str, rows: list[Setting], **kw: Any) -> None:
        noises = sorted({n for d, _, n in cells if d == dataset})
        tables.setdefault(table, []).extend(_cell_records(
            table, dataset, metric, rows, [(n, q) for n in noises for q in _QUANTITIES[layout]], runs, expected,
            lookup, best_from, layout, label=labels[dataset], **kw))

    for dataset in known:  # the primary metric in Table I or II, then the additional metrics its config asks for
        rows = _ordered(PAPER_SETTINGS, {s for d, s, _ in cells if d == dataset})
        for metric in [metric_of[dataset]] + [str(m) for m in asked.get(dataset, ()) if str(m) != metric_of[dataset]
                                              and str(m) in METRICS_COLUMNS]:
            layout = "I" if metric == "auc" else "II"
            add(layout if metric == metric_of[dataset] else EXTRA_TABLE_PREFIX + metric, dataset, metric, layout,
                rows, published=published)
    for dataset in known:
        add("III", dataset, metric_of[dataset], "III", rows3)
    frames = {}
    for table, records in tables.items():
        frame = pd.DataFrame.from_records(records, columns=TIDY_COLUMNS + ["_setting", "_decimals", "_label",
                                                                          "published", "published_source"])
        if table == "III" and len(frame):  # rows across datasets: sort the cells row-major
            frame["_row"] = frame["_setting"].map({s: i for i, s in enumerate(rows3)})
            frame = frame.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)
        for _, cells_ in frame[frame["quantity"] != "diff"].groupby(["dataset", "noise", "quantity"], sort=False):
            frame.loc[cells_.index, "mark"] = _mark(cells_, table == "III", table != "III")
        frame["text"] = [_cell_text(r, latex=False) for r in frame.to_dict("records")]
        frames[table] = frame
    return frames, metric_of


# ---- Rendering: one routine for Markdown and LaTeX -----------------------------------------------------------------

def _cell_text(cell: dict, latex: bool) -> str:
    decimals = cell["_decimals"]
    if cell["status"] == "ok":
        core = f"{cell['mean']:.{decimals}f}"
        if cell["n_seeds"] > DDOF:
            core += (r" $\pm$ " if latex else " ± ") + f"{cell['std']:.{decimals}f}"
        wrap = {"best": (r"\textbf{%s}" if latex else "**%s**"), "second": (r"\underline{%s}" if latex
                                                                               else "<u>%s</u>")}.get(cell["mark"])
        core = wrap % core if wrap else core
        core += f" [{cell['n_seeds']}/{cell['n_expected']}]" if cell["n_failed"] or cell["n_missing"] else ""
    else:
        core = {"missing": "--" if latex else MISSING}.get(cell["status"], cell["status"])
    if not is_missing(cell["paper"]):
        paper = f"{cell['paper']:.{decimals}f}"
        core += f" {{\\scriptsize(paper {paper})}}" if latex else f" (paper {paper})"
    if not is_missing(cell.get("published")):
        value = f"{cell['published']:.{decimals}f}"
        core += (f" {{\\scriptsize(published {value}$^\\dagger$)}}" if latex else f" (published {value}{DAGGER})")
    return core


DAGGER = "†"
_METRIC_NAMES = {"auc": "macro-AUC", "macro_f1": "macro-F1"}


def _published_note(frame: pd.DataFrame, latex: bool) -> list[str]:
    """The footnote under a tabular that shows other papers' numbers (one line per source), or nothing."""
    shown = frame.dropna(subset=["published"]) if "published" in frame else frame.iloc[0:0]
    sources = list(dict.fromkeys(str(x) for x in shown["published_source"]))
    if not sources:
        return []
    text = (f"{DAGGER} A published number of ANOTHER paper's model, not a run of this sweep, shown for reference "
            "beside the cell it compares with: " + "; ".join(sources) + ".")
    if latex:
        return [r"\par\smallskip{\scriptsize " + latex_escape(text.replace(DAGGER, "$^\\dagger$")) + "}"]
    return [text, ""]


def _caption(table: str, variance_epochs: dict) -> str:
    common = ("Mean ± sample standard deviation (ddof = 1) over the seeds that ended ok; one seed: mean only. "
              "[k/n]: only k of the n expected seeds are in the mean (the others failed or are missing). "
              f"{MISSING}: no run; failed: every run of the cell failed. (paper x): the number printed in the paper.")
    marks = "Best and second best per column in **bold** / <u>underlined</u>"
    auc = ("Best = highest test AUC over the epochs, Last = test AUC at the last epoch, Diff. = Best − Last (per seed, "
           f"then averaged). {marks} (Diff. not marked). ")
    extra = "an additional metric of the datasets below (their dataset.report_metrics; their primary metric is in " \
            "Table I or II)"
    if table == "I":
        return "Table I. Test AUC (%) on the AUC datasets: " + auc + common
    if table == "II":
        return f"Table II. Best test macro-F1 (fraction) on the macro-F1 datasets. {marks}. " + common
    if table == EXTRA_TABLE_PREFIX + "auc":
        return f"Test AUC (%), {extra}: " + auc + common
    if table.startswith(EXTRA_TABLE_PREFIX):
        metric = table[len(EXTRA_TABLE_PREFIX):]
        return f"Best test {_METRIC_NAMES.get(metric, metric)} (fraction), {extra}. {marks}. " + common
    n_text = "; ".join(f"{dataset_label(d)}: n = {', '.join(map(str, v))}" for d, v in variance_epochs.items())
    return ("Table III. Variance (Eq. 8, population variance over the first n epochs) of the min-max normalised "
            "per-epoch test metric: AUC for AUC datasets, macro-F1 for macro-F1 datasets. "
            "Lowest per column in **bold**. " + (f"({n_text}.) " if n_text else "") + common)


def _noise_label(noise: float) -> str:
    return f"{noise * 100:g}%"


def _groups(table: str, frame: pd.DataFrame) -> list[list[pd.DataFrame]]:  # table: its layout, I / II / III
    """The tabulars of a table, each a list of blocks (one per dataset; Table III: one block). Table II's datasets
    with the same noise levels share one tabular, as in the paper."""
    if table == "III":
        return [[frame]] if len(frame) else []
    blocks = [block for _, block in frame.groupby("dataset", sort=False)]
    keys = [list(zip(b["noise"], b["quantity"])) if table == "II" else i for i, b in enumerate(blocks)]
    return [[b for _, b in run] for _, run in itertools.groupby(zip(keys, blocks), key=lambda kb: kb[0])]


def _layout(block: pd.DataFrame) -> tuple[list[Setting], list[tuple], pd.DataFrame]:
    """A block pivoted to rows x columns (the cell records), rows and columns in table order."""
    columns = list(dict.fromkeys(zip(block["dataset"], block["noise"], block["quantity"])))
    rows = list(dict.fromkeys(block["_setting"]))
    return rows, columns, block.set_index(["_setting", "dataset", "noise", "quantity"])


def render(table: str, frame: pd.DataFrame, variance_epochs: dict, latex: bool) -> str:
    """Table ``I``, ``II`` or ``III`` (or ``extra_<metric>``, laid out as I or II) as Markdown or LaTeX (booktabs)."""
    esc = latex_escape if latex else (lambda s: s)
    labels = dict(zip(frame["dataset"], frame["_label"])) if "_label" in frame else {}
    name_of = lambda d: labels.get(d) or dataset_label(d)  # noqa: E731
    caption = _caption(table, {name_of(d): v for d, v in variance_epochs.items()})
    title = f"Table {table}"
    if table.startswith(EXTRA_TABLE_PREFIX):
        metric = table[len(EXTRA_TABLE_PREFIX):]
        title = f"Table {_METRIC_NAMES.get(metric, metric)}"
        table = "I" if metric == "auc" else "II"  # the layout from here on
    if latex:
        caption = (caption.replace("**bold**", r"\textbf{bold}").replace("<u>underlined</u>", r"\underline{underlined}")
                   .replace("±", r"$\pm$").replace("−", "$-$").replace(MISSING, "--").replace("%", r"\%")
                   .replace("_", r"\_"))
        out = [r"% generated by flowmixup.report.tables; needs \usepackage{booktabs}", r"\begin{table*}[t]",
               r"\centering", r"\scriptsize", f"\\caption{{{caption}}}",
               f"\\label{{tab:{title.split(' ', 1)[1].lower().replace(' ', '_').replace('-', '_')}}}"]
    else:
        out = [f"## {title}", "", caption, ""]
    groups = _groups(table, frame)
    if not groups:
        out += [r"(no runs for this table)"] + ([r"\end{table*}", ""] if latex else [""])
        return "\n".join(out)
    for group in groups:
        columns = _layout(group[0])[1]
        lead = ["Dataset", "Regularization"] if table == "II" else ["Regularization"]
        name = name_of(columns[0][0])
        if latex:
            out += [r"\begin{tabular}{" + "l" * len(lead) + "c" * len(columns) + "}", r"\toprule"]
            if table == "II":
                out.append(" & ".join(lead + [esc(_noise_label(n)) for _, n, _ in columns]) + r" \\")
            else:
                spans = [_noise_label(n) if table == "I" else name_of(d) for d, n, _ in columns]
                top = [f"\\multicolumn{{{len(list(run))}}}{{c}}{{{esc(label)}}}"
                       for label, run in itertools.groupby(spans)]
                out.append(esc(name if table == "I" else "") + " & " + " & ".join(top) + r" \\")
                out.append("Regularization & " + " & ".join(_QUANTITY_LABELS[q] or esc(_noise_label(n))
                                                          for _, n, q in columns) + r" \\")
            out.append(r"\midrule")
        else:
            out += [f"### {name}", ""] if table == "I" else []
            heads = [f"{_noise_label(n)} {_QUANTITY_LABELS[q]}" if table == "I" else _noise_label(n) if table == "II"
                     else f"{name_of(d)} {_noise_label(n)}" for d, n, q in columns]
            out += ["| " + " | ".join(lead + heads) + " |",
                    "|" + "|".join(["---"] * len(lead) + [":-:"] * len(columns)) + "|"]
        for b, block in enumerate(group):
            rows, columns, cells = _layout(block)
            out += [r"\midrule"] if latex and b else []
            for i, setting in enumerate(rows):
                row = ([esc(name_of(columns[0][0])) if i == 0 else ""] if table == "II" else [])
                row += [setting.latex_label if latex else setting.label]
                row += [_cell_text(cells.loc[(setting, *c)].to_dict(), latex) for c in columns]
                out.append(" & ".join(row) + r" \\" if latex else
                           "| " + " | ".join(x.replace("|", r"\|") for x in row) + " |")
        out += [r"\bottomrule", r"\end{tabular}", ""] if latex else [""]
        out += _published_note(pd.concat(group), latex)
    out += [r"\end{table*}", ""] if latex else []
    return "\n".join(out)


# ---- report.md and the files ---------------------------------------------------------------------------------------
def _report_header(sweep_dir: Path, counts: dict, has_grid: bool) -> str:
    missing = (f"**{counts['missing']} missing** (in grid.json, no summary.json)" if has_grid
               else "missing: n/a (no grid.json, the grid is what was found)")
    lines = [f"# Flow-Mixup report: sweep `{sweep_dir.name}`", "", f"Sweep folder: `{sweep_dir.resolve()}`", "",
             f"Runs: **{counts['ok']} ok**, **{counts['failed']} failed**, {missing}."]
    extras = [text for n, text in (
        (counts["unfinished"], f"{counts['unfinished']} unfinished (metrics.csv but no summary.json)"),
        (counts["unreadable"], f"{counts['unreadable']} unreadable summary.json (listed below)"),
        (counts["left_out"], f"{len(counts['left_out'])} bad run files left out (listed below)"),
        (counts["duplicates"], f"{counts['duplicates']} duplicate runs of the same cell and seed (kept: ok over "
                               "failed, then the newest; listed below)"),
        (has_grid and counts["not_in_grid"], f"{counts['not_in_grid']} runs outside grid.json (included in the "
                                             "tables)"),
        (counts["unknown_metric_datasets"], "datasets left out (primary metric unknown or not auc/macro_f1): "
                                            + ", ".join(counts["unknown_metric_datasets"]))) if n]
    lines += ["", "Also: " + "; ".join(extras) + "."] if extras else []
    left_out = counts["unreadable_runs"] + counts["left_out"]
    lines += ["", "Left out (unreadable or invalid):", ""] + [f"- `{p}`: {why}" for p, why in left_out] if left_out \
        else []
    if counts["duplicate_runs"]:
        lines += ["", "Duplicates (same settings and seed; only the run used is in the tables):", ""]
        lines += [f"- `{dup}`: duplicate of `{kept}` (used)" for dup, kept in counts["duplicate_runs"]]
    if counts["failed_runs"]:
        shown = counts["failed_runs"][:30]
        lines += ["", "Failed runs:", ""] + [f"- `{d}`: {why or '(no reason given)'}" for d, why in shown]
        more = len(counts["failed_runs"]) - len(shown)
        lines += [f"- … and {more} more (see table CSVs)"] if more > 0 else []
    return "\n".join(lines + [""])


def memorisation(runs: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Best vs last epoch of every ok run (from its metrics.csv), seed-averaged per (dataset, row, noise): a model
    that memorises noisy labels peaks early. Returns the Markdown section and the frame of ``memorisation.csv``."""
    rows = []
    for run in runs[runs["status"] == "ok"].to_dict("records"):
        column = f"test_{run['_metric']}"
        frame = read_csv_checked(Path(run["run_dir"]) / "metrics.csv", (column,))[0] if run["_metric"] else None
        curve = None if frame is None else pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        if curve is not None and np.isfinite(curve).any():
            rows.append({"dataset": run["dataset"], "setting": run["_setting"].label,
                         "order": run["_setting"].sort_key(), "noise": run["_noise"], "seed": run.get("seed"),
                         "metric": run["_metric"], "best": float(np.nanmax(curve)), "last": float(curve[-1]),
                         "best_epoch": int(np.nanargmax(curve)) + 1, "epochs": len(curve)})
    if not rows:
        return "", pd.DataFrame()
    per_run = pd.DataFrame(rows).assign(diff=lambda f: f["best"] - f["last"])
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
        lines += [f"### {dataset} (test {block['metric'].iloc[0]})", "",
                  "| Regularization | " + " | ".join(f"{n:.0%} best (epoch) | {n:.0%} last | {n:.0%} diff."
                                                       for n in noises) + " |", "|---|" + ":-:|" * (3 * len(noises))]
        for (_, label), sub in block.groupby(["order", "setting"], sort=True):
            by_noise = sub.set_index("noise")
            cells = [x for n in noises for x in (
                [f"{by_noise.at[n, 'best']:.4f} ({by_noise.at[n, 'best_epoch']:.0f}/{by_noise.at[n, 'epochs']:.0f})",
                 f"{by_noise.at[n, 'last']:.4f}", f"{by_noise.at[n, 'diff']:.4f}"] if n in by_noise.index
                else ["-", "-", "-"])]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines), agg.drop(columns=["order"])


_FROM_SWEEP = object()


def make_report(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                paper_csv: str | os.PathLike | None = None, best_from: str = "best", *,
                runs: pd.DataFrame | None = None, grid: Any = _FROM_SWEEP, left_out: Sequence[tuple[Any, str]] = (),
                write: bool = True, fig6: bool | dict[str, Any] = True,
                published_csv: str | os.PathLike | None = None) -> dict[str, Any]:
    """Tables I-III (``table{1,2,3}.{md,csv,tex}``), ``memorisation.csv`` and ``report.md`` for the runs below
    ``sweep_dir``, into ``out_dir`` (default ``<sweep_dir>/report``), computed first and written together.

    ``runs`` / ``grid`` default to :func:`collect_runs` / :func:`load_grid`; ``left_out`` lists ``(path, problem)``
    of bad files skipped; ``fig6`` (a dict of options, or False) adds the Fig. 6 section; ``write=False`` only
    computes. Returns ``paths``, ``files``, ``markdown`` (per table), ``report_md``, ``counts``, ``tidy`` (per
    table, :data:`TIDY_COLUMNS`) and ``runs``.
    """
    from .output import write_files

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    runs = collect_runs(sweep_dir) if runs is None else runs
    grid = load_grid(sweep_dir) if grid is _FROM_SWEEP else grid
    used, duplicates, unreadable = prepare_runs(runs)
    frames, metric_of = tidy_tables(used, grid, load_paper_tables(paper_csv), best_from,
                                    load_published(published_csv))

    ok = used["status"] == "ok"
    seen = {(d, s.base(), n, e) for d, s, n, e in used[["dataset", "_setting", "_noise", "_seed"]].itertuples(
        index=False, name=None)}
    epochs = (used[ok & used["dataset"].isin([d for d, m in metric_of.items() if m in METRICS_COLUMNS])]
              .assign(v=pd.to_numeric(used.get("variance_epochs"), errors="coerce")).dropna(subset=["v"]))
    counts = {
        "ok": int(ok.sum()), "failed": int((~ok).sum()), "unreadable": len(unreadable),
        "unreadable_runs": unreadable, "duplicates": len(duplicates),
        "duplicate_runs": sorted(zip(duplicates["run_dir"], duplicates["_kept"])),
        "missing": None if grid is None else len({(d, s, n, e) for d, s, n, e in grid} - seen),
        "not_in_grid": 0 if grid is None else len(seen - set(grid)),
        "failed_runs": sorted(zip(used.loc[~ok, "run_dir"], used.loc[~ok].get("reason", pd.Series(
            "", used.index)).fillna("").astype(str).replace("nan", ""))),
        "unknown_metric_datasets": [d for d, m in metric_of.items() if m not in METRICS_COLUMNS],
        # Table III's caption: per dataset (in table order) the epochs its variances span
        "variance_epochs": {d: sorted({int(v) for v in epochs.loc[epochs["dataset"] == d, "v"]})
                            for d in frames["III"]["dataset"].unique() if d in set(epochs["dataset"])},
        "unfinished": sum(1 for p in sweep_dir.rglob("metrics.csv") if not (p.parent / "summary.json").exists()),
        "left_out": [(str(path), str(problem)) for path, problem in left_out],
    }

    files: dict[Path, str] = {}
    markdown, tidy = {}, {}
    extra_tables = [(t, "table_" + t[len(EXTRA_TABLE_PREFIX):]) for t in frames if t.startswith(EXTRA_TABLE_PREFIX)]
    for table, stem in (("I", "table1"), ("II", "table2"), ("III", "table3"), *extra_tables):
        markdown[table] = render(table, frames[table], counts["variance_epochs"], latex=False)
        shown = frames[table]["published"].notna().any()  # the columns of other papers' numbers, where there are any
        tidy[table] = frames[table][TIDY_COLUMNS + (["published", "published_source"] if shown else [])]
        for ext, text in (("md", markdown[table]), ("csv", csv_text(tidy[table])),
                          ("tex", render(table, frames[table], counts["variance_epochs"], latex=True))):
            files[out_dir / f"{stem}.{ext}"] = text
    report_md = _report_header(sweep_dir, counts, grid is not None) + "\n" + "\n".join(markdown.values())
    memo_md, memo = memorisation(used)
    if memo_md:
        report_md += "\n" + memo_md
        files[out_dir / "memorisation.csv"] = csv_text(memo)
    if fig6 is not False:
        from .figures import fig6_section  # figures imports this module

        section = fig6_section(sweep_dir, runs=runs, **(fig6 if isinstance(fig6, dict) else {}))
        report_md += ("\n" + section) if section else ""
    files[out_dir / "report.md"] = report_md
    if write:
        write_files(files)
    return {"paths": {path.name: path for path in files}, "files": files, "markdown": markdown, "report_md": report_md,
            "counts": counts, "tidy": tidy, "runs": runs}


PAPER_SETTINGS = _paper_rows("I")  # the paper's six rows, in its order (from paper_tables.csv)
TABLE3_SETTINGS = _paper_rows("III")  # Table III's two rows
