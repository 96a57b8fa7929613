"""The report's uncertainty: each cell's 95% interval and the paired comparisons of rows, from the runs' predictions.

**A run's interval** (one seed in a cell): the percentile bootstrap interval of its test metric over the test
records (:func:`flowmixup.stats.bootstrap_metric`, B = 1000 by default), computed from the prediction file of the
epoch the table reports: ``predictions_test_best.npz`` (the epoch of the best test value of the primary metric, the
paper's protocol), ``predictions_test_at_best_val.npz`` (the epoch of lowest validation loss) or
``predictions_test_last.npz``. A run's ``summary.json`` holds the same intervals under ``bootstrap``; a run without
them (older runs) gets them computed here. With the paper's protocol the interval is that of the metric at the
selected epoch: it does not undo the selection on the test set (which is what the validation protocol shows).

**A comparison** (:func:`comparisons`): per table, dataset, noise level and row, Δ = row - ERM (and Flow-Mixup -
Mixup / Manifold Mixup, the paper's claim) on the same test records: seed s of the row is paired with seed s of the
baseline, each run's metric is recomputed on the same bootstrap samples of the records, and with several pairs the
pairs are resampled too (:func:`flowmixup.stats.paired_difference`). Holm's correction runs over each family: every
Δ against ERM of one table and protocol, and every Flow-Mixup comparison of one table and protocol.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..stats import (
    CONFIDENCE,
    N_RESAMPLES,
    SEED,
    bootstrap_metric,
    holm,
    paired_difference,
    percentile_interval,
    seed_interval,
)
from ..training.metrics import score
from .output import markdown_table
from .runs import METRICS_COLUMNS, Setting, is_missing

PREDICTION_FILES = {
    "best": "predictions_test_best.npz",
    "at_best_val": "predictions_test_at_best_val.npz",
    "last": "predictions_test_last.npz",
}
PROTOCOLS = {
    "best": "the paper's protocol: the best test value over the epochs (selected on the test set)",
    "at_best_val": "model selection on validation: the test value at the epoch of lowest validation loss",
}
UP, DOWN = "▲", "▼"
FLOW_BASELINES = ("mixup", "manifold_mixup")  # what Flow-Mixup is compared with besides ERM (the paper's claim)
COMPARISON_COLUMNS = [
    "table",
    "protocol",
    "dataset",
    "primary_metric",
    "unit",
    "noise",
    "family",
    "setting",
    "baseline",
    "n_pairs",
    "seeds",
    "delta",
    "low",
    "high",
    "p_value",
    "p_holm",
    "significant",
    "direction",
    "status",
]


@dataclass(frozen=True)
class UncertaintyOptions:
    """How intervals and tests are computed: bootstrap samples, the interval's level, the samples' seed."""

    n_resamples: int = N_RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = SEED

    def __post_init__(self) -> None:
        if int(self.n_resamples) < 10:
            raise ValueError(f"n_resamples must be an integer >= 10, got {self.n_resamples!r}")
        if not 0.5 <= float(self.confidence) < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence!r}")

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a run's stored ``bootstrap`` was computed with these settings."""
        return (
            record.get("n_resamples") == self.n_resamples
            and record.get("seed") == self.seed
            and math.isclose(float(record.get("confidence", -1)), self.confidence)
        )


@dataclass(frozen=True)
class Scored:
    """A run's metric on one prediction file: on all test records, and on each bootstrap sample of them."""

    point: float
    resampled: np.ndarray
    records: str  # a fingerprint of the test labels and class names: runs are paired only on the same records


def _threshold(run: Mapping[str, Any]) -> float:
    value = run.get("config.metrics.threshold")
    return 0.5 if is_missing(value) else float(value)


@dataclass
class Resamples:
    """Every run's bootstrap values, computed at most once per (run, prediction file, metric)."""

    options: UncertaintyOptions = field(default_factory=UncertaintyOptions)
    _cache: dict = field(default_factory=dict)

    def scored(self, run: Mapping[str, Any], which: str, metric: str) -> Scored | None:
        """``run``'s metric on its ``which`` predictions (None when the file is absent or unreadable, or when
        ``which`` is ``best`` and ``metric`` is not the run's primary metric: that file is the primary metric's
        best epoch)."""
        if which == "best" and run.get("_metric", metric) != metric:
            return None
        key = (str(run.get("run_dir")), which, metric)
        if key not in self._cache:
            self._cache[key] = self._score(Path(str(run.get("run_dir"))) / PREDICTION_FILES[which], metric, run)
        return self._cache[key]

    def _score(self, path: Path, metric: str, run: Mapping[str, Any]) -> Scored | None:
        try:
            with np.load(path) as npz:
                y, p, names = npz["y_true"], npz["y_score"], [str(c) for c in npz["class_names"]]
        except (OSError, KeyError, ValueError):
            return None
        threshold = _threshold(run)
        point = getattr(score(y, p, names, threshold), metric)
        values = bootstrap_metric(
            y, p, metric, n_resamples=self.options.n_resamples, seed=self.options.seed, threshold=threshold
        )
        digest = hashlib.sha1(np.ascontiguousarray(y >= 0.5).tobytes() + "\0".join(names).encode()).hexdigest()
        return Scored(float(point), values, f"{y.shape}:{digest}")

    def run_interval(self, run: Mapping[str, Any], which: str, metric: str) -> tuple[float, float] | None:
        """The run's own interval of ``metric`` at ``which``: its summary's ``bootstrap`` when computed with these
        options, else from its predictions; None when neither exists."""
        stored = run.get("bootstrap")
        if isinstance(stored, dict) and self.options.matches(stored):
            pair = (stored.get(f"test_{metric}") or {}).get(which)
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and None not in pair:
                return float(pair[0]), float(pair[1])
        scored = self.scored(run, which, metric)
        if scored is None:
            return None
        low, high = percentile_interval(scored.resampled, self.options.confidence)
        return None if math.isnan(low) else (low, high)


def cell_interval(
    resamples: Resamples | None,
    ok: pd.DataFrame,
    values: np.ndarray,
    quantity: str,
    metric: str,
    protocol: str,
    scale: float = 1.0,
) -> tuple[float, float, str]:
    """A cell's interval, in the unit of ``values`` (the run's bootstrap interval times ``scale``), and how it was
    made: Student's t over the seeds with two or more, else the single run's bootstrap interval at the epoch the
    cell reports (``best``: the ``protocol``'s epoch; ``last``), else none (NaN, NaN, "")."""
    if len(values) >= 2:
        low, high = seed_interval(values, resamples.options.confidence if resamples else CONFIDENCE)
        return low, high, "t over seeds"
    if resamples is not None and len(values) == 1 and len(ok) == 1 and quantity in ("best", "last"):
        which = protocol if quantity == "best" else "last"
        found = resamples.run_interval(ok.iloc[0].to_dict(), which, metric)
        if found is not None:
            return found[0] * scale, found[1] * scale, "bootstrap over test records"
    return math.nan, math.nan, ""


# ---- Paired comparisons --------------------------------------------------------------------------------------------
def _pairs_of(runs: pd.DataFrame, setting, baseline, noise: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    here = runs[runs["_noise"] == noise]
    a = here[here["_setting"] == setting].drop_duplicates("_seed").set_index("_seed")
    b = here[here["_setting"] == baseline].drop_duplicates("_seed").set_index("_seed")
    seeds = sorted(set(a.index) & set(b.index), key=str)
    return a.loc[seeds], b.loc[seeds]


def _compare(
    resamples: Resamples, runs: pd.DataFrame, setting, baseline, noise: float, metric: str, which: str
) -> dict[str, Any]:
    a, b = _pairs_of(runs, setting, baseline, noise)
    pairs = []
    for seed in a.index:
        sa = resamples.scored({**a.loc[seed].to_dict(), "_seed": seed}, which, metric)
        sb = resamples.scored({**b.loc[seed].to_dict(), "_seed": seed}, which, metric)
        if sa is not None and sb is not None and sa.records == sb.records:
            pairs.append((seed, sa, sb))
    if not pairs:
        why = "no seed of both with predictions" if len(a) else "no seed run by both"
        return {"n_pairs": 0, "seeds": "", "status": why}
    diff = paired_difference(
        [p[1].point for p in pairs],
        [p[2].point for p in pairs],
        [p[1].resampled for p in pairs],
        [p[2].resampled for p in pairs],
        confidence=resamples.options.confidence,
        seed=resamples.options.seed,
    )
    scale = 100.0 if metric == "auc" else 1.0
    return {
        "n_pairs": diff.n_pairs,
        "seeds": ",".join(str(p[0]) for p in pairs),
        "delta": diff.estimate * scale,
        "low": diff.low * scale,
        "high": diff.high * scale,
        "p_value": diff.p_value,
        "status": "ok",
    }


def _baselines(settings: list, setting) -> list[tuple[str, Any]]:
    """The (family, baseline) pairs a row is compared with: ERM (the plain one, or the one with the same extra
    settings); for Flow-Mixup also every Mixup and Manifold Mixup row."""
    alike = [s for s in settings if s.extra == setting.extra]
    out = []
    if setting.regularizer != "erm":
        erm = [s for s in alike if s.regularizer == "erm"]
        out += [("vs ERM", erm[0])] if erm else []
    if setting.regularizer == "flowmixup":
        out += [("Flow-Mixup vs mixing", s) for s in alike if s.regularizer in FLOW_BASELINES]
    return out


def comparisons(
    resamples: Resamples, ok: pd.DataFrame, metric_of: Mapping[str, str], protocols: tuple[str, ...]
) -> pd.DataFrame:
    """Every paired comparison of the ok runs (:data:`COMPARISON_COLUMNS`), Holm-adjusted per family: per table
    (I for AUC datasets, II for macro-F1 ones), protocol and kind (vs ERM; Flow-Mixup vs Mixup / Manifold Mixup)."""
    rows = []
    for dataset, metric in metric_of.items():
        if metric not in METRICS_COLUMNS:
            continue
        runs = ok[ok["dataset"] == dataset]
        settings = sorted(set(runs["_setting"]), key=Setting.sort_key)
        for protocol in protocols:
            for noise in sorted(set(runs["_noise"])):
                for setting in settings:
                    for family, baseline in _baselines(settings, setting):
                        rows.append(
                            {
                                "table": "I" if metric == "auc" else "II",
                                "protocol": protocol,
                                "dataset": dataset,
                                "primary_metric": metric,
                                "unit": "auc_points" if metric == "auc" else "macro_f1",
                                "noise": noise,
                                "family": family,
                                "setting": setting,
                                "baseline": baseline,
                                **_compare(resamples, runs, setting, baseline, noise, metric, protocol),
                            }
                        )
    frame = pd.DataFrame.from_records(rows, columns=COMPARISON_COLUMNS)
    alpha = 1.0 - resamples.options.confidence
    for _, family in frame.groupby(["table", "protocol", "family"], sort=False):
        frame.loc[family.index, "p_holm"] = holm(family["p_value"].astype(float).to_numpy())
    p_holm = frame["p_holm"].astype(float)
    frame["significant"] = p_holm.lt(alpha)
    delta = frame["delta"].astype(float)
    frame["direction"] = np.where(frame["significant"], np.where(delta > 0, UP, DOWN), "")
    return frame


# ---- The comparisons as text ---------------------------------------------------------------------------------------
def _delta_text(row: Mapping[str, Any], decimals: int) -> str:
    if row["status"] != "ok":
        return "—"
    text = f"{row['delta']:+.{decimals}f} [{row['low']:+.{decimals}f}, {row['high']:+.{decimals}f}]"
    return text + f" p={row['p_holm']:.3f}" + (f" {row['direction']}" if row["direction"] else "")


def comparisons_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparisons as the CSV holds them: the rows and baselines by their labels."""
    return frame.assign(setting=[s.label for s in frame["setting"]], baseline=[s.label for s in frame["baseline"]])


def comparisons_markdown(frame: pd.DataFrame, labels: Mapping[str, str], confidence: float = CONFIDENCE) -> str:
    """report.md's section: per table, protocol and family, Δ [interval] and the Holm-adjusted p per noise level."""
    if frame.empty:
        return ""
    level = f"{confidence * 100:g}%"
    shown = frame.groupby(["table", "protocol", "family", "dataset"], sort=False)["status"].transform(
        lambda st: (st == "ok").any()
    )
    without = sorted(set(frame.loc[~shown, "dataset"]))
    frame = frame[shown]
    out = [
        "## Paired comparisons",
        "",
        f"Δ = row − baseline on the same test records (AUC in points of %, macro-F1 as a fraction), its {level} "
        "bootstrap interval and the Holm-adjusted two-sided p-value (from the bootstrap standard error). Seed s of "
        "the row is paired with seed s of the baseline; with several pairs the pairs are resampled as well as the "
        "records. Holm's correction runs over each table below (one table, protocol and family). ▲ / ▼: "
        f"significant after Holm (p < {1 - confidence:g}); —: no pair of runs with predictions. Every comparison "
        "is also in `comparisons.csv`, and those with ERM are drawn in `figures/forest_<dataset>.png`.",
        "",
    ]
    if without:
        out += [f"No run with saved predictions (no comparison): {', '.join(labels.get(d, d) for d in without)}.", ""]
    for (table, protocol, family), part in frame.groupby(["table", "protocol", "family"], sort=False):
        decimals = 2 if part["primary_metric"].iloc[0] == "auc" else 3
        out += [f"### Table {table}, {family}: {PROTOCOLS[protocol]}", ""]
        noises = sorted(set(part["noise"]))
        rows = []
        for (dataset, setting, baseline), cells in part.groupby(["dataset", "setting", "baseline"], sort=False):
            by_noise = {n: _delta_text(r, decimals) for n, r in zip(cells["noise"], cells.to_dict("records"))}
            pairs = int(cells["n_pairs"].max())
            rows.append(
                [labels.get(dataset, dataset), setting.label, baseline.label, str(pairs)]
                + [by_noise.get(n, "") for n in noises]
            )
        heads = ["Dataset", "Row", "Baseline", "pairs"] + [f"{n * 100:g}%" for n in noises]
        out += [markdown_table(pd.DataFrame(rows, columns=heads), 4), ""]
    return "\n".join(out)
