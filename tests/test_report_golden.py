"""Golden test of the report: a fixed synthetic sweep (tests/data/report_golden/make_fixture.py) must give the
files recorded in tests/data/report_golden/expected/ byte for byte (figures: their data CSVs; PNG/PDF bytes are not
compared), apart from the intended changes listed in INTENDED below.

The expected files were written by the report as it was before the pandas rewrite (commit "Golden report
fixture"), with the sweep's path replaced by ``<SWEEP>``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "report_golden"
_spec = importlib.util.spec_from_file_location("report_golden_fixture", GOLDEN / "make_fixture.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)

# The intended differences from the pre-rewrite outputs, as (file, old text, new text) replacements applied to the
# expected file before comparing. Nothing else may change.
INTENDED: list[tuple[str, str, str]] = []


def _expected(name: str) -> str:
    text = (GOLDEN / "expected" / name).read_text(encoding="utf-8")
    for file, old, new in INTENDED:
        if file == name:
            assert old in text, f"intended change not applicable to {name}: {old!r}"
            text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_report_matches_the_golden_files(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import make_tables
    finally:
        sys.path.pop(0)
    sweep = fixture.make_fixture(tmp_path / "sweep")
    out = tmp_path / "out"
    assert make_tables.main([str(sweep), "--out-dir", str(out)]) == 0
    expected = sorted(p.relative_to(GOLDEN / "expected").as_posix()
                      for p in (GOLDEN / "expected").rglob("*") if p.is_file())
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_file() and p.suffix not in (".png", ".pdf"))
    assert written == expected
    for name in expected:
        got = (out / name).read_text(encoding="utf-8").replace(str(sweep), "<SWEEP>")
        assert got == _expected(name), f"{name} differs from the golden file"
    figures = {p.name for p in (out / "figures").iterdir()}
    for stem in ("fig6_chestxray14", "fig6_ecg12", "fig6_ecg55", "curves_chestxray14", "curves_ecg12",
                 "curves_ecg55"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= figures
