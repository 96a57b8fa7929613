"""Each fact of the sweep once: the paper's rows in conf/reproduce/rows.yaml (the profiles, bench.py and gpu_check.py
take them from there), a cell's folder in one template (paths.cell in conf/config.yaml) that Hydra and cell_dir()
both resolve; and the blocks of a sweep running side by side in a pool of threads, each waiting for its own
``train.py -m``. Nothing trains here."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from flowmixup.sweep.cells import cell_dir, cell_template
from flowmixup.sweep.compose import compose
from flowmixup.sweep.launch import block_command, run_blocks
from flowmixup.sweep.plan import Block, plan
from flowmixup.sweep.profile import load_profile, profile_names
from flowmixup.sweep.rows import table_rows, timed_rows
from project_config import CONF_DIR, PROJECT_ROOT

PAPER_ROWS = ["erm", "mixup_a1", "mixup_a3", "manifold_mixup_a3", "flowmixup_a3_op_false", "flowmixup_a3_op_true"]
TIMED = ["erm", "mixup", "manifold_mixup", "flowmixup_op_false", "flowmixup_op_true"]
ROWS_YAML = CONF_DIR / "reproduce" / "rows.yaml"


# --------------------------------------------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------------------------------------------
def test_the_rows_are_defined_once_in_rows_yaml():
    defined = yaml.safe_load(ROWS_YAML.read_text(encoding="utf-8"))["rows"]
    assert list(defined) == PAPER_ROWS
    assert defined["mixup_a1"] == ["regularizer=mixup", "regularizer.alpha=1.0"]
    rows = table_rows()
    assert [(r.name, list(r.overrides)) for r in rows.values()] == list(defined.items())
    assert [(r.regularizer, r.alpha, r.keep_original) for r in rows.values()] == [
        ("erm", None, None),
        ("mixup", 1.0, None),
        ("mixup", 3.0, None),
        ("manifold_mixup", 3.0, None),
        ("flowmixup", 3.0, False),
        ("flowmixup", 3.0, True),
    ]
    # nowhere else is a row written out: not in a profile, nor in the benchmark scripts
    elsewhere = [
        *(CONF_DIR / "reproduce").glob("*.yaml"),
        PROJECT_ROOT / "scripts" / "bench.py",
        PROJECT_ROOT / "scripts" / "gpu_check.py",
    ]
    for path in elsewhere:
        if path != ROWS_YAML:
            text = path.read_text(encoding="utf-8")
            assert "regularizer.alpha=" not in text and "keep_original=" not in text, path


def test_the_reports_paper_rows_are_the_rows_of_rows_yaml():
    """The report reads the paper's rows from the paper's printed numbers (paper_tables.csv, package data: a report
    runs from an installed package on any sweep folder, where no conf/ exists), the sweep from rows.yaml. They are
    the same six rows in the same order, and Table III's two rows are among them; the figures colour these rows."""
    from flowmixup.report.figures import _SETTING_COLORS
    from flowmixup.report.paper import PAPER_SETTINGS, TABLE3_SETTINGS
    from flowmixup.report.runs import Setting

    composed = [Setting.of(r.regularizer, r.alpha, r.keep_original) for r in table_rows().values()]
    assert list(PAPER_SETTINGS) == composed
    assert set(TABLE3_SETTINGS) <= set(composed) and list(_SETTING_COLORS) == composed


def test_every_profile_names_its_rows_from_rows_yaml():
    assert profile_names() == ["mini", "paper", "ptbxl"]  # rows.yaml is not a profile
    rows = table_rows()
    for name in profile_names():
        listed = yaml.safe_load((CONF_DIR / "reproduce" / f"{name}.yaml").read_text(encoding="utf-8"))["rows"]
        assert listed == PAPER_ROWS, name  # names only
        assert load_profile(name)["rows"] == [{"name": n, "overrides": list(rows[n].overrides)} for n in listed]
    with pytest.raises(SystemExit, match="defines the table rows, it is not a profile"):
        load_profile("rows")


def test_a_profile_cannot_define_a_row_of_rows_yaml_again(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("rows: [{name: erm, overrides: [regularizer=erm, trainer.lr=1.0]}]\ndatasets: []\n")
    with pytest.raises(SystemExit, match="row 'erm' is defined in .*rows.yaml; list it by its name alone"):
        load_profile(str(profile))


def test_bench_and_gpu_check_time_the_rows():
    """One row per timing name (Mixup timed at alpha=1, the first of its rows): what flowmixup.perf, under both
    benchmark scripts, times."""
    from flowmixup import perf

    assert list(timed_rows()) == TIMED
    regs = perf.regularizers()
    assert list(regs) == TIMED
    assert {name: reg.overrides for name, reg in regs.items()} == {n: r.overrides for n, r in timed_rows().items()}
    assert all(regs[name].row == row.name for name, row in timed_rows().items())


# --------------------------------------------------------------------------------------------------------------
# The cell folder
# --------------------------------------------------------------------------------------------------------------
def test_the_cell_template_is_written_once():
    """The template's text is in conf/config.yaml only; the sweep and cell_dir() read it from there."""
    needle = "${oc.select:regularizer.alpha"
    files = [*CONF_DIR.rglob("*.yaml"), *(PROJECT_ROOT / "src").rglob("*.py"), *(PROJECT_ROOT / "scripts").glob("*.py")]
    assert [p for p in files if needle in p.read_text(encoding="utf-8")] == [CONF_DIR / "config.yaml"]
    assert list(cell_template()) == ["dataset", "regularizer", "noise_seed"]


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_hydra_and_cell_dir_give_one_folder(tmp_path, row):
    """The sweep's own train.py overrides (one noise level, one seed), composed by Hydra: its run folder is the one
    cell_dir() names; a plain multirun's folder is the job number and the same parts."""
    defined = table_rows()[row]
    block = Block("mini_synth_ecg", "synth_ecg", row, [0.4], [3], [], list(defined.overrides), defined.fields)
    command = block_command(block, tmp_path, PROJECT_ROOT, None, [])
    cfg = compose(CONF_DIR, command[command.index("-m") + 1 :])
    cell = cell_dir(tmp_path, "synth_ecg", row, 0.4, 3)
    assert Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir == cell
    assert cell_dir(tmp_path, "synth_ecg", defined.fields, 0.4, 3) == cell
    alpha = "none" if defined.alpha is None else defined.alpha
    keep = "none" if defined.keep_original is None else defined.keep_original
    parts = ("synth_ecg", f"{defined.regularizer}_a{alpha}_op{keep}", "noise0.4_seed3")  # the layout, unchanged
    assert cell.relative_to(tmp_path).parts == parts
    plain = compose(CONF_DIR, [*defined.overrides, "noise=0.4", "seed=3", "hydra.job.num=5"])
    assert plain.hydra.sweep.subdir == "5_" + "_".join(cell.relative_to(tmp_path).parts)


def test_the_sweep_keeps_its_own_folders(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("rows: [erm]\ndatasets:\n  - experiment: mini_synth_ecg\n    noise: [0.0]\n")
    checked = plan(load_profile(str(profile)), [0], {}, hydra_args=["hydra.sweep.subdir=x", "hydra.job.chdir=false"])
    assert checked.problems == [
        "--hydra hydra.sweep.subdir=x: the sweep sets hydra.sweep.dir (--sweep-dir) and "
        "hydra.sweep.subdir (paths.cell in conf/config.yaml) itself"
    ]


# --------------------------------------------------------------------------------------------------------------
# Blocks side by side
# --------------------------------------------------------------------------------------------------------------
FAKE_TRAIN = textwrap.dedent('''
    """A stand-in for train.py: blocks a and b meet through a named pipe (opening one end waits for the other), so
    both end only if they run at the same time; an alarm turns a serial runner into a failure, not a hang."""
    import signal, sys
    from pathlib import Path

    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    out, me = Path(args["hydra.sweep.dir"]), args["experiment"]
    signal.alarm(60)
    if me == "a":
        with open(out / "meet", "wb") as fifo:
            fifo.write(b"a")
    elif me == "b":
        with open(out / "meet", "rb") as fifo:
            fifo.read()
    print("ran", me, "with", args["hydra.sweep.subdir"])
    sys.exit(3 if me == "c" else 0)
''')


def test_blocks_at_once_run_side_by_side_and_each_is_reported(tmp_path, capsys):
    import os

    root, sweep = tmp_path / "project", tmp_path / "sweep"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text((CONF_DIR / "config.yaml").read_text())
    (root / "train.py").write_text(FAKE_TRAIN)
    sweep.mkdir()
    os.mkfifo(sweep / "meet")
    blocks = [Block(exp, "synth_ecg", f"row_{exp}", [0.0], [0], [], ["regularizer=erm"]) for exp in "abc"]
    run_blocks(list(enumerate(blocks, 1)), 3, 3, sweep, root, None, [], at_once=2)
    out = capsys.readouterr()
    for exp in "ab":
        assert f"block {'ab'.index(exp) + 1}/3 synth_ecg row_{exp}: ok in" in out.out
        log = (sweep / "logs" / f"synth_ecg__row_{exp}.log").read_text()
        assert log.splitlines()[0].endswith(
            "hydra.sweep.subdir='${paths.cell.dataset}/${paths.cell.regularizer}/${paths.cell.noise_seed}'"
        )
        assert f"ran {exp} with '${{paths.cell.dataset}}" in log
    assert "block 3/3 synth_ecg row_c: FAILED (exit 3; log" in out.out
    assert "ran c with" in out.err  # the last line of a failed block's log
