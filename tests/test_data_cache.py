"""The shared HDF5 cache builder (parallel, resumable, never a half-written cache that looks complete) and the
contract every cached dataset follows (CachedSource), on a toy dataset written as a reader plus a small class."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest

from flowmixup.data.base import DataError, LabeledArrays, LazyH5Array, random_split_indices
from flowmixup.data.cache import (
    CacheContents,
    CachedSource,
    Fingerprint,
    build_cache,
    cache_is_valid,
    cache_problem,
    fingerprint,
    manifest_path,
    open_cache,
    partial_path,
    prepare,
    read_manifest,
    read_row_data,
)

CONFIG = {"dataset": "toy", "resolution": 3}
CALLS: list[int] = []  # items read by _recording_reader (in-process builds only)


def _reader(item):
    """Row i is a (2, 3) block of i; items given as strings 'bad...' are bad records."""
    if isinstance(item, str):
        raise DataError(f"{item}: unreadable toy record")
    return np.full((2, 3), item, dtype=np.float32)


def _recording_reader(item):
    CALLS.append(item)
    return _reader(item)


def _interrupted_reader(item):
    if item == 9:
        raise KeyboardInterrupt  # what Ctrl-C does in the middle of a build
    return _reader(item)


def _build(path, items, reader=_reader, **kw):
    kw.setdefault("prepare_workers", 0)
    return build_cache(
        path,
        items=items,
        reader=reader,
        row_shape=(2, 3),
        dtype=np.float32,
        row_data={"y": np.arange(len(items)) % 2, "name": np.array([f"r{i}" for i in range(len(items))])},
        config=CONFIG,
        **kw,
    )


def _x(path):
    with h5py.File(path, "r") as fh:
        return fh["x"][...], fh["y"][...], [n.decode() for n in fh["name"][...]]


def test_build_writes_rows_row_data_and_manifest(tmp_path):
    path = _build(tmp_path / "toy_3.h5", list(range(10)))
    x, y, names = _x(path)
    assert x.shape == (10, 2, 3) and np.array_equal(x[:, 0, 0], np.arange(10))
    assert np.array_equal(y, np.arange(10) % 2) and names[3] == "r3"
    manifest = read_manifest(path)
    assert manifest["rows"] == 10 and manifest["config"] == CONFIG and manifest["complete"] is True
    assert manifest["skipped"] == [] and manifest["dtype"] == "float32"
    assert cache_is_valid(path, CONFIG)
    assert not partial_path(path).exists()
    with h5py.File(path, "r") as fh:  # no build bookkeeping left in a finished cache
        assert "status" not in fh and "errors" not in fh


def test_parallel_build_equals_in_process_build(tmp_path):
    a = _build(tmp_path / "a.h5", list(range(50)), prepare_workers=0)
    b = _build(tmp_path / "b.h5", list(range(50)), prepare_workers=2, chunk_rows=4)
    for u, v in zip(_x(a), _x(b)):
        assert np.array_equal(np.asarray(u), np.asarray(v))


def test_complete_cache_is_reused_not_rebuilt(tmp_path):
    path = _build(tmp_path / "toy.h5", list(range(6)))
    CALLS.clear()
    _build(path, list(range(6)), reader=_recording_reader)
    assert CALLS == []


def test_interrupted_build_resumes_and_equals_a_fresh_build(tmp_path):
    path = tmp_path / "toy_3.h5"
    items = list(range(20))
    with pytest.raises(KeyboardInterrupt):
        _build(path, items, reader=_interrupted_reader, chunk_rows=4)
    # the interrupted build left a partial file, and nothing that looks complete
    assert partial_path(path).is_file()
    assert not path.exists() and not manifest_path(path).exists()
    assert not cache_is_valid(path, CONFIG)
    with h5py.File(partial_path(path), "r") as fh:
        status = fh["status"][...]
    assert status[:8].tolist() == [1] * 8 and status[8:].tolist() == [0] * 12  # chunks 0-3, 4-7 done

    CALLS.clear()
    _build(path, items, reader=_recording_reader, chunk_rows=4)
    assert CALLS == list(range(8, 20))  # only the rows not done yet were decoded
    fresh = _build(tmp_path / "fresh.h5", items)
    for u, v in zip(_x(path), _x(fresh)):
        assert np.array_equal(np.asarray(u), np.asarray(v))
    assert cache_is_valid(path, CONFIG) and not partial_path(path).exists()


def test_partial_build_for_another_config_is_started_again(tmp_path):
    path = tmp_path / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        _build(path, list(range(20)), reader=_interrupted_reader, chunk_rows=4)
    CALLS.clear()
    build_cache(
        path,
        items=list(range(20)),
        reader=_recording_reader,
        row_shape=(2, 3),
        dtype=np.float32,
        row_data={"y": np.zeros(20)},
        config={"dataset": "toy", "resolution": 4},
        prepare_workers=0,
    )
    assert CALLS == list(range(20))


def test_missing_or_mismatched_manifest_is_never_complete(tmp_path):
    path = _build(tmp_path / "toy.h5", list(range(5)))
    good = manifest_path(path).read_text()

    manifest_path(path).unlink()  # a crash between the rename and the manifest
    assert not cache_is_valid(path, CONFIG)
    assert "manifest" in cache_problem(path, CONFIG)
    with pytest.raises(DataError, match="Build it with: make toy"):
        open_cache(path, CONFIG, build_hint="make toy")

    manifest_path(path).write_text(good.replace('"resolution": 3', '"resolution": 5'))
    assert not cache_is_valid(path, CONFIG)
    assert "another config" in cache_problem(path, CONFIG)

    m = json.loads(good)
    m["rows"] = 4
    manifest_path(path).write_text(json.dumps(m))
    assert not cache_is_valid(path, CONFIG)

    m = json.loads(good)
    m["complete"] = False
    manifest_path(path).write_text(json.dumps(m))
    assert not cache_is_valid(path, CONFIG)

    manifest_path(path).write_text("{not json")
    assert not cache_is_valid(path, CONFIG)

    # and a build call repairs it (rebuilds, since nothing proves the file complete)
    CALLS.clear()
    _build(path, list(range(5)), reader=_recording_reader)
    assert CALLS == list(range(5)) and cache_is_valid(path, CONFIG)


def test_a_partial_file_renamed_by_hand_is_not_complete(tmp_path):
    path = tmp_path / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        _build(path, list(range(20)), reader=_interrupted_reader, chunk_rows=4)
    partial_path(path).rename(path)
    assert not cache_is_valid(path, CONFIG)


def test_bad_record_error_mode_names_it_and_keeps_progress(tmp_path):
    path = tmp_path / "toy.h5"
    items = [0, 1, 2, 3, "bad/rec7.txt", 5]
    with pytest.raises(DataError, match="bad/rec7.txt"):
        _build(path, items, chunk_rows=2)
    assert not path.exists() and not manifest_path(path).exists()
    with h5py.File(partial_path(path), "r") as fh:
        assert fh["status"][:4].tolist() == [1, 1, 1, 1]


def test_bad_record_skip_mode_logs_each_and_the_total(tmp_path, caplog):
    path = tmp_path / "toy.h5"
    items = [0, "bad/a.txt", 2, 3, "bad/b.txt", 5, 6]
    with caplog.at_level(logging.WARNING, logger="flowmixup.data.cache"):
        _build(path, items, on_bad_record="skip", chunk_rows=3)
    text = caplog.text
    assert "bad/a.txt" in text and "bad/b.txt" in text and "skipped 2 of 7 records" in text
    x, y, names = _x(path)
    assert x[:, 0, 0].tolist() == [0, 2, 3, 5, 6]
    assert names == ["r0", "r2", "r3", "r5", "r6"] and y.tolist() == [0, 0, 1, 1, 0]
    manifest = read_manifest(path)
    assert manifest["rows"] == 5 and manifest["rows_requested"] == 7
    assert [s["record"] for s in manifest["skipped"]] == ["bad/a.txt", "bad/b.txt"]
    assert cache_is_valid(path, CONFIG)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="on_bad_record"):
        _build(tmp_path / "toy.h5", [1], on_bad_record="ignore")
    with pytest.raises(DataError, match=r"\.h5"):
        _build(tmp_path / "toy.hdf", [1])


# ------------------------------------------------------------------------------- cache identity: the content
def _raw_tree(root, labels="a\t1\nb\t0\n", sizes=(3, 5)):
    """A toy raw dataset: a label table, a split list and two record files under ``root``."""
    (root / "rec").mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text(labels)
    (root / "split.txt").write_text("a\nb\n")
    for name, size in zip(("a.bin", "b.bin"), sizes):
        (root / "rec" / name).write_bytes(b"x" * size)
    return root


def _fp(root, records=None, settings=CONFIG):
    recs = records if records is not None else [root / "rec" / "a.bin", root / "rec" / "b.bin"]
    return fingerprint(root, ["labels.txt", "split.txt"], recs, settings)


def test_fingerprint_ignores_where_the_data_is_and_sees_what_it_is(tmp_path):
    a = _raw_tree(tmp_path / "a")
    base = _fp(a)
    assert len(base.sha256) == 64 and base.records == 2 and sorted(base.files) == ["labels.txt", "split.txt"]
    # the same data elsewhere: a copy, a symlinked root, records given relative to the root or in another order
    b = tmp_path / "mnt" / "other" / "b"
    shutil.copytree(a, b)
    (tmp_path / "link").symlink_to(a)
    assert _fp(b) == base
    assert _fp(tmp_path / "link") == base
    assert _fp(a, records=["rec/b.bin", "rec/a.bin"]) == base
    assert str(a) not in json.dumps(base.files)
    # other data: a label byte, a record's size, a record more or missing, a record moved, another setting
    (b / "labels.txt").write_text("a\t1\nb\t1\n")
    changed = _fp(b)
    assert changed.sha256 != base.sha256
    assert [k for k in base.files if base.files[k] != changed.files[k]] == ["labels.txt"]
    c = _raw_tree(tmp_path / "c", sizes=(3, 6))
    assert _fp(c).sha256 != base.sha256
    (c / "rec" / "b.bin").write_bytes(b"x" * 5)
    assert _fp(c) == base
    (c / "rec" / "c.bin").write_bytes(b"x")
    assert _fp(c, records=[c / "rec" / "a.bin", c / "rec" / "b.bin", c / "rec" / "c.bin"]).records == 3
    assert _fp(c, records=[c / "rec" / "a.bin", c / "rec" / "b.bin", c / "rec" / "c.bin"]).sha256 != base.sha256
    assert _fp(c, records=[c / "rec" / "a.bin", c / "rec" / "b.bin", c / "rec" / "gone.bin"]).sha256 != base.sha256
    assert _fp(c, records=[c / "rec" / "a.bin", c / "b.bin"]).sha256 != base.sha256
    assert _fp(a, settings={**CONFIG, "resolution": 4}).sha256 != base.sha256
    (c / "split.txt").unlink()
    with pytest.raises(DataError, match=r"split.txt: unreadable .*identify"):
        _fp(c)


FP_A = Fingerprint("a" * 64, 6, {"labels.txt": "1" * 64})
FP_B = Fingerprint("b" * 64, 5, {"labels.txt": "2" * 64})


def test_cache_of_other_data_is_rebuilt_with_one_log_line(tmp_path, caplog):
    path = _build(tmp_path / "toy.h5", list(range(6)), fingerprint=FP_A)
    manifest = read_manifest(path)
    assert manifest["format"] == 2 and manifest["fingerprint"] == FP_A.sha256
    assert manifest["fingerprint_of"]["records"] == 6 and manifest["fingerprint_of"]["files"] == FP_A.files
    assert cache_is_valid(path, CONFIG, FP_A) and not cache_is_valid(path, CONFIG, FP_B)
    assert cache_is_valid(path, CONFIG)  # no data at hand: a complete cache is taken as it is
    CALLS.clear()
    _build(path, list(range(6)), reader=_recording_reader, fingerprint=FP_A)
    assert CALLS == []  # the same data: reused
    with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
        _build(path, list(range(5)), reader=_recording_reader, fingerprint=FP_B)
    assert CALLS == list(range(5))
    lines = [r.getMessage() for r in caplog.records if "other data" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert str(path) in lines[0] and "rebuilding" in lines[0]
    assert "aaaaaaaaaaaa, 6 records" in lines[0] and "bbbbbbbbbbbb, 5 records" in lines[0]
    assert "differs in labels.txt" in lines[0]
    assert read_manifest(path)["fingerprint"] == FP_B.sha256 and read_manifest(path)["rows"] == 5


def test_open_cache_of_other_data_is_a_one_line_error_with_the_command(tmp_path):
    path = _build(tmp_path / "toy.h5", list(range(6)), fingerprint=FP_A)
    assert open_cache(path, CONFIG, build_hint="make toy", fingerprint=FP_A)["rows"] == 6
    assert open_cache(path, CONFIG, build_hint="make toy")["rows"] == 6
    with pytest.raises(DataError) as err:
        open_cache(path, CONFIG, build_hint="make toy", fingerprint=FP_B)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "built from other data" in msg and msg.endswith("make toy")


def test_partial_build_of_other_data_is_not_resumed(tmp_path, caplog):
    path = tmp_path / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        _build(path, list(range(20)), reader=_interrupted_reader, chunk_rows=4, fingerprint=FP_A)
    CALLS.clear()
    with caplog.at_level(logging.WARNING, logger="flowmixup.data.cache"):
        _build(path, list(range(20)), reader=_recording_reader, chunk_rows=4, fingerprint=FP_B)
    assert CALLS == list(range(20))  # same config and rows, other data: nothing kept
    assert "was started from other data" in caplog.text
    assert cache_is_valid(path, CONFIG, FP_B)


def test_old_manifest_format_is_refused_and_rebuilt(tmp_path, caplog):
    path = _build(tmp_path / "toy.h5", list(range(5)), fingerprint=FP_A)
    m = read_manifest(path)
    m["format"] = 1
    del m["fingerprint"], m["fingerprint_of"]
    manifest_path(path).write_text(json.dumps(m))
    assert "format 1" in cache_problem(path, CONFIG)
    assert not cache_is_valid(path, CONFIG)  # not even without data at hand: format 1 never said what it holds
    with pytest.raises(DataError, match=r"manifest format 1.*Build it with: make toy$") as err:
        open_cache(path, CONFIG, build_hint="make toy")
    assert "\n" not in str(err.value)
    CALLS.clear()
    with caplog.at_level(logging.INFO, logger="flowmixup.data.cache"):
        _build(path, list(range(5)), reader=_recording_reader, fingerprint=FP_A)
    assert CALLS == list(range(5)) and cache_is_valid(path, CONFIG, FP_A)
    assert "format 1" in caplog.text


# ------------------------------------------------------------------------- the contract: a dataset in one class
def read_toy_record(path: str) -> np.ndarray:
    """The toy dataset's reader: a record is a text file of three numbers."""
    try:
        return np.array([float(v) for v in open(path).read().split()], dtype=np.float32).reshape(3)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable toy record ({err})") from None


@dataclass
class ToySource(CachedSource):
    """A whole cached dataset: ``labels.txt`` (``<record> <0|1>`` lines) and ``rec/<record>.txt`` under root."""

    NAME: ClassVar[str] = "toy"

    scale: int = 1
    split_seed: int = 0

    def cache_path(self) -> Path:
        return Path(self.cache_dir) / f"toy_{self.scale}.h5"

    def cache_config(self) -> dict:
        return {"dataset": "toy", "scale": int(self.scale)}

    def _rows(self) -> list[list[str]]:
        try:
            return [line.split() for line in (Path(self.root) / "labels.txt").read_text().splitlines()]
        except OSError as err:
            raise DataError(f"{self.root}/labels.txt: unreadable ({err.strerror})") from None

    def fingerprint(self) -> Fingerprint:
        records = [f"rec/{name}.txt" for name, _ in self._rows()]
        return fingerprint(self.root, ["labels.txt"], records, self.cache_config())

    def prepare_overrides(self) -> list[str]:
        return [] if self.scale == 1 else [f"dataset.scale={self.scale}"]

    def contents(self) -> CacheContents:
        rows = self._rows()
        return CacheContents(
            items=[str(Path(self.root) / "rec" / f"{name}.txt") for name, _ in rows],
            reader=read_toy_record,
            row_shape=(3,),
            dtype=np.float32,
            row_data={"y": np.array([[int(y)] for _, y in rows])},
            config=self.cache_config(),
            fingerprint=self.fingerprint(),
            item_names=[name for name, _ in rows],
        )

    def arrays(self, path: Path, manifest: dict) -> LabeledArrays:
        y = read_row_data(path, ["y"])["y"].astype(np.float32)
        return LabeledArrays(
            x=LazyH5Array(path, "x"),
            y=y,
            class_names=["positive"],
            splits=random_split_indices(len(y), (0.6, 0.2, 0.2), self.split_seed),
            info={"skipped": len(manifest["skipped"])},
        )


def _toy_root(root: Path, n: int = 10) -> Path:
    (root / "rec").mkdir(parents=True)
    (root / "labels.txt").write_text("".join(f"r{i} {i % 2}\n" for i in range(n)))
    for i in range(n):
        (root / "rec" / f"r{i}.txt").write_text(f"{i} {i} {i}\n")
    return root


def test_a_dataset_is_a_reader_plus_a_small_class(tmp_path):
    root, cache = _toy_root(tmp_path / "raw"), tmp_path / "cache"
    with pytest.raises(DataError) as err:
        ToySource.load(root, cache, scale=2)
    assert str(err.value).endswith(
        f"Build it with: python scripts/prepare_data.py dataset=toy dataset.root={root} dataset.scale=2"
    )
    path = ToySource.prepare(root, cache, scale=2, prepare_workers=0)
    data = ToySource.load(root, cache, scale=2)
    assert path == cache / "toy_2.h5" and data.x[np.arange(10)][:, 0].tolist() == list(range(10))
    assert data.y[:, 0].tolist() == [i % 2 for i in range(10)] and data.info["skipped"] == 0
    for no_root in (None, "", "???"):  # dataset.root=null: the cache as it is
        assert ToySource.load(no_root, cache, scale=2).x.shape == (10, 3)
    with pytest.raises(DataError, match=r"^dataset.root=/nowhere is not a folder, .*dataset.root=null to train"):
        ToySource.load("/nowhere", cache, scale=2)
    (root / "labels.txt").rename(root / "aside.txt")  # a root whose data cannot be identified
    with pytest.raises(DataError, match=r"labels.txt: unreadable .*cannot be checked against this root"):
        ToySource.load(root, cache, scale=2)
    (root / "aside.txt").rename(root / "labels.txt")


def test_the_contract_refuses_other_data_and_rebuilds_it_when_asked(tmp_path):
    root, cache = _toy_root(tmp_path / "raw"), tmp_path / "cache"
    ToySource.prepare(root, cache, prepare_workers=0)
    (root / "labels.txt").write_text("".join(f"r{i} 1\n" for i in range(10)))  # an edited label file
    with pytest.raises(DataError) as err:
        ToySource.load(root, cache)
    msg = str(err.value)
    assert "\n" not in msg and "built from other data" in msg and "differs in labels.txt" in msg
    assert msg.endswith(
        f"Rebuild it for this data with: python scripts/prepare_data.py dataset=toy dataset.root={root}"
    )
    data = ToySource.load(root, cache, prepare_if_missing=True, prepare_workers=0)
    assert data.y[:, 0].tolist() == [1] * 10
    with pytest.raises(DataError, match=r"^no complete cache at .*toy_3.h5 and no dataset.root to build it from$"):
        ToySource.load(None, cache, scale=3, prepare_if_missing=True)


def test_the_contract_keeps_on_bad_record_and_a_prepare_node(tmp_path):
    root, cache = _toy_root(tmp_path / "raw"), tmp_path / "cache"
    (root / "rec" / "r4.txt").write_text("not a number\n")
    with pytest.raises(DataError, match="r4.txt: unreadable toy record"):
        ToySource.prepare(root, cache, prepare_workers=0)
    node = {
        "_target_": f"{__name__}.ToySource.load",
        "root": str(root),
        "cache_dir": str(cache),
        "on_bad_record": "skip",
        "prepare_workers": 0,
    }
    path = prepare(node)  # what dataset.prepare does with the dataset.loader node
    assert read_manifest(path)["rows"] == 9 and [s["record"] for s in read_manifest(path)["skipped"]] == ["r4"]
    with pytest.raises(DataError, match=r"was built with on_bad_record=skip and leaves out 1 records"):
        ToySource.load(root, cache)
    assert ToySource.load(root, cache, on_bad_record="skip").info["skipped"] == 1
    with pytest.raises(DataError, match=r"^dataset.on_bad_record: 'ignore' is unknown; allowed: error, skip$"):
        ToySource.load(root, cache, on_bad_record="ignore")
    with pytest.raises(DataError, match=r"^dataset.loader._target_: flowmixup.data.synth_ecg.load does not read"):
        prepare({"_target_": "flowmixup.data.synth_ecg.load", "n_records": 10})
