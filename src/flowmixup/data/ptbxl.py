"""PTB-XL (PhysioNet, release 1.0.3): 21,799 ten-second 12-lead ECGs, 71 SCP-ECG statements, ten stratified folds.

Raw layout (``root``), as PhysioNet distributes it: ``ptbxl_database.csv`` (one row per record: ``ecg_id``,
``patient_id``, ``scp_codes`` as a Python-dict string statement -> likelihood, ``strat_fold`` 1-10, ``filename_lr``,
``filename_hr``), ``scp_statements.csv`` (the 71 statements, their ``diagnostic`` / ``form`` / ``rhythm`` flags and,
for the 44 diagnostic ones, ``diagnostic_subclass`` and ``diagnostic_class``), ``records100/`` (100 Hz, 12 x 1,000)
and ``records500/`` (500 Hz, 12 x 5,000), WFDB ``.hea`` + ``.dat``.

Tasks, as the benchmark (Strodthoff et al. 2020) defines them: a record carries every statement of its
``scp_codes`` whatever the likelihood;

- ``all``: the 71 statements; ``diagnostic``: the 44 with ``diagnostic == 1``; ``form``: the 19 with ``form == 1``;
  ``rhythm``: the 12 with ``rhythm == 1``;
- ``subdiagnostic`` (23) / ``superdiagnostic`` (5): each diagnostic statement replaced by its ``diagnostic_subclass``
  / ``diagnostic_class``.

Classes are sorted by name (the benchmark's order). A record without any label of the task is kept in the cache
but in no split (dropped, counted in the run's info). Splits: ``strat_fold`` 1-8 train, 9 validation, 10 test.

The cache holds every record of ``ptbxl_database.csv`` at one sampling rate, with the record's 71-statement
multi-hot row: one cache serves all six tasks (the task is chosen when loading). It is identified by content: the
bytes of the two CSV files, the record files' relative paths and sizes, and the sampling rate.
"""

from __future__ import annotations

import ast
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from flowmixup.data.base import DataError, LabeledArrays, LazyH5Array, plain
from flowmixup.data.cache import CacheContents, CachedSource, Fingerprint, fingerprint, read_manifest, read_row_data
from flowmixup.data.wfdb_records import LEADS, read_wfdb

log = logging.getLogger(__name__)

NAME = "ptbxl"
DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"
TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
SAMPLING_RATES = {100: "filename_lr", 500: "filename_hr"}
SECONDS = 10
BENCHMARK_FOLDS = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9,), "test": (10,)}
_NEEDED = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")


# ----------------------------------------------------------------------------------------------- raw readers
def read_record(path: str | os.PathLike) -> np.ndarray:
    """One record (path without suffix, e.g. ``<root>/records100/00000/00001_lr``) as float32 millivolts, shape
    (12, n) in the standard lead order (I, II, III, aVR, aVL, aVF, V1-V6; PTB-XL stores them so). A missing or
    malformed record, a header whose lead count or length disagrees with the signal file, or missing samples
    raise DataError naming the file."""
    return read_wfdb(path)[0]


def _read_record_row(item: tuple[str, int]) -> np.ndarray:
    """Cache reader: the record must have the dataset's sampling rate and 10 s."""
    path, fs = item
    signal, header = read_wfdb(path)
    if int(round(float(header.fs))) != fs or signal.shape[1] != fs * SECONDS:
        raise DataError(
            f"{path}.hea: {header.fs:g} Hz x {signal.shape[1]} samples, expected {fs} Hz x {fs * SECONDS} samples "
            f"(dataset.sampling_rate={fs}: PTB-XL records are {SECONDS} s)"
        )
    return signal


def read_statements(root: str | os.PathLike) -> pd.DataFrame:
    """``scp_statements.csv`` as ``pd.read_csv(path, index_col=0)`` gives it (one row per statement)."""
    path = Path(root) / STATEMENTS
    if not path.is_file():
        raise DataError(f"{path}: not found (the PTB-XL release has {STATEMENTS} beside {DATABASE})")
    try:
        scp = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a readable CSV table ({err})") from None
    missing = [
        c for c in ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass") if c not in scp.columns
    ]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (found {list(scp.columns)})")
    return scp


def read_metadata(root: str | os.PathLike) -> pd.DataFrame:
    """One row per record of ``<root>/ptbxl_database.csv``: ``ecg_id``, ``patient_id``, ``strat_fold`` (ints),
    ``filename_lr``, ``filename_hr``, ``scp_codes`` parsed into a dict, and ``line`` (the row's line in the file).

    A missing file or column, an ``scp_codes`` that is not a dict literal, a non-numeric id or fold, a fold outside
    1-10 or an ``ecg_id`` listed twice raise DataError naming the file and line."""
    path = Path(root) / DATABASE
    if not path.is_file():
        raise DataError(
            f"{path}: not found (dataset.root must be the unpacked PTB-XL release holding {DATABASE}, "
            f"{STATEMENTS}, records100/ and records500/)"
        )
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a readable CSV table ({err})") from None
    missing = [c for c in _NEEDED if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (found {list(raw.columns)})")
    lines = np.arange(len(raw)) + 2  # line 1 is the header (no field of the release spans lines)
    out = pd.DataFrame({"line": lines})
    for col in ("ecg_id", "patient_id", "strat_fold"):
        num = pd.to_numeric(raw[col], errors="coerce")
        bad = num.isna() | (num != np.round(num))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}, line {lines[i]}: {col} {raw[col].iloc[i]!r} is not a whole number")
        out[col] = num.astype(np.int64).to_numpy()
    outside = ~out["strat_fold"].between(1, 10)
    if outside.any():
        i = int(np.flatnonzero(outside.to_numpy())[0])
        raise DataError(f"{path}, line {lines[i]}: strat_fold {out['strat_fold'].iloc[i]} is outside 1-10")
    dup = out["ecg_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}, line {lines[i]}: ecg_id {out['ecg_id'].iloc[i]} appears twice")
    codes = []
    for i, text in enumerate(raw["scp_codes"]):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, dict):
            raise DataError(
                f"{path}, line {lines[i]}: scp_codes {text[:60]!r} is not a dict of statement -> likelihood"
            )
        codes.append({str(k): v for k, v in value.items()})
    out["scp_codes"] = codes
    out["filename_lr"] = raw["filename_lr"].str.strip().to_numpy()
    out["filename_hr"] = raw["filename_hr"].str.strip().to_numpy()
    return out[["ecg_id", "patient_id", "strat_fold", "filename_lr", "filename_hr", "scp_codes", "line"]]


# ------------------------------------------------------------------------------------------------ labels
def check_task(task: str) -> str:
    if task not in TASKS:
        raise DataError(f"dataset.task: {task!r} is unknown; allowed: {', '.join(TASKS)}")
    return task


def _flag(scp: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(scp[column], errors="coerce").fillna(0) == 1


def statement_map(scp_statements: pd.DataFrame, task: str) -> dict[str, str]:
    """Statement -> the task's class it counts for (statements outside the task are absent)."""
    check_task(task)
    scp = scp_statements
    if task == "all":
        return {str(s): str(s) for s in scp.index}
    if task in ("diagnostic", "form", "rhythm"):
        return {str(s): str(s) for s in scp.index[_flag(scp, task)]}
    column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
    diag = scp[_flag(scp, "diagnostic")]
    return {str(s): str(c) for s, c in zip(diag.index, diag[column]) if isinstance(c, str) and c.strip()}


def task_classes(scp_statements: pd.DataFrame, task: str) -> list[str]:
    """The task's class names, sorted (71 / 44 / 23 / 5 / 19 / 12 on the release's statement table)."""
    return sorted(set(statement_map(scp_statements, task).values()))


def labels(df: pd.DataFrame, scp_statements: pd.DataFrame, task: str) -> tuple[np.ndarray, list[str]]:
    """``(y, class_names)``: y is (len(df), C) uint8 0/1, rows in ``df``'s order, from each row's ``scp_codes``
    (a dict, as :func:`read_metadata` gives; every statement counts, whatever its likelihood). A record without a
    statement of the task is an all-zero row."""
    mapping = statement_map(scp_statements, task)
    names = sorted(set(mapping.values()))
    index = {c: i for i, c in enumerate(names)}
    y = np.zeros((len(df), len(names)), dtype=np.uint8)
    for row, codes in enumerate(df["scp_codes"]):
        for code in codes:
            cls = mapping.get(str(code))
            if cls is not None:
                y[row, index[cls]] = 1
    return y, names


# ------------------------------------------------------------------------------------------------ the cache
def check_rate(sampling_rate: Any) -> int:
    try:
        rate = int(sampling_rate)
    except (TypeError, ValueError):
        rate = None
    if rate not in SAMPLING_RATES or float(sampling_rate) != rate:
        raise DataError(f"dataset.sampling_rate: {sampling_rate!r} is not a PTB-XL rate; allowed: 100, 500")
    return rate


def cache_config(sampling_rate: int, statements: Sequence[str]) -> dict[str, Any]:
    """What identifies a PTB-XL cache (written to its manifest)."""
    rate = check_rate(sampling_rate)
    return {
        "dataset": NAME,
        "sampling_rate": rate,
        "samples": rate * SECONDS,
        "leads": list(LEADS),
        "unit": "mV",
        "statements": [str(s) for s in statements],
    }


def cache_file(cache_dir: str | os.PathLike, cache_name: str, sampling_rate: int) -> Path:
    return Path(cache_dir) / f"{cache_name}_{check_rate(sampling_rate)}hz.h5"


def _record_files(root: Path, meta: pd.DataFrame, rate: int) -> list[Path]:
    column = SAMPLING_RATES[rate]
    out = []
    for rel in meta[column]:
        out += [root / f"{rel}.hea", root / f"{rel}.dat"]
    return out


def source_fingerprint(
    root: str | os.PathLike, sampling_rate: int, meta: pd.DataFrame | None = None, scp: pd.DataFrame | None = None
) -> Fingerprint:
    """Content identity: the bytes of ``ptbxl_database.csv`` and ``scp_statements.csv``, the ``.hea`` / ``.dat``
    paths (relative to ``root``) of the rate's records with their sizes, and :func:`cache_config`."""
    root = Path(root)
    meta = read_metadata(root) if meta is None else meta
    scp = read_statements(root) if scp is None else scp
    rate = check_rate(sampling_rate)
    return fingerprint(
        root, [DATABASE, STATEMENTS], _record_files(root, meta, rate), cache_config(rate, task_classes(scp, "all"))
    )


def _statement_table(scp: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The statement table as plain JSON (kept in the manifest: a cache-only node derives every task from it)."""
    out = {}
    for s, row in scp.iterrows():
        out[str(s)] = {
            "diagnostic": float(pd.to_numeric(row["diagnostic"], errors="coerce") or 0) == 1.0,
            "form": float(pd.to_numeric(row["form"], errors="coerce") or 0) == 1.0,
            "rhythm": float(pd.to_numeric(row["rhythm"], errors="coerce") or 0) == 1.0,
            "diagnostic_class": row["diagnostic_class"] if isinstance(row["diagnostic_class"], str) else None,
            "diagnostic_subclass": row["diagnostic_subclass"] if isinstance(row["diagnostic_subclass"], str) else None,
        }
    return out


def _statements_frame(table: dict[str, dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(table, orient="index")
    for col in ("diagnostic", "form", "rhythm"):
        df[col] = df[col].astype(float)
    return df


def _check_statements(root: Path, meta: pd.DataFrame, statements: Sequence[str]) -> None:
    """A DataError naming the line of the first ``scp_codes`` statement that ``scp_statements.csv`` lacks."""
    known = set(statements)
    unknown = [(line, c) for line, codes in zip(meta["line"], meta["scp_codes"]) for c in codes if c not in known]
    if unknown:
        line, code = unknown[0]
        raise DataError(
            f"{root / DATABASE}, line {line}: statement {code!r} is not in {STATEMENTS} "
            f"({len(unknown)} such statements)"
        )


def _folds(value: Any, key: str) -> set[int]:
    value = plain(value)
    if isinstance(value, int):
        value = [value]
    ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and 1 <= v <= 10 for v in value)
    if not ok:
        raise DataError(f"dataset.{key}: {value!r}; allowed: a non-empty list of folds 1-10, e.g. [1,2,3,4,5,6,7,8]")
    return set(value)


def fold_splits(
    folds: np.ndarray, keep: np.ndarray, train_folds: Any, val_folds: Any, test_folds: Any
) -> dict[str, np.ndarray]:
    """Row indices per split: rows with ``keep`` whose fold is in each split's folds (which must not overlap)."""
    sets = {
        "train": _folds(train_folds, "train_folds"),
        "val": _folds(val_folds, "val_folds"),
        "test": _folds(test_folds, "test_folds"),
    }
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sets[a] & sets[b]
            if common:
                raise DataError(
                    f"dataset.{a}_folds and dataset.{b}_folds share folds {sorted(common)}; "
                    "allowed: disjoint fold lists"
                )
    return {s: np.flatnonzero(keep & np.isin(folds, sorted(f))) for s, f in sets.items()}


@dataclass
class PTBXL(CachedSource):
    """PTB-XL for one task from its prepared cache (see :class:`CachedSource`): x a :class:`LazyH5Array` of float32
    (N, 12, rate x 10) mV, y over the task's classes (sorted), splits by ``strat_fold``. Records without a label for
    the task are in no split (``info['dropped_no_label']``).

    The cache ``<cache_dir>/<cache_name>_<rate>hz.h5`` holds every record of ``ptbxl_database.csv`` at one sampling
    rate with its 71-statement multi-hot row, ecg_id, patient_id and strat_fold: one cache serves all six tasks. Its
    config holds the statement list of ``scp_statements.csv``, so without the raw data (``root`` None) the cache's
    own config is taken as it is. A bad record (missing, truncated, wrong lead count or rate, missing samples) is a
    DataError naming it, or is left out and listed in the manifest under ``on_bad_record="skip"``."""

    NAME: ClassVar[str] = NAME

    sampling_rate: int = 100
    task: str = "superdiagnostic"
    train_folds: Sequence[int] = BENCHMARK_FOLDS["train"]
    val_folds: Sequence[int] = BENCHMARK_FOLDS["val"]
    test_folds: Sequence[int] = BENCHMARK_FOLDS["test"]
    cache_name: str = NAME

    def __post_init__(self) -> None:
        super().__post_init__()
        check_task(self.task)
        self.rate = check_rate(self.sampling_rate)

    def cache_path(self) -> Path:
        return cache_file(self.cache_dir, self.cache_name, self.rate)

    def cache_config(self) -> dict[str, Any]:
        """Without the raw data at hand, the cache's own config (its statement list) is taken as it is."""
        manifest = read_manifest(self.cache_path())
        return (manifest or {}).get("config") or cache_config(self.rate, [])

    def identify(self) -> tuple[dict[str, Any], Fingerprint]:
        scp = read_statements(self.root)
        return cache_config(self.rate, task_classes(scp, "all")), source_fingerprint(self.root, self.rate, scp=scp)

    def prepare_overrides(self) -> list[str]:
        return [] if self.rate == 100 else [f"dataset.sampling_rate={self.rate}"]

    def contents(self) -> CacheContents:
        root, rate = Path(self.root), self.rate
        meta, scp = read_metadata(root), read_statements(root)
        if meta.empty:
            raise DataError(f"{root / DATABASE}: no record")
        y_all, statements = labels(meta, scp, "all")  # columns: the 71 statements, sorted
        _check_statements(root, meta, statements)
        column = SAMPLING_RATES[rate]
        return CacheContents(
            items=[(str(root / rel), rate) for rel in meta[column]],
            item_names=list(meta[column]),
            reader=_read_record_row,
            row_shape=(len(LEADS), rate * SECONDS),
            dtype=np.float32,
            row_data={
                "statements": y_all,
                "ecg_id": meta["ecg_id"].to_numpy(dtype=np.int64),
                "patient": meta["patient_id"].to_numpy(dtype=np.int64),
                "strat_fold": meta["strat_fold"].to_numpy(dtype=np.int64),
            },
            config=cache_config(rate, statements),
            fingerprint=source_fingerprint(root, rate, meta, scp),
            source={
                "root": str(root.resolve()),
                "records_in_table": int(len(meta)),
                "statement_table": _statement_table(scp),
            },
        )

    def arrays(self, path: Path, manifest: dict) -> LabeledArrays:
        rows = read_row_data(path, ["statements", "strat_fold", "patient"])
        scp = _statements_frame((manifest.get("source") or {})["statement_table"])
        statements = list(manifest["config"]["statements"])
        codes = [{statements[j]: 100.0 for j in np.flatnonzero(r)} for r in rows["statements"]]
        y, names = labels(pd.DataFrame({"scp_codes": codes}), scp, self.task)
        keep = y.any(axis=1)
        splits = fold_splits(rows["strat_fold"], keep, self.train_folds, self.val_folds, self.test_folds)
        dropped = int((~keep).sum())
        if dropped:
            log.info(
                "ptbxl task=%s: %d of %d records have no label of the task and are left out", self.task, dropped, len(y)
            )
        return LabeledArrays(
            x=LazyH5Array(path, "x"),
            y=y.astype(np.float32),
            class_names=names,
            splits=splits,
            info={
                "dataset": NAME,
                "task": self.task,
                "cache": str(path),
                "records": int(len(y)),
                "dropped_no_label": dropped,
                "sampling_rate": self.rate,
                "split_sizes": {k: int(len(v)) for k, v in splits.items()},
                "skipped": len(manifest.get("skipped", [])),
                "patients": int(len(np.unique(rows["patient"]))),
            },
        )


load = PTBXL.load  # load(root, cache_dir, sampling_rate=100, task="superdiagnostic", train_folds..., cache_name...)
prepare = PTBXL.prepare  # prepare(root, cache_dir, sampling_rate=100, *, on_bad_record, prepare_workers, overwrite)
