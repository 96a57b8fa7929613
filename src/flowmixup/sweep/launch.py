"""``make reproduce-tables``: run the paper's grid (or its mini version) as Hydra multiruns into one sweep folder,
one subfolder per cell, skipping finished cells, then write Tables I-III and the figures beside the paper's numbers.

A profile (:mod:`.profile`) names the table rows (:mod:`.rows`) and, per dataset, an experiment config and its noise
levels. Each (dataset, row) pair, a block, is one ``train.py -m`` call over noise x seeds; ``blocks_at_once`` of
them run side by side, each a child process waited for by a thread of a :class:`~concurrent.futures.ThreadPoolExecutor`.
A cell whose folder already holds ``summary.json`` is skipped by the run itself (``trainer.skip_finished=true``), so
an interrupted sweep goes on where it stopped and a finished one only re-aggregates.

Before any block starts, the preflight (:func:`.plan.plan`) checks every block; with any problem nothing is launched
(:class:`~.plan.PreflightError`). After the blocks, a cell without ``summary.json`` or whose status is not ``ok``
counts as failed, and is named with its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

from ..io import write_json
from ..project import project_root as find_project_root
from .cells import block_log, cell_dir, count_done, failed_cells, sweep_subdir
from .plan import Block, Plan, PreflightError, plan, train_overrides
from .profile import load_profile, parse_sets

SHOWN_FAILURES = 20  # failed cells named one per line; the rest are counted


def block_command(b: Block, sweep: Path, root: Path, launcher: str | None, hydra_args: Sequence[str]) -> list[str]:
    """The ``train.py -m`` call of a block: its noise x seeds into their cell folders of ``sweep``."""
    after = [
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweep.subdir={sweep_subdir(root / 'conf')}",
        *([f"hydra/launcher={launcher}"] if launcher else []),
        *hydra_args,
    ]
    return [
        sys.executable,
        str(root / "train.py"),
        "-m",
        *train_overrides(b.experiment, b.row_overrides, b.noise, b.seeds, b.overrides, after),
    ]


def run_block(b: Block, sweep: Path, root: Path, launcher: str | None, hydra_args: Sequence[str]) -> tuple[int, float]:
    """Run one block to its end, its output (after the command line) in its log; ``(exit status, seconds)``."""
    cmd = block_command(b, sweep, root, launcher, hydra_args)
    log = block_log(sweep, b.dataset, b.row)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(" ".join(cmd) + "\n\n")
        fh.flush()
        code = subprocess.run(cmd, cwd=root, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    return code, time.monotonic() - started


def _last_error_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    lines = [line for line in lines if not line.startswith("Set the environment variable HYDRA_FULL_ERROR")]
    return lines[-1] if lines else ""


def run_blocks(
    todo: list[tuple[int, Block]],
    n_blocks: int,
    total: int,
    sweep: Path,
    root: Path,
    launcher: str | None,
    hydra_args: Sequence[str],
    at_once: int,
) -> None:
    """Run the blocks ``todo`` ((number, Block) pairs), ``at_once`` of them at a time, saying as each one ends.

    On an interruption (Ctrl-C reaches the blocks' runs too: each saves its checkpoint) or an error, the blocks not
    started yet never start, and the running ones are waited for.
    """
    with ThreadPoolExecutor(max_workers=max(1, at_once), thread_name_prefix="block") as pool:
        futures = {pool.submit(run_block, b, sweep, root, launcher, hydra_args): (i, b) for i, b in todo}
        try:
            for future in as_completed(futures):
                (i, b), (code, seconds) = futures[future], future.result()
                log = block_log(sweep, b.dataset, b.row)
                status = "ok" if code == 0 else f"FAILED (exit {code}; log {log})"
                print(
                    f"[reproduce] block {i}/{n_blocks} {b.dataset} {b.row}: {status} in {seconds:.0f}s; "
                    f"{count_done(sweep)}/{total} cells finished",
                    flush=True,
                )
                if code != 0 and _last_error_line(log):
                    print(f"[reproduce]   {_last_error_line(log)}", file=sys.stderr, flush=True)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def check_profile(
    profile: str,
    seeds: list[int],
    root: Path,
    launcher: str | None,
    hydra_args: Sequence[str],
    extra: dict[str, list[str]] | None,
    sets: Sequence[str],
) -> Plan:
    """The preflight of ``profile`` with ``extra`` and the ``--set`` items ``sets``; PreflightError on a problem."""
    prof = load_profile(profile, root / "conf")
    parsed, problems = parse_sets(sets)
    merged: dict[str, list[str]] = {k: list(v) for k, v in (extra or {}).items()}
    for key, values in parsed.items():
        merged.setdefault(key, []).extend(values)
    checked = plan(prof, seeds, merged, launcher, hydra_args, root)
    problems += checked.problems
    if problems:
        raise PreflightError(problems)
    return checked


def _blocks_to_run(checked: Plan, sweep: Path, conf_dir: Path) -> list[tuple[int, Block]]:
    """The (number, block) pairs with a cell still to finish; the others are said to be skipped."""
    todo = []
    for i, b in enumerate(checked.blocks, 1):
        cells = [cell_dir(sweep, b.dataset, b.fields, n, s, conf_dir) for n in b.noise for s in b.seeds]
        if all((cell / "summary.json").is_file() for cell in cells):
            print(
                f"[reproduce] block {i}/{len(checked.blocks)} {b.dataset} {b.row}: all cells finished, skipped",
                flush=True,
            )
        else:
            todo.append((i, b))
    return todo


def _say_failed(failed: list[tuple[Path, str, Path]], total: int, sweep: Path) -> None:
    unfinished = sum(1 for _, why, _ in failed if why.startswith("no summary.json"))
    print(
        f"error: {len(failed)} of {total} cells failed ({unfinished} without summary.json, "
        f"{len(failed) - unfinished} with a status other than ok); each cell's log is named below, every block's "
        f"output is in {sweep / 'logs'}; a cell holding summary.json is not run again (delete its folder to "
        "retry it)",
        file=sys.stderr,
        flush=True,
    )
    for folder, why, log in failed[:SHOWN_FAILURES]:
        print(f"  {folder}: {why}; log: {log}", file=sys.stderr, flush=True)
    if len(failed) > SHOWN_FAILURES:
        print(f"  ... and {len(failed) - SHOWN_FAILURES} more", file=sys.stderr, flush=True)


def run_profile(
    profile: str,
    seeds: list[int],
    sweep: Path,
    launcher: str | None = None,
    hydra_args: Sequence[str] = (),
    extra: dict[str, list[str]] | None = None,
    sets: Sequence[str] = (),
    project_root: str | os.PathLike | None = None,
    blocks_at_once: int = 1,
) -> int:
    """Check, then run every block of ``profile`` into ``sweep`` and aggregate; returns the number of failed cells.

    ``sets`` are raw ``DATASET:KEY=VALUE`` strings (``--set``), ``extra`` the same already split. Raises
    :class:`PreflightError` (nothing launched, nothing written) when the preflight finds a problem.
    ``blocks_at_once`` > 1 runs that many blocks (``train.py -m`` calls) side by side: with ``--launcher local_gpus``
    their jobs share the GPU slots of the sweep folder, so every GPU stays busy even when a block has fewer runs
    than there are GPUs.
    """
    from ..report.pipeline import build_report, write_report

    started = time.time()
    root = Path(project_root) if project_root is not None else find_project_root()
    checked = check_profile(profile, seeds, root, launcher, hydra_args, extra, sets)
    blocks, grid = checked.blocks, checked.grid
    sweep.mkdir(parents=True, exist_ok=True)
    write_json(sweep / "grid.json", grid)
    for note in checked.skipped:
        print(f"[reproduce] left out {note}", flush=True)
    for note in checked.notes:
        print(f"[reproduce] {note}", flush=True)
    total = len(grid)
    print(
        f"[reproduce] profile {profile}: {len(blocks)} blocks, {total} cells, {count_done(sweep)} already finished, "
        f"into {sweep}",
        flush=True,
    )
    todo = _blocks_to_run(checked, sweep, root / "conf")
    run_blocks(todo, len(blocks), total, sweep, root, launcher, hydra_args, blocks_at_once)
    report = build_report(sweep)
    write_report(report, sweep / "report")
    print(report.report_md, flush=True)
    print(
        f"[reproduce] report: {sweep / 'report'} ({len(report.figure_files)} figure files); "
        f"wall time {time.time() - started:.0f}s",
        flush=True,
    )
    write_json(sweep / "report" / "wall_time.json", {"wall_time_s": round(time.time() - started, 1)})

    failed = failed_cells(sweep, grid, root / "conf")
    if failed:
        _say_failed(failed, total, sweep)
    return len(failed)
