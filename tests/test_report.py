"""Tables I-III, Fig. 6 and the curves, built from hand-made run folders whose answers are known."""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flowmixup.report import fig6, figures
from flowmixup.report.fig6 import Fig6Options
from flowmixup.report.paper import load_paper_tables
from flowmixup.report.pipeline import Report, ReportOptions, build_report, write_report
from flowmixup.report.runs import Setting, check_sweep, collect_runs, prepare_runs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_ROOT / "scripts" / "make_tables.py"
PACKAGED_PAPER_CSV = PROJECT_ROOT / "src" / "flowmixup" / "report" / "paper_tables.csv"
METRIC = {"chestxray14": "auc", "ecg12": "macro_f1", "ecg55": "macro_f1", "synth_ecg": "macro_f1"}


def write_run(
    root: Path,
    dataset: str,
    regularizer: str,
    alpha=None,
    keep_original=None,
    noise=0.0,
    seed=0,
    status="ok",
    best=0.7,
    last=None,
    variance_auc=0.05,
    variance_macro_f1=0.03,
    per_class=None,
    curve=None,
    subdir=None,
) -> Path:
    """One run folder as a training run leaves it. ``best``/``last`` fill the primary metric (a fraction)."""
    metric = METRIC[dataset]
    last = best - 0.01 if last is None else last
    name = subdir or f"{dataset}/{regularizer}-a{alpha}-op{keep_original}/noise{noise}/seed{seed}"
    run = root / name
    run.mkdir(parents=True)
    epochs = 5
    curve = np.linspace(best - 0.1, last, epochs) if curve is None else np.asarray(curve, float)
    pd.DataFrame(
        {
            "epoch": np.arange(1, len(curve) + 1),
            "lr": 1e-4,
            "train_loss": 0.5,
            "val_loss": 0.5,
            "val_auc": 0.7,
            "val_macro_f1": 0.5,
            "test_auc": curve,
            "test_macro_f1": curve,
        }
    ).to_csv(run / "metrics.csv", index=False)
    if status == "ok":
        if per_class is None:
            per_class = pd.DataFrame(
                {
                    "class": ["a", "b", "c"],
                    "train_count": [10, 20, 30],
                    "train_single_count": [5, 5, 5],
                    "test_count": 4,
                    "test_auc_best": [0.6, 0.7, 0.8],
                    "test_f1_best": [0.3, 0.4, 0.5],
                }
            )
        per_class.to_csv(run / "per_class.csv", index=False)
    summary = {
        "status": status,
        "dataset": dataset,
        "primary_metric": metric,
        "backbone": "tiny",
        "regularizer": regularizer,
        "alpha": alpha,
        "keep_original": keep_original,
        "noise": noise,
        "corruption_kind": "flip",
        "seed": seed,
        "epochs": len(curve),
        "best_test_auc": best,
        "last_test_auc": last,
        "best_test_macro_f1": best,
        "last_test_macro_f1": last,
        "test_auc_at_best_val": best,
        "test_macro_f1_at_best_val": best,
        "variance_auc": variance_auc,
        "variance_macro_f1": variance_macro_f1,
        "variance_epochs": len(curve),
        "corrupted_fraction": noise,
        "wall_time_s": 1.0,
    }
    if status != "ok":
        summary["reason"] = "loss became NaN"
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def make_report(sweep: Path, figures: bool = False, **fig6_options) -> Report:
    """The report of ``sweep``, written into ``<sweep>/report``; with ``figures`` also Fig. 6 (its section of
    report.md and its figures, ``fig6_options`` as :class:`Fig6Options`) and the curves."""
    report = build_report(sweep, ReportOptions(figures=figures, fig6=Fig6Options(**fig6_options)))
    write_report(report)
    return report


def ok_runs(sweep: Path) -> pd.DataFrame:
    """The ok runs below ``sweep``, prepared as the report reads them."""
    return prepare_runs(collect_runs(sweep)).ok


def md_rows(markdown: str) -> list[list[str]]:
    """The rows of every Markdown table in ``markdown`` (header rows too, not the separator rows), cells stripped."""
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in markdown.splitlines()
        if line.startswith("|") and not set(line) <= set("|:- ")
    ]


def cell(report: Report, table: str, dataset: str, setting: Setting, noise: float, quantity: str) -> pd.Series:
    tidy = report.tidy[table]
    rows = tidy[
        (tidy["dataset"] == dataset)
        & (tidy["regularizer"] == setting.regularizer)
        & (tidy["setting"] == setting.label)
        & np.isclose(tidy["noise"], noise)
        & (tidy["quantity"] == quantity)
    ]
    assert len(rows) == 1, rows
    return rows.iloc[0]


FLOW_F = Setting("flowmixup", 3.0, False)
FLOW_T = Setting("flowmixup", 3.0, True)
MIX1, MIX3 = Setting("mixup", 1.0), Setting("mixup", 3.0)
MANI = Setting("manifold_mixup", 3.0)
ERM = Setting("erm")


def test_mean_and_sample_std_over_seeds(tmp_path):
    best = [0.70, 0.72, 0.77]
    last = [0.69, 0.70, 0.70]
    for seed, (b, last_value) in enumerate(zip(best, last)):
        write_run(tmp_path, "chestxray14", "flowmixup", 3.0, False, 0.1, seed, best=b, last=last_value)
    report = make_report(tmp_path)

    c = cell(report, "I", "chestxray14", FLOW_F, 0.1, "best")
    assert c["mean"] == pytest.approx(np.mean(best) * 100)
    assert c["std"] == pytest.approx(np.std(np.array(best) * 100, ddof=1))
    assert c["n_seeds"] == 3 and c["ddof"] == 1
    d = cell(report, "I", "chestxray14", FLOW_F, 0.1, "diff")
    assert d["mean"] == pytest.approx(np.mean(np.subtract(best, last)) * 100)
    assert d["std"] == pytest.approx(np.std(np.subtract(best, last) * 100, ddof=1))
    # the ± is the half-width of the 95% t interval over the seeds (the std stays in the CSV)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(best) * 100, scale=stats.sem(np.array(best) * 100))
    assert (c["ci_low"], c["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert c["ci_method"] == "t over seeds"
    expected = f"{np.mean(best) * 100:.1f} ± {(high - low) / 2:.1f}"
    assert expected in report.markdown["I"]
    assert "Student's t interval" in report.markdown["I"] and "Student's t interval" in report.markdown["II"]
    # the files exist, and the tidy CSV on disk is what the dict says
    out = tmp_path / "report"
    for stem in ("table1", "table2", "table3"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{stem}.{ext}").is_file()
    on_disk = pd.read_csv(out / "table1.csv")
    assert on_disk["mean"].dropna().tolist() == pytest.approx(report.tidy["I"]["mean"].dropna().tolist())
    assert r"\pm" in (out / "table1.tex").read_text()
    # a single seed without saved predictions shows the mean only
    write_run(tmp_path, "chestxray14", "erm", noise=0.1, seed=0, best=0.7512)
    report = make_report(tmp_path)
    # (the only value of its column, so also the best one)
    assert cell(report, "I", "chestxray14", ERM, 0.1, "best")["text"] == "**75.1** (paper 73.1)"


def test_best_and_second_best_marks(tmp_path):
    # ECG-12 at 0 noise: Flow(Op=False) best, Flow(Op=True) and Mixup(1.0) tie for second (equal when printed),
    # Manifold and ERM unmarked. At 10% noise only ERM and Manifold ran: ERM best, Manifold second.
    values = {FLOW_F: 0.70, FLOW_T: 0.65001, MIX1: 0.64999, MIX3: 0.6400, MANI: 0.62, ERM: 0.60}
    for s, v in values.items():
        write_run(
            tmp_path,
            "ecg12",
            s.regularizer,
            s.alpha,
            s.keep_original,
            0.0,
            0,
            best=v,
            variance_macro_f1={MANI: 0.05, FLOW_F: 0.03}.get(s, 0.04),
        )
    write_run(tmp_path, "ecg12", "erm", noise=0.1, best=0.61)
    write_run(tmp_path, "ecg12", "manifold_mixup", 3.0, noise=0.1, best=0.58)
    report = make_report(tmp_path)
    marks = {s: cell(report, "II", "ecg12", s, 0.0, "best")["mark"] for s in values}
    assert marks[FLOW_F] == "best"
    assert marks[FLOW_T] == "second" and marks[MIX1] == "second"
    assert all(pd.isna(marks[s]) or marks[s] == "" for s in (MIX3, MANI, ERM))
    assert cell(report, "II", "ecg12", ERM, 0.1, "best")["mark"] == "best"
    assert cell(report, "II", "ecg12", MANI, 0.1, "best")["mark"] == "second"
    md = report.markdown["II"]
    assert "**0.7000** (paper 0.6994)" in md
    assert "<u>0.6500</u> (paper 0.6846)" in md and "<u>0.6500</u> (paper 0.6773)" in md
    tex = (tmp_path / "report" / "table2.tex").read_text()
    assert r"\textbf{0.7000}" in tex and r"\underline{0.6500}" in tex
    # Table III: the lower variance is bold, nothing underlined
    assert cell(report, "III", "ecg12", FLOW_F, 0.0, "variance")["mark"] == "best"
    assert "<u>" not in report.markdown["III"].split("\n", 4)[-1]
    assert "**0.0300** (paper 0.0310)" in report.markdown["III"]


def test_diff_columns_not_marked(tmp_path):
    write_run(tmp_path, "chestxray14", "erm", noise=0.0, best=0.80, last=0.60)
    write_run(tmp_path, "chestxray14", "mixup", 1.0, noise=0.0, best=0.79, last=0.78)
    report = make_report(tmp_path)
    tidy = report.tidy["I"]
    assert set(tidy.loc[tidy["quantity"] == "diff", "mark"].fillna("")) == {""}
    assert cell(report, "I", "chestxray14", ERM, 0.0, "best")["mark"] == "best"
    assert cell(report, "I", "chestxray14", MIX1, 0.0, "last")["mark"] == "best"


def test_missing_cells_from_grid(tmp_path):
    grid = [
        {"dataset": "ecg12", "regularizer": r, "alpha": a, "keep_original": None, "noise": n, "seed": s}
        for r, a in (("erm", None), ("mixup", 1.0))
        for n in (0.0, 0.1)
        for s in (0, 1)
    ]
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    write_run(tmp_path, "ecg12", "erm", noise=0.0, seed=0, best=0.6)  # 1 of the 8 expected runs
    report = make_report(tmp_path)
    assert report.counts["missing"] == 7
    assert "**7 missing**" in report.report_md
    erm0 = cell(report, "II", "ecg12", ERM, 0.0, "best")
    assert erm0["status"] == "ok" and erm0["n_missing"] == 1 and "[1/2]" in erm0["text"]
    for s, n in ((ERM, 0.1), (MIX1, 0.0), (MIX1, 0.1)):
        c = cell(report, "II", "ecg12", s, n, "best")
        assert c["status"] == "missing" and np.isnan(c["mean"]) and c["text"].startswith("—")
    # the 10% column exists although no run has that noise: it comes from grid.json
    assert "10%" in md_rows(report.markdown["II"])[0]
    # paper rows never run are listed as missing too
    assert cell(report, "II", "ecg12", FLOW_T, 0.1, "best")["text"] == "— (paper 0.6784)"


def test_failed_cells_shown_and_excluded(tmp_path):
    write_run(tmp_path, "ecg55", "mixup", 3.0, noise=0.4, seed=0, status="failed", best=0.9)
    write_run(tmp_path, "ecg55", "mixup", 3.0, noise=0.4, seed=1, status="failed", best=0.9)
    write_run(tmp_path, "ecg55", "erm", noise=0.4, seed=0, best=0.50)
    write_run(tmp_path, "ecg55", "erm", noise=0.4, seed=1, best=0.52)
    write_run(tmp_path, "ecg55", "erm", noise=0.4, seed=2, status="failed", best=0.99)
    report = make_report(tmp_path)
    failed = cell(report, "II", "ecg55", MIX3, 0.4, "best")
    assert failed["status"] == "failed" and failed["text"] == "failed (paper 0.4953)" and failed["n_failed"] == 2
    partial = cell(report, "II", "ecg55", ERM, 0.4, "best")
    assert partial["mean"] == pytest.approx(0.51) and partial["n_seeds"] == 2 and partial["n_failed"] == 1
    # ± the half-width of the t interval over the 2 ok seeds: t(0.975, 1) * 0.0141 / sqrt(2)
    assert partial["text"] == "**0.5100 ± 0.1271** [2/3] (paper 0.4501)"
    counts = report.counts
    assert (counts["ok"], counts["failed"]) == (2, 3)
    assert "**2 ok**, **3 failed**" in report.report_md and "loss became NaN" in report.report_md
    assert "missing: n/a (no grid.json" in report.report_md


def test_paper_values_beside_the_right_cells(tmp_path):
    paper = pd.read_csv(PACKAGED_PAPER_CSV, dtype={"keep_original": "string"})

    def printed(table, dataset, regularizer, alpha, op, noise, metric):
        sel = paper[
            (paper["table"] == table)
            & (paper["dataset"] == dataset)
            & (paper["regularizer"] == regularizer)
            & (paper["noise"] == noise)
            & (paper["metric"] == metric)
        ]
        sel = sel[sel["alpha"].isna()] if alpha is None else sel[sel["alpha"] == alpha]
        sel = sel[sel["keep_original"].isna()] if op is None else sel[sel["keep_original"] == str(op).lower()]
        assert len(sel) == 1
        return float(sel["value"].iloc[0])

    for s in (FLOW_F, FLOW_T, MANI, ERM):
        write_run(tmp_path, "chestxray14", s.regularizer, s.alpha, s.keep_original, 0.3, best=0.76, last=0.75)
    write_run(tmp_path, "ecg55", "mixup", 3.0, noise=0.7, best=0.45)
    write_run(tmp_path, "synth_ecg", "flowmixup", 3.0, False, noise=0.1, best=0.8)
    report = make_report(tmp_path)
    for s in (FLOW_F, FLOW_T, MANI, ERM):
        op = s.keep_original
        best_p = printed("I", "chestxray14", s.regularizer, s.alpha, op, 0.3, "best_auc")
        last_p = printed("I", "chestxray14", s.regularizer, s.alpha, op, 0.3, "last_auc")
        assert cell(report, "I", "chestxray14", s, 0.3, "best")["paper"] == pytest.approx(best_p)
        assert cell(report, "I", "chestxray14", s, 0.3, "last")["paper"] == pytest.approx(last_p)
        assert cell(report, "I", "chestxray14", s, 0.3, "diff")["paper"] == pytest.approx(round(best_p - last_p, 1))
    assert cell(report, "I", "chestxray14", FLOW_T, 0.3, "best")["text"].endswith("(paper 77.0)")
    assert cell(report, "II", "ecg55", MIX3, 0.7, "best")["paper"] == printed(
        "II", "ecg55", "mixup", 3.0, None, 0.7, "best_macro_f1"
    )
    v = cell(report, "III", "chestxray14", MANI, 0.3, "variance")
    assert v["paper"] == printed("III", "chestxray14", "manifold_mixup", 3.0, None, 0.3, "variance") == 0.1208
    # no paper numbers for the synthetic dataset
    synth = report.tidy["II"][report.tidy["II"]["dataset"] == "synth_ecg"]
    assert synth["paper"].isna().all() and not synth["text"].str.contains("paper").any()


def test_packaged_paper_csv_is_the_papers(shared_data):
    shared_csv = shared_data.parent / "paper" / "paper_tables.csv"
    if not shared_csv.is_file():
        pytest.skip("shared/paper/paper_tables.csv not found")
    assert PACKAGED_PAPER_CSV.read_text() == shared_csv.read_text()
    assert len(load_paper_tables()) == 120


def test_table3_variance_follows_primary_metric(tmp_path):
    write_run(tmp_path, "chestxray14", "flowmixup", 3.0, False, 0.1, variance_auc=0.011, variance_macro_f1=0.099)
    write_run(tmp_path, "ecg12", "flowmixup", 3.0, False, 0.1, variance_auc=0.088, variance_macro_f1=0.022)
    report = make_report(tmp_path)
    assert cell(report, "III", "chestxray14", FLOW_F, 0.1, "variance")["mean"] == pytest.approx(0.011)
    assert cell(report, "III", "ecg12", FLOW_F, 0.1, "variance")["mean"] == pytest.approx(0.022)
    # Manifold Mixup and Flow-Mixup come first even when Manifold Mixup never ran
    rows = [line.split("|")[1].strip() for line in report.markdown["III"].splitlines() if line.startswith("| ")]
    assert rows[1:3] == [MANI.label, FLOW_F.label]


def test_collect_runs_any_depth_and_unreadable(tmp_path):
    write_run(tmp_path, "ecg12", "erm", subdir="a/b/c/d/run1")
    write_run(tmp_path, "ecg12", "erm", seed=1, subdir="run2")
    bad = tmp_path / "x" / "run3"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text("{not json")
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "metrics.csv").write_text("epoch\n1\n")
    runs = collect_runs(tmp_path)
    assert len(runs) == 3 and set(runs["status"]) == {"ok", "unreadable"}
    assert str(tmp_path / "a/b/c/d/run1") in set(runs["run_dir"])
    report = make_report(tmp_path)
    assert report.counts["ok"] == 2 and report.counts["unreadable"] == 1
    assert "1 unfinished" in report.report_md and "1 unreadable" in report.report_md


def test_performance_ratio_guards_zero_denominator():
    ratio = fig6.performance_ratio([0.5, 0.7, 0.9], [0.9, 0.5, 0.7], r=1.0, normalization="per_method")
    # per-method min-max: mixup -> [0, .5, 1], flow -> [1, 0, .5]; the class where flow is 0 gives NaN
    assert ratio[0] == pytest.approx(0.0) and np.isnan(ratio[1]) and ratio[2] == pytest.approx(2.0)
    assert fig6.performance_ratio([0.5, 0.7, 0.9], [0.9, 0.5, 0.7], r=2.0, normalization="per_method", eps=0.5)[
        1
    ] == pytest.approx(4.0)
    assert np.isnan(fig6.independent_ratio([1, 2], [0, 4])[0])
    # the default (joint min-max onto [0.5, 1]) never divides by zero: lo = 0.5 -> 0.5, hi = 0.9 -> 1
    assert fig6.DEFAULT_NORMALIZATION == "joint" and fig6.JOINT_FLOOR == 0.5
    joint = fig6.performance_ratio([0.5, 0.7, 0.9], [0.9, 0.5, 0.7], r=1.0)
    to = lambda v: 0.5 + 0.5 * (v - 0.5) / 0.4  # noqa: E731
    np.testing.assert_allclose(joint, [to(0.5) / to(0.9), to(0.7) / to(0.5), to(0.9) / to(0.7)])
    assert np.isfinite(fig6.performance_ratio([0.0, 0.3], [0.0, 0.0], r=10.0)).all()  # even all-zero F1s
    # "none": raw ratios; a zero F1 for Flow-Mixup is the one undefined case
    none = fig6.performance_ratio([0.2, 0.4], [0.4, 0.0], r=1.0, normalization="none")
    assert none[0] == pytest.approx(0.5) and np.isnan(none[1])
    with pytest.raises(ValueError, match="normalization"):
        fig6.performance_ratio([0.5], [0.5], r=1.0, normalization="zscore")


def test_figures_written_and_spearman_matches_scipy(tmp_path):
    rng = np.random.default_rng(3)
    classes = [f"c{i}" for i in range(8)]
    m = rng.integers(20, 200, size=8)
    n = (m * rng.uniform(0.05, 0.9, size=8)).astype(int)
    perf = {}
    for s in (MIX3, FLOW_F):
        for seed in (0, 1):
            f1 = rng.uniform(0.2, 0.9, size=8)
            f1[5] = np.nan if s == MIX3 and seed == 0 else f1[5]  # a class without positives in one run
            perf[(s, seed)] = f1
            pc = pd.DataFrame(
                {
                    "class": classes,
                    "train_count": m,
                    "train_single_count": n,
                    "test_count": 5,
                    "test_auc_best": 0.5,
                    "test_f1_best": f1,
                }
            )
            write_run(
                tmp_path,
                "ecg12",
                s.regularizer,
                s.alpha,
                s.keep_original,
                0.1,
                seed,
                per_class=pc,
                curve=rng.uniform(0.4, 0.6, size=6),
            )
            # a farther noise level with other numbers, which Fig. 6 must not use
            write_run(
                tmp_path,
                "ecg12",
                s.regularizer,
                s.alpha,
                s.keep_original,
                0.4,
                seed,
                per_class=pc.assign(test_f1_best=rng.uniform(0.2, 0.9, size=8)),
            )
    write_run(tmp_path, "ecg12", "erm", noise=0.1, seed=0)  # has curves, not in Fig. 6
    out = make_report(tmp_path, figures=True, normalization="per_method")
    fig_dir = tmp_path / "report" / "figures"
    for name in (
        "fig6_ecg12.png",
        "fig6_ecg12.pdf",
        "fig6_ecg12.csv",
        "fig6_spearman.csv",
        "curves_ecg12.png",
        "curves_ecg12.pdf",
        "curves_ecg12.csv",
    ):
        assert (fig_dir / name).is_file() and (fig_dir / name).stat().st_size > 0, name
    assert (fig_dir / "fig6_ecg12.png").read_bytes()[:4] == b"\x89PNG"
    assert (fig_dir / "fig6_ecg12.pdf").read_bytes()[:4] == b"%PDF"

    # the same numbers computed independently: nanmean over seeds, per-method min-max, ratio^1, n_c/m_c
    mix = np.nanmean([perf[(MIX3, 0)], perf[(MIX3, 1)]], axis=0)
    flow = np.mean([perf[(FLOW_F, 0)], perf[(FLOW_F, 1)]], axis=0)
    norm = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
    nm, nf = norm(mix), norm(flow)
    ratio = np.full(8, np.nan)
    ratio[nf > 0] = nm[nf > 0] / nf[nf > 0]
    indep = n / m
    keep = np.isfinite(ratio)
    expected = stats.spearmanr(ratio[keep], indep[keep]).statistic
    summary = pd.read_csv(fig_dir / "fig6_spearman.csv")
    row = summary[summary["dataset"] == "ecg12"].iloc[0]
    assert row["noise"] == pytest.approx(0.1) and row["r"] == 1.0
    assert row["spearman_rho"] == pytest.approx(expected)
    assert row["n_classes"] == keep.sum() == 7
    # per_method drops Flow-Mixup's worst class, and says so
    assert row["n_dropped_per_method"] == 1 and row["dropped_per_method"] == classes[int(np.argmin(flow))]
    per_class = pd.read_csv(fig_dir / "fig6_ecg12.csv")
    np.testing.assert_allclose(per_class["performance_ratio"], ratio, equal_nan=True)
    # no clean labels in these runs (no predictions_test_*.npz, no noise-0 run): the as-trained counts, said so
    assert row["independent_source"] == "train_as_trained"
    assert any("corrupted training labels" in note for note in out.notes)
    np.testing.assert_allclose(per_class["independent_ratio"], indep)
    assert out.fig6.spearman["spearman_rho"].iloc[0] == pytest.approx(expected)

    # r = 10 changes the ratios but not the rank correlation
    table, info = fig6.fig6_data(ok_runs(tmp_path), "ecg12", Fig6Options(r=10.0, normalization="per_method"))
    np.testing.assert_allclose(table["performance_ratio"], ratio**10, equal_nan=True)
    assert info["spearman_rho"] == pytest.approx(expected)

    # the default (joint onto [0.5, 1]) keeps all 8 classes
    table, info = fig6.fig6_data(ok_runs(tmp_path), "ecg12")
    lo, hi = min(mix.min(), flow.min()), max(mix.max(), flow.max())
    joint = lambda v: 0.5 + 0.5 * (v - lo) / (hi - lo)  # noqa: E731
    np.testing.assert_allclose(table["performance_ratio"], joint(mix) / joint(flow))
    assert info["n_classes"] == 8 and info["n_dropped_joint"] == 0
    assert info["spearman_rho"] == pytest.approx(stats.spearmanr(joint(mix) / joint(flow), indep).statistic)

    curves = pd.read_csv(fig_dir / "curves_ecg12.csv")
    mean_e1 = curves[(curves["setting"] == FLOW_F.label) & np.isclose(curves["noise"], 0.1) & (curves["epoch"] == 1)][
        "mean"
    ].iloc[0]
    runs = collect_runs(tmp_path)
    flow_dirs = runs[(runs["regularizer"] == "flowmixup") & np.isclose(runs["noise"], 0.1)]["run_dir"]
    firsts = [pd.read_csv(Path(d) / "metrics.csv")["test_macro_f1"].iloc[0] for d in flow_dirs]
    assert mean_e1 == pytest.approx(np.mean(firsts))


@pytest.mark.slow
def test_cli_errors(tmp_path):
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "not found" in missing.stderr
    empty = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode != 0
    assert empty.stderr.strip().count("\n") == 0 and f"no runs found under {tmp_path}" in empty.stderr
    assert "Traceback" not in missing.stderr + empty.stderr


def test_cli_prints_tables_and_paths(tmp_path, capsys):
    import runpy

    write_run(tmp_path, "ecg12", "flowmixup", 3.0, False, 0.1, best=0.6812)
    module = runpy.run_path(str(SCRIPT), run_name="make_tables")
    assert module["main"]([str(tmp_path), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "## Table II" in out and "**0.6812** (paper 0.6800)" in out
    assert str(tmp_path / "report" / "report.md") in out


# --------------------------------------------------------------------------------------------------------------
# make_tables.py on bad inputs: everything is checked first, nothing partial is ever written
# --------------------------------------------------------------------------------------------------------------
def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300
    )


def sweep_with_two_bad_summaries(root: Path) -> tuple[Path, Path]:
    """Mixup a=3 and Flow-Mixup a=3 at 10% (two seeds each), one invalid-JSON and one key-less summary."""
    for s in (MIX3, FLOW_F):
        for seed in (0, 1):
            write_run(root, "ecg12", s.regularizer, s.alpha, s.keep_original, 0.1, seed, best=0.6 + 0.01 * seed)
    invalid = write_run(root, "ecg12", "erm", noise=0.1, seed=0) / "summary.json"
    invalid.write_text('{"status": "ok",\n "dataset": "ecg12",\n "regularizer": \n')  # a truncated file
    keyless = write_run(root, "ecg12", "mixup", 1.0, noise=0.1, seed=0) / "summary.json"
    summary = json.loads(keyless.read_text())
    del summary["regularizer"], summary["noise"]
    keyless.write_text(json.dumps(summary))
    return invalid, keyless


@pytest.mark.slow
def test_cli_bad_summaries_named_and_nothing_written(tmp_path):
    invalid, keyless = sweep_with_two_bad_summaries(tmp_path)
    res = run_script(tmp_path)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and len(lines) == 3, lines
    assert sum(line.startswith(f"{invalid}: invalid JSON at line 4, column 1") for line in lines) == 1
    assert sum(line == f"{keyless}: missing keys regularizer, noise" for line in lines) == 1
    assert lines[-1].startswith("error: 2 of 6 summary.json are bad; nothing written") and "--skip-bad" in lines[-1]
    assert not (tmp_path / "report").exists()  # no table, no figure, not even the folder
    assert res.stdout == ""


@pytest.mark.slow
def test_cli_skip_bad_builds_the_report_from_the_rest(tmp_path):
    invalid, keyless = sweep_with_two_bad_summaries(tmp_path)
    res = run_script(tmp_path, "--skip-bad")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and len(lines) == 3, lines
    assert sum(line.startswith(f"{invalid}: invalid JSON at line ") for line in lines) == 1
    assert sum(line == f"{keyless}: missing keys regularizer, noise" for line in lines) == 1
    assert lines[-1] == "warning: left out 2 of 6 summary.json; the report is built from the 4 valid summary.json"
    out = tmp_path / "report"
    report_md = (out / "report.md").read_text()
    assert "**4 ok**" in report_md and str(invalid) in report_md and str(keyless) in report_md
    assert "0.6050 ± 0.0635" in (out / "table2.md").read_text()  # the good Flow-Mixup seeds: their t interval
    for name in ("fig6_ecg12.png", "fig6_ecg12.pdf", "fig6_spearman.csv", "curves_ecg12.png"):
        assert (out / "figures" / name).is_file(), name


@pytest.mark.slow
def test_cli_figures_survive_missing_optional_files(tmp_path):
    for s in (MIX3, FLOW_F):
        for seed in (0, 1):
            write_run(tmp_path, "ecg12", s.regularizer, s.alpha, s.keep_original, 0.1, seed)
    no_per_class = write_run(tmp_path, "ecg12", "flowmixup", 3.0, False, 0.1, seed=2)
    (no_per_class / "per_class.csv").unlink()
    no_metrics = write_run(tmp_path, "ecg12", "mixup", 3.0, None, 0.1, seed=2)
    (no_metrics / "metrics.csv").unlink()
    no_metric_key = write_run(tmp_path, "chestxray14", "erm", noise=0.1)  # an older summary: no primary_metric
    summary = json.loads((no_metric_key / "summary.json").read_text())
    del summary["primary_metric"]
    (no_metric_key / "summary.json").write_text(json.dumps(summary))

    res = run_script(tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    notes = [line for line in res.stdout.splitlines() if line.startswith("note: ")]
    assert f"note: Fig. 6 (ecg12) leaves out {no_per_class}: per_class.csv (missing)" in notes
    assert f"note: curves (ecg12) leave out {no_metrics}: metrics.csv (missing)" in notes
    fig_dir = tmp_path / "report" / "figures"
    for name in ("fig6_ecg12.png", "fig6_ecg12.csv", "curves_ecg12.png", "curves_chestxray14.png"):
        assert (fig_dir / name).is_file(), name
    assert pd.read_csv(fig_dir / "fig6_spearman.csv")["n_seeds_flow"].tolist() == [2]
    # chestxray14 fell back to its default metric (AUC): it is in Table I
    assert "### ChestX-ray14" in (tmp_path / "report" / "table1.md").read_text()


def test_bad_run_files_are_problems_absent_ones_are_not(tmp_path):
    good = write_run(tmp_path, "ecg12", "mixup", 3.0, noise=0.1)
    (good / "per_class.csv").unlink()  # absent: optional
    broken = write_run(tmp_path, "ecg12", "erm", noise=0.1)
    (broken / "per_class.csv").write_text("class,train_count\na,1\n")
    (broken / "metrics.csv").write_text("")
    (tmp_path / "grid.json").write_text('[{"dataset": "ecg12"}]')
    check = check_sweep(tmp_path)
    assert sorted(check.lines) == sorted(
        [
            f"{broken / 'per_class.csv'}: missing columns train_single_count, test_f1_best",
            f"{broken / 'metrics.csv'}: empty file",
            f"{tmp_path / 'grid.json'}: entry 0 lacks key regularizer",
        ]
    )
    assert check.bad_summaries == 0 and len(check.runs) == 2 and check.grid is None
    assert check_sweep(tmp_path, run_files=False).lines == [f"{tmp_path / 'grid.json'}: entry 0 lacks key regularizer"]


def test_cli_writes_nothing_when_a_figure_fails(tmp_path, monkeypatch):
    import runpy

    for s in (MIX3, FLOW_F):
        write_run(tmp_path, "ecg12", s.regularizer, s.alpha, s.keep_original, 0.1)

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "_draw_fig6", broken)
    module = runpy.run_path(str(SCRIPT), run_name="make_tables")
    with pytest.raises(RuntimeError, match="drawing failed"):
        module["main"]([str(tmp_path)])
    assert not (tmp_path / "report").exists()  # the tables were computed, but nothing was written


# --------------------------------------------------------------------------------------------------------------
# Fig. 6: every class kept, clean labels, the normal class left out, literal vs rhythm-ignoring counts
# --------------------------------------------------------------------------------------------------------------
ECG12 = [
    "窦性心律",
    "窦性心动过缓",
    "T波改变",
    "窦性心动过速",
    "左心室高电压",
    "ST段改变",
    "正常ECG",
    "ST-T改变",
    "临界ECG",
    "电轴左偏",
    "电轴右偏",
    "房性早搏",
]  # conf/dataset/ecg12.yaml's order
ECG12_RHYTHM_NORMAL = {"窦性心律", "窦性心动过缓", "窦性心动过速", "正常ECG"}


def write_predictions(run: Path, y_true: np.ndarray, class_names, name: str = "predictions_test_last.npz") -> None:
    """The test predictions a training run writes (only ``y_true`` and ``class_names`` matter here)."""
    y_true = np.asarray(y_true, dtype=np.uint8)
    np.savez(
        run / name,
        y_true=y_true,
        y_score=np.full(y_true.shape, 0.5, np.float32),
        class_names=np.array(class_names),
        epoch=np.array(5),
    )


def explicit_counts(y, names, ignored) -> tuple[dict, dict, dict]:
    """m_c, literal n_c and rhythm-ignoring n_c, counted record by record."""
    m, literal, ignoring = {}, {}, {}
    for j, c in enumerate(names):
        rows = [i for i in range(len(y)) if y[i][j] == 1]
        m[c] = len(rows)
        literal[c] = sum(1 for i in rows if sum(y[i]) == 1)
        ignoring[c] = sum(
            1 for i in rows if not any(y[i][k] == 1 for k in range(len(names)) if k != j and names[k] not in ignored)
        )
    return m, literal, ignoring


def ecg12_labels(n: int, seed: int) -> np.ndarray:
    """A hand-built ECG-12-like label matrix: a sinus rhythm on (almost) every record, abnormalities beside it,
    正常ECG only on records without any abnormality."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, len(ECG12)), dtype=np.uint8)
    rhythm = rng.choice([0, 1, 3, -1], size=n, p=[0.6, 0.15, 0.15, 0.1])
    for i, k in enumerate(rhythm):
        if k >= 0:
            y[i, k] = 1
    abnormal = [j for j, c in enumerate(ECG12) if c not in ECG12_RHYTHM_NORMAL]
    prevalence = np.linspace(0.05, 0.35, len(abnormal))
    for j, p in zip(abnormal, prevalence):
        y[:, j] = rng.random(n) < p
    none = y[:, abnormal].sum(axis=1) == 0
    y[:, ECG12.index("正常ECG")] = none & (rng.random(n) < 0.7)
    return y


def ecg12_sweep(
    root: Path, y_test: np.ndarray, mix: np.ndarray, flow: np.ndarray, predictions: bool = True
) -> list[Path]:
    """Mixup a=3 and Flow-Mixup a=3 (Op=False) at 10% noise on ECG-12, with per-class F1 ``mix`` / ``flow``.
    per_class.csv's training counts are made up (they stand for corrupted labels and must not be used)."""
    dirs = []
    for s, f1 in ((MIX3, mix), (FLOW_F, flow)):
        pc = pd.DataFrame(
            {
                "class": ECG12,
                "train_count": 100,
                "train_single_count": np.arange(12),
                "test_count": 9,
                "test_auc_best": 0.5,
                "test_f1_best": f1,
            }
        )
        run = write_run(root, "ecg12", s.regularizer, s.alpha, s.keep_original, 0.1, 0, per_class=pc)
        if predictions:
            write_predictions(run, y_test, ECG12)
        dirs.append(run)
    return dirs


def test_fig6_default_keeps_every_class_and_leaves_out_the_normal_class(tmp_path):
    rng = np.random.default_rng(7)
    mix, flow = rng.uniform(0.2, 0.9, 12), rng.uniform(0.2, 0.9, 12)
    normal = ECG12.index("正常ECG")
    mix[normal], flow[normal] = 0.01, 0.99  # the normal class must not take part in the normalisation either
    ecg12_sweep(tmp_path, ecg12_labels(300, 1), mix, flow)
    out = make_report(tmp_path, figures=True)
    per_class = pd.read_csv(tmp_path / "report" / "figures" / "fig6_ecg12.csv")
    info = out.fig6.spearman.iloc[0]
    abnormal = [c for c in ECG12 if c != "正常ECG"]
    # ECG-12: the 11 abnormalities, without the normal class, as the paper's Fig. 6(b)
    assert per_class["class"].tolist() == abnormal and info["normal_classes_left_out"] == "正常ECG"
    # default: joint min-max onto [0.5, 1]: every class has a finite ratio, both methods' worst classes included
    assert info["normalization"] == "joint" and info["count"] == "ignore_rhythm"
    keep = [ECG12.index(c) for c in abnormal]
    a, b = mix[keep], flow[keep]
    worst_mix, worst_flow = abnormal[int(np.argmin(a))], abnormal[int(np.argmin(b))]
    assert worst_mix != worst_flow
    assert np.isfinite(per_class["performance_ratio"]).all() and (per_class["performance_ratio"] > 0).all()
    assert info["n_classes"] == 11 and info["n_classes_plotted"] == 11 and info["n_dropped_joint"] == 0
    # per_method: Mixup's worst class gets ratio 0, Flow-Mixup's worst is undefined and counted as dropped
    ratio_pm = per_class.set_index("class")["ratio_per_method"]
    assert ratio_pm[worst_mix] == 0.0 and np.isnan(ratio_pm[worst_flow])
    assert info["n_dropped_per_method"] == 1 and info["dropped_per_method"] == worst_flow
    assert info["n_classes_per_method_ignore_rhythm"] == 10
    report_md = out.report_md
    assert "正常ECG (normal ECG), as in the paper's Fig. 6(b)" in report_md
    per_method_row = next(row for row in md_rows(report_md) if row[0] == "per_method")
    assert per_method_row[-1] == f"1: {worst_flow} ({fig6.GLOSS[worst_flow]})"


def test_fig6_independent_ratio_from_clean_test_labels(tmp_path):
    y = ecg12_labels(400, 2)
    rng = np.random.default_rng(8)
    ecg12_sweep(tmp_path, y, rng.uniform(0.2, 0.9, 12), rng.uniform(0.2, 0.9, 12))
    # a noise-0 run: its per_class.csv counts the clean TRAINING labels, the cross-check
    clean_train = pd.DataFrame(
        {
            "class": ECG12,
            "train_count": np.arange(20, 32),
            "train_single_count": np.arange(12),
            "test_count": 9,
            "test_auc_best": 0.5,
            "test_f1_best": 0.5,
        }
    )
    write_run(tmp_path, "ecg12", "erm", noise=0.0, per_class=clean_train)
    table, info = fig6.fig6_data(ok_runs(tmp_path), "ecg12")
    m, literal, ignoring = explicit_counts(y.tolist(), ECG12, ECG12_RHYTHM_NORMAL)
    assert info["independent_source"] == "test_clean" and "clean test labels" in info["independent_source_text"]
    t = table.set_index("class")
    for c in t.index:
        assert t.loc[c, "count"] == m[c]
        assert t.loc[c, "independent_ratio_literal"] == pytest.approx(literal[c] / m[c])
        assert t.loc[c, "independent_ratio_ignore_rhythm"] == pytest.approx(ignoring[c] / m[c])
        row = clean_train.set_index("class").loc[c]
        assert t.loc[c, "independent_ratio_train_clean_literal"] == pytest.approx(
            row["train_single_count"] / row["train_count"]
        )
    np.testing.assert_allclose(t["independent_ratio"], t["independent_ratio_ignore_rhythm"])  # the default
    # 90% of the records carry a sinus rhythm beside their abnormalities: literally, abnormalities are rarely alone
    abnormal = [c for c in t.index if c not in ECG12_RHYTHM_NORMAL]
    assert all(literal[c] <= ignoring[c] for c in abnormal)
    assert sum(literal[c] for c in abnormal) < 0.2 * sum(ignoring[c] for c in abnormal)
    # both runs hold the same test set: it is counted once
    assert "of 2 runs: one test set" in info["independent_source_text"]


def test_fig6_independent_ratio_from_the_clean_training_labels_runs_write(tmp_path):
    """Runs write labels_train_clean.npz: the dataset's own clean training labels come first, before test labels."""
    y_test, y_train = ecg12_labels(200, 3), ecg12_labels(500, 4)
    rng = np.random.default_rng(9)
    for run in ecg12_sweep(tmp_path, y_test, rng.uniform(0.2, 0.9, 12), rng.uniform(0.2, 0.9, 12)):
        np.savez_compressed(run / "labels_train_clean.npz", y=y_train, class_names=np.array(ECG12))
    table, info = fig6.fig6_data(ok_runs(tmp_path), "ecg12")
    assert info["independent_source"] == "train_clean"
    assert info["independent_source_text"] == "clean training labels (labels_train_clean.npz)"
    m, literal, ignoring = explicit_counts(y_train.tolist(), ECG12, ECG12_RHYTHM_NORMAL)
    t = table.set_index("class")
    for c in t.index:
        assert t.loc[c, "count"] == m[c]  # the training set, counted once although both runs hold it
        assert t.loc[c, "independent_ratio_ignore_rhythm"] == pytest.approx(ignoring[c] / m[c])
        assert t.loc[c, "independent_ratio_literal"] == pytest.approx(literal[c] / m[c])


def test_fig6_spearman_of_every_normalisation_in_report_md(tmp_path):
    y = ecg12_labels(500, 3)
    rng = np.random.default_rng(9)
    mix, flow = rng.uniform(0.1, 0.9, 12), rng.uniform(0.1, 0.9, 12)
    ecg12_sweep(tmp_path, y, mix, flow)
    report = make_report(tmp_path, figures=True)
    report_md = report.report_md
    assert (tmp_path / "report" / "report.md").read_text() == report_md

    keep = [j for j, c in enumerate(ECG12) if c != "正常ECG"]
    a, b = mix[keep], flow[keep]
    m, literal, ignoring = explicit_counts(y.tolist(), ECG12, ECG12_RHYTHM_NORMAL)
    names = [ECG12[j] for j in keep]
    indep = {
        "literal": np.array([literal[c] / m[c] for c in names]),
        "ignore": np.array([ignoring[c] / m[c] for c in names]),
    }
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    joint = lambda v: 0.5 + 0.5 * (v - lo) / (hi - lo)  # noqa: E731
    per = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
    pa, pb = per(a), per(b)
    ratios = {
        "none": a / b,
        "joint": joint(a) / joint(b),
        "per_method": np.where(pb > 0, pa / np.where(pb > 0, pb, 1), np.nan),
    }
    rows = {"none": "none", "joint": "**joint** (default)", "per_method": "per_method"}
    for norm, ratio in ratios.items():
        cells = next(row for row in md_rows(report_md) if row[0] == rows[norm])
        for column, count in ((1, "literal"), (2, "ignore")):
            ok = np.isfinite(ratio) & np.isfinite(indep[count])
            expected = stats.spearmanr(ratio[ok], indep[count][ok]).statistic
            assert np.isfinite(expected)
            assert cells[column].strip() == f"{expected:.3f} (n = {ok.sum()})", (norm, count, cells)
    assert "## Fig. 6" in report_md and "ρ ≈ 0.3" in report_md
    # the figure's annotation prints the same table
    assert report.fig6.markdown in report_md  # the section of report.md is the Fig. 6 the figures draw
    table, info = fig6.fig6_data(ok_runs(tmp_path), "ecg12")
    note = fig6.figure_note(info)
    for norm in fig6.NORMALIZATIONS:
        for count in fig6.COUNTS:
            assert f"{info[f'spearman_rho_{norm}_{count}']:.3f}" in note


def test_fig6_literal_vs_ignoring_rhythm_counts():
    names = [
        "sinus_rhythm",
        "sinus_tachycardia",
        "atrial_fibrillation",
        "premature_ventricular_contraction",
        "low_qrs_voltage",
    ]
    y = np.array(
        [
            [1, 0, 0, 1, 0],  # sinus + PVC: PVC alone once the sinus rhythm is ignored
            [1, 0, 0, 0, 0],  # sinus alone
            [0, 0, 1, 1, 0],  # AF + PVC: AF is an abnormality, neither is alone
            [0, 1, 0, 0, 1],  # sinus tachycardia + low voltage: low voltage alone when ignoring rhythm
            [0, 0, 1, 0, 0],  # AF alone
            [1, 0, 0, 1, 1],
        ]
    )  # two abnormalities: none alone
    ignored = fig6.IGNORED_CLASSES["synth_ecg"]
    assert set(ignored) == {"sinus_rhythm", "sinus_tachycardia", "sinus_bradycardia"}
    counts = fig6.alone_counts(y, names, ignored)
    assert counts["count"].tolist() == [3, 1, 2, 3, 2]
    assert counts["single_literal"].tolist() == [1, 0, 1, 0, 0]
    assert counts["single_ignore_rhythm"].tolist() == [1, 0, 1, 1, 1]
    # with nothing to ignore (ChestX-ray14) the two counts agree
    plain = fig6.alone_counts(y, names, fig6.IGNORED_CLASSES["chestxray14"])
    assert plain["single_ignore_rhythm"].tolist() == plain["single_literal"].tolist()
    # the per-dataset definition covers every dataset, and names only classes that exist there
    for dataset in ("synth_ecg", "ecg12", "ecg55", "chestxray14", "nih1000"):
        assert dataset in fig6.IGNORED_CLASSES and dataset in fig6.NORMAL_CLASSES
        assert set(fig6.NORMAL_CLASSES[dataset]) <= set(fig6.IGNORED_CLASSES[dataset])
    from flowmixup.data.synth_ecg import CLASSES as SYNTH

    assert set(ignored) <= set(SYNTH)
    import yaml

    for dataset in ("ecg12", "ecg55"):
        conf = yaml.safe_load((PROJECT_ROOT / "conf" / "dataset" / f"{dataset}.yaml").read_text())
        assert set(fig6.IGNORED_CLASSES[dataset]) <= set(conf["classes"]), dataset
    assert set(fig6.IGNORED_CLASSES["ecg12"]) == ECG12_RHYTHM_NORMAL


def test_fig6_literal_count_from_synth_ecg_runs(tmp_path):
    """On synth_ecg every record has a rhythm label: literally, no other class is ever alone; the figure draws the
    rhythm-ignoring count by default, and report.md prints rho for both."""
    from flowmixup.data.synth_ecg import CLASSES as SYNTH
    from flowmixup.data.synth_ecg import sample_labels

    y = sample_labels(600, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for s in (MIX3, FLOW_F):
        pc = pd.DataFrame(
            {
                "class": SYNTH,
                "train_count": 50,
                "train_single_count": 0,
                "test_count": 5,
                "test_auc_best": 0.5,
                "test_f1_best": rng.uniform(0.3, 0.9, len(SYNTH)),
            }
        )
        write_predictions(
            write_run(tmp_path, "synth_ecg", s.regularizer, s.alpha, s.keep_original, 0.1, per_class=pc), y, SYNTH
        )
    table, info = fig6.fig6_data(ok_runs(tmp_path), "synth_ecg")
    assert len(table) == 15 and info["count"] == "ignore_rhythm"
    rhythm = {"sinus_rhythm", "sinus_tachycardia", "sinus_bradycardia", "atrial_fibrillation"}
    literal = table.set_index("class")["independent_ratio_literal"]
    assert (literal.drop(list(rhythm)) == 0).all()  # 11 of 15 classes: 0
    assert (table.set_index("class")["independent_ratio"].drop(list(rhythm)) > 0).all()
    assert info["n_classes_joint_literal"] == info["n_classes_joint_ignore_rhythm"] == 15
    assert np.isfinite(info["spearman_rho_joint_ignore_rhythm"])
    report_md = make_report(tmp_path, figures=True).report_md
    assert "### Synthetic ECG" in report_md
    assert "sinus_rhythm, sinus_tachycardia, sinus_bradycardia" in report_md  # the classes ignored, named


def test_memorisation_section_best_epoch_and_gap_per_noise(tmp_path):
    """report.md's best-vs-last table: the best epoch and best - last, from each run's metrics.csv, seed-averaged."""
    # ERM at 40% noise: peaks at epoch 3 of 6 then memorises; two seeds
    write_run(tmp_path, "synth_ecg", "erm", noise=0.4, seed=0, curve=[0.2, 0.4, 0.5, 0.45, 0.4, 0.3])
    write_run(tmp_path, "synth_ecg", "erm", noise=0.4, seed=1, curve=[0.2, 0.3, 0.4, 0.6, 0.5, 0.4])
    write_run(tmp_path, "synth_ecg", "erm", noise=0.0, seed=0, curve=[0.2, 0.4, 0.5, 0.6, 0.65, 0.7])
    write_run(tmp_path, "synth_ecg", "flowmixup", 3.0, False, noise=0.4, curve=[0.2, 0.4, 0.5, 0.55, 0.56, 0.56])
    report = make_report(tmp_path)
    md = report.report_md
    assert "## Memorisation: best vs last epoch" in md and "### synth_ecg (test macro_f1)" in md
    section = md[md.index("## Memorisation") :]
    erm = next(row for row in md_rows(section) if row[0] == "ERM")
    # noise 0: best = last at epoch 6; noise 0.4: best (0.5 + 0.6) / 2 at epochs 3 and 4 -> 3.5, last 0.35
    assert erm == ["ERM", "0.7000 (6/6)", "0.7000", "0.0000", "0.5500 (4/6)", "0.3500", "0.2000"]
    memo = pd.read_csv(io.StringIO(report.files["memorisation.csv"]))
    row = memo[(memo["setting"] == "ERM") & (memo["noise"] == 0.4)].iloc[0]
    assert row["best_epoch"] == 3.5 and row["seeds"] == 2 and row["diff"] == pytest.approx(0.2)
    flow = memo[memo["setting"].str.startswith("Flow-Mixup")].iloc[0]
    assert flow["best_epoch"] == 5 and flow["diff"] == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------------------------
# No run dropped silently: rows split on every result-affecting setting; duplicates listed; display from config
# --------------------------------------------------------------------------------------------------------------
def with_summary(run: Path, **changes) -> Path:
    summary = json.loads((run / "summary.json").read_text())
    summary.update(changes)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def table_rows(markdown: str) -> list[str]:
    """The row labels of every table in ``markdown`` (the Regularization column, whichever it is)."""
    labels, at = [], 0
    for row in md_rows(markdown):
        if "Regularization" in row:
            at = row.index("Regularization")
        else:
            labels.append(row[at])
    return labels


def test_runs_differing_in_backbone_or_lr_are_separate_rows(tmp_path):
    """Runs alike but for the backbone (an older summary's key) or the learning rate (the config) never merge:
    each value gets its own row, labelled with the setting; the other rows stay as they were."""
    a = write_run(tmp_path, "ecg12", "flowmixup", 3.0, False, 0.1, 0, best=0.60, subdir="a")
    b = with_summary(
        write_run(tmp_path, "ecg12", "flowmixup", 3.0, False, 0.1, 0, best=0.70, subdir="b"), backbone="resnet34_1d"
    )
    write_run(tmp_path, "ecg12", "erm", noise=0.1, best=0.5, subdir="c")
    report = make_report(tmp_path)
    assert report.counts["ok"] == 3 and report.counts["duplicates"] == 0
    tidy = report.tidy["II"]
    flow = tidy[tidy["regularizer"] == "flowmixup"].set_index("setting")
    assert flow.loc["Flow-Mixup (α=3.0, Op=False) [backbone=tiny]", "mean"] == pytest.approx(0.60)
    assert flow.loc["Flow-Mixup (α=3.0, Op=False) [backbone=resnet34_1d]", "mean"] == pytest.approx(0.70)
    erm = next(row for row in md_rows(report.markdown["II"]) if row[1] == "ERM")  # ERM keeps its plain label
    assert erm[2] == "0.5000 (paper 0.6531)"
    assert f"{a}" not in report.report_md and f"{b}" not in report.report_md  # nothing left out or duplicated

    # the same with a full config in the summary: only trainer.lr differs (num_workers and paths never split)
    root = tmp_path / "cfg"
    for sub, lr, workers, seed in (("x", 0.001, 0, 0), ("y", 0.01, 4, 0), ("z", 0.001, 8, 1)):
        run = write_run(root, "ecg12", "mixup", 3.0, noise=0.1, seed=seed, best=0.6 + lr, subdir=sub)
        with_summary(
            run,
            config={
                "trainer": {"lr": lr, "num_workers": workers, "device": "cpu"},
                "paths": {"output_dir": str(run)},
                "seed": seed,
                "regularizer": {"name": "mixup", "label": "Mixup", "shown": ["alpha"], "alpha": 3.0},
            },
        )
    tidy = make_report(root).tidy["II"]
    mixup = tidy[tidy["regularizer"] == "mixup"].set_index("setting")
    assert mixup.loc["Mixup (α=3.0) [trainer.lr=0.001]", "n_seeds"] == 2  # x and z: seeds 0 and 1
    assert mixup.loc["Mixup (α=3.0) [trainer.lr=0.01]", "n_seeds"] == 1
    assert mixup.loc["Mixup (α=3.0) [trainer.lr=0.001]", "mean"] == pytest.approx(0.601)


def test_true_duplicates_are_listed_with_the_run_used(tmp_path):
    import os

    old = write_run(tmp_path, "ecg55", "erm", noise=0.4, seed=0, best=0.40, subdir="first")
    new = write_run(tmp_path, "ecg55", "erm", noise=0.4, seed=0, best=0.50, subdir="second")
    os.utime(old / "summary.json", (1_000_000, 1_000_000))
    os.utime(new / "summary.json", (2_000_000, 2_000_000))
    report = make_report(tmp_path)
    assert report.counts["duplicates"] == 1 and report.counts["ok"] == 1
    assert cell(report, "II", "ecg55", ERM, 0.4, "best")["mean"] == pytest.approx(0.50)  # the newest
    assert f"- `{old}`: duplicate of `{new}` (used)" in report.report_md


def test_display_names_and_metric_from_the_config(tmp_path):
    """A regularizer the report has never heard of gets its label and shown settings from its config, and a row
    after the paper's; a summary without primary_metric takes it from the config, else from the dataset."""
    run = write_run(tmp_path, "ecg12", "mixup", 1.0, noise=0.1, best=0.61)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(
        regularizer="cutmix",
        alpha=None,
        config={
            "regularizer": {"name": "cutmix", "label": "CutMix", "shown": ["beta"], "beta": 0.5},
            "dataset": {"name": "ecg12", "primary_metric": "macro_f1"},
        },
    )
    del summary["primary_metric"]
    (run / "summary.json").write_text(json.dumps(summary))
    other = write_run(tmp_path, "chestxray14", "erm", noise=0.0, best=0.9, subdir="mine")
    summary = json.loads((other / "summary.json").read_text())
    summary["dataset"] = "mydata"
    del summary["primary_metric"]
    summary["config"] = {"dataset": {"name": "mydata", "primary_metric": "auc"}}
    (other / "summary.json").write_text(json.dumps(summary))
    unknown = write_run(tmp_path, "ecg12", "erm", noise=0.1, subdir="unknown")
    summary = json.loads((unknown / "summary.json").read_text())
    summary["dataset"] = "weird"
    del summary["primary_metric"]
    (unknown / "summary.json").write_text(json.dumps(summary))
    report = make_report(tmp_path)
    rows = table_rows(report.markdown["II"])
    assert rows[-1] == "CutMix (beta=0.5)" and rows[:6] == [s.label for s in (ERM, MIX1, MIX3, MANI, FLOW_F, FLOW_T)]
    assert "**0.6100**" in report.markdown["II"]
    assert "### mydata" in report.markdown["I"]  # auc, from the config
    assert "datasets left out (primary metric unknown or not auc/macro_f1): weird" in report.report_md


def test_bad_summaries_are_one_line_each(tmp_path):
    write_run(tmp_path, "ecg12", "erm", noise=0.1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text('{"status": "ok", ')
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "summary.json").write_text("")
    check = check_sweep(tmp_path)
    assert check.lines == [
        f"{bad / 'summary.json'}: invalid JSON at line 1, column 18 (Expecting property name "
        "enclosed in double quotes)",
        f"{tmp_path / 'empty' / 'summary.json'}: empty file",
    ]
    assert len(check.runs) == 1 and check.bad_summaries == 2


# --------------------------------------------------------------------------------------------------------------
# One pipeline: everything computed once, written at once, the same files from both command lines; no import circle
# --------------------------------------------------------------------------------------------------------------
def test_a_report_prepares_the_runs_once_and_computes_fig6_once(tmp_path, monkeypatch):
    for dataset in ("ecg12", "chestxray14"):
        for s in (MIX3, FLOW_F):
            for seed in (0, 1):
                write_run(tmp_path, dataset, s.regularizer, s.alpha, s.keep_original, 0.1, seed, best=0.6 + 0.01 * seed)
    calls = {"prepare_runs": 0, "fig6_data": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    for module in [m for name, m in sys.modules.items() if name.startswith("flowmixup.report.")]:
        for name in calls:
            if callable(getattr(module, name, None)):
                monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    report = build_report(tmp_path)
    assert calls == {"prepare_runs": 1, "fig6_data": 2}  # once per report; Fig. 6 once per dataset
    assert report.fig6.markdown in report.report_md and "figures/fig6_ecg12.png" in report.files
    assert not (tmp_path / "report").exists()  # building writes nothing
    written = write_report(report)
    assert sorted(p.relative_to(tmp_path / "report").as_posix() for p in written) == sorted(report.files)


def test_both_command_lines_write_the_same_files(tmp_path):
    """scripts/make_tables.py and the sweep (reproduce_tables.py: build_report(sweep) then write_report into
    <sweep>/report) write the same files from one build_report."""
    import runpy

    sweep = tmp_path / "sweep"
    for s in (MIX3, FLOW_F, ERM):
        for seed in (0, 1):
            write_run(sweep, "ecg12", s.regularizer, s.alpha, s.keep_original, 0.1, seed, best=0.6 + 0.02 * seed)
    module = runpy.run_path(str(SCRIPT), run_name="make_tables")
    assert module["main"]([str(sweep), "--out-dir", str(tmp_path / "cli")]) == 0
    write_report(build_report(sweep), tmp_path / "sweep_report")
    cli = {p.relative_to(tmp_path / "cli").as_posix(): p for p in (tmp_path / "cli").rglob("*") if p.is_file()}
    own = {
        p.relative_to(tmp_path / "sweep_report").as_posix(): p
        for p in (tmp_path / "sweep_report").rglob("*")
        if p.is_file()
    }
    assert sorted(cli) == sorted(own) and "figures/fig6_ecg12.png" in cli
    for name in cli:
        if not name.endswith((".png", ".pdf")):  # a PDF holds the time it was made
            assert cli[name].read_bytes() == own[name].read_bytes(), name


def test_latex_through_styler_booktabs_and_multicolumn_headers(tmp_path):
    for dataset in ("ecg12", "ecg55"):  # the same noise levels: one tabular in Table II, as in the paper
        for s, best in ((ERM, 0.5), (FLOW_F, 0.6)):
            for noise in (0.0, 0.4):
                write_run(tmp_path, dataset, s.regularizer, s.alpha, s.keep_original, noise, best=best)
    write_run(tmp_path, "chestxray14", "erm", noise=0.1, best=0.7)
    report = make_report(tmp_path)
    t1, t2, t3 = (report.tables[k].latex for k in ("I", "II", "III"))
    assert t1.count(r"\begin{tabular}{lccc}") == 1 and r"ChestX-ray14 & \multicolumn{3}{c}{10\%} \\" in t1
    assert r"Regularization & Best & Last & Diff. \\" in t1
    assert t2.count(r"\begin{tabular}") == 1 and r"Dataset & Regularization & 0\% & 40\% \\" in t2
    assert r"ECG-12 & ERM & \underline{0.5000} {\scriptsize(paper 0.6617)}" in t2 and "\nECG-55 & ERM & " in t2
    assert "\n & Mixup ($\\alpha=1.0$) & -- {\\scriptsize(paper 0.6773)}" in t2  # the dataset on its first row only
    assert r" & Flow-Mixup ($\alpha=3.0$, Op=False) & \textbf{0.6000} {\scriptsize(paper 0.6994)}" in t2
    assert r" & \multicolumn{2}{c}{ECG-12} & \multicolumn{2}{c}{ECG-55} \\" in t3
    for tex in (t1, t2, t3):
        assert (
            tex.count(r"\toprule")
            == tex.count(r"\midrule")
            == tex.count(r"\bottomrule")
            == tex.count(r"\begin{tabular}")
        )
        assert tex.startswith("% generated by flowmixup.report.tables") and tex.endswith("\\end{table*}\n")
    # Markdown: Table II's shared table names each dataset on its first row
    rows = md_rows(report.markdown["II"])
    assert rows[0] == ["Dataset", "Regularization", "0%", "40%"]
    assert [r[0] for r in rows[1:]] == ["ECG-12", "", "", "", "", "", "ECG-55", "", "", "", "", ""]


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` (module ``module``) imports, at module level or in a function."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != module}


def test_no_import_circle_in_src():
    root = PROJECT_ROOT / "src"
    paths = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (root / "flowmixup").rglob("*.py")
    }
    graph = {module: _imports(path, module, set(paths)) for module, path in paths.items()}
    assert "flowmixup.report.tables" in graph["flowmixup.report.pipeline"]  # the graph sees relative imports

    def circle_from(module: str, trail: list[str]) -> list[str] | None:
        if module in trail:
            return trail[trail.index(module) :] + [module]
        for imported in sorted(graph[module]):
            if imported not in done and (circle := circle_from(imported, trail + [module])):
                return circle
        done.add(module)
        return None

    done: set[str] = set()
    for module in sorted(graph):
        circle = circle_from(module, [])
        assert circle is None, " -> ".join(circle)


def test_report_modules_have_short_functions_and_lines():
    """No function of the report's modules is longer than 60 lines, no line longer than 120 characters."""
    folder = PROJECT_ROOT / "src" / "flowmixup" / "report"
    for path in sorted(set(folder.glob("*.py")) - {folder / "reproduce.py", folder / "planner.py"}):
        text = path.read_text(encoding="utf-8")
        long = [
            (node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60
        ]
        assert not long, (path.name, long)
        wide = [i for i, line in enumerate(text.splitlines(), 1) if len(line) > 120]
        assert not wide, (path.name, wide)


def test_seeds_whose_corruption_seed_follows_them_share_one_row(tmp_path):
    """corruption.seed is ${seed} by default: three seeds are one row of three, not three rows of one; a run that
    sets it to something else than its seed is a setting of its own (its own row, labelled)."""

    def with_config(run: Path, corruption_seed: int) -> None:
        summary = json.loads((run / "summary.json").read_text())
        summary["config"] = {"seed": summary["seed"], "corruption": {"kind": "resample", "seed": corruption_seed}}
        (run / "summary.json").write_text(json.dumps(summary))

    for seed in range(3):
        with_config(write_run(tmp_path, "ecg12", "erm", noise=0.4, seed=seed, best=0.5 + 0.01 * seed), seed)
    report = make_report(tmp_path)
    erm = cell(report, "II", "ecg12", ERM, 0.4, "best")
    assert erm["n_seeds"] == 3 and erm["mean"] == pytest.approx(0.51)
    with_config(write_run(tmp_path, "ecg12", "erm", noise=0.4, seed=0, best=0.6, subdir="other/erm_seed0"), 5)
    labels = set(make_report(tmp_path).tidy["II"]["setting"])
    assert {"ERM [corruption.seed=${seed}]", "ERM [corruption.seed=5]"} <= labels
