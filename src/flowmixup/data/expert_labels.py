"""Radiologist labels of ChestX-ray14 test images: Google's "ChestX-ray14 Expert Labels: All Findings" release.

The release (Nabulsi et al., "Deep Learning for Distinguishing Normal versus Abnormal Chest Radiographs and
Generalization to Two Unseen Diseases Tuberculosis and COVID-19", Scientific Reports 2021) labels 810 PA images of
the official test split, the 14 findings of Wang et al. (CVPR 2017) plus ``Abnormal`` and ``Other``:

- ``test_labels.csv``: one row per image, the published ground truth (the majority of three of the five readers);
- ``test_individual_readers.csv``: one row per image and reader (five readers per image).

:func:`read_expert_labels` reads both: finding names mapped to :data:`~flowmixup.data.chestxray14.CLASSES`
(``Pleural Thickening`` -> ``Pleural_Thickening``), cells ``YES``/``NO`` or ``1``/``0``, image ids checked against
the NIH table when one is given. Anything else is a :class:`DataError` of one line naming the file, the line and the
column. The label files are not part of this repository (see ``docs/real-label-noise.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .base import DataError
from .chestxray14 import CLASSES

LABELS_FILE = "test_labels.csv"
READERS_FILE = "test_individual_readers.csv"
IMAGE, PATIENT, READER = "Image ID", "Patient ID", "Reader ID"
# the release's column name of each project class (the NIH table writes underscores, the release spaces)
FINDING_COLUMNS = {c: c.replace("_", " ") for c in CLASSES}
TRUE_VALUES, FALSE_VALUES = ("YES", "1"), ("NO", "0")
CITATION = (
    "Nabulsi Z. et al., Deep Learning for Distinguishing Normal versus Abnormal Chest Radiographs and "
    "Generalization to Two Unseen Diseases Tuberculosis and COVID-19, Scientific Reports 11, 15523 (2021); "
    "labels of the ChestX-ray14 test split of Wang X. et al., ChestX-ray8, CVPR 2017"
)


@dataclass
class ExpertLabels:
    """The expert labels of ``images`` (in the order of ``test_labels.csv``), columns in :data:`CLASSES` order.

    majority: (n, 14) uint8, the published ground truth; readers: (R, n, 14) uint8, each reader's labels (readers in
    ``reader_ids`` order, sorted), or None when the folder has no readers file."""

    folder: Path
    images: list[str]
    majority: np.ndarray
    readers: np.ndarray | None
    reader_ids: list[str]
    classes: list[str]

    @property
    def positives(self) -> np.ndarray:
        """Expert-majority positives per class."""
        return self.majority.sum(axis=0).astype(np.int64)


def _cell_values(path: Path, df: pd.DataFrame, column: str) -> np.ndarray:
    """A YES/NO or 1/0 column as uint8; anything else is one line naming the file, line and column."""
    text = df[column].astype(str).str.strip().str.upper()
    yes, no = text.isin(TRUE_VALUES), text.isin(FALSE_VALUES)
    bad = ~(yes | no)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}, line {i + 2}, column '{column}': value {df[column].iloc[i]!r} is neither YES/NO nor 1/0"
        )
    return yes.to_numpy().astype(np.uint8)


def read_expert_file(path: str | os.PathLike, with_reader: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """One file of the release: (its id columns as text with each row's ``line``, its (n, 14) 0/1 findings in
    :data:`CLASSES` order). A missing file or column, an empty id or a bad cell is one line naming them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expert label file not found (the release has {LABELS_FILE} and {READERS_FILE})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a readable CSV table ({' '.join(str(err).split())})") from err
    df.columns = [str(c).strip() for c in df.columns]
    ids = [IMAGE, READER] if with_reader else [IMAGE]
    for column in ids + list(FINDING_COLUMNS.values()):
        if column not in df.columns:
            raise DataError(f"{path}, line 1, column '{column}': missing (the header has {list(df.columns)})")
    out = pd.DataFrame({c: df[c].str.strip() for c in ids})
    out["line"] = np.arange(len(df)) + 2
    for column in ids:
        empty = out[column] == ""
        if empty.any():
            raise DataError(f"{path}, line {int(out.loc[empty, 'line'].iloc[0])}, column '{column}': empty")
    y = np.stack([_cell_values(path, df, FINDING_COLUMNS[c]) for c in CLASSES], axis=1) if len(df) else None
    return out, (y if y is not None else np.zeros((0, len(CLASSES)), np.uint8))


def _check_known(path: Path, ids: pd.DataFrame, known: set[str] | dict | None, table: str) -> None:
    if known is None:
        return
    unknown = ~ids[IMAGE].isin(set(known))
    if unknown.any():
        row = ids[unknown].iloc[0]
        raise DataError(
            f"{path}, line {int(row['line'])}, column '{IMAGE}': image {row[IMAGE]} is not in the NIH table {table} "
            f"({int(unknown.sum())} such images)"
        )


def read_expert_labels(
    folder: str | os.PathLike, known_images: set[str] | dict | None = None, table: str = ""
) -> ExpertLabels:
    """The release in ``folder``: ``test_labels.csv`` (required) and ``test_individual_readers.csv`` (when present).

    ``known_images``: the image names of the NIH table (``table`` names it in messages); every image id must be one.
    An image twice in ``test_labels.csv``, twice for one reader, or missing a reader's row is one line too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: expert label folder not found (expected {LABELS_FILE} and {READERS_FILE} in it)")
    path = folder / LABELS_FILE
    ids, majority = read_expert_file(path, with_reader=False)
    dup = ids[IMAGE].duplicated()
    if dup.any():
        row = ids[dup].iloc[0]
        raise DataError(f"{path}, line {int(row['line'])}, column '{IMAGE}': image {row[IMAGE]} appears twice")
    _check_known(path, ids, known_images, table)
    images = list(ids[IMAGE])
    readers, reader_ids = None, []
    rpath = folder / READERS_FILE
    if rpath.is_file():
        rids, ry = read_expert_file(rpath, with_reader=True)
        _check_known(rpath, rids, known_images, table)
        readers, reader_ids = _reader_matrix(rpath, rids, ry, images)
    return ExpertLabels(folder, images, majority, readers, reader_ids, list(CLASSES))


def _reader_matrix(path: Path, ids: pd.DataFrame, y: np.ndarray, images: list[str]) -> tuple[np.ndarray, list[str]]:
    """(R, n, 14) from the readers file's rows: every image of ``images`` once per reader."""
    position = {name: i for i, name in enumerate(images)}
    outside = ~ids[IMAGE].isin(position)
    if outside.any():
        row = ids[outside].iloc[0]
        raise DataError(
            f"{path}, line {int(row['line'])}, column '{IMAGE}': image {row[IMAGE]} is not in {LABELS_FILE}"
        )
    dup = ids.duplicated([IMAGE, READER])
    if dup.any():
        row = ids[dup].iloc[0]
        raise DataError(
            f"{path}, line {int(row['line'])}, column '{READER}': reader {row[READER]} labels image {row[IMAGE]} twice"
        )
    reader_ids = sorted(ids[READER].unique())
    out = np.zeros((len(reader_ids), len(images), len(CLASSES)), np.uint8)
    seen = np.zeros((len(reader_ids), len(images)), bool)
    r_index = ids[READER].map({r: i for i, r in enumerate(reader_ids)}).to_numpy()
    i_index = ids[IMAGE].map(position).to_numpy()
    out[r_index, i_index] = y
    seen[r_index, i_index] = True
    if not seen.all():
        r, i = (int(v[0]) for v in np.nonzero(~seen))
        raise DataError(
            f"{path}, line {len(ids) + 2}, column '{READER}': no row of reader {reader_ids[r]} for image "
            f"{images[i]} ({int((~seen).sum())} image-reader pairs missing; every reader must label every image)"
        )
    return out, reader_ids


def nih_labels(metadata_dir: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """The NIH (NLP-mined) labels of the table in ``metadata_dir``: (one row per image with ``Image Index``, the 14
    classes as 0/1 and ``split`` (``train_val``/``test``, or None where the split lists are not beside the table),
    the table's path). Errors are chestxray14's one-line DataErrors."""
    from .chestxray14 import SPLIT_FILES, _label_dummies, _read_table, find_table, read_metadata

    root = Path(metadata_dir)
    table = find_table(root)
    if all((root / f).is_file() for f in SPLIT_FILES.values()):
        return read_metadata(root), table
    df = _read_table(table)
    dummies = _label_dummies(df, table)
    out = pd.DataFrame({"Image Index": df["Image Index"].to_numpy()})
    for c in CLASSES:
        out[c] = dummies[c].to_numpy().astype(np.int64) if c in dummies.columns else 0
    out["split"] = None
    return out, table


# a class enters the expert means (test_expert_auc, test_expert_macro_f1) with at least this many expert positives
# among the evaluated images; the means over every class with a positive are reported beside (``*_all``)
MIN_POSITIVES = 10


@dataclass
class ExpertSplit:
    """The expert-labelled images of a loaded dataset: ``rows`` (sorted indices into its x / y, all in its test
    split), ``y`` (their expert-majority labels, (n, C) uint8, in the order of ``rows``), the classes that enter the
    means (``in_mean``: at least :data:`MIN_POSITIVES` positives) and how many release images the data lacks."""

    folder: Path
    rows: np.ndarray
    y: np.ndarray
    in_mean: np.ndarray
    missing: int

    @property
    def positives(self) -> np.ndarray:
        return self.y.sum(axis=0).astype(np.int64)


def expert_split(
    folder: str | os.PathLike, names: np.ndarray, splits: dict[str, np.ndarray], class_names: list[str]
) -> ExpertSplit:
    """Match the release in ``folder`` to a loaded ChestX-ray14 (``names``: each row's image name, ``splits``: its
    index arrays). Release images the data does not hold are left out (``missing``; a subset such as nih1000); an
    expert-labelled image in the train or validation split is a DataError (its labels would leak), and so is a
    release without any image of the data."""
    if list(class_names) != list(CLASSES):
        raise DataError(f"{folder}: expert labels are for the ChestX-ray14 classes, the dataset has {class_names}")
    labels = read_expert_labels(folder)
    position = {str(n): i for i, n in enumerate(np.asarray(names).astype(str))}
    where = np.full(len(position), "", dtype=object)
    for split, idx in splits.items():
        where[np.asarray(idx, dtype=np.int64)] = split
    rows, keep = [], []
    for k, image in enumerate(labels.images):
        i = position.get(image)
        if i is None:
            continue
        if where[i] != "test":
            raise DataError(
                f"{labels.folder / LABELS_FILE}, line {k + 2}, column '{IMAGE}': image {image} is in the "
                f"{where[i] or 'unused'} split of the dataset, not in its test split (the expert labels are for test "
                "images only)"
            )
        rows.append(i)
        keep.append(k)
    if not rows:
        raise DataError(
            f"{labels.folder / LABELS_FILE}: none of its {len(labels.images)} images is in the dataset (is "
            "dataset.expert_labels the release of this ChestX-ray14?)"
        )
    rows_arr, keep_arr = np.asarray(rows, dtype=np.int64), np.asarray(keep, dtype=np.int64)
    order = np.argsort(rows_arr, kind="stable")
    y = labels.majority[keep_arr[order]]
    return ExpertSplit(
        labels.folder, rows_arr[order], y, y.sum(axis=0) >= MIN_POSITIVES, len(labels.images) - len(rows)
    )
