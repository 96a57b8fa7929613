"""``reproduce_tables.py --plan``: what a profile costs, before anything runs.

Per dataset block of a profile (and in total): the runs (rows x noise levels x seeds), the training steps of one run
(``ceil(train size / trainer.batch_size) x trainer.epochs``, from the composed config), the evaluation passes
(validation and test after every epoch), the estimated GPU-hours and the wall time on N GPUs.

Sizes come from a prepared cache's manifest where there is one (its record count, split in the proportions of the
profile's ``sizes``), else from the profile entry's ``sizes: {train, val, test}`` (the full datasets' split sizes).
Step times come from ``gpu_check.json`` (``scripts/gpu_check.py``) or ``bench.json`` (``scripts/bench.py``), and
without a measurement of the user's own from the shipped reference measurement (:data:`REFERENCE_TIMINGS`, an H100,
in ``docs/gpu/`` of the project: a fresh clone plans with it, and the printout names the card it comes from): the
row of the run's backbone, regularizer (Flow-Mixup: with its Op), precision and ``trainer.compile``, scaled by the
batch size when the run's differs. Evaluation is taken as forward-only, about 1/3 of a training step per sample.

Wall time: ``reproduce_tables.py`` runs its blocks (one dataset x one row) one after another, each a multirun of
noise x seeds whose runs spread over the GPUs (``--launcher local_gpus``), so a block takes
``ceil(runs / N)`` times one run. The planner also prints the bound if every run could start anywhere:
``max(total / N, the longest run)``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..project import project_root as find_project_root
from .plan import display_path, plan, ready_cache
from .profile import load_profile, parse_sets
from .rows import timing_name

EVAL_COST = 1.0 / 3.0  # an evaluation sample costs about a third of a training sample (forward only)
SPLITS = ("train", "val", "test")
# the shipped reference measurement (``make gpu-check`` on an H100), relative to the project root: used when the user
# has none of their own, and named with its card in the printout
REFERENCE_TIMINGS = Path("docs") / "gpu" / "gpu_check_h100.json"
MEASURE = (
    "measure it with `make gpu-check` on a GPU (outputs/gpu_check/gpu_check.json) or `make bench` on CPU "
    "(outputs/bench/bench.json), then pass --timings FILE"
)


@dataclass
class Timings:
    """Step-time rows from one file: ``kind`` is gpu_check or bench."""

    path: Path
    kind: str
    device: str
    rows: list[dict]
    reference: bool = False  # the shipped reference measurement (another machine's), not the user's own


@dataclass
class BlockCost:
    dataset: str
    row: str
    runs: int
    steps_per_run: int
    eval_samples_per_run: int
    step_s: float | None  # at the run's batch size
    run_s: float | None
    timing: str  # which timing row, or why none


@dataclass
class DatasetCost:
    dataset: str
    experiment: str
    sizes: dict
    sizes_from: str
    batch: int
    epochs: int
    blocks: list[BlockCost] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return sum(b.runs for b in self.blocks)

    @property
    def known(self) -> bool:
        return bool(self.blocks) and all(b.run_s is not None for b in self.blocks)

    @property
    def gpu_hours(self) -> float | None:
        return sum(b.runs * b.run_s for b in self.blocks) / 3600 if self.known else None

    def wall_hours(self, gpus: int) -> float | None:
        return sum(math.ceil(b.runs / gpus) * b.run_s for b in self.blocks) / 3600 if self.known else None


@dataclass
class Estimate:
    datasets: list[DatasetCost]
    timings: Timings | None
    gpus: int
    notes: list[str]
    problems: list[str]

    @property
    def runs(self) -> int:
        return sum(d.runs for d in self.datasets)

    @property
    def gpu_hours(self) -> float | None:
        hours = [d.gpu_hours for d in self.datasets]
        return sum(hours) if hours and all(h is not None for h in hours) else None

    @property
    def wall_hours(self) -> float | None:
        hours = [d.wall_hours(self.gpus) for d in self.datasets]
        return sum(hours) if hours and all(h is not None for h in hours) else None

    @property
    def packed_wall_hours(self) -> float | None:
        """If every run could start on any free GPU: at least total / N and at least the longest run."""
        total = self.gpu_hours
        if total is None:
            return None
        longest = max((b.run_s for d in self.datasets for b in d.blocks), default=0.0) / 3600
        return max(total / self.gpus, longest)


# --------------------------------------------------------------------------------------------------------------
# Timings
# --------------------------------------------------------------------------------------------------------------
def _step_row(r: dict, i: int) -> dict:
    """A gpu_check.json ``steps`` entry as a timing row."""
    return {
        "backbone": str(r["backbone_name"] or str(r.get("backbone", "")).split()[0]),
        "regularizer": str(r["regularizer"]),
        "precision": str(r.get("precision", "fp32")),
        "compile": bool(r.get("compile", False)),
        "cuda_graph": bool(r.get("cuda_graph", False)),
        "batch": int(r["batch"]),
        "step_s": float(r["step_ms"]) / 1000.0,
        "where": f"steps[{i}]",
        "input": "x".join(str(v) for v in r["input"]) if isinstance(r.get("input"), list) else None,
    }


def _bench_row(r: dict, i: int, batch: Any) -> dict:
    """A bench.json ``regularizers`` entry as a timing row (``batch``: the file's, for entries without their own)."""
    return {
        "backbone": str(r.get("backbone_name") or str(r["backbone"]).split()[0]),
        "regularizer": str(r["regularizer"]),
        "precision": str(r.get("precision", "fp32")),
        "compile": bool(r.get("compile", False)),
        "batch": int(r.get("batch", batch)),
        "step_s": float(r["step_s"]),
        "where": f"regularizers[{i}]",
    }


def _rows(path: Path, entries: list, key: str, make: Any, lacks: str) -> list[dict]:
    """The usable entries of a timing file's list ``key`` (failed measurements left out), each made a row."""
    rows = []
    for i, r in enumerate(entries):
        if not isinstance(r, dict) or r.get("ok") is False:
            continue
        try:
            rows.append(make(r, i))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ValueError(f"{path}: {key}[{i}] lacks {lacks}") from None
    return rows


def load_timings(path: str | os.PathLike) -> Timings:
    """A gpu_check.json or bench.json as :class:`Timings`; ValueError with one line for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("steps"), list):
        device = data.get("device") if isinstance(data.get("device"), dict) else {}
        rows = _rows(path, data["steps"], "steps", _step_row, "backbone_name, regularizer, batch or step_ms")
        return Timings(path, "gpu_check", f"{device.get('name', '?')} ({device.get('device', '?')})", rows)
    if isinstance(data, dict) and isinstance(data.get("regularizers"), list):
        rows = _rows(
            path,
            data["regularizers"],
            "regularizers",
            lambda r, i: _bench_row(r, i, data.get("batch")),
            "backbone, regularizer, batch or step_s",
        )
        return Timings(path, "bench", str(data.get("device", "?")), rows)
    raise ValueError(f"{path}: neither a gpu_check.json (a 'steps' list) nor a bench.json (a 'regularizers' list)")


def timing_key(cfg: Any) -> tuple[str, str, str, bool]:
    """(backbone, regularizer as the timing files name it, precision, compile) of a composed config."""
    reg = timing_name(
        str(OmegaConf.select(cfg, "regularizer.name", default="erm")),
        OmegaConf.select(cfg, "regularizer.keep_original", default=False),
    )
    return (
        str(OmegaConf.select(cfg, "backbone.name", default="?")),
        reg,
        str(OmegaConf.select(cfg, "trainer.precision", default="fp32")),
        bool(OmegaConf.select(cfg, "trainer.compile", default=False)),
    )


def pick_timing(timings: Timings, cfg: Any) -> tuple[dict | None, str]:
    """The timing row for a run's config and a note on how it was chosen (a fallback says so)."""
    backbone, reg, precision, compiled = timing_key(cfg)
    rows = [r for r in timings.rows if r["backbone"] == backbone and r["regularizer"] == reg]
    if not rows:
        return None, ""
    note = ""
    same = [r for r in rows if r["precision"] == precision]
    if not same:
        same, note = [r for r in rows if r["precision"] == "fp32"], f"no {precision} row: fp32's"
        if not same:
            return None, ""
    exact = [r for r in same if r["compile"] == compiled]
    if not exact:
        note = (note + "; " if note else "") + f"no compile={compiled} row: compile={not compiled}'s"
        exact = same
    graph = bool(OmegaConf.select(cfg, "trainer.cuda_graph", default=False))  # a graphed row only for a graphed run
    graphed = [r for r in exact if r.get("cuda_graph", False) == graph]
    if not graphed:
        note = (note + "; " if note else "") + f"no cuda_graph={graph} row: cuda_graph={not graph}'s"
        graphed = exact
    return graphed[0], note


# --------------------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------------------
def _profile_sizes(entry: dict) -> dict | None:
    sizes = entry.get("sizes")
    if not isinstance(sizes, dict):
        return None
    try:
        out = {k: int(sizes[k]) for k in SPLITS}
    except (KeyError, TypeError, ValueError):
        return None
    return out if out["train"] > 0 and min(out.values()) >= 0 else None


def dataset_sizes(cfg: Any, entry: dict, project_root: Path) -> tuple[dict | None, str]:
    """``({train, val, test}, where from)``: a ready cache's record count in the profile's proportions, else the
    profile's ``sizes``; ``(None, problem)`` when neither is there."""
    given = _profile_sizes(entry)
    manifest_file = ready_cache(cfg, project_root)
    if manifest_file is not None and given is not None:
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            records = int(manifest["rows"]) - len(manifest.get("skipped") or [])
        except (OSError, ValueError, KeyError, TypeError):
            records = None
        if records:
            total = sum(given.values())
            train, val = (round(records * given[k] / total) for k in ("train", "val"))
            return (
                {"train": train, "val": val, "test": records - train - val},
                f"the prepared cache {display_path(manifest_file, project_root)} ({records} records, split as the "
                "profile's sizes)",
            )
    if given is not None:
        return given, "the profile's sizes"
    return None, (
        "no size: add sizes: {train: N, val: N, test: N} to its entry in the profile, or prepare its cache "
        "(scripts/prepare_data.py)"
    )


# --------------------------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------------------------
def default_timings(project_root: Path, reference: bool = False) -> Path | None:
    """The user's own measurement (``outputs/gpu_check/gpu_check.json``, else ``outputs/bench/bench.json``); with
    ``reference``, the shipped :data:`REFERENCE_TIMINGS` when neither exists."""
    for candidate in (
        project_root / "outputs" / "gpu_check" / "gpu_check.json",
        project_root / "outputs" / "bench" / "bench.json",
        *([project_root / REFERENCE_TIMINGS] if reference else []),
    ):
        if candidate.is_file():
            return candidate
    return None


def _load(timings_path: str | os.PathLike | None, project_root: Path, problems: list[str]) -> Timings | None:
    """The step times (``--timings``, else the default files), or None with a problem line saying why."""
    path = Path(timings_path) if timings_path is not None else default_timings(project_root, reference=True)
    if path is None:
        problems.append(
            "no step times: neither outputs/gpu_check/gpu_check.json nor outputs/bench/bench.json exists, nor the "
            f"shipped {REFERENCE_TIMINGS}; " + MEASURE
        )
        return None
    try:
        timings = load_timings(path)
        timings.reference = timings_path is None and path == project_root / REFERENCE_TIMINGS
        return timings
    except ValueError as exc:
        problems.append(f"--timings {exc}")
        return None


def _timing_text(row: dict, batch: int, how: str) -> str:
    """Which timing row a block's cost comes from, as the printout names it."""
    return (
        f"{row['where']}: {row['backbone']}{' on ' + row['input'] if row.get('input') else ''} "
        f"{row['regularizer']} {row['precision']}"
        f"{' compiled' if row['compile'] else ''}{' cuda-graph' if row.get('cuda_graph') else ''} batch "
        f"{row['batch']}: {row['step_s'] * 1000:.1f} ms/step"
        + (f", scaled to batch {batch}" if batch != row["batch"] else "")
        + (f" ({how})" if how else "")
    )


def _block_cost(block: Any, cost: DatasetCost, timings: Timings | None) -> BlockCost:
    """One block's runs, steps, evaluation samples and times (None where no timing row fits)."""
    cfg = block.config
    batch, epochs = int(cfg.trainer.batch_size), int(cfg.trainer.epochs)
    steps = math.ceil(cost.sizes["train"] / batch) * epochs if cost.sizes else 0
    evals = (cost.sizes["val"] + cost.sizes["test"]) * epochs if cost.sizes else 0
    runs = len(block.noise) * len(block.seeds)
    row, how = pick_timing(timings, cfg) if timings is not None else (None, "")
    if row is None:
        return BlockCost(block.dataset, block.row, runs, steps, evals, None, None, "no timing row")
    per_sample = row["step_s"] / row["batch"]
    step_s = per_sample * batch
    run_s = steps * step_s + evals * per_sample * EVAL_COST if cost.sizes else None
    return BlockCost(block.dataset, block.row, runs, steps, evals, step_s, run_s, _timing_text(row, batch, how))


def estimate(checked: Any, gpus: int, timings_path: str | os.PathLike | None, project_root: Path) -> Estimate:
    """The cost of the blocks of ``checked`` (a :class:`~.plan.Plan`) on ``gpus`` GPUs."""
    problems: list[str] = []
    timings = _load(timings_path, project_root, problems)
    missing_timing: dict[str, dict[str, list[str]]] = {}  # backbone -> regularizer -> datasets
    datasets: dict[str, DatasetCost] = {}
    for block in checked.blocks:
        cfg = block.config
        if cfg is None:
            continue  # its composition failed: a preflight problem says why
        if block.dataset not in datasets:
            sizes, where = dataset_sizes(cfg, block.entry, project_root)
            if sizes is None:
                problems.append(f"{block.dataset}: {where}")
            datasets[block.dataset] = DatasetCost(
                block.dataset,
                block.experiment,
                sizes or {},
                where,
                int(cfg.trainer.batch_size),
                int(cfg.trainer.epochs),
            )
        cost = _block_cost(block, datasets[block.dataset], timings)
        datasets[block.dataset].blocks.append(cost)
        if cost.step_s is None and timings is not None:
            key = timing_key(cfg)
            missing_timing.setdefault(key[0], {}).setdefault(key[1], []).append(block.dataset)
    for backbone, regs in missing_timing.items():  # one line per backbone
        where = dict.fromkeys(d for ds in regs.values() for d in ds)
        problems.append(
            f"{', '.join(where)}: no step time for backbone {backbone} with {', '.join(regs)} in "
            f"{timings.path}; {MEASURE}"
        )
    return Estimate(list(datasets.values()), timings, gpus, [], problems)


def _hours(h: float | None) -> str:
    if h is None:
        return "?"
    return f"{h:,.1f} h" if h < 48 else f"{h:,.0f} h ({h / 24:,.1f} days)"


def _dataset_lines(d: DatasetCost, gpus: int) -> list[str]:
    """The printout's section of one dataset: its sizes, steps, and a table of its blocks."""
    s = d.sizes
    lines = [
        "",
        f"{d.dataset} (experiment {d.experiment}): sizes train {s.get('train', '?'):,} / val "
        f"{s.get('val', '?'):,} / test {s.get('test', '?'):,} from {d.sizes_from}"
        if s
        else f"{d.dataset} (experiment {d.experiment}): sizes unknown",
        f"  batch {d.batch}, {d.epochs} epochs: {math.ceil(s['train'] / d.batch) if s else '?'} steps per "
        f"epoch, {d.blocks[0].steps_per_run:,} steps and {d.epochs} x 2 evaluation passes "
        f"({d.blocks[0].eval_samples_per_run:,} samples) per run",
        "  | row | runs | step time | hours per run | GPU-hours | timing row |",
        "  |---|--:|--:|--:|--:|---|",
    ]
    for b in d.blocks:
        step = f"{b.step_s * 1000:.1f} ms" if b.step_s is not None else "?"
        per_run = _hours(b.run_s / 3600) if b.run_s is not None else "?"
        gpu_h = _hours(b.runs * b.run_s / 3600) if b.run_s is not None else "?"
        lines.append(f"  | {b.row} | {b.runs} | {step} | {per_run} | {gpu_h} | {b.timing} |")
    lines.append(
        f"  {d.dataset}: {d.runs} runs, {_hours(d.gpu_hours)} GPU-hours, "
        f"wall {_hours(d.wall_hours(gpus))} on {gpus} GPU(s)"
    )
    return lines


def format_estimate(est: Estimate, profile: str, seeds: list[int]) -> str:
    """The planner's printout."""
    lines = [f"Plan for profile {profile}: {len(seeds)} seed(s) {','.join(map(str, seeds))}, {est.gpus} GPU(s)"]
    if est.timings is not None and est.timings.reference:
        lines.append(
            f"Step times: no measurement of your own (outputs/gpu_check/gpu_check.json, outputs/bench/bench.json), "
            f"so the shipped reference measurement {REFERENCE_TIMINGS}, made on an {est.timings.device}: "
            "your GPU will differ; measure it with `make gpu-check` for your own figures. The rows used are named "
            "below."
        )
    elif est.timings is not None:
        lines.append(
            f"Step times: {est.timings.path} ({est.timings.kind}, device {est.timings.device}); "
            "the rows used are named below."
        )
    lines.append(
        "Assumptions: evaluation (validation + test after every epoch) is forward only, about 1/3 of a "
        "training step per sample; data loading keeps up; a run's time = steps x step time + evaluation. "
        "A timing row is matched by backbone, regularizer, precision and compile, NOT by input size: "
        "check that its input (shown) is the dataset's."
    )
    for d in est.datasets:
        lines += _dataset_lines(d, est.gpus)
    lines += [
        "",
        f"Total: {est.runs} runs, {_hours(est.gpu_hours)} GPU-hours; wall on {est.gpus} GPU(s): "
        f"{_hours(est.wall_hours)} as reproduce-tables runs it (one block = one dataset x one row at a time, "
        f"its noise x seed runs spread over the GPUs: ceil(runs / {est.gpus}) x one run per block); "
        f"{_hours(est.packed_wall_hours)} if every run could start on any free GPU "
        "(max(GPU-hours / GPUs, the longest run)).",
    ]
    smallest = min((b.runs for d in est.datasets for b in d.blocks), default=0)
    if (
        smallest
        and smallest < est.gpus
        and est.wall_hours is not None
        and est.packed_wall_hours is not None
        and est.wall_hours > est.packed_wall_hours
    ):
        lines.append(
            f"A block has as few as {smallest} runs for {est.gpus} GPUs: run "
            f"--launcher local_gpus --blocks-at-once {math.ceil(est.gpus / smallest)} to let blocks share the "
            "GPUs, which brings the wall time towards the second figure."
        )
    return "\n".join(lines)


def plan_profile(
    profile: str,
    seeds: list[int],
    gpus: int,
    timings: str | os.PathLike | None = None,
    sets: Any = (),
    launcher: str | None = None,
    hydra_args: Any = (),
    project_root: str | os.PathLike | None = None,
) -> tuple[str, Estimate, list[str]]:
    """``(printout, estimate, problems)`` for ``--plan``: composes every block as the sweep would (no data needed,
    nothing runs)."""
    root = Path(project_root) if project_root is not None else find_project_root()
    prof = load_profile(profile, root / "conf")
    extra, problems = parse_sets(sets)
    if gpus < 1:
        problems.append(f"--gpus must be at least 1, got {gpus}")
        gpus = 1
    checked = plan(prof, seeds, extra, launcher, hydra_args, root, need_data=False)
    est = estimate(checked, gpus, timings, root)
    problems += checked.problems + est.problems
    return format_estimate(est, Path(profile).stem, seeds), est, problems
