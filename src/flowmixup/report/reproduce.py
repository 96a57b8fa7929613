"""``make reproduce-tables``: run the paper's grid (or its mini version) as Hydra multiruns into one sweep folder,
one subfolder per cell, skipping finished cells, then write Tables I-III and the figures beside the paper's numbers.

A profile (``conf/reproduce/<name>.yaml``) lists the table rows and, per dataset, an experiment config and its
noise levels. Each (dataset, row) pair is one ``train.py -m`` call over noise x seeds. A cell whose folder already
holds ``summary.json`` is skipped by the run itself (``trainer.skip_finished=true``), so an interrupted sweep goes
on where it stopped and a finished one only re-aggregates.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..io import write_json

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = PROJECT_ROOT / "conf"

# the six rows of Tables I and II, in the paper's order: name -> (summary fields, overrides)
ROWS: dict[str, tuple[dict, list[str]]] = {
    "erm": ({"regularizer": "erm", "alpha": None, "keep_original": None}, ["regularizer=erm"]),
    "mixup_a1": ({"regularizer": "mixup", "alpha": 1.0, "keep_original": None},
                 ["regularizer=mixup", "regularizer.alpha=1.0"]),
    "mixup_a3": ({"regularizer": "mixup", "alpha": 3.0, "keep_original": None},
                 ["regularizer=mixup", "regularizer.alpha=3.0"]),
    "manifold_mixup_a3": ({"regularizer": "manifold_mixup", "alpha": 3.0, "keep_original": None},
                          ["regularizer=manifold_mixup", "regularizer.alpha=3.0"]),
    "flowmixup_a3_op_false": ({"regularizer": "flowmixup", "alpha": 3.0, "keep_original": False},
                              ["regularizer=flowmixup", "regularizer.alpha=3.0", "regularizer.keep_original=false"]),
    "flowmixup_a3_op_true": ({"regularizer": "flowmixup", "alpha": 3.0, "keep_original": True},
                             ["regularizer=flowmixup", "regularizer.alpha=3.0", "regularizer.keep_original=true"]),
}
# one folder per cell, the same on every call, so that finished cells are found again
CELL_DIR = ("'${dataset.name}/${regularizer.name}_a${oc.select:regularizer.alpha,none}"
            "_op${oc.select:regularizer.keep_original,none}/noise${noise}_seed${seed}'")


@dataclass
class Block:
    """One (dataset, row) pair: a single multirun over noise x seeds."""

    experiment: str
    dataset: str
    row: str
    noise: list[float]
    seeds: list[int]
    overrides: list[str]


def load_profile(profile: str) -> dict:
    path = Path(profile) if profile.endswith(".yaml") else CONF_DIR / "reproduce" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "reproduce").glob("*.yaml"))
        raise SystemExit(f"error: profile '{profile}' not found; known profiles: {', '.join(known)} (or a .yaml path)")
    prof = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    unknown = [r for r in prof["rows"] if r not in ROWS]
    if unknown:
        raise SystemExit(f"error: {path}: unknown rows {unknown}; allowed: {', '.join(ROWS)}")
    return prof


def dataset_name(experiment: str, overrides: list[str]) -> str:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
    return str(cfg.dataset.name)


def plan(prof: dict, seeds: list[int], extra: dict[str, list[str]]) -> tuple[list[Block], list[dict], list[str]]:
    """The blocks to run, the expected grid (for missing-cell detection) and the datasets left out (with why)."""
    blocks, grid, skipped = [], [], []
    for entry in prof["datasets"]:
        exp = entry["experiment"]
        needs = entry.get("needs")
        if needs and not (PROJECT_ROOT / needs).exists() and not Path(needs).exists():
            if entry.get("optional"):
                skipped.append(f"{exp}: {needs} not found")
                continue
            raise SystemExit(f"error: experiment {exp} needs {needs}, which does not exist")
        overrides = list(entry.get("overrides", [])) + extra.get(exp, [])
        name = dataset_name(exp, overrides)
        overrides += extra.get(name, [])
        noise = [float(n) for n in entry["noise"]]
        for row in prof["rows"]:
            blocks.append(Block(exp, name, row, noise, seeds, overrides))
            for n in noise:
                for s in seeds:
                    grid.append({"dataset": name, **ROWS[row][0], "noise": n, "seed": s})
    return blocks, grid, skipped


def cell_dir(sweep: Path, dataset: str, row: str, noise: float, seed: int) -> Path:
    """The folder CELL_DIR gives a cell (kept in step with it; checked by the tests)."""
    fields = ROWS[row][0]
    alpha = "none" if fields["alpha"] is None else str(float(fields["alpha"]))
    keep = "none" if fields["keep_original"] is None else str(bool(fields["keep_original"]))
    return sweep / dataset / f"{fields['regularizer']}_a{alpha}_op{keep}" / f"noise{float(noise)}_seed{int(seed)}"


def count_done(sweep: Path) -> int:
    return sum(1 for _ in sweep.rglob("summary.json")) if sweep.exists() else 0


def run_profile(profile: str, seeds: list[int], sweep: Path, launcher: str | None = None,
                hydra_args: list[str] = (), extra: dict[str, list[str]] | None = None) -> int:
    """Run every block of ``profile`` into ``sweep`` and aggregate; returns the number of failed blocks."""
    from . import figures, tables

    started = time.time()
    prof = load_profile(profile)
    blocks, grid, skipped = plan(prof, seeds, extra or {})
    sweep.mkdir(parents=True, exist_ok=True)
    write_json(sweep / "grid.json", grid)
    for note in skipped:
        print(f"[reproduce] left out {note}", flush=True)
    total = len(grid)
    print(f"[reproduce] profile {profile}: {len(blocks)} blocks, {total} cells, {count_done(sweep)} already finished, "
          f"into {sweep}", flush=True)
    failed = 0
    for i, b in enumerate(blocks, 1):
        if all((cell_dir(sweep, b.dataset, b.row, n, s) / "summary.json").is_file() for n in b.noise for s in b.seeds):
            print(f"[reproduce] block {i}/{len(blocks)} {b.dataset} {b.row}: all cells finished, skipped", flush=True)
            continue
        cmd = [sys.executable, str(PROJECT_ROOT / "train.py"), "-m", f"experiment={b.experiment}", *ROWS[b.row][1],
               "noise=" + ",".join(str(n) for n in b.noise), "seed=" + ",".join(str(s) for s in b.seeds),
               *b.overrides, "trainer.skip_finished=true", "trainer.progress=false",
               f"hydra.sweep.dir={sweep}", f"hydra.sweep.subdir={CELL_DIR}"]
        if launcher:
            cmd.append(f"hydra/launcher={launcher}")
        cmd += list(hydra_args)
        t0 = time.time()
        res = subprocess.run(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        status = "ok" if res.returncode == 0 else f"FAILED (exit {res.returncode})"
        print(f"[reproduce] block {i}/{len(blocks)} {b.dataset} {b.row}: {status} in {time.time() - t0:.0f}s; "
              f"{count_done(sweep)}/{total} cells finished", flush=True)
        if res.returncode != 0:
            failed += 1
            print("\n".join(res.stderr.strip().splitlines()[-5:]), file=sys.stderr, flush=True)
    tables.make_report(sweep)
    figs = figures.make_figures(sweep)
    print((sweep / "report" / "report.md").read_text(), flush=True)
    print(f"[reproduce] report: {sweep / 'report'} ({len(figs.get('paths', []))} figure files); "
          f"wall time {time.time() - started:.0f}s", flush=True)
    (sweep / "report" / "wall_time.json").write_text(json.dumps({"wall_time_s": round(time.time() - started, 1)}))
    return failed
