#!/usr/bin/env python
"""Tables I-III and the figures of a sweep: ``python scripts/make_tables.py <sweep_dir> [--paper-csv FILE]``.

Prints the Markdown tables and the paths written (under ``<sweep_dir>/report/`` unless ``--out-dir``); exits with
status 2 and a one-line message when the folder does not exist or holds no ``summary.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="folder holding the runs (summary.json at any depth)")
    parser.add_argument("--paper-csv", type=Path, default=None, help="the paper's numbers (default: packaged copy)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write (default: <sweep_dir>/report)")
    parser.add_argument("--best-from", choices=["best", "at_best_val"], default="best",
                        help="'Best' columns: best test metric over epochs (paper) or test metric at best validation")
    parser.add_argument("--fig6-noise", type=float, default=0.1, help="Fig. 6 uses the noise level closest to this")
    parser.add_argument("--fig6-r", type=float, default=None, help="Fig. 6 exponent r (default: 10 AUC, 1 macro-F1)")
    parser.add_argument("--fig6-normalization", choices=["per_method", "joint", "none"], default="per_method")
    parser.add_argument("--fig6-eps", type=float, default=0.0, help="added to both normalised performances")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)

    if not args.sweep_dir.is_dir():
        print(f"error: sweep folder not found: {args.sweep_dir}", file=sys.stderr)
        return 2
    if next(args.sweep_dir.rglob("summary.json"), None) is None:
        print(f"error: no summary.json below {args.sweep_dir} (no run has ended yet?)", file=sys.stderr)
        return 2
    if args.paper_csv is not None and not args.paper_csv.is_file():
        print(f"error: paper CSV not found: {args.paper_csv}", file=sys.stderr)
        return 2

    from flowmixup.report.figures import make_figures
    from flowmixup.report.tables import make_report

    report = make_report(args.sweep_dir, out_dir=args.out_dir, paper_csv=args.paper_csv, best_from=args.best_from)
    print(report["report_md"])
    written = list(report["paths"].values())
    if not args.no_figures:
        fig_dir = (args.out_dir / "figures") if args.out_dir is not None else None
        figures = make_figures(args.sweep_dir, fig_dir, target_noise=args.fig6_noise, r=args.fig6_r,
                               normalization=args.fig6_normalization, eps=args.fig6_eps)
        written += figures["paths"]
        for kind, skipped in figures["skipped"].items():
            for dataset, reason in skipped.items():
                print(f"note: {kind} skipped for {dataset}: {reason}")
    print("Written:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
