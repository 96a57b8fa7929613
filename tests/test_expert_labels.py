"""The expert-label reader and the measured noise profile of ChestX-ray14 (issue 21).

The real files (../shared/data/chestxray14) are compared with an independent plain-pandas computation; the reader's
errors are checked on small hand-written files."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowmixup.analysis.noise_profile import fleiss_kappa, noise_profile, reader_vs_others, wilson
from flowmixup.data.base import DataError
from flowmixup.data.chestxray14 import CLASSES
from flowmixup.data.expert_labels import read_expert_labels

ROOT = Path(__file__).resolve().parents[1]
RELEASE = [c.replace("_", " ") for c in CLASSES]


@pytest.fixture(scope="module")
def nih(shared_data):
    folder = shared_data / "chestxray14"
    if not (folder / "expert_labels" / "test_labels.csv").is_file():
        pytest.skip(f"expert labels not found in {folder / 'expert_labels'}")
    return folder


def test_profile_counts_match_an_independent_computation(nih, tmp_path):
    table = pd.read_csv(nih / "Data_Entry_2017_v2020.csv.gz", dtype=str)
    expert = pd.read_csv(nih / "expert_labels" / "test_labels.csv", dtype=str)
    findings = table.set_index("Image Index")["Finding Labels"]
    test_list = set((nih / "test_list.txt").read_text().split())
    assert set(expert["Image ID"]) <= test_list and len(expert) == 810

    profile = noise_profile(nih, nih / "expert_labels")
    t = profile.table.set_index("class")
    assert list(t.index) == CLASSES and profile.not_test == 0
    for cls, col in zip(CLASSES, RELEASE):
        nlp = np.array([cls in findings[i].split("|") for i in expert["Image ID"]])
        exp = (expert[col] == "YES").to_numpy()
        fp, fn = int((nlp & ~exp).sum()), int((~nlp & exp).sum())
        row = t.loc[cls]
        assert (row["images"], row["expert_positive"], row["nlp_positive"]) == (810, exp.sum(), nlp.sum())
        assert (row["false_positive"], row["false_negative"]) == (fp, fn)
        assert math.isclose(row["fp_rate"], fp / (810 - exp.sum()), rel_tol=1e-9)
        if exp.sum():
            assert math.isclose(row["fn_rate"], fn / exp.sum(), rel_tol=1e-9)
            assert row["fn_rate_lo"] <= row["fn_rate"] <= row["fn_rate_hi"]
    assert t.loc["Atelectasis", "expert_positive"] == 303 and t.loc["Atelectasis", "nlp_positive"] == 102

    readers = pd.read_csv(nih / "expert_labels" / "test_individual_readers.csv", dtype=str)
    assert len(readers) == 4050
    # reader agreement of Effusion, computed directly: each reader against the majority of the other four
    yes = readers.assign(v=(readers["Effusion"] == "YES").astype(int)).pivot(
        index="Image ID", columns="Reader ID", values="v"
    )
    agree = compared = 0
    for r in yes.columns:
        others = yes.drop(columns=r).sum(axis=1)
        decided = others != 2
        agree += int(((yes[r] == 1) == (others >= 3))[decided].sum())
        compared += int(decided.sum())
    assert math.isclose(t.loc["Effusion", "reader_agreement"], agree / compared, rel_tol=1e-9)
    assert -1 <= t.loc["Effusion", "fleiss_kappa"] <= 1

    out = tmp_path / "profile"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/noise_profile.py"), "--metadata", str(nih)]
        + ["--expert", str(nih / "expert_labels"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    written = pd.read_csv(out / "noise_profile.csv")
    assert {"class", "images", "expert_positive", "nlp_positive", "false_positive", "false_negative"} <= set(
        written.columns
    ) and {"fp_rate", "fn_rate", "fp_rate_lo", "fn_rate_hi", "fleiss_kappa"} <= set(written.columns)
    assert list(written["false_negative"]) == list(t["false_negative"])
    assert (out / "noise_profile.png").stat().st_size > 0 and (out / "noise_profile.pdf").stat().st_size > 0
    assert "| Atelectasis | 303 | 102 |" in (out / "noise_profile.md").read_text()
    assert "fn_rate" in done.stderr and "wrote" in done.stderr


def test_wilson_and_kappa():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson(50, 100)
    assert math.isclose(lo + hi, 1.0, abs_tol=1e-9) and 0.39 < lo < 0.41
    assert all(math.isnan(v) for v in wilson(0, 0))
    assert math.isclose(fleiss_kappa(np.array([[1, 0, 1, 0]] * 5)), 1.0)
    assert math.isnan(fleiss_kappa(np.zeros((5, 4))))
    votes = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0]])  # 3 readers, 3 images, 1 class
    a = reader_vs_others(votes[:, :, None])
    # image 1: a tie for readers 0 and 2 (left out); reader 1 says no where both others say yes (a false negative)
    assert a["compared"][0] == 7 and a["agree"][0] == 6 and a["fp"][0] == 0 and a["fn"][0] == 1


# ---------------------------------------------------------------------------------------------- bad files
def _write(folder: Path, rows: list[list[str]], header: list[str] | None = None, name="test_labels.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = header or ["Image ID", "Patient ID", "Abnormal", *RELEASE, "Other"]
    lines = [",".join(header)] + [",".join(r) for r in rows]
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


def _row(image: str, values: list[str] | None = None) -> list[str]:
    return [image, "1", "NO", *(values or ["NO"] * len(CLASSES)), "NO"]


def test_reader_maps_names_and_reads_yes_no_and_01(tmp_path):
    values = ["YES", "0", "1", "no"] + ["NO"] * (len(CLASSES) - 4)
    values[CLASSES.index("Pleural_Thickening")] = "YES"
    _write(tmp_path, [_row("a.png"), _row("b.png", values)])
    labels = read_expert_labels(tmp_path, {"a.png", "b.png"}, "table.csv")
    assert labels.images == ["a.png", "b.png"] and labels.readers is None
    assert labels.majority[1, :4].tolist() == [1, 0, 1, 0]
    assert labels.majority[1, CLASSES.index("Pleural_Thickening")] == 1 and labels.majority[0].sum() == 0


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown_image", r"test_labels.csv, line 3, column 'Image ID': image zz.png is not in the NIH table t.csv"),
        ("bad_value", r"test_labels.csv, line 2, column 'Effusion': value 'MAYBE' is neither YES/NO nor 1/0"),
        ("missing_column", r"test_labels.csv, line 1, column 'Hernia': missing"),
        ("reader_value", r"test_individual_readers.csv, line 3, column 'Mass': value '2' is neither YES/NO nor 1/0"),
        ("reader_column", r"test_individual_readers.csv, line 1, column 'Reader ID': missing"),
    ],
)
def test_bad_expert_files_are_one_line(tmp_path, case, expected):
    values = ["NO"] * len(CLASSES)
    if case == "bad_value":
        values[CLASSES.index("Effusion")] = "MAYBE"
    rows = [_row("a.png", values), _row("zz.png" if case == "unknown_image" else "b.png")]
    header = None
    if case == "missing_column":
        header = ["Image ID", "Patient ID", "Abnormal", *RELEASE[:-1], "Other"]
        rows = [r[:-2] + r[-1:] for r in rows]
    _write(tmp_path, rows, header)
    if case.startswith("reader"):
        rheader = ["Image ID", "Patient ID", "Reader ID", "Abnormal", *RELEASE, "Other"]
        bad = ["NO"] * len(CLASSES)
        bad[CLASSES.index("Mass")] = "2"
        rrows = [["a.png", "1", "7", "0", *(["NO"] * len(CLASSES)), "NO"], ["b.png", "1", "7", "0", *bad, "NO"]]
        if case == "reader_column":
            rheader.remove("Reader ID")
            rrows = [r[:2] + r[3:] for r in rrows]
        _write(tmp_path, rrows, rheader, name="test_individual_readers.csv")
    with pytest.raises(DataError) as err:
        read_expert_labels(tmp_path, {"a.png", "b.png"}, "t.csv")
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert re.search(expected, message), message


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match="expert label folder not found"):
        read_expert_labels(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- runs and report
def test_expert_scores_survive_a_checkpoint():
    from flowmixup.training.metrics import Scores
    from flowmixup.training.records import RunState

    s = Scores(0.6, 0.3, np.array([0.5, np.nan]), np.array([0.2, np.nan]), ["B"], ["B"])
    state = RunState(expert=[s])
    back = RunState.from_dict(state.to_dict())
    assert len(back.expert) == 1 and back.expert[0].auc == 0.6
    np.testing.assert_array_equal(back.expert[0].per_class_auc, s.per_class_auc)
    assert "expert" not in RunState().to_dict()  # runs without expert labels: the checkpoint as before
    assert RunState.from_dict(RunState().to_dict()).expert == []


def _summary(folder: Path, regularizer: str, seed: int, expert: float | None) -> None:
    import json

    record = {
        "status": "ok",
        "dataset": "chestxray14",
        "primary_metric": "auc",
        "regularizer": regularizer,
        "alpha": None if regularizer == "erm" else 3.0,
        "keep_original": None if regularizer == "erm" else False,
        "noise": 0.1,
        "seed": seed,
        "best_test_auc": 0.70 + seed / 100,
        "last_test_auc": 0.69,
        "test_auc_at_best_val": 0.69,
    }
    if expert is not None:
        record.update(
            best_test_expert_auc=expert + seed / 100,
            last_test_expert_auc=expert,
            test_expert_auc_at_best_val=expert,
            best_test_expert_macro_f1=0.3,
            last_test_expert_macro_f1=0.3,
            test_expert_macro_f1_at_best_val=0.3,
            expert_min_positives=10,
        )
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(record))


def test_report_has_an_expert_table_only_for_runs_with_expert_metrics(tmp_path):
    from flowmixup.report.pipeline import ReportOptions, build_report

    for i, (reg, seed) in enumerate([("erm", 0), ("erm", 1), ("flowmixup", 0)]):
        _summary(tmp_path / "with" / str(i), reg, seed, 0.8)
    report = build_report(tmp_path / "with", ReportOptions(figures=False))
    assert {"table_expert.md", "table_expert.csv", "table_expert.tex"} <= set(report.files)
    assert "## Table expert labels" in report.report_md and "at least 10 expert positives" in report.report_md
    cells = report.tables["expert"].cells
    erm = cells[(cells["setting"] == "ERM") & (cells["quantity"] == "expert_auc_best")].iloc[0]
    assert erm["n_seeds"] == 2 and math.isclose(erm["mean"], 80.5, abs_tol=1e-9) and erm["text"] == "80.5 ± 0.7"
    nih = cells[(cells["setting"] == "ERM") & (cells["quantity"] == "nih_auc_best")].iloc[0]
    assert math.isclose(nih["mean"], 70.5, abs_tol=1e-9)

    _summary(tmp_path / "without" / "0", "erm", 0, None)
    report = build_report(tmp_path / "without", ReportOptions(figures=False))
    assert "expert" not in report.tables and not any("expert" in name for name in report.files)


def test_script_on_a_table_without_split_lists_and_a_bad_file(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "Data_Entry_2017_v2020.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID\na.png,Effusion|Mass,0,1\nb.png,No Finding,0,2\n"
    )
    values = ["NO"] * len(CLASSES)
    values[CLASSES.index("Effusion")] = "YES"
    _write(tmp_path / "expert", [_row("a.png", values), _row("b.png", ["YES"] + ["NO"] * (len(CLASSES) - 1))])
    script = str(ROOT / "scripts/noise_profile.py")
    args = [sys.executable, script, "--metadata", str(meta), "--expert", str(tmp_path / "expert")]
    done = subprocess.run([*args, "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    t = pd.read_csv(tmp_path / "out" / "noise_profile.csv").set_index("class")
    assert t.loc["Mass", "false_positive"] == 1 and t.loc["Atelectasis", "false_negative"] == 1
    assert t.loc["Effusion", "fn_rate"] == 0.0 and t.loc["Effusion", "expert_positive"] == 1
    _write(tmp_path / "expert", [_row("a.png", ["0"] * len(CLASSES)), _row("b.png", ["N/A"] * len(CLASSES))])
    done = subprocess.run([*args, "--out", str(tmp_path / "out2")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "test_labels.csv, line 3, column 'Atelectasis': value 'N/A'" in last
    assert not (tmp_path / "out2").exists()
