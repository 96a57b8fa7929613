"""Raw-data layouts for the journey tests (tests/test_journeys.py), built from the real fixtures in ../shared/data.

Only the fixture *layout* is built in Python here; everything the journeys then do goes through the README's
commands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# as conf/experiment/nih1000_cpu.yaml (no stride-2 stem convolutions for small images, lr 1e-3), smaller still
TINY_DENSENET = [
    "backbone=densenet_small",
    "backbone.stem_convs=0",
    "backbone.growth_rate=4",
    "backbone.block_config=[1,1,1,1]",
    "backbone.num_init_features=8",
    "trainer.lr=1e-3",
    "trainer.batch_size=64",
]
TIANCHI_HEADER = b"I II V1 V2 V3 V4 V5 V6\n"
TIANCHI_ROWS = 5000

# (label file, records folder under the root as conf/dataset/ecg{12,55}.yaml name it, which lines of the REAL label
# file to keep). The strides and cut-offs are chosen so that both selections keep a few hundred records:
# - hf_round1_label.txt is grouped by label (its first few hundred lines all carry QRS低电压, outside ECG-12's
#   classes), so every 150th line is kept: 161 lines, 118 of them described entirely by ECG-12's 12 classes;
# - heifei_round1_ansA_20191008.txt: every 80th line, 101 lines (every label of round 1 is one of ECG-55's classes);
# - hf_round2_train.txt: the first 120 lines, 106 of them within ECG-12's classes.
# ECG-55 (round 1 train + test A, other_labels: error) then selects 262 records, ECG-12 (round 1 train + round 2
# train, other_labels: drop_record) 224. Line 1 of the round-1 file is 2.txt and line 1 of test A is 1.txt: the two
# real records.
TIANCHI_SOURCES = (
    ("hf_round1_label.txt", "train", slice(0, None, 150)),
    ("heifei_round1_ansA_20191008.txt", "testA", slice(0, None, 80)),
    ("hf_round2_train.txt", "round2/train", slice(0, 120)),
)
# the real records shipped with the fixtures, under their own names: (records folder, file) -> fixture path
TIANCHI_REAL_RECORDS = {("train", "2.txt"): "records/2.txt", ("testA", "1.txt"): "records/testA/1.txt"}


def cut_label_file(src: Path, dst: Path, keep: slice) -> list[str]:
    """Copy the lines ``keep`` of a real label file byte for byte (tabs, trailing tabs, empty age/sex, UTF-8).

    Returns the record file names of the kept lines.
    """
    raw = src.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw, f"{src}: not the expected LF-terminated label file"
    lines = raw[:-1].split(b"\n")[keep]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"\n".join(lines) + b"\n")
    return [line.split(b"\t", 1)[0].decode() for line in lines]


def _record_pool(tianchi: Path, seed: int = 0) -> list[bytes]:
    """10,000 sample rows in the record format, from the two real records plus seeded integer noise."""
    real = [np.loadtxt(tianchi / rel, dtype=np.int64, skiprows=1) for rel in TIANCHI_REAL_RECORDS.values()]
    rng = np.random.default_rng(seed)
    pool = np.concatenate(real) + rng.integers(-8, 9, size=(2 * TIANCHI_ROWS, 8))
    return [b" ".join(str(v).encode() for v in row) for row in pool.tolist()]


def build_tianchi_root(tianchi: Path, root: Path) -> dict[str, list[str]]:
    """A Tianchi root in the real layout: the three cut label files, and one record file per listed line.

    The two real records are copied under their own names. Every other record is GENERATED (there are no more real
    records in the fixtures): the real header ``I II V1 V2 V3 V4 V5 V6`` and 5,000 rows of 8 space-separated
    integers, a window of a pool of rows made from the two real records with seeded integer noise, shifted per
    record so that no two records are equal. Returns records folder -> the record names written.
    """
    pool = _record_pool(tianchi)
    written: dict[str, list[str]] = {}
    n = 0
    for label_file, records_dir, keep in TIANCHI_SOURCES:
        names = cut_label_file(tianchi / label_file, root / label_file, keep)
        folder = root / records_dir
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            real = TIANCHI_REAL_RECORDS.get((records_dir, name))
            if real is not None:
                (folder / name).write_bytes((tianchi / real).read_bytes())
            else:  # generated, in the real format
                start = (n * 7919) % TIANCHI_ROWS
                (folder / name).write_bytes(TIANCHI_HEADER + b"\n".join(pool[start : start + TIANCHI_ROWS]) + b"\n")
                n += 1
        written[records_dir] = names
    return written


def expected_tianchi_selection(root: Path, dataset_yaml: Path) -> int:
    """How many records a dataset config's selection keeps from ``root``, counted here from the label files (an
    oracle written apart from the project's reader): a line's labels are its fields after file, age and sex;
    ``other_labels: drop_record`` leaves out a line with a label outside ``classes``, ``error`` keeps every line (a
    line it would refuse fails the journey instead)."""
    import yaml

    conf = yaml.safe_load(dataset_yaml.read_text(encoding="utf-8"))
    classes = set(conf["classes"])
    assert conf["other_labels"] in ("error", "drop_record"), conf["other_labels"]
    kept = 0
    for source in conf["sources"].values():
        for line in (root / source["label_file"]).read_text(encoding="utf-8").splitlines():
            labels = {p.strip() for p in line.split("\t")[3:] if p.strip()}
            if conf["other_labels"] == "error" or labels <= classes:
                kept += 1
    return kept
