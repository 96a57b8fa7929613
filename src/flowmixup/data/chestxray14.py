"""NIH ChestX-ray14: read the official label table and split lists, decode PNGs, build and load the HDF5 cache.

Raw layout (``root``), as NIH distributes it:

- ``Data_Entry_2017_v2020.csv`` or ``Data_Entry_2017.csv`` (``.csv.gz`` accepted too): one row per image;
- ``train_val_list.txt`` and ``test_list.txt``: the official patient-wise split (one image name per line);
- ``images/*.png``, or ``images_001/images/*.png`` ... ``images_012/images/*.png`` (the twelve tar parts unpacked
  side by side).

All 112,120 images and the usual class order (:data:`CLASSES`) are used; the validation split is carved out of
``train_val`` by patient, the test split is the official one.

A cache is identified by its content (:func:`source_fingerprint`): the bytes of the table and the two split lists,
every PNG path under the image folders relative to ``root`` with its size, and the resolution and classes. The same
data mounted elsewhere is accepted; other data at the same cache path is rebuilt by :func:`prepare` and refused by
:func:`load`. ``load(root=None)`` uses a complete cache as it is (training on a node without the raw data).
:class:`ChestXray14` is the dataset's :class:`~flowmixup.data.cache.CachedSource`; ``load`` and ``prepare`` are its
entry points.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from flowmixup.data.base import DataError, LabeledArrays, LazyH5Array
from flowmixup.data.cache import CacheContents, CachedSource, Fingerprint, fingerprint, read_row_data

log = logging.getLogger(__name__)

NAME = "chestxray14"
CLASSES = [
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
NO_FINDING = "No Finding"
TABLE_NAMES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}


# ----------------------------------------------------------------------------------------------- raw readers
def find_table(root: str | os.PathLike) -> Path:
    """The label table in ``root`` (the v2020 table first where both are present)."""
    root = Path(root)
    for name in TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no label table found (expected one of {', '.join(TABLE_NAMES)})")


def _read_list(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"{path}: split list not found (the NIH download has train_val_list.txt and test_list.txt)")
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            name = line.strip()
            if name:
                out.append((lineno, name))
    return out


def read_metadata(root: str | os.PathLike) -> pd.DataFrame:
    """One row per image of the label table: ``Image Index``, ``Patient ID``, the 14 label columns (0/1 ints, in
    :data:`CLASSES` order), ``split`` (``train_val`` or ``test``) and ``line`` (the row's line in the table).

    Raises DataError naming the file and line for: a missing table or list, an empty ``Finding Labels``, a label
    that is neither in CLASSES nor ``No Finding``, a duplicated image, an image listed in both split lists, and an
    image of the table in neither list. Names in the lists but not in the table are ignored (a subset table).
    """
    root = Path(root)
    table = find_table(root)
    df = _read_table(table)
    pid = pd.to_numeric(df["Patient ID"], errors="coerce")
    if pid.isna().any():
        row = df[pid.isna()].iloc[0]
        raise DataError(f"{table}, line {row['line']}: Patient ID {row['Patient ID']!r} is not a number")
    dummies = _label_dummies(df, table)
    out = pd.DataFrame({"Image Index": df["Image Index"].to_numpy(), "Patient ID": pid.astype(np.int64).to_numpy()})
    for c in CLASSES:
        out[c] = dummies[c].to_numpy().astype(np.int64) if c in dummies.columns else 0
    out["split"] = _split_column(root, table, df)
    out["line"] = df["line"].to_numpy()
    return out


def _read_table(table: Path) -> pd.DataFrame:
    """The table's image, label and patient columns (as text) and each row's ``line``; an empty ``Finding Labels``
    or an image listed twice is a DataError naming the line."""
    try:
        df = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{table}: not a readable CSV table ({err})") from err
    needed = ["Image Index", "Finding Labels", "Patient ID"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"{table}: columns {missing} missing (found {list(df.columns)})")
    df = df[needed].copy()
    df["line"] = np.arange(len(df)) + 2  # line 1 is the header
    df["Finding Labels"] = df["Finding Labels"].str.strip()
    empty = df["Finding Labels"] == ""
    if empty.any():
        row = df[empty].iloc[0]
        raise DataError(f"{table}, line {row['line']}: empty 'Finding Labels' for image {row['Image Index']}")
    dup = df["Image Index"].duplicated()
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(f"{table}, line {row['line']}: image {row['Image Index']} appears twice in the table")
    return df


def _label_dummies(df: pd.DataFrame, table: Path) -> pd.DataFrame:
    """One 0/1 column per label found in ``Finding Labels``; a label that is not a class is a DataError."""
    dummies = df["Finding Labels"].str.get_dummies(sep="|")
    dummies.columns = [c.strip() for c in dummies.columns]
    dummies = dummies.T.groupby(level=0).max().T  # ' A|A' style duplicates after stripping
    unknown = [c for c in dummies.columns if c not in CLASSES and c != NO_FINDING]
    if unknown:
        first = int(np.flatnonzero(dummies[unknown].to_numpy().any(axis=1))[0])
        row = df.iloc[first]
        bad = [c for c in unknown if dummies[c].iloc[first]]
        raise DataError(
            f"{table}, line {row['line']}: label(s) {bad} of image {row['Image Index']} are not ChestX-ray14 "
            f"classes (expected {CLASSES} or '{NO_FINDING}')"
        )
    return dummies


def _split_column(root: Path, table: Path, df: pd.DataFrame) -> list[str]:
    """``train_val`` or ``test`` for each image of the table, from the two split lists."""
    where: dict[str, tuple[str, Path, int]] = {}
    for split, fname in SPLIT_FILES.items():
        path = root / fname
        for lineno, name in _read_list(path):
            if name in where and where[name][0] != split:
                other = where[name]
                raise DataError(f"{path}, line {lineno}: {name} is also in {other[1]} (line {other[2]})")
            where[name] = (split, path, lineno)
    split_col = [where.get(n, (None,))[0] for n in df["Image Index"]]
    unlisted = [i for i, s in enumerate(split_col) if s is None]
    if unlisted:
        row = df.iloc[unlisted[0]]
        raise DataError(
            f"{table}, line {row['line']}: image {row['Image Index']} is in neither {SPLIT_FILES['train_val']} nor "
            f"{SPLIT_FILES['test']} ({len(unlisted)} such images)"
        )
    return split_col


def find_images(root: str | os.PathLike) -> dict[str, Path]:
    """Image name -> path for every PNG in ``root/images/`` and ``root/images_NNN/images/`` (both accepted)."""
    root = Path(root)
    folders = [root / "images"] + sorted(p / "images" for p in root.glob("images_*") if p.is_dir())
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower().endswith(".png") and entry.is_file():
                    if entry.name in found:
                        raise DataError(f"{entry.path}: image also found at {found[entry.name]}")
                    found[entry.name] = Path(entry.path)
    return found


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """The image at ``path`` as 8-bit grayscale (RGB/RGBA/palette converted by luminance, 16-bit scaled to 8),
    resized to ``size`` x ``size`` (PIL bilinear, antialiased when shrinking). An unreadable or truncated file
    raises DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                img = Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8), mode="L")
            elif img.mode != "L":
                img = img.convert("RGBA").convert("L") if img.mode in ("P", "PA", "LA") else img.convert("L")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as err:  # PIL: truncated/corrupt files, unknown formats
        raise DataError(f"{path}: unreadable image ({err})") from err


def patient_val_split(patients: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask over ``patients`` (one id per image): True for images of the patients drawn for validation.
    round(val_fraction * number of patients) patients are drawn with ``seed``; no patient is on both sides."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = np.unique(patients)
    n_val = int(round(val_fraction * len(unique)))
    chosen = np.random.default_rng(seed).permutation(unique)[:n_val]
    return np.isin(patients, chosen)


# ------------------------------------------------------------------------------------------------ the cache
def cache_config(resolution: int) -> dict[str, Any]:
    """What identifies a ChestX-ray14 cache (written to its manifest)."""
    return {"dataset": NAME, "resolution": int(resolution), "classes": CLASSES}


def cache_file(cache_dir: str | os.PathLike, resolution: int) -> Path:
    return Path(cache_dir) / f"{NAME}_{int(resolution)}.h5"


def source_fingerprint(root: str | os.PathLike, resolution: int, images: dict[str, Path] | None = None) -> Fingerprint:
    """The content identity of the raw data under ``root`` for a cache at ``resolution``: the bytes of the label
    table and of the two split lists, the path (relative to ``root``) and size of every PNG that
    :func:`find_images` lists, and :func:`cache_config`. One directory listing and one ``stat`` per image; no
    image is read, the table is hashed, not parsed. ``images``: a :func:`find_images` result already at hand."""
    root = Path(root)
    table = find_table(root)
    files = [table.name, *SPLIT_FILES.values()]
    if images is None:
        images = find_images(root)
    return fingerprint(root, files, list(images.values()), cache_config(resolution))


@dataclass
class ChestXray14(CachedSource):
    """ChestX-ray14 from its prepared cache (see :class:`CachedSource`): x is a :class:`LazyH5Array` of uint8
    (N, 1, H, W), y the 14 labels in :data:`CLASSES` order, splits = train/val (patient-disjoint, carved from the
    official train_val list) and the official test list.

    The cache of ``root`` is identified by :func:`source_fingerprint` (the table, the split lists and one listing of
    the image folders). An image of the table without a file is a bad record: a DataError naming it and its table
    line (``on_bad_record="error"``, before any decoding) or logged and left out (``"skip"``)."""

    NAME: ClassVar[str] = NAME
    WHAT: ClassVar[str] = "images"

    resolution: int = 256
    val_fraction: float = 0.1
    split_seed: int = 0

    def cache_path(self) -> Path:
        return cache_file(self.cache_dir, self.resolution)

    def cache_config(self) -> dict[str, Any]:
        return cache_config(self.resolution)

    def fingerprint(self) -> Fingerprint:
        return source_fingerprint(self.root, self.resolution)

    def prepare_overrides(self) -> list[str]:
        return [] if int(self.resolution) == 256 else [f"dataset.resolution={int(self.resolution)}"]

    def contents(self) -> CacheContents:
        root, size = Path(self.root), int(self.resolution)
        meta, table, images = read_metadata(root), find_table(root), find_images(root)
        has_file = meta["Image Index"].map(lambda n: n in images).to_numpy()
        if not has_file.all() and self.on_bad_record == "error":  # fail before hours of decoding, not after
            first = meta[~has_file].iloc[0]
            raise DataError(
                f"{table}, line {first['line']}: image file {first['Image Index']} not found under {root}/images/ or "
                f"{root}/images_NNN/images/ ({int((~has_file).sum())} of {len(meta)} images missing)"
            )
        return CacheContents(
            items=[
                (str(images[n]) if n in images else None, n, str(table), int(line))
                for n, line in zip(meta["Image Index"], meta["line"])
            ],
            item_names=list(meta["Image Index"]),
            reader=functools.partial(_load_image_row, size=size),
            row_shape=(1, size, size),
            dtype=np.uint8,
            row_data={
                "y": meta[CLASSES].to_numpy(dtype=np.uint8),
                "name": meta["Image Index"].to_numpy(dtype=str),
                "patient": meta["Patient ID"].to_numpy(dtype=np.int64),
                "official_test": (meta["split"] == "test").to_numpy(),
            },
            config=self.cache_config(),
            fingerprint=source_fingerprint(root, size, images),
            # the absolute root is information only: the fingerprint identifies the data
            source={"root": str(root.resolve()), "table": table.name, "images_in_table": int(len(meta))},
        )

    def arrays(self, path: Path, manifest: dict) -> LabeledArrays:
        rows = read_row_data(path, ["y", "patient", "official_test"])
        y = rows["y"].astype(np.float32)
        test = rows["official_test"].astype(bool)
        trainval = np.flatnonzero(~test)
        val_mask = patient_val_split(rows["patient"][trainval], self.val_fraction, self.split_seed)
        splits = {"train": trainval[~val_mask], "val": trainval[val_mask], "test": np.flatnonzero(test)}
        return LabeledArrays(
            x=LazyH5Array(path, "x"),
            y=y,
            class_names=list(CLASSES),
            splits=splits,
            info={
                "dataset": NAME,
                "cache": str(path),
                "records": int(len(y)),
                "resolution": int(self.resolution),
                "split_sizes": {k: int(len(v)) for k, v in splits.items()},
                "val_fraction": float(self.val_fraction),
                "split_seed": int(self.split_seed),
                "skipped": len(manifest.get("skipped", [])),
                "patients": int(len(np.unique(rows["patient"]))),
            },
        )


def _load_image_row(item: tuple, size: int) -> np.ndarray:
    path, name, table, line = item
    if path is None:
        raise DataError(f"{table}, line {line}: image file {name} not found under images/ or images_NNN/images/")
    return load_image(path, size)[None]


load = ChestXray14.load  # load(root, cache_dir, resolution=256, val_fraction=0.1, split_seed=0, *, ...)
prepare = ChestXray14.prepare  # prepare(root, cache_dir, resolution=256, *, on_bad_record, prepare_workers, overwrite)
