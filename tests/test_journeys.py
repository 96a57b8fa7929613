"""One user journey per dataset, through the README's commands, on data in the real formats.

The next dataset added to the project gets its journey here.

A green suite once hid that ECG-12/55 could not train at all (every unit test called the loaders directly; nothing
ran ``python train.py dataset=ecg55 ...``). Each journey below is what a user types, run with ``sys.executable`` from
the project root, at a tiny model size:

1. ``python scripts/prepare_data.py dataset=<name> dataset.root=<root>`` (where the dataset has a prepare step): it
   prints the cache path; a second call reuses the cache;
2. ``python train.py -m regularizer=erm,mixup,manifold_mixup,flowmixup ...``, then the Op=True cell
   ``python train.py -m regularizer=flowmixup regularizer.keep_original=true ...`` into the same sweep folder.
   A Hydra multirun is a cartesian product, and ``regularizer.keep_original`` exists only under ``flowmixup``
   (``regularizer=erm,flowmixup regularizer.keep_original=false,true`` stops with "not a config key"), so the
   Op=True cell is its own multirun, as the README's "and the Op=True pair";
3. one ``python train.py regularizer=flowmixup ...`` killed with SIGKILL at step 3 of epoch 2 (the test-only hook
   ``FLOWMIXUP_FAULT_AT``, no sleeps), then the same command again: it resumes and ends as the uninterrupted sweep
   cell of the same configuration did;
4. ``python scripts/make_tables.py <sweep dir>``: the report names every regularizer, each cell ok.

The real data: ChestX-ray14 through the 1,000 real NIH images of ../shared/data/nih1000; ECG-55 and ECG-12 through a
root in the real Tianchi layout built from the REAL label files, cut to 100-160 lines each (ECG-55 selects 262
records from them, ECG-12 224), with the two real records and generated ones in the real text format
(tests/journey_layouts.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from journey_layouts import TINY_DENSENET, build_tianchi_root, expected_tianchi_selection
from project_config import CONF_DIR, PROJECT_ROOT

TIMEOUT = 300
FAULT_ENV = "FLOWMIXUP_FAULT_AT"
SWEEP = "regularizer=erm,mixup,manifold_mixup,flowmixup"
OP_TRUE = ["regularizer=flowmixup", "regularizer.keep_original=true"]
# (regularizer, alpha, keep_original) of the five cells, as summary.json and the report's tidy CSVs write them
SETTINGS = {
    ("erm", None, None),
    ("mixup", 1.0, None),
    ("manifold_mixup", 3.0, None),
    ("flowmixup", 3.0, False),
    ("flowmixup", 3.0, True),
}
LABELS = [
    "ERM",
    "Mixup (α=1.0)",
    "Manifold Mixup (α=3.0)",
    "Flow-Mixup (α=3.0, Op=False)",
    "Flow-Mixup (α=3.0, Op=True)",
]
# every run: two epochs on the CPU, no progress bars, one thread (tiny models gain nothing from a second one, and on
# a busy 2-core machine two OpenMP threads that wait for each other made epochs 30x slower)
RUN = ["trainer.epochs=2", "trainer.progress=false", "trainer.device=cpu", "trainer.num_threads=1"]
# a tiny 1-D ResNet: 5 residual blocks, the fewest that have the paper's mix points (the 3rd and 5th block inputs)
TINY_RESNET = ["backbone.width=4", "backbone.blocks=[2,1,1,1]"]
CHESTXRAY14_CLASSES = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]


# ------------------------------------------------------------------------------------------------------- helpers
def run_cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """``python <args>`` from the project root, as a user types it (``out``: stdout + stderr, for messages)."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault is not None:
        env[FAULT_ENV] = fault
    res = subprocess.run(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    res.out = res.stdout + res.stderr
    return res


def cli(*args: str) -> subprocess.CompletedProcess:
    """:func:`run_cli`, which must succeed."""
    res = run_cli(*args)
    assert res.returncode == 0, f"`python {' '.join(args)}` exited {res.returncode}:\n{res.out[-3000:]}"
    return res


def rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def conf_classes(dataset: str) -> list[str]:
    return yaml.safe_load((CONF_DIR / "dataset" / f"{dataset}.yaml").read_text(encoding="utf-8"))["classes"]


def prepare(dataset_args: list[str], data_dir: Path, twice: bool = True) -> Path:
    """The prepare step: it prints the cache path; a second call (``twice``) reuses the cache untouched."""
    args = ["scripts/prepare_data.py", *dataset_args, f"paths.data_dir={data_dir}"]
    first = cli(*args)
    cache = Path(first.stdout.strip().splitlines()[-1])  # the script prints the cache path last
    assert cache.is_file() and cache.suffix == ".h5", first.out[-2000:]
    assert data_dir in cache.parents, f"cache {cache} is not under paths.data_dir={data_dir}"
    assert f"cache ready at {cache}" in first.out
    if not twice:
        return cache
    built = cache.stat().st_mtime_ns
    again = cli(*args)
    assert again.stdout.strip().splitlines()[-1] == str(cache)
    assert "reusing" in again.out, again.out[-2000:]
    assert cache.stat().st_mtime_ns == built, "the second prepare rebuilt a complete cache"
    return cache


def split_sizes(out: str, dataset: str) -> int:
    """The number of records a run used, from its log line ``dataset=<name> (a train / b val / c test, ...)``."""
    line = next(text for text in out.splitlines() if f"dataset={dataset} (" in text)
    parts = line.split("(", 1)[1].split(",", 1)[0].split("/")
    return sum(int(p.split()[0]) for p in parts)


def journey(
    tmp_path: Path,
    dataset: str,
    args: list[str],
    n_classes: int,
    classes: list[str] | None = None,
    n_records: int | None = None,
) -> None:
    """Sweep every regularizer, kill and resume one run, and make the tables; ``args`` select data and model."""
    data = f"paths.data_dir={tmp_path / 'data'}"
    sweep = tmp_path / "sweep"

    # every regularizer, as two multiruns into one sweep folder (see the module docstring)
    out = cli("train.py", "-m", SWEEP, *args, *RUN, data, f"hydra.sweep.dir={sweep}").out
    if n_records is not None:
        assert split_sizes(out, dataset) == n_records, out[-2000:]
    cli("train.py", "-m", *OP_TRUE, *args, *RUN, data, f"hydra.sweep.dir={sweep}")
    cells = {}
    for path in sorted(sweep.glob("*/summary.json")):
        s = json.loads(path.read_text())
        assert s["status"] == "ok" and s["dataset"] == dataset and s["epochs"] == 2, (path, s)
        assert len(rows(path.parent / "metrics.csv")) == 2
        per_class = rows(path.parent / "per_class.csv")
        assert len(per_class) == n_classes, (path, len(per_class))
        if classes is not None:
            assert [r["class"] for r in per_class] == classes
        cells[(s["regularizer"], s["alpha"], s["keep_original"] if s["regularizer"] == "flowmixup" else None)] = path
    assert set(cells) == SETTINGS, sorted(cells, key=str)

    # kill one run at an exact step (no timing), then the same command again resumes it
    run_dir = tmp_path / "killed"
    single = ["train.py", "regularizer=flowmixup", *args, *RUN, data, f"hydra.run.dir={run_dir}"]
    killed = run_cli(*single, fault="SIGKILL@2:3")
    assert killed.returncode == -signal.SIGKILL, killed.out[-3000:]
    assert [r["epoch"] for r in rows(run_dir / "metrics.csv")] == ["1"]  # epoch 1 on disk, intact
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "summary.json").exists()
    out = cli(*single).out
    assert "resuming" in out, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["epochs"] == 2 and summary["dataset"] == dataset
    assert [r["epoch"] for r in rows(run_dir / "metrics.csv")] == ["1", "2"]
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp"))
    # the same configuration ran uninterrupted in the sweep: the resumed run ends with the same metrics
    reference = cells[("flowmixup", 3.0, False)].parent
    resumed, straight = (run_dir / "metrics.csv").read_text(), (reference / "metrics.csv").read_text()
    assert resumed == straight, f"resumed:\n{resumed}\nuninterrupted ({reference.name}):\n{straight}"

    # the report of the sweep folder names every regularizer, each cell ok
    out = cli("scripts/make_tables.py", str(sweep)).out
    report = sweep / "report"
    for name in ("report.md", *(f"table{t}.{ext}" for t in (1, 2, 3) for ext in ("md", "csv", "tex"))):
        assert (report / name).is_file(), f"{name} missing; make_tables printed:\n{out[-2000:]}"
    report_md = (report / "report.md").read_text(encoding="utf-8")
    counts = report_md.replace("*", "")
    assert re.search(r"\b5 ok\b", counts) and re.search(r"\b0 failed\b", counts), report_md[:1000]
    for label in LABELS:
        assert label in report_md, f"{label!r} not in report.md"
    metric = summary["primary_metric"]
    table = report / ("table1.csv" if metric == "auc" else "table2.csv")
    tidy = [r for r in rows(table) if r["dataset"] == dataset and r["quantity"] == "best"]
    ok = {r["setting"] for r in tidy if r["status"] == "ok"}
    assert set(LABELS) <= ok, f"{table.name}: cells ok: {sorted(ok)}"
    curves = report / "figures" / f"curves_{dataset}.csv"
    assert curves.is_file(), out[-2000:]
    assert set(LABELS) <= {r["setting"] for r in rows(curves)}


# ------------------------------------------------------------------------------------------------------- journeys
@pytest.mark.slow
def test_journey_synth_ecg(tmp_path):
    """The embedded default: no prepare step, the data is generated (and cached) on first use."""
    small = ["dataset.n_records=200", "dataset.sampling_rate=50", "dataset.duration=2.0", "trainer.batch_size=16"]
    journey(tmp_path, "synth_ecg", [*small, *TINY_RESNET], n_classes=15, n_records=200)


@pytest.mark.slow
def test_journey_chestxray14_nih1000(tmp_path, shared_data):
    """ChestX-ray14 through 1,000 real NIH images in the NIH layout, at 32 px, with a tiny DenseNet."""
    root = shared_data / "nih1000"
    if not root.is_dir():
        pytest.skip(f"the real NIH subset is not at {root}")
    dataset = ["dataset=chestxray14", f"dataset.root={root}", "dataset.resolution=32"]
    cache = prepare(dataset, tmp_path / "data")
    assert cache.name == "chestxray14_32.h5"
    built = cache.stat().st_mtime_ns
    model = TINY_DENSENET
    journey(tmp_path, "chestxray14", [*dataset, *model], n_classes=14, classes=CHESTXRAY14_CLASSES, n_records=1000)
    assert cache.stat().st_mtime_ns == built, "training rebuilt the prepared cache"


@pytest.fixture(scope="module")
def tianchi_root(tmp_path_factory, shared_data) -> Path:
    """A root in the real Tianchi layout: the real label files cut to a few hundred lines, real + generated records."""
    source = shared_data / "tianchi"
    if not (source / "records" / "2.txt").is_file():
        pytest.skip(f"the real Tianchi label files and records are not at {source}")
    root = tmp_path_factory.mktemp("tianchi")
    build_tianchi_root(source, root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ecg55", "ecg12"])
def test_journey_tianchi(tmp_path, tianchi_root, dataset):
    """ECG-55 / ECG-12: ``python train.py dataset=ecg55 dataset.root=<root>`` from the command line."""
    args = [f"dataset={dataset}", f"dataset.root={tianchi_root}"]
    data_dir = tmp_path / "data"
    if dataset == "ecg12":
        # training before the prepare step stops and gives the command that builds the cache (checked once: ECG-55
        # goes through the same code); that command, with this test's paths.data_dir, is the prepare step below
        early = run_cli(
            "train.py",
            *args,
            *TINY_RESNET,
            *RUN,
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={tmp_path / 'too_early'}",
        )
        hint = f"python scripts/prepare_data.py dataset={dataset} dataset.root={tianchi_root} paths.data_dir={data_dir}"
        assert early.returncode == 1 and early.stderr.strip().endswith(hint), early.out[-2000:]
        assert early.stderr.count("\n") == 1  # one line
        assert not (tmp_path / "too_early" / "summary.json").exists()
    cache = prepare(args, data_dir, twice=dataset == "ecg55")
    assert cache.parent == data_dir / "tianchi" and cache.name.startswith(f"{dataset}_")
    built = cache.stat().st_mtime_ns
    classes = conf_classes(dataset)
    assert len(classes) == {"ecg55": 55, "ecg12": 12}[dataset]
    n_records = expected_tianchi_selection(tianchi_root, CONF_DIR / "dataset" / f"{dataset}.yaml")
    assert 200 <= n_records <= 400  # the layout leaves a few hundred records to both selections
    journey(
        tmp_path,
        dataset,
        [*args, *TINY_RESNET, "trainer.batch_size=32"],
        n_classes=len(classes),
        classes=classes,
        n_records=n_records,
    )
    assert cache.stat().st_mtime_ns == built, "training rebuilt the prepared cache"
