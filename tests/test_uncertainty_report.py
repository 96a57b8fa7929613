"""The report's intervals and paired comparisons on runs whose summaries and prediction files agree, as a training
run leaves them: each number checked against flowmixup.stats and scikit-learn computed here, independently of the
report's code path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from flowmixup import stats
from flowmixup.report.pipeline import ReportOptions, build_report, write_report
from flowmixup.report.runs import Setting
from flowmixup.report.uncertainty import UncertaintyOptions

CLASSES = ["a", "b", "c", "d"]
N_TEST = 200
FLOW = Setting("flowmixup", 3.0, False)
MIX = Setting("mixup", 1.0)
ERM = Setting("erm")


def test_labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((N_TEST, len(CLASSES))) < [0.4, 0.3, 0.2, 0.1]).astype(np.uint8)


test_labels.__test__ = False  # a helper, not a test


def macro_f1(y, p) -> float:
    with_pos = [c for c in range(y.shape[1]) if y[:, c].sum() > 0]
    return float(f1_score(y[:, with_pos], p[:, with_pos] >= 0.5, average="macro", zero_division=0))


def scores(y, sharp, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(np.clip(0.45 + sharp * (2.0 * y - 1) + rng.normal(0, 0.2, y.shape), 0, 1), 2).astype(np.float32)


def write_run(root: Path, setting: Setting, seed: int, probs: np.ndarray, y: np.ndarray, noise=0.4, extra=None):
    """A run folder whose summary's metrics are those of its prediction files (one file for every epoch)."""
    run = root / setting.regularizer / f"a{setting.alpha}_op{setting.keep_original}" / f"seed{seed}"
    run.mkdir(parents=True)
    for which in ("best", "at_best_val", "last"):
        np.savez(
            run / f"predictions_test_{which}.npz",
            y_true=y,
            y_score=probs,
            class_names=np.array(CLASSES),
            epoch=np.array(3),
        )
    value = macro_f1(y, probs)
    summary = {
        "status": "ok",
        "dataset": "synth_ecg",
        "primary_metric": "macro_f1",
        "regularizer": setting.regularizer,
        "alpha": setting.alpha,
        "keep_original": setting.keep_original,
        "noise": noise,
        "seed": seed,
        "epochs": 3,
        "best_test_macro_f1": value,
        "last_test_macro_f1": value,
        "test_macro_f1_at_best_val": value,
        "best_test_auc": 0.7,
        "last_test_auc": 0.7,
        "variance_macro_f1": 0.1,
        "variance_auc": 0.1,
        "variance_epochs": 3,
        **(extra or {}),
    }
    (run / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"epoch": [1, 2, 3], "test_macro_f1": [value] * 3, "test_auc": [0.7] * 3}).to_csv(
        run / "metrics.csv", index=False
    )
    return run


def row(frame: pd.DataFrame, **where) -> pd.Series:
    hit = frame
    for key, value in where.items():
        hit = hit[hit[key] == value]
    assert len(hit) == 1, hit
    return hit.iloc[0]


@pytest.fixture()
def sweep(tmp_path):
    """Three seeds each: Flow-Mixup clearly sharper than ERM, Mixup the very same predictions as ERM."""
    y = test_labels()
    for seed in range(3):
        erm = scores(y, 0.08, 100 + seed)
        write_run(tmp_path, ERM, seed, erm, y)
        write_run(tmp_path, MIX, seed, erm.copy(), y)
        write_run(tmp_path, FLOW, seed, scores(y, 0.3, 200 + seed), y)
    return tmp_path


def test_paired_comparisons_mark_a_real_difference_and_not_an_identical_model(sweep):
    report = build_report(sweep, ReportOptions(figures=True))
    comps = report.comparisons
    vs_erm = comps[(comps["family"] == "vs ERM") & (comps["protocol"] == "best")]
    flow = row(vs_erm, setting=FLOW)
    y = test_labels()
    expected = np.mean([macro_f1(y, scores(y, 0.3, 200 + s)) - macro_f1(y, scores(y, 0.08, 100 + s)) for s in range(3)])
    assert flow["delta"] == pytest.approx(expected, abs=1e-6) and flow["n_pairs"] == 3 and flow["seeds"] == "0,1,2"
    assert flow["low"] > 0 and flow["significant"] and flow["direction"] == "▲"
    mix = row(vs_erm, setting=MIX)
    assert (mix["delta"], mix["low"], mix["high"], mix["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert not mix["significant"] and mix["direction"] == ""
    # Holm over the table's family of comparisons with ERM: two of them here
    assert flow["p_holm"] == pytest.approx(stats.holm([flow["p_value"], mix["p_value"]])[0])
    # Flow-Mixup against Mixup is the paper's claim: its own family
    claim = row(comps[(comps["family"] == "Flow-Mixup vs mixing") & (comps["protocol"] == "best")], setting=FLOW)
    assert claim["baseline"] == MIX and claim["significant"]
    # the marks in Table II and its validation twin, the section of report.md, the files
    cells = report.tidy["II"]
    assert row(cells, setting=FLOW.label, quantity="best")["vs_erm"] == "▲"
    assert "▲" in row(cells, setting=FLOW.label, quantity="best")["text"]
    assert row(cells, setting=MIX.label, quantity="best")["vs_erm"] == ""
    assert row(report.tidy["II_val"], setting=FLOW.label, quantity="best")["vs_erm"] == "▲"
    assert "## Paired comparisons" in report.report_md and "Holm" in report.markdown["II"]
    written = {p.relative_to(sweep / "report").as_posix() for p in write_report(report)}
    assert {
        "comparisons.csv",
        "table2_val.md",
        "figures/forest_synth_ecg.png",
        "figures/forest_synth_ecg.pdf",
    } <= written
    on_disk = pd.read_csv(sweep / "report" / "comparisons.csv")
    assert len(on_disk) == len(comps) and set(on_disk["setting"]) >= {FLOW.label, MIX.label}


def test_cells_of_several_seeds_take_students_t(sweep):
    report = build_report(sweep, ReportOptions(figures=False))
    cell = row(report.tidy["II"], setting=FLOW.label, quantity="best")
    y = test_labels()
    values = [macro_f1(y, scores(y, 0.3, 200 + s)) for s in range(3)]
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(stats.seed_interval(values), abs=1e-9)
    assert cell["ci_method"] == "t over seeds"


def test_a_one_seed_cell_takes_its_runs_bootstrap_interval(tmp_path):
    y = test_labels()
    probs = scores(y, 0.2, 7)
    write_run(tmp_path, FLOW, 0, probs, y)
    report = build_report(tmp_path, ReportOptions(figures=False, uncertainty=UncertaintyOptions(n_resamples=300)))
    cell = row(report.tidy["II"], setting=FLOW.label, quantity="best")
    # independently: resample the records by hand and score each sample with scikit-learn
    rng = np.random.default_rng(0)
    by_hand = [macro_f1(y[i], probs[i]) for i in (rng.integers(0, N_TEST, N_TEST) for _ in range(300))]
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])), abs=1e-9)
    assert cell["ci_method"] == "bootstrap over test records"
    half = (cell["ci_high"] - cell["ci_low"]) / 2
    assert cell["text"].startswith(f"**{cell['mean']:.4f} ± {half:.4f}**")


def test_a_runs_stored_interval_is_used_only_when_made_the_same_way(tmp_path):
    y = test_labels()
    stored = {"n_resamples": 300, "confidence": 0.95, "seed": 0, "test_macro_f1": {"best": [0.1, 0.2]}}
    write_run(tmp_path, FLOW, 0, scores(y, 0.2, 7), y, extra={"bootstrap": stored})
    same = build_report(tmp_path, ReportOptions(figures=False, uncertainty=UncertaintyOptions(n_resamples=300)))
    assert (row(same.tidy["II"], setting=FLOW.label, quantity="best")[["ci_low", "ci_high"]] == [0.1, 0.2]).all()
    other = build_report(tmp_path, ReportOptions(figures=False, uncertainty=UncertaintyOptions(n_resamples=200)))
    low = row(other.tidy["II"], setting=FLOW.label, quantity="best")["ci_low"]
    assert low != 0.1 and math.isfinite(low)  # recomputed from the predictions


def test_runs_on_other_test_records_are_not_paired(tmp_path):
    y = test_labels()
    write_run(tmp_path, ERM, 0, scores(y, 0.1, 1), y)
    other = y.copy()
    other[0] = 1 - other[0]
    write_run(tmp_path, FLOW, 0, scores(other, 0.3, 2), other)
    comps = build_report(tmp_path, ReportOptions(figures=False)).comparisons
    flow = row(comps[comps["protocol"] == "best"], setting=FLOW, family="vs ERM")
    assert flow["n_pairs"] == 0 and flow["status"] == "no seed of both with predictions"
    assert math.isnan(flow["p_holm"]) and not flow["significant"]
