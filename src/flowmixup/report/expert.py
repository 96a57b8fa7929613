"""The expert-label table: runs trained with ``dataset.expert_labels`` (ChestX-ray14) scored against radiologists.

:func:`expert_tables` turns the used runs of :func:`~flowmixup.report.runs.prepare_runs` into one table (files
``table_expert.md``, ``.csv``, ``.tex``; a section of ``report.md``) with, per dataset, row and noise level, the mean
± sample std over seeds of:

- ``expert_auc`` Best and Last: ``test_expert_auc`` in percent, the macro-AUC on the expert-labelled test images
  against the expert majority, over the classes with enough expert positives (``expert_min_positives`` of the runs'
  summaries; :mod:`flowmixup.training.expert`);
- ``expert_macro_f1`` Best: the same images' macro-F1 against the experts;
- ``nih_auc`` Best: the usual ``test_auc`` of the whole test split against its NIH (NLP-mined) labels, for
  comparison.

Best follows the report's ``best_from`` (the best epoch, or the best-validation epoch). Runs without expert metrics
are not in it; a sweep without any such run has no expert table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .output import markdown_table
from .runs import DDOF, Setting, dataset_label, latex_escape

KEY = "expert"
# quantity -> (metric, best or last, heading, percent)
QUANTITIES = {
    "expert_auc_best": ("expert_auc", "best", "Expert AUC Best", True),
    "expert_auc_last": ("expert_auc", "last", "Expert AUC Last", True),
    "expert_macro_f1_best": ("expert_macro_f1", "best", "Expert F1 Best", False),
    "nih_auc_best": ("auc", "best", "NIH-label AUC Best", True),
}
COLUMNS = ["table", "dataset", "setting", "noise", "quantity", "mean", "std", "ddof", "n_seeds", "text"]


@dataclass(frozen=True)
class ExpertTable:
    """The expert-label table, shaped as the report's other tables (``cells``, ``markdown``, ``latex``, ``stem``)."""

    cells: pd.DataFrame
    markdown: str
    latex: str
    key: str = KEY

    @property
    def stem(self) -> str:
        return "table_expert"


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(runs.get(name, pd.Series(np.nan, runs.index)), errors="coerce").astype(float)


def _values(runs: pd.DataFrame, quantity: str, best_from: str) -> np.ndarray:
    metric, which, _, percent = QUANTITIES[quantity]
    if which == "last":
        name = f"last_test_{metric}"
    else:
        name = f"best_test_{metric}" if best_from == "best" else f"test_{metric}_at_best_val"
    v = _column(runs, name) * (100.0 if percent else 1.0)
    return v[np.isfinite(v)].to_numpy()


def _text(values: np.ndarray, percent: bool) -> tuple[float, float, str]:
    if not len(values):
        return math.nan, math.nan, "—"
    d = 1 if percent else 4
    mean = float(values.mean())
    std = float(values.std(ddof=DDOF)) if len(values) > DDOF else math.nan
    return mean, std, f"{mean:.{d}f}" + (f" ± {std:.{d}f}" if len(values) > DDOF else "")


def _min_positives(runs: pd.DataFrame) -> str:
    values = sorted({int(v) for v in _column(runs, "expert_min_positives").dropna()})
    return "/".join(map(str, values)) or "?"


def _dataset_block(sub: pd.DataFrame, dataset: str, name: str, best_from: str) -> tuple[list[dict], str, str]:
    """One dataset's cells (tidy records), its Markdown section and its LaTeX tabular."""
    settings = sorted(set(sub["_setting"]), key=Setting.sort_key)
    heads = [(n, q) for n in sorted(set(sub["_noise"])) for q in QUANTITIES]
    records, body = [], []
    for setting in settings:
        line = [setting.label]
        for noise, quantity in heads:
            cell = sub[(sub["_setting"] == setting) & (sub["_noise"] == noise)]
            values = _values(cell, quantity, best_from)
            mean, std, text = _text(values, QUANTITIES[quantity][3])
            records.append(
                dict(zip(COLUMNS, (KEY, dataset, setting.label, noise, quantity, mean, std, DDOF, len(values), text)))
            )
            line.append(text)
        body.append(line)
    columns = ["Regularization"] + [f"{n * 100:g}% {QUANTITIES[q][2]}" for n, q in heads]
    md = "\n".join([f"### {name}", "", markdown_table(pd.DataFrame(body, columns=columns), 1), ""])
    frame = pd.DataFrame(
        [[latex_escape(c).replace("±", r"$\pm$").replace("α", r"$\alpha$") for c in row] for row in body],
        columns=[latex_escape(c) for c in columns],
    )
    tex = f"% {latex_escape(name)}\n" + frame.style.hide(axis="index").to_latex(
        column_format="l" + "c" * len(heads), hrules=True
    )
    return records, md, tex


def _caption(have: pd.DataFrame, best_from: str) -> str:
    return (
        "Test results against radiologists' labels: the ChestX-ray14 test images of Google's expert-label release "
        "(Nabulsi et al., Scientific Reports 2021; the majority of three readers), scored every epoch beside the "
        "test split (dataset.expert_labels). Expert AUC: macro-AUC (%) over the classes with at least "
        f"{_min_positives(have)} expert positives among the evaluated images (the per-class values and the mean "
        "over every class are in each run's expert_per_class.csv and summary.json); Expert F1: macro-F1 over the "
        "same classes; NIH-label AUC: the whole test split against its NLP-mined labels, for comparison. "
        f"Best: {'the best epoch' if best_from == 'best' else 'at the best validation epoch'}; Last: the last epoch. "
        "Mean ± sample std (ddof = 1) over the seeds; — no run."
    )


def expert_tables(runs: pd.DataFrame, best_from: str = "best") -> dict[str, ExpertTable]:
    """``{"expert": table}`` for the used runs (``prepare_runs(...).used``) that have expert metrics, else ``{}``."""
    if "last_test_expert_auc" not in runs.columns or not len(runs):
        return {}
    have = runs[(runs["status"] == "ok") & _column(runs, "last_test_expert_auc").notna()]
    if have.empty:
        return {}
    labels = dict(zip(have["dataset"], have["config.dataset.label"])) if "config.dataset.label" in have.columns else {}
    labels = {k: v for k, v in labels.items() if isinstance(v, str)}
    records, md, tex = [], [], []
    for dataset in sorted(have["dataset"].unique()):
        name = dataset_label(dataset, labels)
        cells, section, tabular = _dataset_block(have[have["dataset"] == dataset], dataset, name, best_from)
        records += cells
        md.append(section)
        tex.append(tabular)
    caption = _caption(have, best_from)
    markdown = "\n".join(["## Table expert labels", "", caption, "", *md])
    latex = "\n".join(
        [
            r"% generated by flowmixup.report.expert; needs \usepackage{booktabs}",
            r"\begin{table*}[t]",
            r"\centering",
            r"\scriptsize",
            "\\caption{" + latex_escape(caption).replace("±", r"$\pm$").replace("—", "--") + "}",
            r"\label{tab:expert}",
            *tex,
            r"\end{table*}",
            "",
        ]
    )
    return {KEY: ExpertTable(pd.DataFrame.from_records(records, columns=COLUMNS), markdown, latex)}
