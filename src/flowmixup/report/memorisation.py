"""Best vs last epoch of every ok run, from its ``metrics.csv``: a model that memorises noisy labels peaks early and
then declines, so under label noise its best epoch moves away from the last one and the gap grows with the noise
rate. ``report.md`` holds the seed-averaged table, ``memorisation.csv`` its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .runs import read_csv_checked
from .tables import markdown_table

INTRO = (
    "Test value of the primary metric at its best epoch and at the last epoch, and best - last (mean over "
    "seeds; the best epoch is a mean when seeds differ). Under label noise a model that memorises the "
    "corrupted labels peaks early and then declines: the best epoch moves away from the last one and the "
    "gap grows with the noise rate."
)


@dataclass(frozen=True)
class Memorisation:
    """The section of ``report.md`` and the frame of ``memorisation.csv`` (one row per dataset, row, noise)."""

    markdown: str
    frame: pd.DataFrame


def _per_run(ok: pd.DataFrame) -> pd.DataFrame:
    """Per ok run with a readable test curve of its primary metric: best, last, best epoch, epochs."""
    rows = []
    for run in ok.to_dict("records"):
        column = f"test_{run['_metric']}"
        frame = read_csv_checked(Path(run["run_dir"]) / "metrics.csv", (column,))[0] if run["_metric"] else None
        curve = None if frame is None else pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        if curve is not None and np.isfinite(curve).any():
            rows.append(
                {
                    "dataset": run["dataset"],
                    "setting": run["_setting"].label,
                    "order": run["_setting"].sort_key(),
                    "noise": run["_noise"],
                    "seed": run.get("seed"),
                    "metric": run["_metric"],
                    "best": float(np.nanmax(curve)),
                    "last": float(curve[-1]),
                    "best_epoch": int(np.nanargmax(curve)) + 1,
                    "epochs": len(curve),
                }
            )
    return pd.DataFrame(rows)


def _dataset_table(block: pd.DataFrame) -> pd.DataFrame:
    """One dataset's rows x (noise: best (epoch), last, diff.) as text; ``-`` where a row lacks a noise level."""
    noises = sorted(block["noise"].unique())
    heads = [h for n in noises for h in (f"{n:.0%} best (epoch)", f"{n:.0%} last", f"{n:.0%} diff.")]
    rows = []
    for (_, label), sub in block.groupby(["order", "setting"], sort=True):
        by_noise = sub.set_index("noise")
        cells = [
            x
            for n in noises
            for x in (
                [
                    f"{by_noise.at[n, 'best']:.4f} ({by_noise.at[n, 'best_epoch']:.0f}/{by_noise.at[n, 'epochs']:.0f})",
                    f"{by_noise.at[n, 'last']:.4f}",
                    f"{by_noise.at[n, 'diff']:.4f}",
                ]
                if n in by_noise.index
                else ["-", "-", "-"]
            )
        ]
        rows.append([label.replace("|", r"\|")] + cells)
    return pd.DataFrame(rows, columns=["Regularization"] + heads)


def memorisation(ok: pd.DataFrame) -> Memorisation | None:
    """The best-vs-last section for the ok runs of :func:`~flowmixup.report.runs.prepare_runs`, seed-averaged per
    (dataset, row, noise); None when no run has a test curve."""
    per_run = _per_run(ok)
    if per_run.empty:
        return None
    agg = (
        per_run.assign(diff=per_run["best"] - per_run["last"])
        .groupby(["dataset", "order", "setting", "noise", "metric"], sort=True)
        .agg(
            best=("best", "mean"),
            last=("last", "mean"),
            diff=("diff", "mean"),
            best_epoch=("best_epoch", "mean"),
            epochs=("epochs", "max"),
            seeds=("seed", "count"),
        )
        .reset_index()
    )
    lines = ["## Memorisation: best vs last epoch", "", INTRO, ""]
    for dataset, block in agg.groupby("dataset", sort=True):
        lines += [f"### {dataset} (test {block['metric'].iloc[0]})", "", markdown_table(_dataset_table(block)), ""]
    return Memorisation("\n".join(lines), agg.drop(columns=["order"]))
