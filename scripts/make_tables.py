#!/usr/bin/env python
"""Tables I-III and the figures of a sweep: ``python scripts/make_tables.py <sweep_dir> [--paper-csv FILE]``.

Every ``summary.json`` below the folder (and, for the figures, every ok run's ``metrics.csv`` and
``per_class.csv``) is read and checked before anything is written. A bad file is named on its own line on stderr,
``<path>: <problem>``; then, by default, nothing is written and the exit status is 1. With ``--skip-bad`` the bad
files are left out (still named, with their count) and the report is built from the rest. A run without
``per_class.csv`` or ``metrics.csv`` is left out of the figure that needs it, with a note.

Prints the Markdown tables and the paths written (under ``<sweep_dir>/report/`` unless ``--out-dir``); every file
is computed first and written at the end, so a failure never leaves half a report. Exits with status 2 and a
one-line message when the folder does not exist or holds no run (``no runs found under <dir>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="folder holding the runs (summary.json at any depth)")
    parser.add_argument("--paper-csv", type=Path, default=None, help="the paper's numbers (default: packaged copy)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write (default: <sweep_dir>/report)")
    parser.add_argument(
        "--best-from",
        choices=["best", "at_best_val"],
        default="best",
        help="'Best' columns: best test metric over epochs (paper) or test metric at best validation; with "
        "'best' Tables I and II also come with model selection on validation (table1_val, table2_val)",
    )
    parser.add_argument(
        "--bootstrap-resamples",
        type=int,
        default=1000,
        metavar="B",
        help="bootstrap samples of the test records for one-seed intervals and paired comparisons (default 1000)",
    )
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="level of every interval and test (default 0.95)"
    )
    parser.add_argument("--fig6-noise", type=float, default=0.1, help="Fig. 6 uses the noise level closest to this")
    parser.add_argument("--fig6-r", type=float, default=None, help="Fig. 6 exponent r (default: 10 AUC, 1 macro-F1)")
    parser.add_argument(
        "--fig6-normalization",
        choices=["joint", "none", "per_method"],
        default="joint",
        help="how Fig. 6 normalises performances before the ratio (default joint: keeps every class; "
        "the Spearman rho of all three is printed in report.md either way)",
    )
    parser.add_argument(
        "--fig6-count",
        choices=["ignore_rhythm", "literal"],
        default="ignore_rhythm",
        help="how Fig. 6 counts records with only class c (default: ignoring rhythm/normal labels)",
    )
    parser.add_argument("--fig6-eps", type=float, default=0.0, help="added to both normalised performances")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out bad summary.json / metrics.csv / per_class.csv / grid.json (each is named) "
        "and build the report from the rest; without it, any bad file stops with nothing written",
    )
    return parser


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Why nothing can be done with these arguments (one line), or None."""
    from flowmixup.report.fig6 import Fig6Options
    from flowmixup.report.paper import load_paper_tables

    if not args.sweep_dir.is_dir():
        return f"sweep folder not found: {args.sweep_dir}"
    if next(args.sweep_dir.rglob("summary.json"), None) is None:
        return f"no runs found under {args.sweep_dir} (no summary.json at any depth; no run has ended yet?)"
    if args.paper_csv is not None and not args.paper_csv.is_file():
        return f"paper CSV not found: {args.paper_csv}"
    try:
        load_paper_tables(args.paper_csv)
    except (OSError, ValueError) as exc:
        return f"paper CSV unusable: {str(exc).strip().splitlines()[0]}"
    try:
        args.fig6 = Fig6Options(
            target_noise=args.fig6_noise,
            r=args.fig6_r,
            normalization=args.fig6_normalization,
            eps=args.fig6_eps,
            count=args.fig6_count,
        )
    except ValueError as exc:
        return f"Fig. 6 options: {exc}"
    from flowmixup.report.uncertainty import UncertaintyOptions

    if args.bootstrap_resamples < 10:
        return f"--bootstrap-resamples: got {args.bootstrap_resamples}; allowed: an integer >= 10"
    if not 0.5 <= args.confidence < 1.0:
        return f"--confidence: got {args.confidence}; allowed: a level in [0.5, 1), e.g. 0.95"
    args.uncertainty = UncertaintyOptions(n_resamples=args.bootstrap_resamples, confidence=args.confidence)
    return None


def _checked(args: argparse.Namespace):
    """check_sweep's result, each bad file named on stderr; None when the report must not be built."""
    from flowmixup.report.runs import check_sweep

    check = check_sweep(args.sweep_dir, run_files=not args.no_figures)
    for line in check.lines:
        print(line, file=sys.stderr)
    if not check.problems:
        return check
    parts = [f"{check.bad_summaries} of {check.n_summaries} summary.json"] if check.bad_summaries else []
    if others := len(check.problems) - check.bad_summaries:
        parts.append(_plural(others, "other file"))
    what = " and ".join(parts)
    if not args.skip_bad:
        verb = "is" if len(check.problems) == 1 else "are"
        print(
            f"error: {what} {verb} bad; nothing written (pass --skip-bad to build the report from the rest)",
            file=sys.stderr,
        )
        return None
    print(
        f"warning: left out {what}; the report is built from the {len(check.runs)} valid summary.json", file=sys.stderr
    )
    if check.runs.empty:
        print("error: no valid summary.json left; nothing written", file=sys.stderr)
        return None
    return check


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if problem := _usage_problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from flowmixup.report.pipeline import ReportOptions, build_report, write_report

    # 1. read and check everything before anything is computed or written
    check = _checked(args)
    if check is None:
        return 1
    # 2. compute the tables and the figures in memory, 3. write everything at once
    options = ReportOptions(
        paper_csv=args.paper_csv,
        best_from=args.best_from,
        figures=not args.no_figures,
        fig6=args.fig6,
        uncertainty=args.uncertainty,
    )
    report = build_report(args.sweep_dir, options, check=check)
    written = write_report(report, args.out_dir)
    print(report.report_md)
    for note in report.notes:
        print(f"note: {note}")
    print("Written:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
