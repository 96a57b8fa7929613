"""make reproduce-tables: the preflight (nothing launched on a bad setup), a tiny profile end to end and a second
call that only re-aggregates, and a sweep with a failed cell exiting non-zero."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest

from flowmixup.project import PROJECT_ENV, project_root
from flowmixup.sweep.cells import cell_dir, failed_cells
from flowmixup.sweep.launch import run_profile
from flowmixup.sweep.plan import plan
from flowmixup.sweep.profile import load_profile
from flowmixup.sweep.rows import table_rows
from project_config import PROJECT_ROOT, TINY

PAPER_ROWS = ["erm", "mixup_a1", "mixup_a3", "manifold_mixup_a3", "flowmixup_a3_op_false", "flowmixup_a3_op_true"]

SCRIPT = PROJECT_ROOT / "scripts" / "reproduce_tables.py"


def test_profiles_name_known_rows_and_experiments():
    from project_config import CONF_DIR

    for name in ("mini", "paper", "ptbxl"):
        prof = load_profile(name)
        assert [r["name"] for r in prof["rows"]] == PAPER_ROWS  # the six rows of the paper's tables, in order
        assert prof["rows"][1]["overrides"] == ["regularizer=mixup", "regularizer.alpha=1.0"]
        for entry in prof["datasets"]:
            assert (CONF_DIR / "experiment" / f"{entry['experiment']}.yaml").is_file()
    with pytest.raises(SystemExit, match="profile 'nope' not found; known profiles: mini, paper, ptbxl"):
        load_profile("nope")
    assert list(table_rows()) == PAPER_ROWS


def test_rows_come_from_the_profile(tmp_path):
    """A row is a name and its overrides (no Python list to extend): bare names refer to the rows of
    conf/reproduce/rows.yaml, a profile of one's own may write others inline; the grid and the cell folders follow
    the composed config."""
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "rows:\n  - erm\n  - {name: mixup_a2, overrides: [regularizer=mixup, regularizer.alpha=2.0]}\n"
        "datasets:\n  - experiment: mini_synth_ecg\n    noise: [0.1]\n"
    )
    prof = load_profile(str(profile))
    assert prof["rows"] == [
        {"name": "erm", "overrides": ["regularizer=erm"]},
        {"name": "mixup_a2", "overrides": ["regularizer=mixup", "regularizer.alpha=2.0"]},
    ]
    checked = plan(prof, [0], {})
    assert checked.problems == []
    assert checked.grid == [
        {
            "dataset": "synth_ecg",
            "regularizer": "erm",
            "alpha": None,
            "keep_original": None,
            "noise": 0.1,
            "seed": 0,
            "row": "erm",
        },
        {
            "dataset": "synth_ecg",
            "regularizer": "mixup",
            "alpha": 2.0,
            "keep_original": None,
            "noise": 0.1,
            "seed": 0,
            "row": "mixup_a2",
        },
    ]
    assert (
        cell_dir(tmp_path, "synth_ecg", checked.blocks[1].fields, 0.1, 0)
        == tmp_path / "synth_ecg" / "mixup_a2.0_opnone" / "noise0.1_seed0"
    )
    profile.write_text("rows: [erm, nope]\ndatasets: []\n")
    with pytest.raises(SystemExit, match="row 'nope' is neither"):
        load_profile(str(profile))


@pytest.mark.slow
def test_tiny_profile_runs_then_skips_finished_cells(tmp_path, capsys):
    profile = tmp_path / "tiny.yaml"
    overrides = [o for o in TINY if not o.startswith("trainer.progress")] + [f"paths.data_dir={tmp_path / 'data'}"]
    profile.write_text(
        "rows: [erm, flowmixup_a3_op_true]\n"
        "datasets:\n"
        "  - experiment: mini_synth_ecg\n"
        "    noise: [0.0, 0.4]\n"
        f"    overrides: {json.dumps(overrides)}\n"
    )
    sweep = tmp_path / "sweep"
    assert run_profile(str(profile), [0], sweep, blocks_at_once=2) == 0  # the two blocks side by side
    summaries = sorted(sweep.rglob("summary.json"))
    assert len(summaries) == 4
    for row in ("erm", "flowmixup_a3_op_true"):
        for noise in (0.0, 0.4):
            assert (cell_dir(sweep, "synth_ecg", row, noise, 0) / "summary.json").is_file()
    report = (sweep / "report" / "report.md").read_text()
    assert "Flow-Mixup" in report and "ERM" in report
    assert len(json.loads((sweep / "grid.json").read_text())) == 4
    mtimes = [p.stat().st_mtime_ns for p in summaries]
    capsys.readouterr()
    assert run_profile(str(profile), [0], sweep) == 0  # everything finished: only re-aggregates
    assert [p.stat().st_mtime_ns for p in summaries] == mtimes
    out = capsys.readouterr().out
    assert "4 already finished" in out and out.count("all cells finished, skipped") == 2


# --------------------------------------------------------------------------------------------------------------
# Preflight: every block's config is composed and checked before anything is launched
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_profile_without_roots_stops_before_launching(tmp_path):
    env = dict(os.environ, FLOWMIXUP_DATA_DIR=str(tmp_path / "data"))  # no prepared cache there
    env.pop(PROJECT_ENV, None)
    sweep = tmp_path / "sweep"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--profile", "paper", "--sweep-dir", str(sweep)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and len(lines) == 3, lines
    for line, name in zip(lines, ("chestxray14", "ecg12", "ecg55"), strict=True):
        assert line.startswith(f"error: {name}: dataset.root is not set") and line.endswith(
            f"pass --set {name}:dataset.root=/path"
        ), line
    assert "nothing was run" in res.stdout
    assert not sweep.exists()  # no block launched, no cell folder, not even grid.json


@pytest.mark.slow
def test_a_ready_cache_stands_in_for_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWMIXUP_DATA_DIR", str(tmp_path / "data"))
    cache = tmp_path / "data" / "chestxray14"
    cache.mkdir(parents=True)
    (cache / "chestxray14_1024.json").write_text(json.dumps({"complete": True, "config": {"dataset": "chestxray14"}}))
    (cache / "chestxray14_512.json").write_text(json.dumps({"complete": False, "config": {"dataset": "ecg12"}}))
    checked = plan(load_profile("paper"), [0], {})
    assert [p.split(":")[0] for p in checked.problems] == ["ecg12", "ecg55"]
    xray = [b for b in checked.blocks if b.dataset == "chestxray14"]
    assert len(xray) == 6 and all(b.overrides[-1] == "dataset.root=null" for b in xray)
    assert any("chestxray14_1024.h5" in note for note in checked.notes)
    # a root given on the command line is enough too
    checked = plan(load_profile("paper"), [0], {"ecg12": ["dataset.root=/tmp"], "paper_ecg55": ["dataset.root=/tmp"]})
    assert checked.problems == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "sets, expected",
    [
        (
            ["synth_ecg:trainer.bogus=1"],
            "error: synth_ecg, synth_ecg_missed: trainer.bogus is not a config key "
            "(from --set synth_ecg:trainer.bogus=1)",
        ),
        (["synth_ecg:trainer.epochs=0"], "error: synth_ecg, synth_ecg_missed: trainer.epochs"),
        (
            ["synth_ecg:trainr.epochs=3"],
            "error: synth_ecg, synth_ecg_missed: trainr is not a config key; did you mean trainer?",
        ),
        (["synth_ecg"], "error: --set synth_ecg: expected DATASET:KEY=VALUE"),
        (["synth_ecg:trainer.epochs=[1"], "error: --set synth_ecg:trainer.epochs=[1: not a valid override"),
        (
            ["cifar10:dataset.root=/x"],
            "error: --set cifar10:dataset.root=/x: 'cifar10' is not a dataset of this profile",
        ),
    ],
)
def test_a_bad_set_is_one_line_and_nothing_runs(tmp_path, capsys, sets, expected):
    """One line for a bad --set; ``synth_ecg:`` reaches both blocks built on the synth_ecg dataset (the uniform
    one and the missed-findings one), and the line names both."""
    main = runpy.run_path(str(SCRIPT), run_name="reproduce_tables")["main"]
    args = ["--profile", "mini", "--sweep-dir", str(tmp_path / "sweep")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert not (tmp_path / "sweep").exists()


def test_failed_cells_are_those_without_an_ok_summary(tmp_path):
    grid = [
        {"dataset": "synth_ecg", "regularizer": "erm", "alpha": None, "keep_original": None, "noise": n, "seed": 0}
        for n in (0.0, 0.1, 0.4)
    ]
    ok, failed, unfinished = (cell_dir(tmp_path, "synth_ecg", "erm", n, 0) for n in (0.0, 0.1, 0.4))
    for folder, status in ((ok, "ok"), (failed, "failed")):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"status": status, "reason": "loss became NaN"}))
    (failed / "train.log").write_text("...")
    out = failed_cells(tmp_path, grid)
    assert [(f, why) for f, why, _ in out] == [
        (failed, "status failed: loss became NaN"),
        (unfinished, "no summary.json (the run did not end)"),
    ]
    assert out[0][2] == failed / "train.log" and out[1][2] == tmp_path / "logs" / "synth_ecg__erm.log"


def test_project_root_is_found_without_parents_arithmetic(tmp_path, monkeypatch):
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    assert project_root() == PROJECT_ROOT.resolve()
    assert project_root(PROJECT_ROOT / "scripts") == PROJECT_ROOT.resolve()  # a script's folder: the one above
    monkeypatch.setenv(PROJECT_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match="holds no conf/config.yaml"):
        project_root()
    monkeypatch.setenv(PROJECT_ENV, str(PROJECT_ROOT))
    assert project_root(tmp_path) == PROJECT_ROOT.resolve()


@pytest.mark.slow
def test_a_failed_cell_makes_the_sweep_exit_non_zero(tmp_path):
    # one cell, made to fail fast: a learning rate that blows the loss up at the second step (status "failed",
    # the block itself exits 0, as Hydra multiruns do)
    profile = tmp_path / "one.yaml"
    overrides = [o for o in TINY if not o.startswith("trainer.progress")] + [
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.lr=1e30",
    ]
    profile.write_text(
        "rows: [erm]\ndatasets:\n  - experiment: mini_synth_ecg\n    noise: [0.0]\n"
        f"    overrides: {json.dumps(overrides)}\n"
    )
    sweep = tmp_path / "sweep"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--profile", str(profile), "--sweep-dir", str(sweep)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: 1 of 1 cells failed (0 without summary.json, 1 with a status other than ok)")
    assert str(sweep / "logs") in lines[0]
    cell = cell_dir(sweep, "synth_ecg", "erm", 0.0, 0)
    assert lines[1].startswith(f"  {cell}: status failed: non-finite training loss") and lines[1].endswith(
        f"log: {cell / 'train.log'}"
    )
    assert (cell / "train.log").is_file() and (sweep / "logs" / "synth_ecg__erm.log").is_file()
    assert "**0 ok**, **1 failed**" in (sweep / "report" / "report.md").read_text()


def test_local_gpus_is_a_launcher_of_this_machine(tmp_path):
    """hydra/launcher=local_gpus runs here: its runs' configs are checked as local ones (a remote launcher's are not
    checked against this machine's devices)."""
    from flowmixup.sweep.plan import LOCAL_LAUNCHERS

    assert "local_gpus" in LOCAL_LAUNCHERS
    profile = tmp_path / "p.yaml"
    profile.write_text("rows: [erm]\ndatasets:\n  - experiment: mini_synth_ecg\n    noise: [0.0]\n")
    assert plan(load_profile(str(profile)), [0], {}, launcher="local_gpus").problems == []
