"""Tables I, II and III of the Flow-Mixup paper from a sweep's prepared runs, as a tidy pandas pipeline.

:func:`flowmixup.report.runs.prepare_runs`' frame -> :func:`tidy_tables`: per cell (dataset, row, noise, quantity)
the mean, sample std (ddof = 1) and counts over seeds, the paper's number and the marks -> :func:`render_tables`:
each table as Markdown (``DataFrame.to_markdown``, over tabulate) and LaTeX (``Styler.to_latex``, booktabs, the noise
levels or datasets as multicolumn headers). The marks and notes are part of each cell's text, written once for both
(:class:`Markup`).

Conventions (repeated in each caption): a cell is the **mean ± sample std (ddof = 1)** over the seeds that ended
ok (one seed: mean only); ``[k/n]`` when only k of n expected seeds are in it; ``—`` no run, ``failed`` every run
failed; ``(paper x)`` the paper's number; best / second best per column **bold** / underlined (Table III: the
lowest variance bold), decided on the printed numbers; Diff. columns unmarked. The expected grid is
``<sweep>/grid.json`` when present. The paper's rows (in the order of ``paper_tables.csv``) are always listed;
other rows follow.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..stats import N_RESAMPLES
from .output import markdown_table
from .paper import PAPER_SETTINGS, TABLE3_SETTINGS
from .runs import (
    DATASET_NAMES,
    DDOF,
    METRICS_COLUMNS,
    Setting,
    builtin_key,
    dataset_label,
    default_primary_metric,
    is_missing,
    latex_escape,
)
from .uncertainty import DOWN, PROTOCOLS, UP, Resamples, cell_interval

MISSING = "—"
FAILED = "failed"
DAGGER = "†"
EXTRA_TABLE_PREFIX = "extra_"  # the key of an additional metric's table: extra_<metric> (files table_<metric>.*)
VAL_SUFFIX = "_val"  # Tables I and II again with model selection on validation: I_val, II_val (table1_val.*, ...)
TIDY_COLUMNS = [
    "table",
    "dataset",
    "primary_metric",
    "setting",
    "regularizer",
    "alpha",
    "keep_original",
    "noise",
    "quantity",
    "protocol",
    "unit",
    "status",
    "mean",
    "std",
    "ddof",
    "ci_low",
    "ci_high",
    "ci_method",
    "n_seeds",
    "n_failed",
    "n_missing",
    "n_expected",
    "paper",
    "mark",
    "vs_erm",
    "vs_erm_p_holm",
    "text",
]
_PRIVATE_COLUMNS = ["_setting", "_decimals", "_label", "published", "published_source"]
_QUANTITY_LABELS = {"best": "Best", "last": "Last", "diff": "Diff.", "variance": ""}
_QUANTITIES = {"I": ["best", "last", "diff"], "II": ["best"], "III": ["variance"]}  # the columns of a layout
_METRIC_NAMES = {"auc": "macro-AUC", "macro_f1": "macro-F1"}


@dataclass(frozen=True)
class Markup:
    """How the text of a table is marked up: the same words and marks in Markdown and in LaTeX."""

    bold: str
    underline: str
    pm: str
    minus: str
    missing: str
    dagger: str
    escape: Callable[[str], str]
    paper_note: str  # around "(paper x)" / "(published x†)"
    footnote: str  # around the note under a tabular ("\n": a blank line after it)
    row_label: str  # the Setting property that names a row
    up: str  # a row significantly above ERM (Holm-adjusted)
    down: str  # ... below it

    def label(self, setting: Setting) -> str:
        return getattr(setting, self.row_label)


MARKDOWN = Markup("**{}**", "<u>{}</u>", "±", "−", MISSING, DAGGER, str, " {}", "{}\n", "label", "▲", "▼")
LATEX = Markup(
    r"\textbf{{{}}}",
    r"\underline{{{}}}",
    r"$\pm$",
    "$-$",
    "--",
    r"$^\dagger$",
    latex_escape,
    r" {{\scriptsize{}}}",
    r"\par\smallskip{{\scriptsize {}}}",
    "latex_label",
    r"$^{\blacktriangle}$",
    r"$^{\blacktriangledown}$",
)


# ---- Rows -> cells (the tidy tables) -------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class _Sweep:
    """What every cell of a sweep's tables looks up."""

    runs: pd.DataFrame
    expected: dict  # (dataset, base setting, noise) -> the seeds grid.json expects
    cells: set  # every (dataset, setting, noise) with a run or in grid.json
    paper: dict  # (table, dataset, setting, noise, metric) -> the paper's number
    published: dict  # (dataset, metric, regularizer, noise, quantity) -> (fraction, source)
    labels: dict  # dataset -> its name in tables
    best_from: str
    resamples: Resamples | None  # the runs' bootstrap values (None: no interval from predictions)

    def noises(self, dataset: str) -> list[float]:
        return sorted({n for d, _, n in self.cells if d == dataset})


def _cell_record(
    sweep: _Sweep, table: str, dataset: str, metric: str, setting: Setting, noise: float, quantity: str, layout: str
) -> dict:
    """One cell of ``table``: its numbers over the seeds, its status and counts, the paper's number beside it."""
    here = sweep.runs[sweep.runs["dataset"] == dataset]
    cell = here[(here["_setting"] == setting) & (here["_noise"] == noise)]
    ok = cell[cell["status"] == "ok"]
    protocol = protocol_of(table, sweep.best_from)
    values = _values(ok, quantity, metric, protocol).dropna().to_numpy()
    scale = 100.0 if metric == "auc" and quantity != "variance" else 1.0
    low, high, how = cell_interval(sweep.resamples, ok, values, quantity, metric, protocol, scale)
    n_failed = int((cell["status"] != "ok").sum())
    n_missing = len(sweep.expected.get((dataset, setting.base(), noise), set()) - set(cell["_seed"]))
    return {
        "table": table,
        "dataset": dataset,
        "primary_metric": metric,
        "setting": setting.label,
        "regularizer": setting.regularizer,
        "alpha": setting.alpha,
        "keep_original": setting.keep_original,
        "noise": noise,
        "quantity": quantity,
        "protocol": protocol if quantity == "best" else "",
        "unit": "variance" if quantity == "variance" else "auc_percent" if metric == "auc" else "macro_f1",
        "status": "ok" if len(values) else "n/a" if len(ok) else FAILED if n_failed else "missing",
        "mean": float(np.mean(values)) if len(values) else math.nan,
        "std": float(np.std(values, ddof=DDOF)) if len(values) > DDOF else math.nan,
        "ddof": DDOF,
        "ci_low": low,
        "ci_high": high,
        "ci_method": how,
        "n_seeds": len(values),
        "n_failed": n_failed,
        "n_missing": n_missing,
        "n_expected": len(values) + n_failed + n_missing,
        "paper": _paper_value(sweep.paper, table, dataset, setting.base(), noise, quantity, metric)
        if layout == table
        else None,
        "mark": "",
        "vs_erm": "",
        "vs_erm_p_holm": math.nan,
        "_setting": setting,
        "_decimals": 1 if layout == "I" else 4,
        "_label": sweep.labels[dataset],
        **_published_value(sweep.published if layout != "III" else {}, dataset, metric, setting, noise, quantity),
    }


def _cell_records(sweep: _Sweep, table: str, dataset: str, metric: str, rows: list[Setting], layout: str) -> list[dict]:
    """The cells of one dataset in ``table``, laid out as ``layout`` (``I`` / ``II`` / ``III``; an extra table's
    differs): every row at every noise level of the dataset."""
    return [
        _cell_record(sweep, table, dataset, metric, setting, noise, quantity, layout)
        for setting in rows
        for noise in sweep.noises(dataset)
        for quantity in _QUANTITIES[layout]
    ]


def _paper_value(
    paper: dict, table: str, dataset: str, setting: Setting, noise: float, quantity: str, metric: str
) -> float | None:
    if table == "I" and quantity == "diff":
        best, last = (paper.get(("I", dataset, setting, noise, f"{q}_auc")) for q in ("best", "last"))
        return None if best is None or last is None else round(best - last, 1)
    name = {"I": f"{quantity}_auc", "II": f"{quantity}_{metric}", "III": "variance"}[table]
    return paper.get((table, dataset, setting, noise, name))


def _published_value(published: dict, dataset: str, metric: str, setting: Setting, noise: float, quantity: str) -> dict:
    """``published`` / ``published_source`` of a cell: only beside the plain row of the regularizer named."""
    hit = (
        published.get((dataset, metric, setting.regularizer, noise, quantity))
        if (setting.alpha is None and setting.keep_original is None and not setting.params and not setting.extra)
        else None
    )
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


def protocol_of(table: str, best_from: str) -> str:
    """The protocol of a table's Best columns: ``at_best_val`` for the ``_val`` tables, else ``best_from``."""
    return "at_best_val" if table.endswith(VAL_SUFFIX) else best_from


def _sweep_of(
    runs: pd.DataFrame,
    grid: list | None,
    paper: pd.DataFrame | None,
    best_from: str,
    published: dict | None,
    resamples: Resamples | None,
) -> _Sweep:
    expected: dict = {}
    for dataset, setting, noise, seed in grid or []:
        expected.setdefault((dataset, setting, noise), set()).add(seed)
    cells = set(runs[["dataset", "_setting", "_noise"]].itertuples(index=False, name=None)) | set(expected)
    lookup = (
        {}
        if paper is None
        else {
            (str(r.table), str(r.dataset), r.setting, r.noise_key, str(r.metric)): float(r.value)
            for r in paper.itertuples(index=False)
        }
    )
    names = _per_dataset(runs, "config.dataset.label")
    labels = {d: dataset_label(d, names) for d, _, _ in cells}
    return _Sweep(runs, expected, cells, lookup, published or {}, labels, best_from, resamples)


def _dataset_order(datasets) -> list[str]:
    """The built-in datasets in their order, then the others by name."""
    order = list(DATASET_NAMES)
    return sorted(
        datasets, key=lambda d: (order.index(builtin_key(d, DATASET_NAMES)) if builtin_key(d, DATASET_NAMES) else 99, d)
    )


def _finish(table: str, records: list[dict], rows3: list[Setting]) -> pd.DataFrame:
    """The tidy frame of ``table``: Table III's cells row-major, the marks per column, each cell's Markdown text."""
    frame = pd.DataFrame.from_records(records, columns=TIDY_COLUMNS + _PRIVATE_COLUMNS)
    if table == "III" and len(frame):  # rows across datasets: sort the cells row-major
        frame["_row"] = frame["_setting"].map({s: i for i, s in enumerate(rows3)})
        frame = frame.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)
    for _, column in frame[frame["quantity"] != "diff"].groupby(["dataset", "noise", "quantity"], sort=False):
        frame.loc[column.index, "mark"] = _mark(column, table == "III", table != "III")
    frame["text"] = [cell_text(r, MARKDOWN) for r in frame.to_dict("records")]
    return frame


def tidy_tables(
    runs: pd.DataFrame,
    grid: list | None,
    paper: pd.DataFrame | None,
    best_from: str = "best",
    published: dict | None = None,
    resamples: Resamples | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The tidy frames of Tables I-III (one row per cell, :data:`TIDY_COLUMNS` plus private ``_`` columns) and
    each dataset's primary metric, for the used runs of :func:`~flowmixup.report.runs.prepare_runs`.

    A dataset whose runs' config lists ``dataset.report_metrics`` (e.g. ``[auc, macro_f1]``) also gets, for each
    listed metric other than its primary one, a cell in the table ``extra_<metric>`` (laid out as Table I for
    AUC, as Table II for macro-F1). ``published`` (:func:`~flowmixup.report.paper.load_published`) puts other
    papers' numbers beside cells. With ``best_from="best"`` (the paper's protocol) Tables I and II come twice: as
    ``I`` / ``II`` and, with model selection on validation, as ``I_val`` / ``II_val``. ``resamples`` gives a
    one-seed cell its run's bootstrap interval (cells of several seeds take Student's t over them without it).
    """
    sweep = _sweep_of(runs, grid, paper, best_from, published, resamples)
    datasets = _dataset_order({d for d, _, _ in sweep.cells})
    metric_of = {
        d: next((m for m in runs.loc[runs["dataset"] == d, "_metric"] if m), None) or default_primary_metric(d)
        for d in datasets
    }
    asked = _per_dataset(runs, "config.dataset.report_metrics")
    known = [d for d in datasets if metric_of[d] in METRICS_COLUMNS]
    records: dict[str, list[dict]] = {"I": [], "II": [], "III": []}
    if best_from == "best":
        records.update({"I" + VAL_SUFFIX: [], "II" + VAL_SUFFIX: []})
    for dataset in known:  # the primary metric in Table I or II, then the additional metrics its config asks for
        rows = _ordered(PAPER_SETTINGS, {s for d, s, _ in sweep.cells if d == dataset})
        for metric in dict.fromkeys([metric_of[dataset]] + [str(m) for m in asked.get(dataset, ())]):
            if metric in METRICS_COLUMNS:
                layout = "I" if metric == "auc" else "II"
                primary = metric == metric_of[dataset]
                tables = [layout] + ([layout + VAL_SUFFIX] if best_from == "best" else []) if primary else []
                for table in tables or [EXTRA_TABLE_PREFIX + metric]:
                    records[table] = records.get(table, []) + _cell_records(sweep, table, dataset, metric, rows, layout)
    rows3 = _ordered(TABLE3_SETTINGS, {s for d, s, _ in sweep.cells if d in known})
    for dataset in known:
        records["III"].extend(_cell_records(sweep, "III", dataset, metric_of[dataset], rows3, "III"))
    return {table: _finish(table, rows, rows3) for table, rows in records.items()}, metric_of


def mark_differences(frames: dict[str, pd.DataFrame], comparisons: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The frames with each Best cell's ``vs_erm`` (▲ / ▼ where its paired comparison with ERM is significant after
    Holm) and ``vs_erm_p_holm`` from :func:`~flowmixup.report.uncertainty.comparisons`, and the text again."""
    found = comparisons[comparisons["family"] == "vs ERM"]
    lookup = {
        (f"{t}{VAL_SUFFIX if p == 'at_best_val' else ''}", d, s, n): (m, q)
        for t, p, d, s, n, m, q in found[
            ["table", "protocol", "dataset", "setting", "noise", "direction", "p_holm"]
        ].itertuples(index=False)
    }
    out = {}
    for table, frame in frames.items():
        frame = frame.copy()
        hits = [
            lookup.get((table, d, s, n)) if q == "best" else None
            for d, s, n, q in zip(frame["dataset"], frame["_setting"], frame["noise"], frame["quantity"])
        ]
        frame["vs_erm"] = [h[0] if h else "" for h in hits]
        frame["vs_erm_p_holm"] = [float(h[1]) if h else math.nan for h in hits]
        frame["text"] = [cell_text(r, MARKDOWN) for r in frame.to_dict("records")]
        out[table] = frame
    return out


# ---- The text of a cell, a caption, a note -------------------------------------------------------------------------
def cell_text(cell: dict, markup: Markup) -> str:
    """A cell as printed: mean ± the half-width of its interval with its mark, ▲ / ▼ when it differs from ERM,
    ``[k/n]``, ``—`` / ``failed``, the paper's number beside it."""
    decimals = cell["_decimals"]
    if cell["status"] == "ok":
        core = f"{cell['mean']:.{decimals}f}"
        half = (cell.get("ci_high", math.nan) - cell.get("ci_low", math.nan)) / 2.0
        if math.isfinite(half):
            core += f" {markup.pm} {half:.{decimals}f}"
        wrap = {"best": markup.bold, "second": markup.underline}.get(cell["mark"])
        core = wrap.format(core) if wrap else core
        core += {UP: " " + markup.up, DOWN: " " + markup.down}.get(cell.get("vs_erm") or "", "")
        core += f" [{cell['n_seeds']}/{cell['n_expected']}]" if cell["n_failed"] or cell["n_missing"] else ""
    else:
        core = markup.missing if cell["status"] == "missing" else cell["status"]
    if not is_missing(cell["paper"]):
        core += markup.paper_note.format(f"(paper {cell['paper']:.{decimals}f})")
    if not is_missing(cell.get("published")):
        core += markup.paper_note.format(f"(published {cell['published']:.{decimals}f}{markup.dagger})")
    return core


def _published_note(frame: pd.DataFrame, markup: Markup) -> list[str]:
    """The footnote under a tabular that shows other papers' numbers (one line per source), or nothing."""
    shown = frame.dropna(subset=["published"]) if "published" in frame else frame.iloc[0:0]
    sources = list(dict.fromkeys(str(x) for x in shown["published_source"]))
    if not sources:
        return []
    text = markup.escape(
        "A published number of ANOTHER paper's model, not a run of this sweep, shown for reference "
        "beside the cell it compares with: " + "; ".join(sources) + "."
    )
    return markup.footnote.format(f"{markup.dagger} {text}").split("\n")


def _interval_text(table: str, n_resamples: int, markup: Markup) -> str:
    """How a cell's ± reads: the half-width of its 95% interval, over seeds or (one seed) over test records."""
    esc = markup.escape
    one_seed = (
        "one seed: mean only"
        if table == "III"
        else f"one seed: the run's percentile bootstrap interval over the test records (B = {n_resamples}), "
        "where its predictions were saved, else mean only"
    )
    return (
        esc("Mean ")
        + markup.pm
        + esc(
            " half-width of its 95% interval: with two or more seeds that ended ok, Student's t interval of the "
            f"mean over seeds; {one_seed} (the CSV holds low, high, std, n and the method). [k/n]: only k of "
            "the n expected seeds are in the mean (the others failed or are missing). "
        )
        + markup.missing
        + esc(": no run; failed: every run of the cell failed. (paper x): the number printed in the paper.")
    )


def _comparison_text(markup: Markup) -> str:
    return (
        markup.up
        + " / "
        + markup.down
        + markup.escape(
            ": above / below ERM at the same noise level (paired bootstrap over the same test records, seed paired "
            "with seed, Holm-adjusted p < 0.05 across every comparison with ERM in this table; each difference "
            "with its interval is in report.md). "
        )
    )


def _protocol(frame: pd.DataFrame) -> str:
    """The protocol of a table's Best cells (``best`` when it has none)."""
    found = [p for p in frame.get("protocol", pd.Series(dtype=object)) if p]
    return found[0] if found else "best"


def _caption(
    table: str, variance_epochs: dict, markup: Markup, n_resamples: int = N_RESAMPLES, protocol: str = "best"
) -> str:
    esc = markup.escape
    common = _interval_text(table, n_resamples, markup)
    marks = (
        esc("Best and second best per column in ")
        + markup.bold.format("bold")
        + " / "
        + markup.underline.format("underlined")
    )
    val = protocol == "at_best_val"
    title_note = " (model selection on validation)" if table.endswith(VAL_SUFFIX) else ""
    protocol = esc(f"Protocol: {PROTOCOLS[protocol]}. ") if table.removesuffix(VAL_SUFFIX) in ("I", "II") else ""
    best = "test AUC at the epoch of lowest validation loss" if val else "highest test AUC over the epochs"
    auc = (
        esc(f"Best = {best}, Last = test AUC at the last epoch, Diff. = Best ")
        + markup.minus
        + esc(" Last (per seed, then averaged). ")
        + marks
        + esc(" (Diff. not marked). ")
    )
    extra = esc(
        "an additional metric of the datasets below (their dataset.report_metrics; their primary metric is "
        "in Table I or II)"
    )
    if table in ("I", "I" + VAL_SUFFIX):
        title = f"Table I{title_note}. "
        return esc(title + "Test AUC (%) on the AUC datasets. ") + protocol + auc + _comparison_text(markup) + common
    if table in ("II", "II" + VAL_SUFFIX):
        what = "Test macro-F1 at the epoch of lowest validation loss" if val else "Best test macro-F1"
        title = f"Table II{title_note}. "
        return (
            esc(f"{title}{what} (fraction) on the macro-F1 datasets. ")
            + protocol
            + marks
            + ". "
            + _comparison_text(markup)
            + common
        )
    if table == EXTRA_TABLE_PREFIX + "auc":
        return esc("Test AUC (%), ") + extra + ": " + auc + common
    if table.startswith(EXTRA_TABLE_PREFIX):
        metric = table[len(EXTRA_TABLE_PREFIX) :]
        return esc(f"Best test {_METRIC_NAMES.get(metric, metric)} (fraction), ") + extra + ". " + marks + ". " + common
    n_text = "; ".join(f"{d}: n = {', '.join(map(str, v))}" for d, v in variance_epochs.items())
    return (
        esc(
            "Table III. Variance (Eq. 8, population variance over the first n epochs) of the min-max normalised "
            "per-epoch test metric: AUC for AUC datasets, macro-F1 for macro-F1 datasets. Lowest per column in "
        )
        + markup.bold.format("bold")
        + ". "
        + (esc(f"({n_text}.) ") if n_text else "")
        + common
    )


def _noise_label(noise: float) -> str:
    return f"{noise * 100:g}%"


# ---- Tables as Markdown and LaTeX ----------------------------------------------------------------------------------
def _groups(layout: str, frame: pd.DataFrame) -> list[list[pd.DataFrame]]:
    """The tabulars of a table, each a list of blocks (one per dataset; Table III: one block). Table II's datasets
    with the same noise levels share one tabular, as in the paper."""
    if layout == "III":
        return [[frame]] if len(frame) else []
    blocks = [block for _, block in frame.groupby("dataset", sort=False)]
    keys = [list(zip(b["noise"], b["quantity"])) if layout == "II" else i for i, b in enumerate(blocks)]
    return [[b for _, b in run] for _, run in itertools.groupby(zip(keys, blocks), key=lambda kb: kb[0])]


def _body(layout: str, blocks: list[pd.DataFrame], markup: Markup) -> tuple[list[tuple], list[list[str]]]:
    """A tabular's columns ``(dataset, noise, quantity)`` and its rows of text: the lead cells (Table II: the dataset
    on a block's first row, then the row's label), then one cell per column."""
    body = []
    for block in blocks:  # Table II's blocks share their noise levels, not their dataset
        columns = list(dict.fromkeys(zip(block["dataset"], block["noise"], block["quantity"])))
        texts = {
            (s, d, n, q): cell_text(r, markup)
            for s, d, n, q, r in zip(
                block["_setting"], block["dataset"], block["noise"], block["quantity"], block.to_dict("records")
            )
        }
        for i, setting in enumerate(dict.fromkeys(block["_setting"])):
            lead = [markup.escape(block["_label"].iloc[0]) if i == 0 else ""] if layout == "II" else []
            lead.append(markup.label(setting))
            body.append(lead + [texts[(setting, *c)] for c in columns])
    return list(dict.fromkeys(zip(blocks[0]["dataset"], blocks[0]["noise"], blocks[0]["quantity"]))), body


def _markdown_tabular(layout: str, blocks: list[pd.DataFrame], names: dict) -> str:
    columns, body = _body(layout, blocks, MARKDOWN)
    lead = ["Dataset", "Regularization"] if layout == "II" else ["Regularization"]
    heads = [
        f"{_noise_label(n)} {_QUANTITY_LABELS[q]}"
        if layout == "I"
        else _noise_label(n)
        if layout == "II"
        else f"{names[d]} {_noise_label(n)}"
        for d, n, q in columns
    ]
    frame = pd.DataFrame([[x.replace("|", r"\|") for x in row] for row in body], columns=lead + heads)
    return markdown_table(frame, len(lead))


def _latex_tabular(layout: str, blocks: list[pd.DataFrame], names: dict) -> str:
    columns, body = _body(layout, blocks, LATEX)
    esc = latex_escape
    if layout == "II":  # one header row, the dataset on the first row of its block
        heads = ["Dataset", "Regularization"] + [esc(_noise_label(n)) for _, n, _ in columns]
        styler = pd.DataFrame(body, columns=heads).style.hide(axis="index")
    else:  # the noise levels (Table I) or the datasets (Table III) span the columns below them
        top = [
            (esc(_noise_label(n)), _QUANTITY_LABELS[q]) if layout == "I" else (esc(names[d]), esc(_noise_label(n)))
            for d, n, q in columns
        ]
        corner = esc(names[columns[0][0]]) if layout == "I" else None
        frame = pd.DataFrame(
            [row[1:] for row in body],
            index=[row[0] for row in body],
            columns=pd.MultiIndex.from_tuples(top, names=[corner, "Regularization"]),
        )
        styler = frame.style
    lead = 2 if layout == "II" else 1
    return styler.to_latex(column_format="l" * lead + "c" * len(columns), hrules=True, multicol_align="c")


def _title(table: str) -> tuple[str, str]:
    """A table's title and its layout (``I``, ``II`` or ``III``)."""
    if table.startswith(EXTRA_TABLE_PREFIX):
        metric = table[len(EXTRA_TABLE_PREFIX) :]
        return f"Table {_METRIC_NAMES.get(metric, metric)}", "I" if metric == "auc" else "II"
    if table.endswith(VAL_SUFFIX):
        layout = table[: -len(VAL_SUFFIX)]
        return f"Table {layout} (model selection on validation)", layout
    return f"Table {table}", table


def render_markdown(table: str, frame: pd.DataFrame, variance_epochs: dict, n_resamples: int = N_RESAMPLES) -> str:
    """Table ``I``, ``II`` or ``III`` (or ``extra_<metric>``, laid out as I or II) as Markdown: a section with its
    caption and a table per tabular (Table I: one per dataset, under its name)."""
    names = dict(zip(frame["dataset"], frame["_label"]))
    title, layout = _title(table)
    epochs = {names.get(d, d): v for d, v in variance_epochs.items()}
    out = [f"## {title}", "", _caption(table, epochs, MARKDOWN, n_resamples, _protocol(frame)), ""]
    groups = _groups(layout, frame)
    for group in groups:
        out += [f"### {names[group[0]['dataset'].iloc[0]]}", ""] if layout == "I" else []
        out += [_markdown_tabular(layout, group, names), ""] + _published_note(pd.concat(group), MARKDOWN)
    return "\n".join(out if groups else out + ["(no runs for this table)", ""])


def render_latex(table: str, frame: pd.DataFrame, variance_epochs: dict, n_resamples: int = N_RESAMPLES) -> str:
    """The same table as LaTeX: one ``table*`` float (booktabs) holding a tabular per group of :func:`_groups`."""
    names = dict(zip(frame["dataset"], frame["_label"]))
    title, layout = _title(table)
    epochs = {names.get(d, d): v for d, v in variance_epochs.items()}
    caption = _caption(table, epochs, LATEX, n_resamples, _protocol(frame))
    label = _title(table)[0].split(" ", 1)[1].split(" ")[0].lower().replace("-", "_") + (
        VAL_SUFFIX if table.endswith(VAL_SUFFIX) else ""
    )
    out = [
        r"% generated by flowmixup.report.tables; needs \usepackage{booktabs} (and amssymb for the triangles)",
        r"\begin{table*}[t]",
        r"\centering",
        r"\scriptsize",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:{label}}}",
    ]
    groups = _groups(layout, frame)
    for group in groups:
        out += [_latex_tabular(layout, group, names)] + _published_note(pd.concat(group), LATEX)
    return "\n".join(out + ([] if groups else ["(no runs for this table)"]) + [r"\end{table*}", ""])


@dataclass(frozen=True)
class Table:
    """One table of a report: its cells (the tidy frame of its CSV) and its Markdown and LaTeX text."""

    key: str  # I, II, III, I_val, II_val or extra_<metric>
    cells: pd.DataFrame  # TIDY_COLUMNS (and published / published_source where any cell has one)
    markdown: str
    latex: str

    @property
    def stem(self) -> str:
        """The name of its files: table1, table2, table3, table1_val, table2_val, table_<metric>."""
        if self.key.startswith(EXTRA_TABLE_PREFIX):
            return "table_" + self.key[len(EXTRA_TABLE_PREFIX) :]
        base = self.key.removesuffix(VAL_SUFFIX)
        return {"I": "table1", "II": "table2", "III": "table3"}[base] + self.key[len(base) :]


def render_tables(
    frames: dict[str, pd.DataFrame], variance_epochs: dict[str, Any], n_resamples: int = N_RESAMPLES
) -> dict[str, Table]:
    """Every tidy frame of :func:`tidy_tables` as a :class:`Table` (Tables I and II, their validation-selected
    versions, Table III, then the extra ones)."""
    vals = [t for t in ("I" + VAL_SUFFIX, "II" + VAL_SUFFIX) if t in frames]
    order = ["I", "II"] + vals + ["III"] + [t for t in frames if t.startswith(EXTRA_TABLE_PREFIX)]
    tables = {}
    for key in order:
        frame = frames[key]
        shown = frame["published"].notna().any()  # the columns of other papers' numbers, where there are any
        cells = frame[TIDY_COLUMNS + (["published", "published_source"] if shown else [])]
        tables[key] = Table(
            key,
            cells,
            render_markdown(key, frame, variance_epochs, n_resamples),
            render_latex(key, frame, variance_epochs, n_resamples),
        )
    return tables
