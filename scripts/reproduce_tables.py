"""Regenerate Tables I-III and Fig. 6 from real runs, beside the paper's numbers (``make reproduce-tables``).

    python scripts/reproduce_tables.py --profile mini                 # ~20 min on 2 CPU cores
    python scripts/reproduce_tables.py --profile paper --seeds 0,1,2 --launcher slurm \\
        --set chestxray14:dataset.root=/data/nih --set ecg12:dataset.root=/data/tianchi \\
        --set ecg55:dataset.root=/data/tianchi --hydra hydra.launcher.partition=gpu

Runs go to outputs/tables/<profile>/<dataset>/<row>/noise<n>_seed<s>/; the report to outputs/tables/<profile>/report/.
Re-running skips every finished cell and re-aggregates.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from flowmixup.report.reproduce import PROJECT_ROOT, run_profile


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini", help="mini | paper | a profile .yaml (conf/reproduce/)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--sweep-dir", default=None, help="default: outputs/tables/<profile>")
    ap.add_argument("--launcher", default=None, help="hydra launcher: joblib | slurm | submitit_local | ...")
    ap.add_argument("--set", action="append", default=[], metavar="DATASET:KEY=VALUE",
                    help="an override for one dataset's runs (dataset = ecg12, chestxray14, synth_ecg, ...)")
    ap.add_argument("--hydra", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    extra = defaultdict(list)
    for item in args.set:
        if ":" not in item or "=" not in item:
            ap.error(f"--set takes DATASET:KEY=VALUE, got {item!r}")
        ds, override = item.split(":", 1)
        extra[ds].append(override)
    name = Path(args.profile).stem
    sweep = Path(args.sweep_dir) if args.sweep_dir else PROJECT_ROOT / "outputs" / "tables" / name
    failed = run_profile(args.profile, seeds, sweep.resolve(), args.launcher, args.hydra, dict(extra))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
