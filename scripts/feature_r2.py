#!/usr/bin/env python
"""The paper's Fig. 4 for trained runs: ``python scripts/feature_r2.py <run dir> [<run dir> ...]``.

For each run folder (a training run's ``config.yaml`` and ``checkpoint.pt``) the model is rebuilt as training built
it, given the checkpoint's weights, and run over one split of its dataset (the same cache training read). The
output of every hidden state named by ``--points`` (default: every residual or dense block, then the model output
``output``) is clustered by k-means (``--k``, seeded) and scored with R² = 1 - SSI/SST (the paper's Eq. 7).

Writes ``feature_r2.csv`` (run, run_dir, point, k, n, v, r2, ratio_to_first) and ``feature_r2.png`` (R² per hidden
state per run; R² of the first run divided by R² of each other run, the paper's R²_1/R²_2) to ``--out``.
Put the run without mixing (ERM) first, as the paper's ratio does.

Bad input (a folder without checkpoint, an unknown hidden state, k above the number of samples) stops with one
line ``error: ...`` and exit status 2, before any clustering; an unreadable checkpoint or dataset, exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

COLUMNS = ["run", "run_dir", "point", "k", "n", "v", "r2", "ratio_to_first"]


def _labels(runs: list[dict], given: list[str] | None) -> list[str]:
    if given:
        return given
    names = [str(r["cfg"].regularizer.get("name", "run")) for r in runs]
    return [f"{n} ({r['dir'].name})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def write_figure(
    path: Path, labels: list[str], points: list[str], r2: dict[str, list[float]], k: int, split: str
) -> None:
    """Fig. 4's layout: R² per hidden state per run (top); R²_first / R²_other per hidden state (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from flowmixup.io import atomic_path

    x = np.arange(len(points))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(points) + 2), 6.5), sharex=True)
    for i, label in enumerate(labels):
        top.plot(x, r2[label], marker="o", color=f"C{i % 10}", label=label)
    top.set_ylabel(f"$R^2$ (k-means, k={k})")
    top.set_title(f"$R^2$ of hidden features per hidden state ({split} split)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    first = np.asarray(r2[labels[0]], dtype=float)
    for i, label in enumerate(labels[1:], start=1):  # each run keeps its colour from the top panel
        with np.errstate(divide="ignore", invalid="ignore"):
            bottom.plot(
                x,
                first / np.asarray(r2[label], dtype=float),
                marker="s",
                color=f"C{i % 10}",
                label=f"{labels[0]} / {label}",
            )
    bottom.axhline(1.0, color="grey", lw=1, ls="--")
    bottom.set_ylabel(r"$R^2$ ratio $R_1^2/R_2^2$")
    bottom.grid(alpha=0.3)
    if len(labels) > 1:
        bottom.legend(fontsize=8)
    else:
        bottom.text(0.5, 0.5, "the ratio needs a second run", ha="center", va="center", transform=bottom.transAxes)
    bottom.set_xticks(x)
    bottom.set_xticklabels(points, rotation=45, ha="right")
    bottom.set_xlabel("hidden state")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders (the first is the reference: ERM)")
    parser.add_argument(
        "--points",
        default=None,
        help="comma-separated hidden states: submodule names (their output) or 'output' "
        "(default: every residual/dense block, then output)",
    )
    parser.add_argument("--k", type=int, default=10, help="k-means clusters (default 10, the paper's)")
    parser.add_argument(
        "--split",
        default="train",
        choices=["train", "val", "test"],
        help="which split's samples (default train, the paper's)",
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="a seeded random subset of the split of this size (default: all of it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds k-means and the --max-samples subset")
    parser.add_argument("--labels", default=None, help="comma-separated run names (default: each run's regularizer)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $FLOWMIXUP_OUTPUT_DIR or outputs, then /feature_r2)",
    )
    parser.add_argument("--data-dir", default=None, help="where the runs' data caches are now (default: as trained)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    parser.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch and k-means")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def fail(message: str, code: int = 2) -> int:
        print(f"error: {message}", file=sys.stderr)
        return code

    if args.k < 1:
        return fail(f"--k must be a positive number of clusters, got {args.k}")
    if args.max_samples is not None and args.max_samples < 1:
        return fail(f"--max-samples must be positive, got {args.max_samples}")
    if args.batch_size < 1:
        return fail(f"--batch-size must be positive, got {args.batch_size}")
    labels_given = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels_given and len(labels_given) != len(args.runs):
        return fail(f"--labels names {len(labels_given)} runs but {len(args.runs)} run folders were given")
    if labels_given and len(set(labels_given)) != len(labels_given):
        return fail(f"--labels has duplicates: {labels_given}")

    from flowmixup.analysis.features import AnalysisError, check_points, check_run_dir, default_points
    from flowmixup.data.base import DataError

    # cheap checks of every folder before anything is loaded
    for run_dir in args.runs:
        try:
            check_run_dir(run_dir)
        except AnalysisError as err:
            return fail(str(err))

    import torch
    from threadpoolctl import threadpool_limits

    from flowmixup.analysis import collect_features, load_run, r2_table, split_loader
    from flowmixup.io import write_text

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    started = time.time()
    runs: list[dict] = []
    points: list[str] | None = None
    for run_dir in args.runs:
        try:
            run = load_run(run_dir, data_dir=args.data_dir, device=args.device)
        except AnalysisError as err:
            return fail(str(err), 1)
        except DataError as err:
            return fail(f"{run_dir}: {err}", 1)
        model = run["model"]
        try:
            if points is None:
                points = check_points(model, args.points.split(",")) if args.points else default_points(model)
            else:
                check_points(model, points, what=f"--points (in {run_dir})")
            n = len(run["data"].splits[args.split])
        except AnalysisError as err:
            return fail(str(err))
        n_used = min(n, args.max_samples) if args.max_samples else n
        if args.k > n_used:
            return fail(
                f"--k {args.k} is larger than the number of samples ({n_used} in the {args.split} split of "
                f"{run_dir}); allowed: 1 <= k <= {n_used}"
            )
        runs.append({"dir": Path(run_dir), "n": n_used, **run})
    labels = _labels(runs, labels_given)

    from flowmixup.progress import progress

    rows: list[dict] = []
    r2: dict[str, list[float]] = {label: [] for label in labels}
    bar = progress(total=len(runs) * len(points), desc="hidden states", unit="state", enabled=not args.no_progress)
    with threadpool_limits(limits=args.num_threads):
        for label, run in zip(labels, runs):
            loader = split_loader(
                run["data"], args.split, batch_size=args.batch_size, max_samples=args.max_samples, seed=args.seed
            )
            for point in points:  # one pass per hidden state: only one state's features are held at a time
                bar.set_postfix_str(f"{label}: {point}")
                feats = collect_features(run["model"], loader, [point], device=args.device, prepare=run["prepare"])
                row = r2_table(feats, k=args.k, seed=args.seed)[0]
                del feats
                rows.append({"run": label, "run_dir": str(run["dir"]), **row})
                r2[label].append(row["r2"])
                bar.update(1)
    bar.close()
    first = dict(zip(points, r2[labels[0]]))
    for row in rows:
        row["ratio_to_first"] = first[row["point"]] / row["r2"] if row["r2"] else float("nan")

    out = args.out or Path(os.environ.get("FLOWMIXUP_OUTPUT_DIR", "outputs")) / "feature_r2"
    out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for row in rows:
        lines.append(",".join(f"{row[c]:.6f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS))
    write_text(out / "feature_r2.csv", "\n".join(lines) + "\n")
    write_figure(out / "feature_r2.png", labels, points, r2, args.k, args.split)

    width = max(len(p) for p in points)
    sizes = ", ".join(f"{label}: n={run['n']}" for label, run in zip(labels, runs))
    print(f"R² of k-means (k={args.k}) clusterings, {args.split} split ({sizes})")
    print(
        f"{'hidden state':<{width}}  "
        + "  ".join(f"{lab:>12}" for lab in labels)
        + "".join(f"  {labels[0] + '/' + lab:>16}" for lab in labels[1:])
    )
    for i, p in enumerate(points):
        cells = "  ".join(f"{r2[lab][i]:>12.4f}" for lab in labels)
        ratios = "".join(
            f"  {r2[labels[0]][i] / r2[lab][i] if r2[lab][i] else float('nan'):>16.3f}" for lab in labels[1:]
        )
        print(f"{p:<{width}}  {cells}{ratios}")
    print(f"wrote {out / 'feature_r2.csv'} and {out / 'feature_r2.png'} ({time.time() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
