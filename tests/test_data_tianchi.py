"""Tianchi ECG: record and label readers, the ECG-55 / ECG-12 selections, the cache round trip, the configs."""

from __future__ import annotations

import collections
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from flowmixup.data import tianchi as tc
from flowmixup.data.base import DataError, LazyH5Array
from flowmixup.data.cache import read_manifest

CONF = Path(__file__).resolve().parents[1] / "conf"
HEADER = "I II V1 V2 V3 V4 V5 V6\n"


def _cfg(name):
    """The dataset's config as Hydra composes it (its own file over the shared conf/dataset_shared/tianchi.yaml),
    unresolved."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={name}"])
    return OmegaConf.to_container(cfg.dataset)


def _ints(path):
    """Independent parse: Python ints, line by line."""
    lines = Path(path).read_text().splitlines()
    assert lines[0].split() == list(tc.LEADS)
    return np.array([[int(v) for v in line.split()] for line in lines[1:]], dtype=np.int64).T


# ------------------------------------------------------------------------------------------ real fixtures
@pytest.mark.parametrize("rel", ["records/2.txt", "records/testA/1.txt"])
def test_read_real_record(shared_data, rel):
    path = shared_data / "tianchi" / rel
    x = tc.read_record(path)
    ints = _ints(path)
    assert x.shape == (8, 5000) and x.dtype == np.float32
    assert np.array_equal(x, (ints * 0.00488).astype(np.float32))
    assert np.abs(x.astype(np.float64) - ints * 0.00488).max() < 1e-6


def test_real_label_files(shared_data):
    t = shared_data / "tianchi"
    r1 = tc.read_labels(t / "hf_round1_label.txt")
    ta = tc.read_labels(t / "heifei_round1_ansA_20191008.txt")
    r2 = tc.read_labels(t / "hf_round2_train.txt")
    assert (len(r1), len(ta), len(r2)) == (24_106, 8_036, 20_036)
    assert r1["2.txt"] == ["窦性心律", "QRS低电压"]
    c1 = {lab for labs in list(r1.values()) + list(ta.values()) for lab in labs}
    c2 = {lab for labs in r2.values() for lab in labs}
    assert len(c1) == 55 and len(c2) == 34 and c2 <= c1
    reconstructed = (t / "hf_round1_arrythmia.reconstructed.txt").read_text(encoding="utf-8").split()
    assert set(reconstructed) == c1
    assert set((t / "hf_round2_arrythmia.txt").read_text(encoding="utf-8").split()) == c2
    # round-2 record files do not reuse round-1 names
    assert not (set(r1) | set(ta)) & set(r2)
    rows = tc.read_label_rows(t / "hf_round1_label.txt")
    assert sum(1 for r in rows if not r.age) == 2_595 and rows[0].line == 1


def test_config_class_lists(shared_data):
    t = shared_data / "tianchi"
    c55, c12 = _cfg("ecg55"), _cfg("ecg12")
    counts = collections.Counter()
    label_files = [
        c55["sources"]["round1_train"]["label_file"],
        c55["sources"]["round1_testA"]["label_file"],
        c12["sources"]["round2_train"]["label_file"],
    ]  # the classes are counted over all labelled data
    for label_file in label_files:
        for labs in tc.read_labels(t / label_file).values():
            counts.update(labs)
    reconstructed = (t / "hf_round1_arrythmia.reconstructed.txt").read_text(encoding="utf-8").split()
    assert len(c55["classes"]) == 55 and set(c55["classes"]) == set(reconstructed)
    top12 = [k for k, _ in counts.most_common(12)]
    assert len(c12["classes"]) == 12 and set(c12["classes"]) == set(top12)
    assert counts[c12["classes"][-1]] > counts.most_common(13)[-1][1]  # no tie at the cut
    assert c55["primary_metric"] == c12["primary_metric"] == "macro_f1"


def test_selection_counts(shared_data):
    root = shared_data / "tianchi"
    c55, c12 = _cfg("ecg55"), _cfg("ecg12")
    s55 = tc.select_records(root, c55["sources"], c55["classes"], c55["other_labels"], c55["duplicates"])
    assert s55.counts["records"] == 32_142  # paper: 31,779 (docs/datasets.md)
    assert s55.y.shape == (32_142, 55) and s55.y.sum(axis=1).min() >= 1
    assert s55.paths[0] == root / "train" / "2.txt"
    s12 = tc.select_records(root, c12["sources"], c12["classes"], c12["other_labels"], c12["duplicates"])
    assert s12.counts["records"] == 34_796  # paper: 34,664 (docs/datasets.md)
    assert {k: v["selected"] for k, v in s12.counts["sources"].items()} == {
        "round1_train": 17_242,
        "round2_train": 17_554,
    }
    assert s12.paths[-1].parent == root / "round2" / "train"
    three = {**c12["sources"], "round1_testA": c55["sources"]["round1_testA"]}
    assert tc.select_records(root, three, c12["classes"], "drop_record").counts["records"] == 40_204
    assert tc.select_records(root, three, c12["classes"], "drop_label").counts["records"] == 51_417


# --------------------------------------------------------------------------------------- small written files
def _record(path, rows=5000, ncols=8, seed=0, header=HEADER):
    rng = np.random.default_rng(seed)
    ints = rng.integers(-3000, 3000, (rows, ncols))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(" ".join(map(str, r)) + "\n" for r in ints))
    return ints


def test_read_written_record(tmp_path):
    ints = _record(tmp_path / "r.txt")
    assert np.array_equal(tc.read_record(tmp_path / "r.txt"), (ints.T * 0.00488).astype(np.float32))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda lines: lines.__setitem__(7, lines[7] + " 5"), r"r.txt, line 8: 9 values, expected 8"),
        (lambda lines: lines.__setitem__(9, " ".join(lines[9].split()[:7])), r"r.txt, line 10: 7 values"),
        (
            lambda lines: lines.__setitem__(12, lines[12].replace(lines[12].split()[2], "abc", 1)),
            r"r.txt, line 13: value 'abc' for lead V1 is not an integer",
        ),
        (lambda lines: lines.__setitem__(3, lines[3].replace(lines[3].split()[0], "1.5", 1)), r"r.txt, line 4"),
        (lambda lines: lines.pop(), r"r.txt, line 5001: 4999 rows of samples, expected 5000"),
        (lambda lines: lines.append(lines[-1]), r"r.txt, line 5002: 5001 rows"),
        (lambda lines: lines.pop(0), r"r.txt, line 1: header"),
        (lambda lines: lines.__setitem__(0, "I II V1 V2 V3 V4 V5"), r"r.txt, line 1: header 'I II V1 V2 V3 V4 V5'"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, edit, match):
    _record(tmp_path / "r.txt")
    lines = (tmp_path / "r.txt").read_text().splitlines()
    edit(lines)
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match):
        tc.read_record(tmp_path / "r.txt")


def test_missing_record(tmp_path):
    with pytest.raises(DataError, match="nope.txt"):
        tc.read_record(tmp_path / "nope.txt")


def test_read_labels_written(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text(
        "1.txt\t\t\t窦性心律\tQRS低电压\t\t\t\n2.txt\t34\tMALE\t房性早搏\t\n\n3.txt\t\tFEMALE\t窦性心律\n",
        encoding="utf-8",
    )
    assert tc.read_labels(p) == {"1.txt": ["窦性心律", "QRS低电压"], "2.txt": ["房性早搏"], "3.txt": ["窦性心律"]}
    rows = tc.read_label_rows(p)
    assert [r.line for r in rows] == [1, 2, 4] and rows[1].age == "34" and rows[2].sex == "FEMALE"


@pytest.mark.parametrize(
    "text, match",
    [
        ("1.txt\t\t\t窦性心律\n2.txt\t30\tMALE\t\t\t\n", r"labels.txt, line 2: record 2.txt has no label"),
        ("1.txt\t\t\t窦性心律\n2.txt\n", r"labels.txt, line 2: record 2.txt has no label"),
        ("1.txt\t\t\t窦性心律\n\t\t\t窦性心律\n", r"labels.txt, line 2: no record file name"),
        ("1.txt\t\t\t窦性心律\n1.txt\t\t\t房性早搏\n", r"labels.txt, line 2: record 1.txt already listed on line 1"),
    ],
)
def test_bad_label_files_name_file_and_line(tmp_path, text, match):
    (tmp_path / "labels.txt").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        tc.read_labels(tmp_path / "labels.txt")


def test_label_file_not_utf8(tmp_path):
    (tmp_path / "labels.txt").write_bytes("1.txt\t\t\t窦性心律\n".encode() + "2.txt\t\t\t窦性心律\n".encode("gbk"))
    with pytest.raises(DataError, match=r"labels.txt, line 2: not UTF-8"):
        tc.read_labels(tmp_path / "labels.txt")


CLASSES = ["A", "B", "C"]


def _tiny_root(tmp_path, n1=12, n2=8):
    """Round 1 in train/, round 2 in round2/train/, labels over A, B, C (and X, outside the classes)."""
    root = tmp_path / "tianchi"
    lab1, lab2 = [], []
    for i in range(n1):
        _record(root / "train" / f"{i}.txt", seed=i)
        labs = ["A", "B", "C"][: 1 + i % 3] + (["X"] if i == 5 else [])
        lab1.append(f"{i}.txt\t{20 + i}\tMALE\t" + "\t".join(labs) + "\t\n")
    for i in range(n2):
        _record(root / "round2" / "train" / f"{100001 + i}.txt", seed=100 + i)
        labs = ["X"] if i == 0 else ["C"]
        lab2.append(f"{100001 + i}.txt\t\t\t" + "\t".join(labs) + "\t\n")
    (root / "r1.txt").write_text("".join(lab1), encoding="utf-8")
    (root / "r2.txt").write_text("".join(lab2), encoding="utf-8")
    sources = {
        "round1": {"label_file": "r1.txt", "records_dir": "train"},
        "round2": {"label_file": "r2.txt", "records_dir": "round2/train"},
    }
    return root, sources


def test_selection_rules(tmp_path):
    root, sources = _tiny_root(tmp_path)
    with pytest.raises(DataError, match=r"r1.txt, line 6: label\(s\) \['X'\] of record 5.txt"):
        tc.select_records(root, sources, CLASSES, "error")
    s = tc.select_records(root, sources, CLASSES, "drop_record")
    assert len(s.ids) == 12 + 8 - 2 and "round1/5.txt" not in s.ids and "round2/100001.txt" not in s.ids
    s = tc.select_records(root, sources, CLASSES, "drop_label")
    assert len(s.ids) == 12 + 8 - 1 and "round2/100001.txt" not in s.ids
    assert s.y[s.ids.index("round1/5.txt")].tolist() == [1, 1, 1]
    # the same record file listed by two sources
    dup = {**sources, "again": {"label_file": "r1.txt", "records_dir": "train"}}
    with pytest.raises(DataError, match=r"r1.txt, line 1: record .*0.txt is also listed in .*r1.txt, line 1"):
        tc.select_records(root, dup, CLASSES, "drop_record")
    s = tc.select_records(root, dup, CLASSES, "drop_record", duplicates="first")
    assert len(s.ids) == 18 and s.counts["dropped_duplicates"] == 12


def test_prepare_and_load_round_trip(tmp_path):
    root, sources = _tiny_root(tmp_path)
    path = tc.prepare(root, tmp_path / "cache", "toy12", sources, CLASSES, "drop_record", prepare_workers=2)
    assert path.name.startswith("toy12_") and path.suffix == ".h5"
    data = tc.load(root, tmp_path / "cache", "toy12", sources, CLASSES, "drop_record", split_seed=3)
    assert isinstance(data.x, LazyH5Array) and data.x.shape == (18, 8, 5000) and data.x.dtype == np.float32
    sel = tc.select_records(root, sources, CLASSES, "drop_record")
    assert np.array_equal(data.y, sel.y.astype(np.float32)) and data.class_names == CLASSES
    for i in (0, 7, 17):
        assert np.array_equal(data.x[np.array([i])][0], tc.read_record(sel.paths[i]))
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 13, "val": 2, "test": 3}  # round(0.7 * 18), round(0.1 * 18), the rest
    assert sorted(np.concatenate(list(data.splits.values())).tolist()) == list(range(18))
    other = tc.load(root, tmp_path / "cache", "toy12", sources, CLASSES, "drop_record", split_seed=4)
    assert not np.array_equal(other.splits["train"], data.splits["train"])
    # another selection is another cache, not this one
    with pytest.raises(DataError, match=r"python scripts/prepare_data.py dataset=toy12 dataset.root="):
        tc.load(root, tmp_path / "cache", "toy12", sources, CLASSES, "drop_label")


def test_prepare_bad_record_error_and_skip(tmp_path, caplog):
    root, sources = _tiny_root(tmp_path)
    (root / "train" / "3.txt").write_text(HEADER + "1 2 3\n")
    (root / "round2" / "train" / "100004.txt").unlink()
    with pytest.raises(DataError, match=r"3.txt, line 2: 3 values"):
        tc.prepare(root, tmp_path / "cache", "toy", sources, CLASSES, "drop_record", prepare_workers=0)
    with caplog.at_level(logging.WARNING):
        path = tc.prepare(
            root, tmp_path / "cache", "toy", sources, CLASSES, "drop_record", prepare_workers=0, on_bad_record="skip"
        )
    assert "3.txt" in caplog.text and "100004.txt" in caplog.text and "skipped 2 of 18" in caplog.text
    assert sorted(s["record"] for s in read_manifest(path)["skipped"]) == ["round1/3.txt", "round2/100004.txt"]
    data = tc.load(root, tmp_path / "cache", "toy", sources, CLASSES, "drop_record", on_bad_record="skip")
    assert len(data.y) == 16 and data.info["skipped"] == 2


def test_hydra_configs_prepare_and_load(tmp_path, shared_data):
    """The dataset yaml files compose with conf/config.yaml and drive prepare + loader end to end."""
    import hydra
    from hydra import compose, initialize_config_dir

    root = tmp_path / "tianchi"
    for name in ("hf_round1_label.txt", "heifei_round1_ansA_20191008.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
    t = shared_data / "tianchi"
    (root / "hf_round1_label.txt").write_text(
        (t / "hf_round1_label.txt").read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8"
    )
    (root / "heifei_round1_ansA_20191008.txt").write_text(
        (t / "heifei_round1_ansA_20191008.txt").read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8"
    )
    (root / "train").mkdir()
    (root / "testA").mkdir()
    shutil.copy(t / "records" / "2.txt", root / "train" / "2.txt")
    shutil.copy(t / "records" / "testA" / "1.txt", root / "testA" / "1.txt")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "dataset=ecg55",
                f"dataset.root={root}",
                f"paths.data_dir={tmp_path / 'data'}",
                "dataset.prepare_workers=0",
            ],
        )
        # (Hydra wraps the loader's DataError; its message is kept)
        with pytest.raises(Exception, match=f"python scripts/prepare_data.py dataset=ecg55 dataset.root={root}"):
            hydra.utils.instantiate(cfg.dataset.loader)
        path = hydra.utils.call(cfg.dataset.prepare)
        data = hydra.utils.instantiate(cfg.dataset.loader)
    assert Path(path).parent == tmp_path / "data" / "tianchi"
    assert data.x.shape == (2, 8, 5000) and len(data.class_names) == 55
    assert np.array_equal(data.x[np.array([0])][0], tc.read_record(t / "records" / "2.txt"))
    assert data.y[0, data.class_names.index("QRS低电压")] == 1


@pytest.mark.parametrize("name", ["chestxray14", "ecg12", "ecg55"])
def test_dataset_configs_compose(name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={name}", "dataset.root=/r", "paths.data_dir=/d"])
    assert cfg.dataset.name == name and cfg.dataset.loader.root == "/r"
    assert cfg.dataset.loader.cache_dir.startswith("/d/") and cfg.dataset.prepare._target_.endswith(".prepare")
    assert cfg.dataset.primary_metric == ("auc" if name == "chestxray14" else "macro_f1")


# ------------------------------------------------------------------------- cache identity: content, not path
def _real_ecg55_root(shared_data, dest):
    """A real ECG-55 root in the download layout: the first line of each real label file and its real record."""
    t = shared_data / "tianchi"
    for name in ("hf_round1_label.txt", "heifei_round1_ansA_20191008.txt"):
        dest.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text((t / name).read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    (dest / "train").mkdir()
    (dest / "testA").mkdir()
    shutil.copy(t / "records" / "2.txt", dest / "train" / "2.txt")
    shutil.copy(t / "records" / "testA" / "1.txt", dest / "testA" / "1.txt")
    return dest


def _stamp(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_edited_label_file_changes_the_fingerprint_and_prepare_rebuilds(shared_data, tmp_path, caplog):
    c = _cfg("ecg55")
    root = _real_ecg55_root(shared_data, tmp_path / "tianchi")
    args = ("ecg55", c["sources"], c["classes"], c["other_labels"], c["duplicates"])
    cache = tmp_path / "cache"
    path = tc.prepare(root, cache, *args, prepare_workers=0)
    config = tc.cache_config(*args)
    before = tc.source_fingerprint(root, config, c["sources"], tc.select_records(root, *args[1:]))
    assert read_manifest(path)["fingerprint"] == before.sha256
    low_voltage = c["classes"].index("QRS低电压")
    assert tc.load(root, cache, *args).y[0, low_voltage] == 1
    # edit the label file: record 2.txt loses its second label
    label_file = root / "hf_round1_label.txt"
    label_file.write_text(label_file.read_text(encoding="utf-8").replace("\tQRS低电压", ""), encoding="utf-8")
    after = tc.source_fingerprint(root, config, c["sources"], tc.select_records(root, *args[1:]))
    assert after.sha256 != before.sha256 and after.records == before.records == 2
    assert [k for k in after.files if after.files[k] != before.files[k]] == ["hf_round1_label.txt"]
    assert tc.cache_file(cache, config) == path  # the same cache file: only its content identity changed
    with pytest.raises(DataError) as err:
        tc.load(root, cache, *args)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "built from other data" in msg and "hf_round1_label.txt" in msg
    assert msg.endswith(f"python scripts/prepare_data.py dataset=ecg55 dataset.root={root}")
    with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
        assert tc.prepare(root, cache, *args, prepare_workers=0) == path
    lines = [r.getMessage() for r in caplog.records if "other data" in r.getMessage()]
    assert len(lines) == 1 and "rebuilding" in lines[0] and "differs in hf_round1_label.txt" in lines[0]
    data = tc.load(root, cache, *args)
    assert data.y[0, low_voltage] == 0 and data.y[0, c["classes"].index("窦性心律")] == 1


def test_moved_data_is_accepted_and_reused(tmp_path, caplog):
    root, sources = _tiny_root(tmp_path)
    cache = tmp_path / "cache"
    path = tc.prepare(root, cache, "toy12", sources, CLASSES, "drop_record", prepare_workers=0)
    stamp = _stamp(path)
    moved = tmp_path / "elsewhere" / "tianchi"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    data = tc.load(moved, cache, "toy12", sources, CLASSES, "drop_record")
    assert data.x.shape == (18, 8, 5000)
    with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
        assert tc.prepare(moved, cache, "toy12", sources, CLASSES, "drop_record", prepare_workers=0) == path
    assert "reusing" in caplog.text and _stamp(path) == stamp
    # a record replaced by one of another length is other data
    _record(moved / "train" / "0.txt", rows=4999, seed=0)
    with pytest.raises(DataError, match="built from other data"):
        tc.load(moved, cache, "toy12", sources, CLASSES, "drop_record")


@pytest.mark.parametrize("no_root", [None, "", "???"])
def test_load_without_root_uses_a_complete_cache(tmp_path, no_root):
    root, sources = _tiny_root(tmp_path, n1=4, n2=2)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"dataset=toy dataset.root=<root>"):
        tc.load(no_root, cache, "toy", sources, CLASSES, "drop_record")
    tc.prepare(root, cache, "toy", sources, CLASSES, "drop_record", prepare_workers=0)
    shutil.rmtree(root)
    data = tc.load(no_root, cache, "toy", sources, CLASSES, "drop_record")
    assert data.x.shape == (5, 8, 5000)
    with pytest.raises(DataError, match=r"is not a folder.*dataset.root=null"):
        tc.load(root, cache, "toy", sources, CLASSES, "drop_record")
