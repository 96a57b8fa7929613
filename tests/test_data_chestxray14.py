"""ChestX-ray14: the label table and split against the published counts, image decoding, the cache round trip."""

from __future__ import annotations

import gzip
import json
import logging
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from flowmixup.data import chestxray14 as cx
from flowmixup.data.base import DataError, LazyH5Array
from flowmixup.data.cache import read_manifest

PUBLISHED = {
    "Infiltration": 19894,
    "Effusion": 13317,
    "Atelectasis": 11559,
    "Nodule": 6331,
    "Mass": 5782,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Pleural_Thickening": 3385,
    "Cardiomegaly": 2776,
    "Emphysema": 2516,
    "Edema": 2303,
    "Fibrosis": 1686,
    "Pneumonia": 1431,
    "Hernia": 227,
}
CSV_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


@pytest.fixture(scope="module")
def full_table(shared_data):
    return cx.read_metadata(shared_data / "chestxray14")


def test_class_order_is_the_papers():
    assert cx.CLASSES == [
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


def test_full_table_matches_published_counts(full_table):
    df = full_table
    assert len(df) == 112_120 and df["Patient ID"].nunique() == 30_805
    assert {c: int(df[c].sum()) for c in cx.CLASSES} == PUBLISHED
    assert int((df[cx.CLASSES].sum(axis=1) == 0).sum()) == 60_361  # No Finding
    assert df["split"].value_counts().to_dict() == {"train_val": 86_524, "test": 25_596}
    assert set(np.unique(df[cx.CLASSES].to_numpy())) == {0, 1}
    # the official split is patient-wise
    tv = set(df.loc[df.split == "train_val", "Patient ID"])
    te = set(df.loc[df.split == "test", "Patient ID"])
    assert not tv & te


def test_val_split_is_patient_disjoint_and_seeded(full_table):
    tv = full_table[full_table.split == "train_val"]
    patients = tv["Patient ID"].to_numpy()
    val = cx.patient_val_split(patients, 0.1, seed=0)
    assert not set(patients[val]) & set(patients[~val])
    assert abs(len(np.unique(patients[val])) - 0.1 * len(np.unique(patients))) <= 1
    assert 0.07 < val.mean() < 0.13
    assert np.array_equal(val, cx.patient_val_split(patients, 0.1, seed=0))
    assert not np.array_equal(val, cx.patient_val_split(patients, 0.1, seed=1))
    assert not cx.patient_val_split(patients, 0.0, seed=0).any()


# --------------------------------------------------------------------------- small tables written by the tests
def _write_root(root, rows, train_val, test, table="Data_Entry_2017_v2020.csv"):
    root.mkdir(parents=True, exist_ok=True)
    text = CSV_HEADER + "".join(f"{name},{labels},0,{pid},50,M,PA\n" for name, labels, pid in rows)
    if table.endswith(".gz"):
        with gzip.open(root / table, "wt") as fh:
            fh.write(text)
    else:
        (root / table).write_text(text)
    (root / "train_val_list.txt").write_text("".join(n + "\n" for n in train_val))
    (root / "test_list.txt").write_text("".join(n + "\n" for n in test))
    return root


ROWS = [("a.png", "No Finding", 1), ("b.png", "Mass|Hernia", 1), ("c.png", "Effusion", 2), ("d.png", "Edema", 3)]


@pytest.mark.parametrize("table", ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017.csv.gz"])
def test_read_metadata_small_table(tmp_path, table):
    root = _write_root(tmp_path, ROWS, ["a.png", "b.png", "c.png"], ["d.png", "zzz.png"], table=table)
    df = cx.read_metadata(root)
    assert df["Image Index"].tolist() == ["a.png", "b.png", "c.png", "d.png"]
    assert df["split"].tolist() == ["train_val", "train_val", "train_val", "test"]
    assert df.loc[1, cx.CLASSES].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert df.loc[0, cx.CLASSES].sum() == 0 and df["Patient ID"].tolist() == [1, 1, 2, 3]


@pytest.mark.parametrize(
    "rows, train_val, test, match",
    [
        (ROWS, ["a.png", "b.png", "c.png"], [], r"Data_Entry_2017_v2020.csv, line 5: image d.png is in neither"),
        (
            ROWS[:2] + [("c.png", "Effusion|Tumour", 2)],
            ["a.png", "b.png", "c.png"],
            [],
            r"Data_Entry_2017_v2020.csv, line 4: label\(s\) \['Tumour'\]",
        ),
        (ROWS[:1] + [("b.png", "", 1)], ["a.png", "b.png"], [], r"Data_Entry_2017_v2020.csv, line 3: empty 'Finding"),
        (ROWS, ["a.png", "b.png", "c.png", "d.png"], ["d.png"], r"test_list.txt, line 1: d.png is also in"),
        (ROWS + [("a.png", "Mass", 1)], ["a.png", "b.png", "c.png", "d.png"], [], r"line 6: image a.png appears twice"),
    ],
)
def test_read_metadata_bad_tables_name_file_and_line(tmp_path, rows, train_val, test, match):
    root = _write_root(tmp_path, rows, train_val, test)
    with pytest.raises(DataError, match=match):
        cx.read_metadata(root)


def test_read_metadata_missing_files(tmp_path):
    with pytest.raises(DataError, match="no label table found"):
        cx.read_metadata(tmp_path)
    root = _write_root(tmp_path, ROWS, ["a.png"], ["b.png"])
    (root / "test_list.txt").unlink()
    with pytest.raises(DataError, match="test_list.txt: split list not found"):
        cx.read_metadata(root)


# ------------------------------------------------------------------------------------------------- images
def test_load_image_rgba_rgb_16bit_to_gray(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (20, 20), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    expected = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))  # ITU-R 601 luma of the colour channels
    assert np.array_equal(cx.load_image(tmp_path / "rgba.png", 20), expected)
    assert np.array_equal(cx.load_image(tmp_path / "rgb.png", 20), expected)
    g16 = (rng.integers(0, 256, (20, 20)) * 257).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = cx.load_image(tmp_path / "g16.png", 20)
    assert out.dtype == np.uint8 and np.array_equal(out, (g16 // 257).astype(np.uint8))


def test_load_image_resizes(tmp_path):
    img = np.zeros((40, 40), np.uint8)
    img[:, 20:] = 200
    Image.fromarray(img).save(tmp_path / "g.png")
    out = cx.load_image(tmp_path / "g.png", 10)
    assert out.shape == (10, 10) and out.dtype == np.uint8
    assert out[:, :4].max() == 0 and out[:, 6:].min() == 200


def test_load_image_bad_files_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    for name in ("trunc.png", "junk.png", "absent.png"):
        with pytest.raises(DataError, match=name):
            cx.load_image(tmp_path / name, 32)


def test_real_full_size_images(shared_data):
    folder = shared_data / "chestxray14" / "images"
    found = cx.find_images(shared_data / "chestxray14")
    assert sorted(found) == sorted(p.name for p in folder.glob("*.png")) and len(found) == 4
    for path in found.values():
        out = cx.load_image(path, 256)
        assert out.shape == (256, 256) and out.dtype == np.uint8 and out.std() > 10


def test_find_images_accepts_both_layouts(tmp_path):
    for sub, name in [("images", "a.png"), ("images_001/images", "b.png"), ("images_012/images", "c.png")]:
        (tmp_path / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / sub / name)
    found = cx.find_images(tmp_path)
    assert {k: v.relative_to(tmp_path).as_posix() for k, v in found.items()} == {
        "a.png": "images/a.png",
        "b.png": "images_001/images/b.png",
        "c.png": "images_012/images/c.png",
    }
    shutil.copy(tmp_path / "images/a.png", tmp_path / "images_012/images/a.png")
    with pytest.raises(DataError, match="a.png"):
        cx.find_images(tmp_path)


# ---------------------------------------------------------------------------------------- cache round trip
def test_nih1000_prepare_and_load_equal_decoded_pngs(shared_data, tmp_path):
    root = shared_data / "nih1000"
    path = cx.prepare(root, tmp_path, resolution=64, prepare_workers=2)
    assert path.name == "chestxray14_64.h5"
    data = cx.load(root, tmp_path, resolution=64, val_fraction=0.1, split_seed=0)
    assert isinstance(data.x, LazyH5Array) and data.x.shape == (1000, 1, 64, 64) and data.x.dtype == np.uint8
    meta = cx.read_metadata(root)
    with h5py.File(path, "r") as fh:
        names = [n.decode() for n in fh["name"][...]]
        x = fh["x"][...]
    assert names == meta["Image Index"].tolist()
    # independent decoding: PIL straight to luminance; 996 files are 64x64 already, 4 are 128x128 (resized)
    resized = 0
    for i, name in enumerate(names):
        with Image.open(root / "images" / name) as img:
            ref = img.convert("L")
        if ref.size != (64, 64):
            ref = ref.resize((64, 64), Image.BILINEAR)
            resized += 1
        assert np.array_equal(x[i, 0], np.asarray(ref)), name
    assert resized == 4
    assert np.array_equal(data.y, meta[cx.CLASSES].to_numpy(np.float32))
    assert data.class_names == cx.CLASSES
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes["train"] + sizes["val"] == 690 and sizes["test"] == 310 and sizes["val"] > 0
    patients = meta["Patient ID"].to_numpy()
    assert not set(patients[data.splits["val"]]) & set(patients[data.splits["train"]])
    assert set(meta.loc[data.splits["test"], "split"]) == {"test"}
    batch = data.x[np.array([3, 10, 500])]
    assert np.array_equal(batch, x[[3, 10, 500]])


def test_load_without_cache_gives_the_command(tmp_path):
    with pytest.raises(DataError, match=r"python scripts/prepare_data.py dataset=chestxray14 dataset.root=/some/root"):
        cx.load("/some/root", tmp_path, resolution=256)


def _tiny_root(tmp_path):
    rng = np.random.default_rng(1)
    root = _write_root(tmp_path / "root", ROWS, ["a.png", "b.png", "c.png"], ["d.png"])
    (root / "images_001" / "images").mkdir(parents=True)
    (root / "images_002" / "images").mkdir(parents=True)
    for i, (name, _, _) in enumerate(ROWS):
        arr = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
        Image.fromarray(arr, "RGBA").save(root / f"images_00{1 + i % 2}" / "images" / name)
    return root


def test_prepare_if_missing_and_missing_image(tmp_path, caplog):
    root = _tiny_root(tmp_path)
    data = cx.load(root, tmp_path / "cache", resolution=16, prepare_if_missing=True, prepare_workers=0)
    assert data.x.shape == (4, 1, 16, 16)
    assert np.array_equal(data.x[np.array([2])][0, 0], cx.load_image(root / "images_001/images/c.png", 16))

    (root / "images_002" / "images" / "b.png").unlink()
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020.csv, line 3: image file b.png not found"):
        cx.prepare(root, tmp_path / "cache2", resolution=16, prepare_workers=0)
    with caplog.at_level(logging.WARNING):
        cx.prepare(root, tmp_path / "cache2", resolution=16, prepare_workers=0, on_bad_record="skip")
    assert "b.png" in caplog.text and "skipped 1 of 4" in caplog.text
    with pytest.raises(DataError, match="on_bad_record=skip"):
        cx.load(root, tmp_path / "cache2", resolution=16)
    data = cx.load(root, tmp_path / "cache2", resolution=16, on_bad_record="skip")
    assert len(data.y) == 3 and data.info["skipped"] == 1
    assert data.y[:, cx.CLASSES.index("Hernia")].sum() == 0


def test_truncated_png_error_and_skip(tmp_path):
    root = _tiny_root(tmp_path)
    p = root / "images_001" / "images" / "c.png"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="c.png"):
        cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0)
    path = cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0, on_bad_record="skip")
    assert [s["record"] for s in read_manifest(path)["skipped"]] == ["c.png"]
    with h5py.File(path, "r") as fh:
        assert [n.decode() for n in fh["name"][...]] == ["a.png", "b.png", "d.png"]


# ------------------------------------------------------------------------- cache identity: content, not path
def _nih_subset(nih, dest, n):
    """A smaller real root: the first ``n`` images of nih1000 (copied), its table and split lists filtered to them."""
    (dest / "images").mkdir(parents=True)
    lines = (nih / "Data_Entry_2017_v2020.csv").read_text().splitlines(keepends=True)
    keep = lines[1 : n + 1]
    names = {line.split(",", 1)[0] for line in keep}
    (dest / "Data_Entry_2017_v2020.csv").write_text(lines[0] + "".join(keep))
    for split in ("train_val_list.txt", "test_list.txt"):
        listed = [x for x in (nih / split).read_text().split() if x in names]
        (dest / split).write_text("".join(x + "\n" for x in listed))
    for name in names:
        shutil.copy(nih / "images" / name, dest / "images" / name)
    return dest


def _cache_stamp(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_moved_data_is_accepted_and_reused(shared_data, tmp_path, caplog):
    nih = shared_data / "nih1000"
    path = cx.prepare(nih, tmp_path / "cache", resolution=16, prepare_workers=0)
    stamp = _cache_stamp(path)
    # the same data at another path: a copy on "another node", and a symlink
    moved = tmp_path / "node2" / "mnt" / "nih"
    shutil.copytree(nih, moved)
    (tmp_path / "link").symlink_to(moved)
    for root in (moved, tmp_path / "link"):
        data = cx.load(root, tmp_path / "cache", resolution=16)
        assert data.x.shape == (1000, 1, 16, 16)
        with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
            assert cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0) == path
        assert "reusing" in caplog.text and "other data" not in caplog.text
        assert _cache_stamp(path) == stamp  # not rebuilt
    manifest = read_manifest(path)
    assert manifest["source"]["root"] == str(nih.resolve())  # kept as information only
    assert manifest["fingerprint"] == cx.source_fingerprint(moved, 16).sha256


def test_other_data_is_never_served(shared_data, tmp_path, caplog):
    nih = shared_data / "nih1000"
    small = _nih_subset(nih, tmp_path / "nih300", 300)
    cache = tmp_path / "cache"
    path = cx.prepare(small, cache, resolution=16, prepare_workers=0)
    assert read_manifest(path)["rows"] == 300
    # training with the other tree: refused, in one line naming the cache and giving the command
    with pytest.raises(DataError) as err:
        cx.load(nih, cache, resolution=16)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "built from other data" in msg
    assert "300 records" in msg and "1000 records" in msg
    assert msg.endswith(f"python scripts/prepare_data.py dataset=chestxray14 dataset.root={nih} dataset.resolution=16")
    # prepare with the other tree: rebuilt, saying so in one line
    with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
        cx.prepare(nih, cache, resolution=16, prepare_workers=0)
    lines = [r.getMessage() for r in caplog.records if "other data" in r.getMessage()]
    assert len(lines) == 1 and "rebuilding" in lines[0] and "300 records" in lines[0] and "1000 records" in lines[0]
    assert read_manifest(path)["rows"] == 1000
    assert cx.load(nih, cache, resolution=16).x.shape[0] == 1000
    with pytest.raises(DataError, match="built from other data"):
        cx.load(small, cache, resolution=16)
    # prepare_if_missing rebuilds for the data given, too
    data = cx.load(small, cache, resolution=16, prepare_if_missing=True, prepare_workers=0)
    assert data.x.shape[0] == 300 and read_manifest(path)["rows"] == 300


def test_a_replaced_image_of_another_size_is_other_data(tmp_path, caplog):
    root = _tiny_root(tmp_path)
    path = cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0)
    img = root / "images_001" / "images" / "c.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)  # a downsampled copy, say: another size
    with pytest.raises(DataError, match="built from other data"):
        cx.load(root, tmp_path / "cache", resolution=16)
    with caplog.at_level(logging.WARNING, logger="flowmixup.data.cache"):
        cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0)
    assert "other data" in caplog.text and "differs in the record files" in caplog.text
    assert np.array_equal(
        cx.load(root, tmp_path / "cache", resolution=16).x[np.array([2])][0, 0], np.zeros((16, 16), np.uint8)
    )
    assert path.is_file()


@pytest.mark.parametrize("no_root", [None, "", "???"])
def test_load_without_root_uses_a_complete_cache(tmp_path, no_root):
    root = _tiny_root(tmp_path)
    with pytest.raises(DataError, match=r"no complete cache .*dataset.root=<root> dataset.resolution=16"):
        cx.load(no_root, tmp_path / "cache", resolution=16)
    cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0)
    shutil.rmtree(root)  # a node with only the cache
    data = cx.load(no_root, tmp_path / "cache", resolution=16)
    assert data.x.shape == (4, 1, 16, 16) and data.info["records"] == 4
    # a root given that is not there cannot be checked: say so, and how to use the cache anyway
    with pytest.raises(DataError) as err:
        cx.load(root, tmp_path / "cache", resolution=16)
    msg = str(err.value)
    assert "\n" not in msg and "dataset.root=null" in msg and "chestxray14_16.h5" in msg
    root.mkdir()  # there, but without the raw data
    with pytest.raises(DataError, match=r"no label table found.*chestxray14_16.h5.*dataset.root=null") as err:
        cx.load(root, tmp_path / "cache", resolution=16)
    assert "\n" not in str(err.value)


def test_old_format_cache_is_refused_by_load_and_rebuilt_by_prepare(tmp_path, caplog):
    root = _tiny_root(tmp_path)
    path = cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0)
    m = read_manifest(path)
    m["format"] = 1
    del m["fingerprint"], m["fingerprint_of"]
    path.with_suffix(".json").write_text(json.dumps(m))
    for r in (root, None):
        with pytest.raises(DataError, match=r"manifest format 1.*Build it with: python scripts/prepare_data.py") as err:
            cx.load(r, tmp_path / "cache", resolution=16)
        assert "\n" not in str(err.value)
    with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
        cx.prepare(root, tmp_path / "cache", resolution=16, prepare_workers=0)
    assert "format 1" in caplog.text and read_manifest(path)["format"] == 2
    assert cx.load(root, tmp_path / "cache", resolution=16).x.shape[0] == 4
