"""The numbers a report prints beside a sweep's own: the paper's Tables I-III (``paper_tables.csv``, how they were
read: ``PAPER_TABLES.md``) and other papers' published baselines (``published_baselines.csv``), both package data
beside this module; and the paper's rows, in the order of ``paper_tables.csv``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pandas as pd

from .runs import Setting, noise_key


def _packaged_csv(path: str | os.PathLike | None, name: str, columns: str, dtype: dict) -> pd.DataFrame:
    """``path``, else the packaged ``name``, as a frame; ValueError when one of ``columns`` is missing."""
    with (resources.files("flowmixup.report") / name if path is None else Path(path)).open("rb") as fh:
        frame = pd.read_csv(fh, dtype=dtype)
    if missing := set(columns.split()) - set(frame):
        raise ValueError(f"{path or name}: missing columns {sorted(missing)}")
    return frame


def load_paper_tables(paper_csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's numbers (the packaged ``paper_tables.csv`` unless given), with ``setting`` and ``noise_key``."""
    frame = _packaged_csv(
        paper_csv,
        "paper_tables.csv",
        "table dataset regularizer alpha keep_original noise metric value",
        {"keep_original": "string", "alpha": "string"},
    )
    frame["setting"] = [Setting.of(*x) for x in zip(frame["regularizer"], frame["alpha"], frame["keep_original"])]
    frame["noise_key"] = frame["noise"].map(noise_key)
    return frame


def load_published(published_csv: str | os.PathLike | None = None) -> dict:
    """Other papers' numbers shown beside a cell (the packaged ``published_baselines.csv`` unless given):
    ``(dataset, metric, regularizer, noise, quantity) -> (value as a fraction, source)``."""
    frame = _packaged_csv(
        published_csv,
        "published_baselines.csv",
        "dataset metric regularizer noise quantity value source",
        dict.fromkeys(["dataset", "metric", "regularizer", "quantity"], str),
    )
    return {
        (r.dataset, r.metric, r.regularizer, noise_key(r.noise), r.quantity): (float(r.value), str(r.source))
        for r in frame.itertuples(index=False)
    }


def paper_rows(table: str | None = None) -> tuple[Setting, ...]:
    """The paper's rows (of ``table``: ``I``, ``II`` or ``III``; default all), in the order of paper_tables.csv."""
    paper = load_paper_tables()
    return tuple(dict.fromkeys(paper["setting"] if table is None else paper.loc[paper["table"] == table, "setting"]))


PAPER_SETTINGS = paper_rows("I")  # the paper's six rows, in its order
TABLE3_SETTINGS = paper_rows("III")  # Table III's two rows
