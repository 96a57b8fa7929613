"""Regenerate Tables I-III and Fig. 6 from real runs, beside the paper's numbers (``make reproduce-tables``).

    python scripts/reproduce_tables.py --profile mini                 # ~20 min on 2 CPU cores
    python scripts/reproduce_tables.py --profile paper --seeds 0,1,2 --launcher slurm \\
        --set chestxray14:dataset.root=/data/nih --set ecg12:dataset.root=/data/tianchi \\
        --set ecg55:dataset.root=/data/tianchi --hydra hydra.launcher.partition=gpu

    python scripts/reproduce_tables.py --profile paper --plan --gpus 8   # the cost, without training

Runs go to outputs/tables/<profile>/<dataset>/<regularizer>_a<alpha>_op<Op>/noise<n>_seed<s>/ (the template is
paths.cell in conf/config.yaml); the report to outputs/tables/<profile>/report/. The rows a profile names are defined
in conf/reproduce/rows.yaml. Re-running skips every finished cell and re-aggregates.

Before anything is launched, every block's config is composed and checked (overrides, values, each dataset's
dataset.root or prepared cache): each problem is one line on stderr and the exit status is 2. After the sweep, the
exit status is 1 when cells failed (each is named with its log), else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowmixup.project import project_root
from flowmixup.sweep.launch import run_profile
from flowmixup.sweep.plan import PreflightError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--profile", default="mini", help="a profile of conf/reproduce/ (mini, paper, ptbxl) or a profile .yaml path"
    )
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--sweep-dir", default=None, help="default: outputs/tables/<profile>")
    ap.add_argument("--launcher", default=None, help="hydra launcher: joblib | slurm | submitit_local | ...")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="DATASET:KEY=VALUE",
        help="an override for one dataset's runs (dataset = ecg12, chestxray14, synth_ecg, ...)",
    )
    ap.add_argument("--hydra", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    ap.add_argument(
        "--blocks-at-once",
        type=int,
        default=1,
        metavar="K",
        help="run K blocks (dataset x row) side by side (default 1); with --launcher local_gpus their "
        "jobs share the GPUs, so a block smaller than the GPU count leaves none idle",
    )
    ap.add_argument(
        "--plan",
        action="store_true",
        help="print runs, steps, GPU-hours and the wall time on --gpus GPUs; train nothing",
    )
    ap.add_argument("--gpus", type=int, default=1, help="--plan: GPUs to spread the runs over (default 1)")
    ap.add_argument(
        "--timings",
        default=None,
        metavar="FILE",
        help="--plan: a gpu_check.json or bench.json (default: outputs/gpu_check/gpu_check.json, else "
        "outputs/bench/bench.json)",
    )
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip() != ""]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    if args.blocks_at_once < 1:
        print(f"error: --blocks-at-once: got {args.blocks_at_once}; allowed: an integer >= 1", file=sys.stderr)
        return 2
    bad_hydra = [h for h in args.hydra if "=" not in h]
    if bad_hydra:
        for h in bad_hydra:
            print(f"error: --hydra takes KEY=VALUE, got {h!r}", file=sys.stderr)
        return 2
    try:
        root = project_root(Path(__file__).resolve().parent)
        if args.plan:
            from flowmixup.sweep.planner import plan_profile

            text, _, problems = plan_profile(
                args.profile, seeds, args.gpus, args.timings, args.set, args.launcher, args.hydra, root
            )
            print(text, flush=True)
            for problem in problems:
                print(f"problem: {problem}", file=sys.stderr)
            return 2 if problems else 0
        name = Path(args.profile).stem
        sweep = Path(args.sweep_dir) if args.sweep_dir else root / "outputs" / "tables" / name
        failed = run_profile(
            args.profile,
            seeds,
            sweep.resolve(),
            args.launcher,
            args.hydra,
            sets=args.set,
            project_root=root,
            blocks_at_once=args.blocks_at_once,
        )
    except PreflightError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"[reproduce] {len(err.problems)} problem(s) found before launching; nothing was run", flush=True)
        return 2
    except SystemExit as err:  # a profile that does not exist or cannot be read: its one-line message
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return 2
        raise
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
