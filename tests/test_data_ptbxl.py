"""PTB-XL (flowmixup.data.ptbxl) on the real fixtures of ../shared/data/ptbxl, and on GENERATED records.

Real: scp_statements.csv (the 71 statements), the 521-row slice of ptbxl_database.csv (served to the reader under
the release's name ptbxl_database.csv through a symlink) and the one native record records100/00000/00001_lr.
Generated (said where it happens): records written with ``wfdb.wrsamp`` in the release's layout, for the cache and
for bad input.
"""

from __future__ import annotations

import ast
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowmixup.data import ptbxl
from flowmixup.data.base import DataError
from wfdb_records import PTBXL_LEADS as LEADS
from wfdb_records import PTBXL_SLICE as SLICE
from wfdb_records import build_ptbxl_tree, write_record


@pytest.fixture
def slice_root(shared_data, tmp_path) -> Path:
    """The real slice, statements and record under the release's file names (symlinks, nothing copied)."""
    root = tmp_path / "ptbxl"
    root.mkdir()
    (root / "ptbxl_database.csv").symlink_to(shared_data / "ptbxl" / SLICE)
    (root / "scp_statements.csv").symlink_to(shared_data / "ptbxl" / "scp_statements.csv")
    (root / "records100").symlink_to(shared_data / "ptbxl" / "records100")
    return root


# ------------------------------------------------------------------------------ independent label counting
def independent_counts(database: Path, statements: Path, task: str) -> tuple[Counter, int]:
    """Per-class record counts and the number of records without a label of ``task``, counted with the csv module
    straight from the two files (not through pandas or flowmixup)."""
    with open(statements, newline="") as fh:
        rows = list(csv.DictReader(fh))
    code = {r[""]: r for r in rows}  # the first column (the statement) has an empty header

    def target(s):
        r = code.get(s)
        if r is None:
            return None
        if task == "all":
            return s
        if task in ("diagnostic", "form", "rhythm"):
            return s if r[task] == "1.0" else None
        if r["diagnostic"] != "1.0":
            return None
        return r["diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"] or None

    counts: Counter = Counter()
    unlabelled = 0
    with open(database, newline="") as fh:
        for rec in csv.DictReader(fh):
            classes = {target(s) for s in ast.literal_eval(rec["scp_codes"])} - {None}
            counts.update(classes)
            unlabelled += not classes
    return counts, unlabelled


@pytest.mark.parametrize("task", ptbxl.TASKS)
def test_label_counts_per_task_on_the_real_slice(slice_root, shared_data, task):
    df = ptbxl.read_metadata(slice_root)
    scp = pd.read_csv(shared_data / "ptbxl" / "scp_statements.csv", index_col=0)
    y, names = ptbxl.labels(df, scp, task)
    expected, unlabelled = independent_counts(
        shared_data / "ptbxl" / SLICE, shared_data / "ptbxl" / "scp_statements.csv", task
    )
    got = {n: int(c) for n, c in zip(names, y.sum(axis=0)) if c}
    assert got == dict(expected)
    assert int((y.sum(axis=1) == 0).sum()) == unlabelled
    assert y.shape == (521, len(names)) and set(np.unique(y)) <= {0, 1}
    assert names == sorted(names)
    assert list(df["ecg_id"]) == [int(r) for r in pd.read_csv(shared_data / "ptbxl" / SLICE)["ecg_id"]]


def test_class_counts_on_the_full_statement_table(shared_data):
    scp = pd.read_csv(shared_data / "ptbxl" / "scp_statements.csv", index_col=0)
    counts = {t: len(ptbxl.task_classes(scp, t)) for t in ptbxl.TASKS}
    assert counts == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}
    assert ptbxl.task_classes(scp, "superdiagnostic") == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_metadata_columns_and_parsed_codes(slice_root):
    df = ptbxl.read_metadata(slice_root)
    first = df.iloc[0]
    assert (first["ecg_id"], first["patient_id"], first["strat_fold"]) == (1, 15709, 3)
    assert first["scp_codes"] == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert first["filename_lr"] == "records100/00000/00001_lr"
    assert df["strat_fold"].between(1, 10).all()


def test_read_record_equals_wfdb_rdsamp(shared_data):
    import wfdb

    path = shared_data / "ptbxl" / "records100" / "00000" / "00001_lr"
    x = ptbxl.read_record(path)
    ref, fields = wfdb.rdsamp(str(path))
    assert x.dtype == np.float32 and x.shape == (12, 1000)
    assert fields["fs"] == 100
    np.testing.assert_array_equal(x, ref.T.astype(np.float32))


# ------------------------------------------------------------------------------------------------ bad input
def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_database_is_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        ptbxl.read_metadata(tmp_path)
    assert str(tmp_path / "ptbxl_database.csv") in one_line(err) and "not found" in str(err.value)


def test_unknown_task_is_one_line(slice_root):
    scp = ptbxl.read_statements(slice_root)
    with pytest.raises(DataError) as err:
        ptbxl.labels(ptbxl.read_metadata(slice_root), scp, "superdiag")
    msg = one_line(err)
    assert "dataset.task" in msg and "'superdiag'" in msg and "superdiagnostic" in msg and "rhythm" in msg


def test_unknown_sampling_rate_is_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        ptbxl.load(None, tmp_path, sampling_rate=250)
    assert "dataset.sampling_rate" in one_line(err) and "100, 500" in str(err.value)


def test_bad_scp_codes_names_the_line(slice_root, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    lines = (slice_root / "ptbxl_database.csv").read_text().splitlines()
    lines[3] = lines[3].replace("{'NORM'", "['NORM'")  # not a dict any more
    (root / "ptbxl_database.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        ptbxl.read_metadata(root)
    assert ", line 4: scp_codes" in one_line(err)


def test_header_lead_count_disagreeing_with_the_signal(tmp_path):
    # GENERATED: a 12-lead record whose header is edited to declare 11 signals (the .dat still holds 12)
    rec = tmp_path / "records100" / "00000" / "00001_lr"
    write_record(rec, 100)
    hea = rec.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    first = lines[0].split()
    first[1] = "11"
    hea.write_text("\n".join([" ".join(first)] + lines[1:12]) + "\n")
    with pytest.raises(DataError) as err:
        ptbxl.read_record(rec)
    assert str(hea) in one_line(err) and "11 signals" in str(err.value)


def test_header_length_disagreeing_with_the_signal(tmp_path):
    # GENERATED: the header says 500 samples, the .dat holds 1,000 per lead
    rec = tmp_path / "r" / "00002_lr"
    write_record(rec, 100)
    hea = rec.with_suffix(".hea")
    text = hea.read_text().splitlines()
    text[0] = text[0].replace(" 100 1000", " 100 500")
    hea.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError) as err:
        ptbxl.read_record(rec)
    msg = one_line(err)
    assert "00002_lr.dat" in msg and "24000 bytes" in msg and "12 leads x 500 samples" in msg


def test_truncated_record(tmp_path):
    rec = tmp_path / "r" / "00003_lr"
    write_record(rec, 100)  # GENERATED
    dat = rec.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:5000])
    with pytest.raises(DataError) as err:
        ptbxl.read_record(rec)
    assert "truncated" in one_line(err)


def test_sampling_rate_disagreeing_with_the_dataset(tmp_path):
    # GENERATED: a 500 Hz record where the 100 Hz one belongs
    rec = tmp_path / "r" / "00004_lr"
    write_record(rec, 500)
    with pytest.raises(DataError) as err:
        ptbxl._read_record_row((str(rec), 100))
    assert "500 Hz x 5000 samples, expected 100 Hz x 1000" in one_line(err)


def test_nan_filled_record(tmp_path):
    import wfdb

    rec = tmp_path / "r" / "00005_lr"
    sig = write_record(rec, 100)  # GENERATED, then rewritten with missing samples (WFDB's invalid value)
    sig[10:20, 3] = np.nan
    wfdb.wrsamp(
        rec.name,
        fs=100,
        units=["mV"] * 12,
        sig_name=LEADS,
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(rec.parent),
    )
    with pytest.raises(DataError) as err:
        ptbxl.read_record(rec)
    assert "10 samples are missing" in one_line(err) and "lead aVR" in str(err.value)


# ---------------------------------------------------------------------------------------------- prepare / load
def test_prepare_and_load_on_a_generated_tree(shared_data, tmp_path):
    root = tmp_path / "ptbxl"
    df = build_ptbxl_tree(shared_data, root, 60)  # real rows, GENERATED records
    cache_dir = tmp_path / "cache"
    with pytest.raises(DataError) as err:  # no cache yet: the prepare command
        ptbxl.load(root, cache_dir)
    assert f"python scripts/prepare_data.py dataset=ptbxl dataset.root={root}" in one_line(err)
    path = ptbxl.prepare(root, cache_dir, 100, prepare_workers=0)
    assert path == cache_dir / "ptbxl_100hz.h5"
    data = ptbxl.load(root, cache_dir, task="superdiagnostic")
    folds = df["strat_fold"].astype(int).to_numpy()
    meta = ptbxl.read_metadata(root)
    y, names = ptbxl.labels(meta, ptbxl.read_statements(root), "superdiagnostic")
    labelled = y.any(axis=1)
    assert data.class_names == names
    np.testing.assert_array_equal(data.y, y)
    assert set(data.splits["train"]) == set(np.flatnonzero(labelled & (folds <= 8)))
    assert set(data.splits["val"]) == set(np.flatnonzero(labelled & (folds == 9)))
    assert set(data.splits["test"]) == set(np.flatnonzero(labelled & (folds == 10)))
    assert data.info["dropped_no_label"] == int((~labelled).sum())
    np.testing.assert_array_equal(data.x[np.array([5])][0], ptbxl.read_record(root / df["filename_lr"].iloc[5]))
    # the same cache serves another task, and a cache-only node (root=None)
    rhythm = ptbxl.load(None, cache_dir, task="rhythm")
    assert len(rhythm.class_names) == 12 and rhythm.x.shape == (60, 12, 1000)
    np.testing.assert_array_equal(rhythm.y, ptbxl.labels(meta, ptbxl.read_statements(root), "rhythm")[0])


def test_skip_lists_every_bad_record_in_the_manifest(shared_data, tmp_path):
    root = tmp_path / "ptbxl"
    df = build_ptbxl_tree(shared_data, root, 30)  # GENERATED records
    (root / (df["filename_lr"].iloc[2] + ".dat")).write_bytes(b"\0" * 100)  # truncated
    (root / (df["filename_lr"].iloc[7] + ".hea")).unlink()  # missing
    with pytest.raises(DataError) as err:
        ptbxl.prepare(root, tmp_path / "c", 100, prepare_workers=0)
    assert df["filename_lr"].iloc[2] in one_line(err)
    path = ptbxl.prepare(root, tmp_path / "c", 100, prepare_workers=0, on_bad_record="skip")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert [s["record"] for s in manifest["skipped"]] == [df["filename_lr"].iloc[2], df["filename_lr"].iloc[7]]
    assert manifest["rows"] == 28
    data = ptbxl.load(root, tmp_path / "c", task="all", on_bad_record="skip")
    assert len(data.y) == 28 and data.info["skipped"] == 2
