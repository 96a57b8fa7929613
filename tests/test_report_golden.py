"""Golden test of the report: a fixed synthetic sweep (tests/data/report_golden/make_fixture.py) must give the
files recorded in tests/data/report_golden/expected/ (figures: their data CSVs; PNG/PDF bytes are not compared),
apart from the intended changes listed in INTENDED below.

How a file is compared (:func:`golden_difference`): its text is cut into the numbers it holds and the text between
them. The text between numbers must be identical, character for character; each number must equal the recorded one
to a relative 1e-8. So the last digits of a float, which another processor (another BLAS or SIMD path summing in
another order) computes differently, are not a failure; any real change of a value (a metric, a count, a rounding
shown in a table) or of the text is one (``test_a_real_change_still_fails`` shows both sides).

The CSVs hold their floats at 10 significant digits (``flowmixup.report.output.CSV_SIGNIFICANT_DIGITS``); the
expected CSVs were rewritten once for that (commit "report CSVs at 10 significant digits"). The files hold the
sweep's path as ``<SWEEP>``.

The Markdown files were re-recorded once when the tables moved to pandas (commit "Golden report files re-recorded
for the tables rendered through pandas"): ``DataFrame.to_markdown`` (tabulate's pipe format) pads every cell of a
column to the column's width and writes the separator row as dashes of that width with colons for the alignment
(``|:-----|:-----:|``, the row labels left, the numbers centred as before), where the hand renderer wrote
``| a | b |`` and ``|---|:-:|``. That is all that changed in the bytes: every line outside a table, every cell's
text (numbers, ±, the bold / underline marks, ``[k/n]``, ``(paper x)``, ``—`` / ``failed``) and every table's rows,
columns and order are the same, which a parse of the old and new files cell by cell confirmed. It is fine because
Markdown ignores the padding (the rendered tables are identical) and the padded tables also read as tables as plain
text. The LaTeX (``Styler.to_latex``, booktabs, the noise levels or datasets as multicolumn headers) and the CSVs are
unchanged byte for byte on this fixture (a span of one column is now written without ``\\multicolumn{1}{c}``, and
datasets sharing a Table II tabular are no longer separated by a ``\\midrule``: neither occurs here).

The files were re-recorded once more when every number got its uncertainty (commit "Golden report files re-recorded
for the intervals and paired comparisons"). What changed, and only that:
- the fixture: every ok ECG-12 run now also holds ``predictions_test_{best,at_best_val,last}.npz``, drawn from
  generators of their own (the shared generator, and so every number it made, is untouched);
- each table CSV gains the columns ``protocol``, ``ci_low``, ``ci_high``, ``ci_method``, ``vs_erm`` and
  ``vs_erm_p_holm``; every other column of every row (means, stds, counts, the paper's numbers, the marks) is equal
  to the recorded one, which a pandas comparison of the old and new CSVs confirmed;
- each cell's ``±`` is now the half-width of its 95% interval (Student's t over the seeds) instead of the sample
  std, the Table I-II cells significantly above ERM carry ``▲`` (ECG-12, whose runs have predictions), and the
  captions say so and name the protocol;
- new files: ``table1_val`` and ``table2_val`` (model selection on validation: in this fixture the test value at the
  best validation epoch is the best test value, so their numbers equal Tables I-II), ``comparisons.csv``,
  ``figures/forest_ecg12.csv``, and the "Paired comparisons" section of ``report.md``; memorisation, Fig. 6 and the
  curves are unchanged byte for byte.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "report_golden"
_spec = importlib.util.spec_from_file_location("report_golden_fixture", GOLDEN / "make_fixture.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)

# The intended differences from the recorded outputs, as (file, old text, new text) replacements applied to the
# expected file before comparing. Nothing else may change.
INTENDED: list[tuple[str, str, str]] = []

# a decimal number as the report writes one: 12, -0.5, 74.2, 1.5e-05, .25 (a sign only where no letter precedes it)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
RELATIVE_TOLERANCE = 1e-8


def golden_difference(got: str, expected: str) -> str | None:
    """None when ``got`` matches ``expected`` (same text between numbers, numbers equal to RELATIVE_TOLERANCE);
    otherwise where and how they first differ, as one line."""
    got_parts, exp_parts = NUMBER.split(got), NUMBER.split(expected)
    got_nums, exp_nums = NUMBER.findall(got), NUMBER.findall(expected)
    if len(got_nums) != len(exp_nums) or got_parts != exp_parts:
        for i, (a, b) in enumerate(zip(got_parts, exp_parts)):
            if a != b:
                same = len(os.path.commonprefix([a, b]))
                line = "".join(exp_parts[:i]).count("\n") + b[:same].count("\n") + 1
                return f"text differs at line {line}: {a[:60]!r} != expected {b[:60]!r}"
        return f"{len(got_nums)} numbers, expected {len(exp_nums)}"
    for i, (a, b) in enumerate(zip(got_nums, exp_nums)):
        if not math.isclose(float(a), float(b), rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-300):
            line = "".join(exp_parts[: i + 1]).count("\n") + 1
            return f"number differs at line {line}: {a} != expected {b}"
    return None


def _expected(name: str) -> str:
    text = (GOLDEN / "expected" / name).read_text(encoding="utf-8")
    for file, old, new in INTENDED:
        if file == name:
            assert old in text, f"intended change not applicable to {name}: {old!r}"
            text = text.replace(old, new)
    return text


def test_a_real_change_still_fails():
    """The comparison forgives the last digits of a float and nothing else."""
    expected = "class,auc\nAtelectasis,0.85127500615\nHernia,0.7\n| **74.2** | 3 |\n"
    assert golden_difference(expected, expected) is None
    assert golden_difference(expected.replace("0.85127500615", "0.8512750061"), expected) is None  # another CPU
    assert golden_difference(expected.replace("0.7\n", "0.7000000000000001\n"), expected) is None
    assert "number differs at line 3" in golden_difference(expected.replace("0.7\n", "0.7001\n"), expected)
    assert "number differs at line 4" in golden_difference(expected.replace("74.2", "74.3"), expected)
    assert "text differs at line 4" in golden_difference(expected.replace("**74.2**", "74.2"), expected)
    assert "text differs at line 2" in golden_difference(expected.replace("Atelectasis", "Atelectasys"), expected)
    assert "numbers, expected" in golden_difference(expected + "5\n", expected)
    assert golden_difference("a-1,b", "a-1,b") is None and golden_difference("x 1e-05", "x 1.0000000001e-05") is None


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
    expected = sorted(
        p.relative_to(GOLDEN / "expected").as_posix() for p in (GOLDEN / "expected").rglob("*") if p.is_file()
    )
    written = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix not in (".png", ".pdf")
    )
    assert written == expected
    for name in expected:
        got = (out / name).read_text(encoding="utf-8").replace(str(sweep), "<SWEEP>")
        difference = golden_difference(got, _expected(name))
        assert difference is None, f"{name} differs from the golden file: {difference}"
    figures = {p.name for p in (out / "figures").iterdir()}
    stems = ("fig6_chestxray14", "fig6_ecg12", "fig6_ecg55", "curves_chestxray14", "curves_ecg12", "curves_ecg55")
    for stem in stems + ("forest_ecg12",):
        assert {f"{stem}.png", f"{stem}.pdf"} <= figures
