"""The 2019 Tianchi "Hefei" ECG competition data: the paper's ECG-55 and ECG-12 datasets.

Raw formats:

- a record ``<id>.txt``: the header ``I II V1 V2 V3 V4 V5 V6`` then 5,000 rows (500 Hz, 10 s) of 8 integers;
  one unit is 4.88 microvolts (:data:`UNIT_MV` millivolts);
- a label file: one record per line, tab-separated ``file, age, sex, label, label, ...`` (age/sex may be empty,
  lines may end in tabs), UTF-8 Chinese label names.

A dataset is a *selection*: which label files (``sources``, each with the folder holding its records), which classes
(``classes``, in the project's order), and what to do with a label outside them (``other_labels``):

- ``error``: a DataError naming the file and line (ECG-55: every label of the preliminary round is a class);
- ``drop_record``: the record is left out (ECG-12 default: only records described entirely by the 12 classes);
- ``drop_label``: the label is removed, and a record left with no label is left out.

The same record id listed twice (in one source or in two sources sharing a records folder) is a DataError naming
both lines (``duplicates: error``), or only the first listing is kept (``duplicates: first``).
Splits: random 7:1:2 (train/val/test), seeded, over the selected records (the paper: the official test set is not
available).

A cache is identified by its content (:func:`source_fingerprint`): the bytes of the label files, the selected
record paths relative to ``root`` with their sizes, and the selection config. Editing a label file and running
prepare again rebuilds the cache; the same data mounted elsewhere is accepted; ``load(root=None)`` uses a complete
cache as it is (training on a node without the raw data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flowmixup.data.base import DataError, LabeledArrays, LazyH5Array, plain, random_split_indices
from flowmixup.data.cache import CacheContents, CachedSource, Fingerprint, fingerprint, read_row_data

log = logging.getLogger(__name__)

LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LEADS_BYTES = tuple(lead.encode() for lead in LEADS)
N_SAMPLES = 5000
UNIT_MV = 0.00488  # one integer unit = 4.88 microvolts
OTHER_LABELS = ("error", "drop_record", "drop_label")
DUPLICATES = ("error", "first")


# ----------------------------------------------------------------------------------------------- raw readers
def read_record(path: str | os.PathLike) -> np.ndarray:
    """One record as float32 millivolts, shape (8, 5000) in :data:`LEADS` order (integers x 0.00488).

    A missing file or header, a row without exactly 8 values, a non-integer value or a row count other than 5,000
    raises DataError naming the file and line.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise DataError(f"{path}: record unreadable ({err.strerror or err})") from err
    with fh:
        header = fh.readline()
        if tuple(header.split()) != LEADS_BYTES:
            shown = header[:80].decode("utf-8", "replace").strip()
            raise DataError(f"{path}, line 1: header {shown!r}, expected {' '.join(LEADS)!r}")
        try:
            ints = np.loadtxt(fh, dtype=np.int32, ndmin=2, comments=None)
        except ValueError:
            ints = None
    if ints is None or ints.shape[1] != len(LEADS):
        _diagnose(path)  # raises, naming the line
        raise DataError(f"{path}: unreadable samples")  # pragma: no cover - _diagnose always raises first
    if ints.shape[0] != N_SAMPLES:
        raise DataError(
            f"{path}, line {min(ints.shape[0], N_SAMPLES) + 2}: {ints.shape[0]} rows of samples, expected {N_SAMPLES} "
            f"(lines 2 to {N_SAMPLES + 1})"
        )
    return (ints.T * UNIT_MV).astype(np.float32)


def _diagnose(path: Path) -> None:
    """The slow path of :func:`read_record`: find the first bad line and raise a DataError naming it."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1:
                continue
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != len(LEADS):
                raise DataError(f"{path}, line {lineno}: {len(fields)} values, expected {len(LEADS)} (one per lead)")
            for col, tok in enumerate(fields):
                try:
                    int(tok)
                except ValueError:
                    shown = tok[:20].decode("utf-8", "replace")
                    raise DataError(
                        f"{path}, line {lineno}: value {shown!r} for lead {LEADS[col]} is not an integer"
                    ) from None
    raise DataError(f"{path}: samples unreadable")


@dataclass(frozen=True)
class LabelRow:
    """One line of a label file."""

    file: str
    age: str
    sex: str
    labels: tuple[str, ...]
    line: int


def read_label_rows(path: str | os.PathLike) -> list[LabelRow]:
    """Every record line of a label file, with its line number (blank lines are ignored).

    A line without a file name or without any label, a record listed twice or text that is not UTF-8 raises
    DataError naming the file and line.
    """
    path = Path(path)
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except OSError as err:
        raise DataError(f"{path}: label file unreadable ({err.strerror or err})") from err
    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}, line {lineno}: not UTF-8 text ({err.reason})") from None
        if not line.strip():
            continue
        parts = line.split("\t")
        name = parts[0].strip()
        if not name:
            raise DataError(f"{path}, line {lineno}: no record file name in the first column")
        labels = tuple(dict.fromkeys(p.strip() for p in parts[3:] if p.strip()))
        if not labels:
            raise DataError(f"{path}, line {lineno}: record {name} has no label (expected file, age, sex, label...)")
        if name in seen:
            raise DataError(f"{path}, line {lineno}: record {name} already listed on line {seen[name]}")
        seen[name] = lineno
        age = parts[1].strip() if len(parts) > 1 else ""
        sex = parts[2].strip() if len(parts) > 2 else ""
        rows.append(LabelRow(name, age, sex, labels, lineno))
    return rows


def read_labels(path: str | os.PathLike) -> dict[str, list[str]]:
    """Record file name -> its labels (file order), for one label file."""
    return {r.file: list(r.labels) for r in read_label_rows(path)}


# ----------------------------------------------------------------------------------------------- selection
def _check_sources(sources: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    sources = plain(sources)
    if not isinstance(sources, Mapping) or not sources:
        raise DataError(f"sources must map a name to {{label_file, records_dir}}, got {sources!r}")
    out = {}
    for key, src in sources.items():
        if not isinstance(src, Mapping) or "label_file" not in src or "records_dir" not in src:
            raise DataError(f"source '{key}' must give label_file and records_dir, got {src!r}")
        out[str(key)] = {"label_file": str(src["label_file"]), "records_dir": str(src["records_dir"])}
    return out


@dataclass
class Selection:
    """The records a dataset config selects: ``paths[i]`` with multi-hot ``y[i]`` over ``classes``."""

    ids: list[str]  # "<source>/<file>"
    paths: list[Path]
    y: np.ndarray  # (N, C) uint8
    classes: list[str]
    counts: dict[str, Any]


def select_records(
    root: str | os.PathLike,
    sources: Mapping[str, Mapping[str, str]],
    classes: Sequence[str],
    other_labels: str = "error",
    duplicates: str = "error",
) -> Selection:
    """Apply a selection (see the module docstring) to the label files under ``root``; reads no record."""
    root = Path(root)
    sources = _check_sources(sources)
    classes = _check_rules(classes, other_labels, duplicates)
    index = {c: i for i, c in enumerate(classes)}
    ids, paths, ys = [], [], []
    seen: dict[Path, tuple[Path, int]] = {}
    counts: dict[str, Any] = {"sources": {}, "dropped_other_labels": 0, "dropped_duplicates": 0}
    for key, src in sources.items():
        label_file = root / src["label_file"]
        records_dir = root / src["records_dir"]
        rows = read_label_rows(label_file)
        kept = 0
        for row in rows:
            record_path = records_dir / row.file
            if record_path in seen:
                if duplicates == "error":
                    other = seen[record_path]
                    raise DataError(
                        f"{label_file}, line {row.line}: record {record_path} is also listed in {other[0]}, "
                        f"line {other[1]} (set duplicates: first to keep the first listing)"
                    )
                counts["dropped_duplicates"] += 1
                continue
            seen[record_path] = (label_file, row.line)
            inside = _class_indices(row, index, label_file, other_labels)
            if not inside:  # drop_record, or drop_label left nothing
                counts["dropped_other_labels"] += 1
                continue
            y = np.zeros(len(classes), dtype=np.uint8)
            y[inside] = 1
            ids.append(f"{key}/{row.file}")
            paths.append(record_path)
            ys.append(y)
            kept += 1
        counts["sources"][key] = {"listed": len(rows), "selected": kept}
    y = np.stack(ys) if ys else np.zeros((0, len(classes)), dtype=np.uint8)
    counts["records"] = len(ids)
    counts["per_class"] = {c: int(n) for c, n in zip(classes, y.sum(axis=0))}
    return Selection(ids, paths, y, classes, counts)


def _check_rules(classes: Sequence[str], other_labels: str, duplicates: str) -> list[str]:
    """The class names as strings, once the classes and the two selection rules are checked."""
    classes = [str(c) for c in plain(classes)]
    if len(set(classes)) != len(classes) or not classes:
        raise DataError(f"classes must be a non-empty list of distinct names, got {classes}")
    if other_labels not in OTHER_LABELS:
        raise DataError(f"other_labels must be one of {OTHER_LABELS}, got {other_labels!r}")
    if duplicates not in DUPLICATES:
        raise DataError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    return classes


def _class_indices(row: LabelRow, index: Mapping[str, int], label_file: Path, other_labels: str) -> list[int]:
    """The class indices of ``row``'s labels under the ``other_labels`` rule; none when the record is left out."""
    outside = [lab for lab in row.labels if lab not in index]
    if outside:
        if other_labels == "error":
            raise DataError(
                f"{label_file}, line {row.line}: label(s) {outside} of record {row.file} are not in the "
                f"{len(index)} classes of this dataset (other_labels: error)"
            )
        if other_labels == "drop_record":
            return []
    return [index[lab] for lab in row.labels if lab in index]


# ------------------------------------------------------------------------------------------------ the cache
def cache_config(
    name: str, sources: Mapping[str, Mapping[str, str]], classes: Sequence[str], other_labels: str, duplicates: str
) -> dict[str, Any]:
    """The selection a Tianchi cache is built for: the label files (names), classes and rules. It names the cache
    file; the content of the label files and records is identified by :func:`source_fingerprint`."""
    sources = _check_sources(sources)
    return {
        "dataset": str(name),
        "label_files": {k: v["label_file"] for k, v in sources.items()},
        "classes": [str(c) for c in plain(classes)],
        "other_labels": other_labels,
        "duplicates": duplicates,
        "leads": list(LEADS),
        "samples": N_SAMPLES,
        "unit_mv": UNIT_MV,
    }


def cache_file(cache_dir: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<name>_<8 hex digits of the selection config>.h5``."""
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    return Path(cache_dir) / f"{config['dataset']}_{digest}.h5"


def source_fingerprint(
    root: str | os.PathLike, config: Mapping[str, Any], sources: Mapping[str, Mapping[str, str]], sel: Selection
) -> Fingerprint:
    """The content identity of a selection under ``root``: the bytes of its label files, the selected record paths
    (relative to ``root``) with their sizes, and ``config`` (:func:`cache_config`). Reads no record: one ``stat``
    per selected record."""
    files = [src["label_file"] for src in _check_sources(sources).values()]
    return fingerprint(root, files, sel.paths, config)


@dataclass
class Tianchi(CachedSource):
    """A Tianchi selection (ECG-55, ECG-12) from its prepared cache (see :class:`CachedSource`): x is a
    :class:`LazyH5Array` of float32 (N, 8, 5000) millivolts, y multi-hot over ``classes`` (the config's order),
    splits a seeded random 7:1:2.

    The cache ``<cache_dir>/<cache_name>_<hash>.h5`` of ``root`` is identified by :func:`source_fingerprint` (the
    label files are read and the selected records stat'ed); editing a label file makes it other data. A missing or
    malformed record is a bad record: a DataError naming it (``on_bad_record="error"``) or logged and left out
    (``"skip"``)."""

    cache_name: str
    sources: Mapping[str, Mapping[str, str]]
    classes: Sequence[str]
    other_labels: str = "error"
    duplicates: str = "error"
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2)
    split_seed: int = 0

    @property
    def dataset_option(self) -> str:
        return str(self.cache_name)  # ecg55, ecg12: the selection's name

    def cache_config(self) -> dict[str, Any]:
        return cache_config(self.cache_name, self.sources, self.classes, self.other_labels, self.duplicates)

    def cache_path(self) -> Path:
        return cache_file(self.cache_dir, self.cache_config())

    def selection(self) -> Selection:
        return select_records(self.root, self.sources, self.classes, self.other_labels, self.duplicates)

    def fingerprint(self, sel: Selection | None = None) -> Fingerprint:
        sel = self.selection() if sel is None else sel
        return source_fingerprint(self.root, self.cache_config(), self.sources, sel)

    def contents(self) -> CacheContents:
        sel = self.selection()
        if not sel.ids:
            raise DataError(f"the selection of {self.cache_name} under {self.root} has no record")
        return CacheContents(
            items=[str(p) for p in sel.paths],
            item_names=sel.ids,
            reader=read_record,
            row_shape=(len(LEADS), N_SAMPLES),
            dtype=np.float32,
            row_data={"y": sel.y, "name": np.array(sel.ids, dtype=str)},
            config=self.cache_config(),
            fingerprint=self.fingerprint(sel),
            # the absolute root is information only: the fingerprint identifies the data
            source={
                "root": str(Path(self.root).resolve()),
                "sources": _check_sources(self.sources),
                "selection": sel.counts,
            },
        )

    def arrays(self, path: Path, manifest: dict) -> LabeledArrays:
        y = read_row_data(path, ["y"])["y"].astype(np.float32)
        fractions = [float(f) for f in plain(self.split_fractions)]
        splits = random_split_indices(len(y), fractions, int(self.split_seed))
        return LabeledArrays(
            x=LazyH5Array(path, "x"),
            y=y,
            class_names=list(self.cache_config()["classes"]),
            splits=splits,
            info={
                "dataset": str(self.cache_name),
                "cache": str(path),
                "records": int(len(y)),
                "split_sizes": {k: int(len(v)) for k, v in splits.items()},
                "split_fractions": fractions,
                "split_seed": int(self.split_seed),
                "skipped": len(manifest.get("skipped", [])),
                "selection": (manifest.get("source") or {}).get("selection"),
            },
        )


load = Tianchi.load  # load(root, cache_dir, cache_name, sources, classes, other_labels, duplicates, ...)
prepare = Tianchi.prepare  # prepare(root, cache_dir, cache_name, sources, classes, other_labels, duplicates, ...)
