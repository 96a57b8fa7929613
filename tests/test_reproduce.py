"""make reproduce-tables: a tiny profile end to end, and a second call that only re-aggregates."""
from __future__ import annotations

import json

import pytest

from conftest import TINY
from flowmixup.report.reproduce import ROWS, cell_dir, load_profile, run_profile


def test_profiles_name_known_rows_and_experiments():
    from conftest import CONF_DIR

    for name in ("mini", "paper"):
        prof = load_profile(name)
        assert prof["rows"] == list(ROWS)  # the six rows of the paper's tables, in order
        for entry in prof["datasets"]:
            assert (CONF_DIR / "experiment" / f"{entry['experiment']}.yaml").is_file()
    with pytest.raises(SystemExit, match="profile 'nope' not found; known profiles: mini, paper"):
        load_profile("nope")


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
    assert run_profile(str(profile), [0], sweep) == 0
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
