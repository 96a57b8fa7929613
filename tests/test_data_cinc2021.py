"""PhysioNet/CinC 2021 (flowmixup.data.cinc2021) on the 30 real records of ../shared/data/cinc2021 (Georgia E075xx,
PTB-XL HR060xx) and the challenge's real weights.csv; GENERATED records (said where) for other rates and lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.signal import resample_poly

from flowmixup.data import cinc2021 as cinc
from flowmixup.data.base import DataError
from wfdb_records import write_challenge_record


def header_dx(hea: Path) -> list[str]:
    """The Dx codes as the test reads them from the header text."""
    for line in hea.read_text().splitlines():
        if line.startswith("# Dx:"):
            return [c.strip() for c in line.split(":", 1)[1].split(",") if c.strip()]
    return []


def weights_header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].split(",")[1:]


# ------------------------------------------------------------------------------------------------ real records
def test_the_30_real_records(shared_data):
    import wfdb

    folder = shared_data / "cinc2021"
    names = sorted(p.stem for p in folder.glob("*.hea"))
    assert len(names) == 30 and sum(n.startswith("E") for n in names) == 20
    classes = [c.split("|") for c in weights_header(folder / "weights.csv")]
    sel = cinc.select_records(folder, cinc.SOURCES, ["|".join(c) for c in classes])
    assert sel.names == names
    for i, name in enumerate(names):
        x, fs, dx = cinc.read_record(folder / name)
        assert x.shape == (12, 5000) and x.dtype == np.float32 and fs == 500.0
        assert dx == header_dx(folder / f"{name}.hea")
        ref, _ = wfdb.rdsamp(str(folder / name))
        np.testing.assert_allclose(x, ref.T, atol=1e-6)
        expected = [int(any(code in dx for code in codes)) for codes in classes]
        assert list(sel.y[i]) == expected, name
    # two records carry no scored code (E07506: 164873001 only...), kept as all-zero rows by default
    assert sel.counts["no_scored_label"] == sum(not any(sel.y[i]) for i in range(30))
    assert sel.counts["per_source"] == {"georgia": 20, "ptb_xl": 10}
    assert sel.counts["per_class"]["426783006"] == sum("426783006" in header_dx(folder / f"{n}.hea") for n in names)


def test_scored_classes_in_weights_order(shared_data):
    path = shared_data / "cinc2021" / "weights.csv"
    classes = cinc.scored_classes(path)
    assert len(classes) == 26
    assert classes == [name.split("|") for name in weights_header(path)]
    assert ["733534002", "164909002"] in classes and ["426783006"] in classes
    # the dataset config lists the same classes in the same order
    import yaml

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "dataset" / "cinc2021.yaml").read_text())
    assert conf["classes"] == weights_header(path)


def test_weights_not_square_is_one_line(shared_data, tmp_path):
    lines = (shared_data / "cinc2021" / "weights.csv").read_text().splitlines()
    bad = tmp_path / "weights.csv"
    bad.write_text("\n".join(lines[:-1]) + "\n")  # 26 columns, 25 rows
    with pytest.raises(DataError) as err:
        cinc.scored_classes(bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "not square" in msg and "26 column names, 25 rows" in msg


def test_weights_csv_unset_is_one_line():
    with pytest.raises(DataError) as err:
        cinc.ChallengeScore(None)
    assert "\n" not in str(err.value) and "dataset.weights_csv" in str(err.value)


# ------------------------------------------------------------------------------------------- the challenge metric
def test_challenge_score_hand_computed():
    # classes N (normal), X, Y; weights (rows: labels, columns: outputs)
    w = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.5, 0.5, 1.0]])
    classes = ["426783006", "1", "2"]
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    outputs = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    # observed: r1 N->N 1/1; r2 X->Y 1/|{X,Y}|; r3 X->X and Y->X 1/|{X,Y}| each
    #   = 1*1 + 0.5*0.5 + 1*0.5 + 0.5*0.5 = 2.0
    # correct: r1 1; r2 X->X 1; r3 (XX + XY + YX + YY)/2 = (1 + .5 + .5 + 1)/2 = 1.5  -> 3.5
    # inactive (N only): r1 1; r2 X->N 0 * 1/2; r3 X->N 0 * 1/3 + Y->N 0.5 * 1/3  -> 7/6
    # normalized = (2 - 7/6) / (3.5 - 7/6) = 5/14
    assert cinc.challenge_score(labels, outputs, w, classes) == pytest.approx(5 / 14, abs=1e-12)
    assert cinc.challenge_score(labels, labels, w, classes) == pytest.approx(1.0)
    only_normal = np.zeros_like(labels)
    only_normal[:, 0] = 1
    assert cinc.challenge_score(labels, only_normal, w, classes) == pytest.approx(0.0)
    # an empty output row adds nothing; the normal class found inside a joined name
    assert cinc.challenge_score(labels, np.zeros_like(labels), w, ["426783006|9", "1", "2"]) == pytest.approx(
        (0 - 7 / 6) / (3.5 - 7 / 6)
    )


def test_challenge_score_callable_reorders_and_thresholds(shared_data, tmp_path):
    path = shared_data / "cinc2021" / "weights.csv"
    metric = cinc.ChallengeScore(path, threshold=0.5)
    names = weights_header(path)
    rng = np.random.default_rng(0)
    y = (rng.random((40, 26)) < 0.15).astype(float)
    y[:, names.index("426783006")] = rng.random(40) < 0.5
    score = np.clip(y * 0.8 + rng.random((40, 26)) * 0.4, 0, 1)
    direct = cinc.challenge_score(y > 0.5, score >= 0.5, metric.weights, metric.classes)
    assert metric(y, score, names) == pytest.approx(direct)
    perm = rng.permutation(26)  # the run's classes in another order: same score
    assert metric(y[:, perm], score[:, perm], [names[i] for i in perm]) == pytest.approx(direct)
    assert metric(y, y, names) == pytest.approx(1.0)
    with pytest.raises(DataError):
        metric(y[:, :25], score[:, :25], names[:25])


# --------------------------------------------------------------------------------------- resampling and sources
def test_resample_then_crop_or_pad():
    rng = np.random.default_rng(0)
    short = rng.standard_normal((12, 1000))  # 250 Hz x 4 s -> 500 Hz: 2,000 samples, then 3,000 zeros
    out = cinc.resample_crop(short, 250, 500, 10.0)
    assert out.shape == (12, 5000) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :2000], resample_poly(short, 2, 1, axis=1)[:, :2000], atol=1e-5)
    assert not out[:, 2000:].any() and out[:, 1990:2000].all()
    long = rng.standard_normal((12, 30000))  # 1,000 Hz x 30 s -> the first 10 s at 500 Hz
    out = cinc.resample_crop(long, 1000, 500, 10.0)
    np.testing.assert_allclose(out, resample_poly(long, 1, 2, axis=1)[:, :5000], atol=1e-5)
    # 257 Hz (St Petersburg): a 3 Hz sine stays a 3 Hz sine at 500 Hz
    t = np.arange(257 * 12) / 257
    out = cinc.resample_crop(np.tile(np.sin(2 * np.pi * 3 * t), (12, 1)), 257, 500, 10.0)
    t2 = np.arange(5000) / 500
    np.testing.assert_allclose(out[0, 200:4800], np.sin(2 * np.pi * 3 * t2)[200:4800], atol=0.01)


def test_source_rule():
    expected = {
        "A0001": "cpsc",
        "Q3581": "cpsc_extra",
        "I0075": "st_petersburg",
        "S0549": "ptb",
        "HR21837": "ptb_xl",
        "E10344": "georgia",
        "JS00001": "chapman_shaoxing",
        "JS10646": "chapman_shaoxing",
        "JS10647": "ningbo",
        "JS45551": "ningbo",
    }
    assert {n: cinc.source_of(n) for n in expected} == expected
    with pytest.raises(DataError) as err:
        cinc.source_of("X001")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError) as err:
        cinc.check_sources(["georgia", "ptbxl"])
    assert "dataset.sources" in str(err.value) and "ptb_xl" in str(err.value)


def test_source_selection(shared_data, tmp_path):
    folder = shared_data / "cinc2021"
    names = cinc.class_names(cinc.scored_classes(folder / "weights.csv"))
    georgia = cinc.select_records(folder, ["georgia"], names)
    assert georgia.names == [f"E075{i:02d}" for i in range(20)]
    ptb_xl = cinc.select_records(folder, ["ptb_xl"], names, no_scored_label="drop")
    assert all(n.startswith("HR") for n in ptb_xl.names) and ptb_xl.y.any(axis=1).all()
    # GENERATED: JS records on both sides of the Chapman-Shaoxing / Ningbo boundary, nested folders
    root = tmp_path / "training"
    for name in ("JS10645", "JS10646", "JS10647", "JS20000"):
        write_challenge_record(root / "chapman_ningbo" / "g1", name, 500, 5000, ["426783006"])
    assert cinc.select_records(root, ["ningbo"], names).names == ["JS10647", "JS20000"]
    assert cinc.select_records(root, ["chapman_shaoxing"], names).names == ["JS10645", "JS10646"]


def test_patient_free_seeded_split():
    rng = np.random.default_rng(1)
    groups = [f"p{int(g)}" for g in rng.integers(0, 300, 1000)]
    a = cinc.group_split(groups, [0.7, 0.1, 0.2], seed=3)
    b = cinc.group_split(groups, [0.7, 0.1, 0.2], seed=3)
    c = cinc.group_split(groups, [0.7, 0.1, 0.2], seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["train"], c["train"])
    parts = [set(np.asarray(groups)[a[k]]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sorted(np.concatenate(list(a.values()))) == list(range(1000))
    sizes = [len(a[k]) / 1000 for k in ("train", "val", "test")]
    assert sizes == pytest.approx([0.7, 0.1, 0.2], abs=0.03)
    # one record per group: exactly round(0.7 N) / round(0.1 N) / the rest
    single = cinc.group_split([str(i) for i in range(50)], [0.7, 0.1, 0.2], seed=0)
    assert [len(single[k]) for k in ("train", "val", "test")] == [35, 5, 10]


# ---------------------------------------------------------------------------------------------- prepare / load
def test_prepare_and_load_real_records(shared_data, tmp_path):
    folder = shared_data / "cinc2021"
    names = cinc.class_names(cinc.scored_classes(folder / "weights.csv"))
    with pytest.raises(DataError) as err:
        cinc.load(folder, tmp_path, classes=names)
    assert f"python scripts/prepare_data.py dataset=cinc2021 dataset.root={folder}" in str(err.value)
    cinc.prepare(folder, tmp_path, classes=names, fs=250, seconds=8, prepare_workers=0)
    data = cinc.load(folder, tmp_path, classes=names, fs=250, seconds=8)
    assert data.x.shape == (30, 12, 2000) and data.class_names == names
    x, fs, _ = cinc.read_record(folder / "HR06003")
    row = int(np.flatnonzero(np.array(sorted(p.stem for p in folder.glob("*.hea"))) == "HR06003")[0])
    np.testing.assert_allclose(data.x[np.array([row])][0], cinc.resample_crop(x, fs, 250, 8), atol=1e-6)
    assert [len(data.splits[k]) for k in ("train", "val", "test")] == [21, 3, 6]
    assert data.info["sources"] == {s: (20 if s == "georgia" else 10 if s == "ptb_xl" else 0) for s in cinc.SOURCES}


def test_patients_csv_groups_records(shared_data, tmp_path):
    folder = shared_data / "cinc2021"
    names = cinc.class_names(cinc.scored_classes(folder / "weights.csv"))
    cinc.prepare(folder, tmp_path / "c", classes=names, fs=100, seconds=2, prepare_workers=0)
    patients = tmp_path / "patients.csv"
    records = sorted(p.stem for p in folder.glob("*.hea"))
    patients.write_text("record,patient\n" + "".join(f"{r},{i // 5}\n" for i, r in enumerate(records)))
    data = cinc.load(folder, tmp_path / "c", classes=names, fs=100, seconds=2, patients_csv=str(patients))
    side = {}
    for k, idx in data.splits.items():
        for i in idx:
            side.setdefault(i // 5, set()).add(k)
    assert all(len(s) == 1 for s in side.values()) and data.info["patients_known"] == 30


def test_bad_records_one_line_and_skip(shared_data, tmp_path):
    folder = shared_data / "cinc2021"
    names = cinc.class_names(cinc.scored_classes(folder / "weights.csv"))
    root = tmp_path / "training" / "georgia"
    for i in range(6):  # GENERATED
        write_challenge_record(root, f"E0000{i}", 500, 5000, ["426783006"], seed=i)
    hea = root / "E00002.hea"
    hea.write_text(hea.read_text().replace("E00002 12 500 5000", "E00002 12 500 4000"))  # header disagrees
    scipy.io.savemat(root / "E00004.mat", {"val": np.zeros((11, 5000), np.int16)}, format="4")  # 11 leads
    with pytest.raises(DataError) as err:
        cinc.read_record(root / "E00002")
    assert "\n" not in str(err.value) and "shape (12, 5000)" in str(err.value) and "12 leads x 4000" in str(err.value)
    with pytest.raises(DataError):
        cinc.prepare(tmp_path / "training", tmp_path / "c", classes=names, prepare_workers=0)
    path = cinc.prepare(tmp_path / "training", tmp_path / "c", classes=names, prepare_workers=0, on_bad_record="skip")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert [Path(s["record"]).name for s in manifest["skipped"]] == ["E00002", "E00004"]
    assert manifest["rows"] == 4
