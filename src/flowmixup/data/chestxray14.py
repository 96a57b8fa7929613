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
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowmixup.data.base import DataError, LabeledArrays, LazyH5Array
from flowmixup.data.cache import (
    ON_BAD_RECORD,
    Fingerprint,
    build_cache,
    cache_is_valid,
    fingerprint,
    open_cache,
    read_row_data,
    root_missing_message,
    unverifiable_error,
)

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
PREPARE_COMMAND = "python scripts/prepare_data.py dataset=chestxray14 dataset.root={root}"


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
    labels = df["Finding Labels"].str.strip()
    empty = labels == ""
    if empty.any():
        row = df[empty].iloc[0]
        raise DataError(f"{table}, line {row['line']}: empty 'Finding Labels' for image {row['Image Index']}")
    dup = df["Image Index"].duplicated()
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(f"{table}, line {row['line']}: image {row['Image Index']} appears twice in the table")
    pid = pd.to_numeric(df["Patient ID"], errors="coerce")
    if pid.isna().any():
        row = df[pid.isna()].iloc[0]
        raise DataError(f"{table}, line {row['line']}: Patient ID {row['Patient ID']!r} is not a number")
    dummies = labels.str.get_dummies(sep="|")
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
    out = pd.DataFrame({"Image Index": df["Image Index"].to_numpy(), "Patient ID": pid.astype(np.int64).to_numpy()})
    for c in CLASSES:
        out[c] = dummies[c].to_numpy().astype(np.int64) if c in dummies.columns else 0

    where: dict[str, tuple[str, Path, int]] = {}
    for split, fname in SPLIT_FILES.items():
        path = root / fname
        for lineno, name in _read_list(path):
            if name in where and where[name][0] != split:
                other = where[name]
                raise DataError(f"{path}, line {lineno}: {name} is also in {other[1]} (line {other[2]})")
            where[name] = (split, path, lineno)
    split_col = [where.get(n, (None,))[0] for n in out["Image Index"]]
    unlisted = [i for i, s in enumerate(split_col) if s is None]
    if unlisted:
        row = df.iloc[unlisted[0]]
        raise DataError(
            f"{table}, line {row['line']}: image {row['Image Index']} is in neither {SPLIT_FILES['train_val']} nor "
            f"{SPLIT_FILES['test']} ({len(unlisted)} such images)"
        )
    out["split"] = split_col
    out["line"] = df["line"].to_numpy()
    return out


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


def source_fingerprint(
    root: str | os.PathLike, resolution: int, images: dict[str, Path] | None = None
) -> Fingerprint:
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


def prepare(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    resolution: int = 256,
    num_workers: int | None = None,
    on_bad_record: str = "error",
    overwrite: bool = False,
) -> Path:
    """Decode every image of the table at ``resolution`` into ``<cache_dir>/chestxray14_<resolution>.h5``.

    Resumable and reused when already complete for the same data (see :func:`source_fingerprint`, wherever
    ``root`` is mounted); a cache built from other data is rebuilt, with a log line saying so. An image of the table
    without a file is a bad record: a DataError naming it and its table line (``on_bad_record="error"``) or logged
    and left out (``"skip"``).
    """
    if on_bad_record not in ON_BAD_RECORD:
        raise DataError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {on_bad_record!r}")
    root = Path(root)
    path = cache_file(cache_dir, resolution)
    config = cache_config(resolution)
    meta = read_metadata(root)
    table = find_table(root)
    images = find_images(root)
    fp = source_fingerprint(root, resolution, images)
    has_file = meta["Image Index"].map(lambda n: n in images).to_numpy()
    if not has_file.all() and on_bad_record == "error":  # fail before hours of decoding, not after
        first = meta[~has_file].iloc[0]
        raise DataError(
            f"{table}, line {first['line']}: image file {first['Image Index']} not found under {root}/images/ or "
            f"{root}/images_NNN/images/ ({int((~has_file).sum())} of {len(meta)} images missing)"
        )
    items = [
        (str(images[n]) if n in images else None, n, str(table), int(line))
        for n, line in zip(meta["Image Index"], meta["line"])
    ]
    return build_cache(
        path,
        items=items,
        item_names=list(meta["Image Index"]),
        reader=functools.partial(_load_image_row, size=int(resolution)),
        row_shape=(1, int(resolution), int(resolution)),
        dtype=np.uint8,
        row_data={
            "y": meta[CLASSES].to_numpy(dtype=np.uint8),
            "name": meta["Image Index"].to_numpy(dtype=str),
            "patient": meta["Patient ID"].to_numpy(dtype=np.int64),
            "official_test": (meta["split"] == "test").to_numpy(),
        },
        config=config,
        # the absolute root is information only: the fingerprint identifies the data
        source={"root": str(root.resolve()), "table": table.name, "images_in_table": int(len(meta))},
        fingerprint=fp,
        on_bad_record=on_bad_record,
        prepare_workers=num_workers,
        desc=path.name,
        overwrite=overwrite,
    )


def _load_image_row(item: tuple, size: int) -> np.ndarray:
    path, name, table, line = item
    if path is None:
        raise DataError(f"{table}, line {line}: image file {name} not found under images/ or images_NNN/images/")
    return load_image(path, size)[None]


def load(
    root: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    resolution: int = 256,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    prepare_if_missing: bool = False,
    on_bad_record: str = "error",
    num_workers: int | None = None,
) -> LabeledArrays:
    """ChestX-ray14 from its prepared cache: x is a :class:`LazyH5Array` of uint8 (N, 1, H, W), y the 14 labels
    in :data:`CLASSES` order, splits = train/val (patient-disjoint, carved from the official train_val list) and
    the official test list.

    With a ``root``, the cache must have been built from the same data (:func:`source_fingerprint`, computed here
    from the table, the split lists and one listing of the image folders), wherever it was mounted then: a cache
    built from other data is a one-line DataError giving the command that rebuilds it. With ``root`` None, '' or
    '???' (``dataset.root=null``: a node holding only the cache), a complete cache is used as it is. Without a
    complete cache for this data: prepare it if ``prepare_if_missing``, else a DataError that gives the command
    building it."""
    path = cache_file(cache_dir, resolution)
    config = cache_config(resolution)
    has_root = root not in (None, "", "???")
    fp = None
    if has_root:
        if Path(root).is_dir():
            try:
                fp = source_fingerprint(root, resolution)
            except DataError as err:
                if not cache_is_valid(path, config):
                    raise
                raise unverifiable_error(err, path) from err
        elif cache_is_valid(path, config):
            raise DataError(root_missing_message(root, path))
    if prepare_if_missing and not cache_is_valid(path, config, fp):
        if not has_root:
            raise DataError(f"no complete cache at {path} and no dataset.root to build it from")
        prepare(root, cache_dir, resolution, num_workers=num_workers, on_bad_record=on_bad_record)
    hint = PREPARE_COMMAND.format(root=root if has_root else "<root>")
    if int(resolution) != 256:
        hint += f" dataset.resolution={int(resolution)}"
    manifest = open_cache(path, config, build_hint=hint, fingerprint=fp, on_bad_record=on_bad_record, what="images")
    rows = read_row_data(path, ["y", "patient", "official_test"])
    y = rows["y"].astype(np.float32)
    test = rows["official_test"].astype(bool)
    trainval = np.flatnonzero(~test)
    val_mask = patient_val_split(rows["patient"][trainval], val_fraction, split_seed)
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
            "resolution": int(resolution),
            "split_sizes": {k: int(len(v)) for k, v in splits.items()},
            "val_fraction": float(val_fraction),
            "split_seed": int(split_seed),
            "skipped": len(manifest.get("skipped", [])),
            "patients": int(len(np.unique(rows["patient"]))),
        },
    )
