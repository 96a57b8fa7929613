"""PTB-XL in the tables: two tasks in one sweep are two datasets (ptbxl_<task>), ``--set ptbxl:...`` reaches both,
the report writes macro-AUC (Table I) and macro-F1 (an extra table, from dataset.report_metrics) and puts the
published benchmark macro-AUC (another paper's model, from the packaged CSV) beside the ERM 0% cell only.

The end-to-end test runs ``scripts/reproduce_tables.py`` on a GENERATED PTB-XL tree (real statements and the first
rows of the real slice, generated records: tests/wfdb_records.build_ptbxl_tree), prepared once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flowmixup.report.paper import load_published
from flowmixup.report.pipeline import ReportOptions, build_report, write_report
from flowmixup.sweep.cells import cell_dir
from flowmixup.sweep.plan import plan
from flowmixup.sweep.profile import load_profile
from project_config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "reproduce_tables.py"
PUBLISHED = {
    "all": 0.925,
    "diagnostic": 0.937,
    "subdiagnostic": 0.930,
    "superdiagnostic": 0.930,
    "form": 0.899,
    "rhythm": 0.957,
}  # Strodthoff et al. 2020, best model per task (the numbers)


@pytest.mark.slow
def test_the_profile_runs_both_tasks_as_two_datasets(tmp_path):
    prof = load_profile("ptbxl")
    assert [r["name"] for r in prof["rows"]] == [
        "erm",
        "mixup_a1",
        "mixup_a3",
        "manifold_mixup_a3",
        "flowmixup_a3_op_false",
        "flowmixup_a3_op_true",
    ]
    checked = plan(prof, [0], {"ptbxl": [f"dataset.root={tmp_path}"]})  # the config option reaches both tasks
    assert checked.problems == []
    assert sorted({b.dataset for b in checked.blocks}) == ["ptbxl_all", "ptbxl_superdiagnostic"]
    assert {c["noise"] for c in checked.grid} == {0.0, 0.1, 0.4, 0.7} and len(checked.grid) == 2 * 6 * 4
    for b in checked.blocks:
        assert f"dataset.root={tmp_path}" in b.overrides and "++dataset.report_metrics=[auc,macro_f1]" in b.overrides
        assert b.config.dataset.label == f"PTB-XL {b.config.dataset.task}"
    folders = {cell_dir(Path("/s"), c["dataset"], c, c["noise"], c["seed"]) for c in checked.grid}
    assert len(folders) == len(checked.grid)  # no two cells share a folder
    # one task only, by its dataset name; the other one still lacks its root
    one = plan(prof, [0], {"ptbxl_all": [f"dataset.root={tmp_path}"]})
    assert [p.split(":")[0] for p in one.problems] == ["ptbxl_superdiagnostic"]
    assert one.problems[0].endswith("pass --set ptbxl:dataset.root=/path")


def test_published_numbers_come_from_the_packaged_csv():
    published = load_published()
    assert {k[0]: v[0] for k, v in published.items()} == {f"ptbxl_{t}": v for t, v in PUBLISHED.items()}
    assert all(k[1:] == ("auc", "erm", 0.0, "best") for k in published)
    assert all("Strodthoff" in v[1] for v in published.values())


def write_ptbxl_run(root: Path, task: str, reg: str, noise: float, auc: float, f1: float) -> None:
    run = root / f"ptbxl_{task}" / f"{reg}_n{noise}"
    run.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "test_auc": [auc - 0.05, auc], "test_macro_f1": [f1 - 0.1, f1]}).to_csv(
        run / "metrics.csv", index=False
    )
    summary = {
        "status": "ok",
        "dataset": f"ptbxl_{task}",
        "primary_metric": "auc",
        "regularizer": reg,
        "alpha": 1.0 if reg == "mixup" else None,
        "keep_original": None,
        "noise": noise,
        "seed": 0,
        "best_test_auc": auc,
        "last_test_auc": auc - 0.05,
        "best_test_macro_f1": f1,
        "last_test_macro_f1": f1 - 0.1,
        "variance_auc": 0.1,
        "variance_macro_f1": 0.2,
        "variance_epochs": 2,
        "config": {
            "dataset": {
                "name": f"ptbxl_{task}",
                "label": f"PTB-XL {task}",
                "task": task,
                "primary_metric": "auc",
                "report_metrics": ["auc", "macro_f1"],
            },
            "regularizer": {
                "name": reg,
                "label": {"erm": "ERM", "mixup": "Mixup"}[reg],
                "shown": [] if reg == "erm" else ["alpha"],
                **({"alpha": 1.0} if reg == "mixup" else {}),
            },
        },
    }
    (run / "summary.json").write_text(json.dumps(summary))


def test_report_has_both_metrics_and_the_published_number_beside_erm_0(tmp_path):
    runs = {
        ("superdiagnostic", "erm", 0.0): (0.91, 0.61),
        ("superdiagnostic", "mixup", 0.0): (0.92, 0.63),
        ("superdiagnostic", "erm", 0.4): (0.81, 0.41),
        ("all", "erm", 0.0): (0.88, 0.21),
        ("all", "mixup", 0.4): (0.80, 0.11),
    }
    for (task, reg, noise), (auc, f1) in runs.items():
        write_ptbxl_run(tmp_path, task, reg, noise, auc, f1)
    report = build_report(tmp_path, ReportOptions(figures=False))
    write_report(report)
    t1, f1_table = report.tidy["I"], report.tidy["extra_macro_f1"]
    assert set(t1["dataset"]) == set(f1_table["dataset"]) == {"ptbxl_superdiagnostic", "ptbxl_all"}
    assert set(t1["primary_metric"]) == {"auc"} and set(f1_table["primary_metric"]) == {"macro_f1"}
    label = {"erm": "ERM", "mixup": "Mixup (α=1.0)"}
    t1, f1_table = (t[t["setting"].isin(label.values())] for t in (t1, f1_table))
    for (task, reg, noise), (auc, f1) in runs.items():
        row = t1[
            (t1["dataset"] == f"ptbxl_{task}")
            & (t1["regularizer"] == reg)
            & (t1["noise"] == noise)
            & (t1["quantity"] == "best")
        ]
        assert row["mean"].tolist() == pytest.approx([auc * 100])
        row = f1_table[
            (f1_table["dataset"] == f"ptbxl_{task}") & (f1_table["regularizer"] == reg) & (f1_table["noise"] == noise)
        ]
        assert row["mean"].tolist() == pytest.approx([f1]) and row["quantity"].tolist() == ["best"]
    shown = t1.dropna(subset=["published"])
    assert sorted(
        zip(shown["dataset"], shown["regularizer"], shown["noise"], shown["quantity"], shown["published"], strict=True)
    ) == [
        ("ptbxl_all", "erm", 0.0, "best", pytest.approx(92.5)),
        ("ptbxl_superdiagnostic", "erm", 0.0, "best", pytest.approx(93.0)),
    ]
    assert "published" not in f1_table.columns  # no macro-F1 was published here
    md = report.markdown["I"]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| ERM ")]
    assert ["ERM", "<u>91.0</u> (published 93.0†)", "<u>86.0</u>", "5.0"] in [r[:4] for r in rows]  # Mixup's 92.0: best
    assert md.count("(published ") == 2 and "ANOTHER paper's model" in md and "Strodthoff et al. 2020" in md
    assert "### PTB-XL superdiagnostic" in md and "### PTB-XL all" in md
    extra = report.markdown["extra_macro_f1"]
    assert extra.startswith("## Table macro-F1") and "PTB-XL all" in extra and "(published" not in extra
    files = set(report.files)
    assert {"table_macro_f1.md", "table_macro_f1.csv", "table_macro_f1.tex"} <= files
    assert r"(published 93.0$^\dagger$)" in report.files["table1.tex"]
    csv = pd.read_csv(tmp_path / "report" / "table1.csv")
    assert csv["published"].notna().sum() == 2


# --------------------------------------------------------------------------------------------------------------
# End to end, small: scripts/reproduce_tables.py --profile <2 tasks> on a generated tree
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_reproduce_ptbxl_profile_end_to_end(shared_data, tmp_path):
    from wfdb_records import build_ptbxl_tree

    root = tmp_path / "ptb-xl"
    build_ptbxl_tree(shared_data, root, 160)  # GENERATED records under real rows (folds 1-10)
    env = {**os.environ, "FLOWMIXUP_DATA_DIR": str(tmp_path / "data")}
    env.pop("FLOWMIXUP_PROJECT_ROOT", None)
    res = subprocess.run(
        [
            sys.executable,
            "scripts/prepare_data.py",
            "dataset=ptbxl",
            f"dataset.root={root}",
            "dataset.prepare_workers=1",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    # the ptbxl profile's datasets, with fewer rows and noise levels
    prof = load_profile("ptbxl")
    profile = tmp_path / "ptbxl_small.yaml"
    entries = [dict(e, noise=[0.0, 0.4]) for e in prof["datasets"]]
    profile.write_text(json.dumps({"rows": ["erm"], "datasets": entries}))
    sets = [
        f"dataset.root={root}",
        "trainer.epochs=2",
        "backbone.blocks=[2,1,1,1]",
        "backbone.width=4",
        "trainer.num_threads=1",
        "trainer.device=cpu",
        "trainer.num_workers=0",
        "trainer.batch_size=16",
        "dataset.variance_epochs=2",
    ]
    sweep = tmp_path / "sweep"
    args = [sys.executable, str(SCRIPT), "--profile", str(profile), "--sweep-dir", str(sweep)]
    for item in sets:
        args += ["--set", f"ptbxl:{item}"]
    res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for task in ("superdiagnostic", "all"):
        for noise in (0.0, 0.4):
            summary = json.loads(
                (cell_dir(sweep, f"ptbxl_{task}", {"regularizer": "erm"}, noise, 0) / "summary.json").read_text()
            )
            assert summary["status"] == "ok" and summary["dataset"] == f"ptbxl_{task}"
    table1 = pd.read_csv(sweep / "report" / "table1.csv")
    f1 = pd.read_csv(sweep / "report" / "table_macro_f1.csv")
    assert set(table1["dataset"]) == set(f1["dataset"]) == {"ptbxl_superdiagnostic", "ptbxl_all"}
    assert set(table1["primary_metric"]) == {"auc"} and set(f1["primary_metric"]) == {"macro_f1"}
    erm0 = table1[(table1["regularizer"] == "erm") & (table1["noise"] == 0.0) & (table1["quantity"] == "best")]
    published = sorted(zip(erm0["dataset"], erm0["published"], strict=True))
    assert published == [("ptbxl_all", 92.5), ("ptbxl_superdiagnostic", 93.0)]
    assert (erm0["status"] == "ok").all()
    md = (sweep / "report" / "report.md").read_text()
    # beside the ERM 0% cell of each task, in Table I and again in its validation-selected twin
    assert md.count("(published ") == 4 and "ANOTHER paper's model" in md and "## Table macro-F1" in md
