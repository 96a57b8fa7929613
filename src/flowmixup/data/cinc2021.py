"""PhysioNet/Computing in Cardiology Challenge 2021 ("Will Two Do?"): the 12-lead training records of eight sources,
SNOMED-CT labels, and the challenge's scoring metric.

Raw layout (``root``): the challenge's training folders, one per source, each holding WFDB ``.hea`` headers and
``.mat`` signals (a MATLAB ``val`` array, leads x samples); the folders may be nested in any way (the PhysioNet
release has ``training/<source>/gNN/``): every ``.hea`` under ``root`` is a record. Labels are the SNOMED-CT codes
of the header's ``# Dx:`` line.

Sources are recognised from the record names, as the challenge names them (its 2021 data description and the
per-source columns of ``dx_mapping_scored.csv``):

=================  =====================  ========================================
source key         database               record names
=================  =====================  ========================================
cpsc               CPSC 2018              ``A0001`` - ``A6877``
cpsc_extra         CPSC 2018 (unused)     ``Q0001`` - ``Q3581``
st_petersburg      St Petersburg INCART   ``I0001`` - ``I0075``
ptb                PTB                    ``S0001`` - ``S0549``
ptb_xl             PTB-XL                 ``HR00001`` - ``HR21837``
georgia            Georgia (G12EC)        ``E00001`` - ``E10344``
chapman_shaoxing   Chapman-Shaoxing       ``JS00001`` - ``JS10646``
ningbo             Ningbo                 ``JS10647`` - ``JS45551``
=================  =====================  ========================================

i.e. the letters before the digits give the source (``HR`` and ``JS`` are checked before the one-letter prefixes);
Chapman-Shaoxing and Ningbo share ``JS`` and are told apart by the number (up to 10646: Chapman-Shaoxing).

Classes: the 26 scored classes of ``weights.csv``, in its order; a name like ``733534002|164909002`` joins codes
the challenge scores as one class (a record with either code is positive). Unscored codes are ignored; a record
with no scored code is kept as an all-zero row (``no_scored_label: keep``) or left out (``drop``), and counted.

Signals: resampled to ``fs`` (default 500 Hz) with ``scipy.signal.resample_poly`` (polyphase, the ratio
``fs / record_fs`` as an exact fraction), then cropped or padded to ``seconds`` (default 10 s): a longer record
keeps its FIRST ``fs x seconds`` samples, a shorter one is padded with zeros at its end.

Splits: a seeded random 7:1:2 over the selected records, patient-free where patient ids are known: the challenge
headers carry none, so by default every record is its own group; ``patients_csv`` (columns ``record,patient``)
groups records by patient (e.g. the PTB-XL records ``HRnnnnn`` through ``ptbxl_database.csv``'s
``ecg_id -> patient_id``).

The challenge metric (:func:`challenge_score`, :class:`ChallengeScore`) follows the 2021 evaluation code
(``physionetchallenges/evaluation-2021``, ``evaluate_model.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from flowmixup.data.base import SPLITS, DataError, LabeledArrays, LazyH5Array, plain
from flowmixup.data.cache import CacheContents, CachedSource, Fingerprint, fingerprint, read_row_data
from flowmixup.data.wfdb_records import LEADS, read_wfdb

log = logging.getLogger(__name__)

NAME = "cinc2021"
NORMAL_CLASS = "426783006"  # sinus rhythm: the challenge's "inactive" output
SOURCES = ("cpsc", "cpsc_extra", "st_petersburg", "ptb", "ptb_xl", "georgia", "chapman_shaoxing", "ningbo")
_PREFIX = {"A": "cpsc", "Q": "cpsc_extra", "I": "st_petersburg", "S": "ptb", "HR": "ptb_xl", "E": "georgia"}
CHAPMAN_LAST = 10646  # JS00001-JS10646 Chapman-Shaoxing, JS10647- Ningbo
_NAME_RE = re.compile(r"^(HR|JS|A|Q|I|S|E)(\d+)$")
NO_SCORED_LABEL = ("keep", "drop")


# ------------------------------------------------------------------------------------------------- sources
def source_of(record_name: str) -> str:
    """The source key of a challenge record name (see the module docstring's table)."""
    m = _NAME_RE.match(str(record_name))
    if not m:
        raise DataError(
            f"record {record_name!r}: not a challenge record name (expected A, Q, I, S, HR, E or JS followed by digits)"
        )
    prefix, number = m.group(1), int(m.group(2))
    if prefix == "JS":
        return "chapman_shaoxing" if number <= CHAPMAN_LAST else "ningbo"
    return _PREFIX[prefix]


def check_sources(sources: Any) -> list[str]:
    sources = plain(sources)
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or not sources:
        raise DataError(f"dataset.sources: {sources!r}; allowed: a non-empty list of {', '.join(SOURCES)}")
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise DataError(f"dataset.sources: {bad} unknown; allowed: {', '.join(SOURCES)}")
    return [s for s in SOURCES if s in set(sources)]  # canonical order


# ----------------------------------------------------------------------------------------------- raw readers
def parse_dx(comments: Sequence[str]) -> list[str]:
    """The SNOMED-CT codes of a header's ``Dx:`` comment, in order, without repeats or empty fields."""
    for c in comments:
        text = str(c).strip().lstrip("#").strip()
        if text.lower().startswith("dx:"):
            codes = [t.strip() for t in text[3:].split(",")]
            return list(dict.fromkeys(t for t in codes if t))
    return []


def read_header_dx(hea: str | os.PathLike) -> list[str]:
    """The ``# Dx:`` codes of a header file, read as text (no signal)."""
    try:
        lines = Path(hea).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise DataError(f"{hea}: header unreadable ({err.strerror or err})") from None
    return parse_dx([line for line in lines if line.startswith("#")])


def read_record(path: str | os.PathLike) -> tuple[np.ndarray, float, list[str]]:
    """``(signal, fs, dx_codes)`` of one record (path without suffix): float32 millivolts (12, n) in the standard
    lead order, the header's sampling rate, the ``# Dx:`` SNOMED-CT codes. A bad record (missing or unreadable
    files, not 12 leads, a ``val`` array whose shape disagrees with the header, missing samples) raises DataError
    naming the file."""
    signal, header = read_wfdb(path)
    if not header.fs or float(header.fs) <= 0:
        raise DataError(f"{path}.hea: no sampling rate in the header")
    return signal, float(header.fs), parse_dx(header.comments or [])


def resample_crop(signal: np.ndarray, fs: float, target_fs: int, seconds: float) -> np.ndarray:
    """``signal`` (leads, n) at ``fs`` -> (leads, round(target_fs x seconds)) float32 at ``target_fs``:
    ``scipy.signal.resample_poly`` by the exact ratio ``target_fs / fs``, then the first samples are kept (longer
    records) or zeros appended (shorter ones)."""
    from scipy.signal import resample_poly

    length = int(round(target_fs * seconds))
    ratio = Fraction(str(float(target_fs))) / Fraction(str(float(fs)))
    ratio = ratio.limit_denominator(100000)
    x = np.asarray(signal, dtype=np.float64)
    if ratio != 1:
        x = resample_poly(x, ratio.numerator, ratio.denominator, axis=1)
    out = np.zeros((x.shape[0], length), dtype=np.float32)
    n = min(length, x.shape[1])
    out[:, :n] = x[:, :n]
    return out


def _read_row(item: tuple[str, int, float]) -> np.ndarray:
    path, target_fs, seconds = item
    signal, fs, _ = read_record(path)
    return resample_crop(signal, fs, target_fs, seconds)


# ------------------------------------------------------------------------------------------ weights and classes
def read_weights(weights_csv: str | os.PathLike | None) -> tuple[list[list[str]], np.ndarray]:
    """``(classes, weights)`` of the challenge's ``weights.csv``: each class as its list of equivalent codes (the
    ``|``-joined names, in file order), and the square weight matrix (rows: labels, columns: outputs). A missing
    file, a table that is not square, row names that differ from the column names or a non-number raise
    DataError naming the file."""
    if weights_csv in (None, "", "???"):
        raise DataError(
            "dataset.weights_csv: not set; the challenge metric needs the challenge's weights.csv (from "
            "github.com/physionetchallenges/evaluation-2021): pass dataset.weights_csv=/path/weights.csv"
        )
    path = Path(weights_csv)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"{path}: weights table unreadable ({err.strerror or err})") from None
    table = [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.strip()]
    if len(table) < 2:
        raise DataError(f"{path}: empty weights table (expected a header row of class names, then one row per class)")
    cols = table[0][1:]
    rows = [r[0] for r in table[1:]]
    widths = sorted({len(r) - 1 for r in table[1:]})
    if len(rows) != len(cols) or widths != [len(cols)]:
        raise DataError(
            f"{path}: not square: {len(cols)} column names, {len(rows)} rows of "
            f"{'/'.join(map(str, widths))} values (expected C names, then C rows of C values)"
        )
    if [set(r.split("|")) for r in rows] != [set(c.split("|")) for c in cols]:
        i = next(i for i, (r, c) in enumerate(zip(rows, cols)) if set(r.split("|")) != set(c.split("|")))
        raise DataError(
            f"{path}, line {i + 2}: row {rows[i]!r} does not match column {i + 1} {cols[i]!r} (the rows "
            "must name the classes of the columns, in the same order)"
        )
    try:
        weights = np.array([[float(v) for v in r[1:]] for r in table[1:]], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path}: a weight is not a number ({err})") from None
    return [c.split("|") for c in cols], weights


def scored_classes(weights_csv: str | os.PathLike) -> list[list[str]]:
    """The codes of each scored class, in ``weights.csv`` order (26 classes for the 2021 challenge)."""
    return read_weights(weights_csv)[0]


def class_names(classes: Sequence[Sequence[str]]) -> list[str]:
    """``|``-joined names, as ``weights.csv`` writes them."""
    return ["|".join(c) for c in classes]


def _classes_from(value: Any) -> list[list[str]]:
    value = plain(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(
            f"dataset.classes: {value!r}; allowed: a list of SNOMED-CT codes, equivalent codes joined "
            "with '|' (weights.csv's column names)"
        )
    out = [[c.strip() for c in str(v).split("|") if c.strip()] for v in value]
    seen: dict[str, int] = {}
    for i, codes in enumerate(out):
        for c in codes:
            if c in seen:
                raise DataError(f"dataset.classes: code {c} is in classes {seen[c] + 1} and {i + 1}")
            seen[c] = i
    return out


def labels_from_dx(dx: Sequence[Sequence[str]], classes: Sequence[Sequence[str]]) -> np.ndarray:
    """(N, C) uint8: record i is positive for class j when one of its codes is one of the class's codes."""
    index = {code: j for j, codes in enumerate(classes) for code in codes}
    y = np.zeros((len(dx), len(classes)), dtype=np.uint8)
    for i, codes in enumerate(dx):
        for c in codes:
            j = index.get(str(c))
            if j is not None:
                y[i, j] = 1
    return y


# -------------------------------------------------------------------------------------------- the challenge score
def _union_confusion(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A[j, k] = sum over records with label j and output k of 1 / |labels U outputs| (at least 1) of the record."""
    norm = np.maximum((labels | outputs).sum(axis=1), 1).astype(np.float64)
    return (labels.astype(np.float64) / norm[:, None]).T @ outputs.astype(np.float64)


def challenge_score(
    labels: np.ndarray,
    outputs_binary: np.ndarray,
    weights: np.ndarray,
    classes: Sequence[Any],
    normal_class: str = NORMAL_CLASS,
) -> float:
    """The 2021 challenge metric: ``(observed - inactive) / (correct - inactive)``, each the sum of ``weights``
    times a multi-label confusion matrix whose entry (label j, output k) adds, for every record with label j and
    output k, 1 / (number of classes in the union of the record's labels and outputs); ``observed`` for the
    outputs, ``correct`` for outputs equal to the labels, ``inactive`` for outputs of only the normal class. 0 when
    correct equals inactive. ``classes``: the C classes in the columns' order (a class is a code, a ``|``-joined
    name or a collection of codes); the one holding ``normal_class`` is the normal class."""
    y = np.asarray(labels).astype(bool)
    out = np.asarray(outputs_binary).astype(bool)
    w = np.asarray(weights, dtype=np.float64)
    if y.shape != out.shape or y.ndim != 2 or w.shape != (y.shape[1], y.shape[1]) or len(classes) != y.shape[1]:
        raise ValueError(
            f"challenge_score: labels {y.shape}, outputs {out.shape}, weights {w.shape} and "
            f"{len(classes)} classes do not agree"
        )
    sets = [set(c.split("|")) if isinstance(c, str) else set(map(str, c)) for c in classes]
    normal = [j for j, s in enumerate(sets) if str(normal_class) in s]
    if not normal:
        raise ValueError(f"challenge_score: the normal class {normal_class} is not among the classes")
    inactive_out = np.zeros_like(y)
    inactive_out[:, normal[0]] = True
    observed = np.nansum(w * _union_confusion(y, out))
    correct = np.nansum(w * _union_confusion(y, y))
    inactive = np.nansum(w * _union_confusion(y, inactive_out))
    if correct == inactive:
        return 0.0
    return float((observed - inactive) / (correct - inactive))


class ChallengeScore:
    """The challenge metric as an extra metric: ``ChallengeScore(weights_csv, threshold)(y_true, y_score,
    class_names) -> float``, outputs ``y_score >= threshold``. The weights are reordered to ``class_names`` (names
    as ``weights.csv`` writes them, or single codes); a class of the run that is not a scored class, or a scored
    class the run lacks, is a DataError naming both lists. A missing ``weights_csv`` is a one-line error at
    construction, before any training."""

    def __init__(self, weights_csv: str | os.PathLike | None, threshold: float = 0.5, normal_class: str = NORMAL_CLASS):
        self.weights_csv = None if weights_csv in (None, "", "???") else str(weights_csv)
        self.classes, self.weights = read_weights(weights_csv)
        self.threshold = float(threshold)
        self.normal_class = str(normal_class)
        if not any(self.normal_class in c for c in self.classes):
            raise DataError(f"{self.weights_csv}: the normal class {self.normal_class} is not a scored class")

    def _order(self, names: Sequence[str]) -> np.ndarray:
        wanted = [frozenset(str(n).split("|")) for n in names]
        have = [frozenset(c) for c in self.classes]
        if sorted(map(sorted, wanted)) != sorted(map(sorted, have)):
            raise DataError(
                f"challenge_score: the run's classes {list(names)} are not the scored classes of "
                f"{self.weights_csv} ({class_names(self.classes)})"
            )
        return np.array([have.index(s) for s in wanted])

    def __call__(self, y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str]) -> float:
        order = self._order(class_names)
        w = self.weights[np.ix_(order, order)]
        outputs = np.asarray(y_score) >= self.threshold
        return challenge_score(
            np.asarray(y_true) > 0.5, outputs, w, [self.classes[i] for i in order], self.normal_class
        )


# ------------------------------------------------------------------------------------------------- selection
def find_headers(root: str | os.PathLike) -> dict[str, Path]:
    """Record name -> its ``.hea`` path, for every header under ``root`` (any depth); a name found twice is a
    DataError naming both files."""
    root = Path(root)
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".hea"):
                name = f[:-4]
                path = Path(folder) / f
                if name in found:
                    raise DataError(f"{path}: record {name} also found at {found[name]}")
                found[name] = path
    return found


def read_patients(root: Path, patients_csv: str | None) -> dict[str, str]:
    if patients_csv in (None, "", "???"):
        return {}
    path = Path(patients_csv)
    path = path if path.is_absolute() else root / path
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"record", "patient"} <= set(reader.fieldnames):
                raise DataError(f"{path}: columns record and patient expected, found {reader.fieldnames}")
            return {row["record"].strip(): row["patient"].strip() for row in reader if row["record"].strip()}
    except OSError as err:
        raise DataError(f"dataset.patients_csv: {path} unreadable ({err.strerror or err})") from None


class Selection:
    """The records a config selects, with their labels and what was left out."""

    def __init__(self, names, paths, sources, dx, y, counts, header_digest):
        self.names, self.paths, self.sources, self.dx, self.y = names, paths, sources, dx, y
        self.counts, self.header_digest = counts, header_digest


def select_records(root: str | os.PathLike, sources: Any, classes: Any, no_scored_label: str = "keep") -> Selection:
    """Every record under ``root`` of the chosen ``sources``, labelled over ``classes`` (reads headers only)."""
    root = Path(root)
    chosen = set(check_sources(sources))
    cls = _classes_from(classes)
    if no_scored_label not in NO_SCORED_LABEL:
        raise DataError(f"dataset.no_scored_label: {no_scored_label!r}; allowed: {', '.join(NO_SCORED_LABEL)}")
    headers = find_headers(root)
    if not headers:
        raise DataError(f"{root}: no .hea header found (dataset.root must hold the challenge's training folders)")
    digest = hashlib.sha256()
    names, paths, srcs, dxs = [], [], [], []
    per_source: dict[str, int] = {}
    for name in sorted(headers):
        src = source_of(name)
        if src not in chosen:
            continue
        hea = headers[name]
        raw = hea.read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(raw).digest())
        dx = parse_dx([line for line in raw.decode("utf-8", "replace").splitlines() if line.startswith("#")])
        names.append(name)
        paths.append(hea.with_suffix(""))
        srcs.append(src)
        dxs.append(dx)
        per_source[src] = per_source.get(src, 0) + 1
    y = labels_from_dx(dxs, cls)
    none = ~y.any(axis=1)
    counts = {
        "found": len(headers),
        "in_sources": len(names),
        "per_source": per_source,
        "no_scored_label": int(none.sum()),
        "no_scored_label_rule": no_scored_label,
    }
    if no_scored_label == "drop" and none.any():
        keep = np.flatnonzero(~none)
        names, paths, srcs, dxs = ([v[i] for i in keep] for v in (names, paths, srcs, dxs))
        y = y[keep]
    counts["records"] = len(names)
    counts["per_class"] = {n: int(c) for n, c in zip(class_names(cls), y.sum(axis=0))}
    return Selection(names, paths, srcs, dxs, y, counts, digest.hexdigest())


def group_split(groups: Sequence[Any], fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """A seeded random train/val/test split of records that keeps each group (patient) on one side: the groups
    are shuffled, then taken in that order into train until it holds round(f_train x N) records, then into val
    until round((f_train + f_val) x N), the rest into test."""
    fr = np.asarray(plain(fractions), dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise DataError(f"dataset.split_fractions: {list(fr)}; allowed: three non-negative numbers (train, val, test)")
    fr = fr / fr.sum()
    groups = np.asarray([str(g) for g in groups])
    unique, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    perm = np.random.default_rng(int(seed)).permutation(len(unique))
    n = len(groups)
    bounds = np.round(np.cumsum(fr)[:2] * n)
    cum = np.cumsum(sizes[perm])
    part_of_group = np.empty(len(unique), dtype=np.int64)
    # a group goes to the first split whose bound its first record falls before
    starts = cum - sizes[perm]
    part_of_group[perm] = np.searchsorted(bounds, starts, side="right")
    part = part_of_group[inverse]
    return {name: np.flatnonzero(part == i) for i, name in enumerate(SPLITS)}


# ------------------------------------------------------------------------------------------------ the cache
def cache_config(sources: Any, classes: Any, fs: int, seconds: float, no_scored_label: str) -> dict[str, Any]:
    return {
        "dataset": NAME,
        "sources": check_sources(sources),
        "classes": class_names(_classes_from(classes)),
        "fs": int(fs),
        "seconds": float(seconds),
        "no_scored_label": str(no_scored_label),
        "leads": list(LEADS),
        "unit": "mV",
        "resample": "scipy.signal.resample_poly; first fs*seconds samples kept, zeros appended",
    }


def cache_file(cache_dir: str | os.PathLike, cache_name: str, config: dict[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    return Path(cache_dir) / f"{cache_name}_{digest}.h5"


def source_fingerprint(root: str | os.PathLike, config: dict[str, Any], sel: Selection) -> Fingerprint:
    """Content identity: the selected headers' bytes (their digest enters the settings: the labels live there),
    the ``.hea`` / ``.mat`` paths relative to ``root`` with their sizes, and the config."""
    files = []
    for p in sel.paths:
        files += [Path(f"{p}.hea"), Path(f"{p}.mat")]
    return fingerprint(root, [], files, {**config, "headers_sha256": sel.header_digest})


def _check_fs(fs: Any, seconds: Any) -> tuple[int, float]:
    try:
        fs_i, sec = int(fs), float(seconds)
    except (TypeError, ValueError):
        raise DataError(
            f"dataset.fs / dataset.seconds: {fs!r} / {seconds!r}; allowed: a positive integer rate in Hz "
            "and a positive duration in seconds"
        ) from None
    if fs_i <= 0 or fs_i != float(fs) or sec <= 0 or int(round(fs_i * sec)) < 1:
        raise DataError(
            f"dataset.fs / dataset.seconds: {fs!r} / {seconds!r}; allowed: a positive integer rate in Hz "
            "and a positive duration in seconds"
        )
    return fs_i, sec


@dataclass
class CinC2021(CachedSource):
    """The challenge data from its prepared cache (see :class:`CachedSource`): x a :class:`LazyH5Array` of float32
    (N, 12, fs x seconds) mV, y over the scored ``classes``, splits a seeded patient-free 7:1:2.

    The cache ``<cache_dir>/<cache_name>_<hash>.h5`` holds every selected record decoded, resampled and cropped or
    padded (y over ``classes``, record names, sources); it is identified by :func:`source_fingerprint` (the selected
    headers' bytes, the record files' paths and sizes). A bad record is a DataError naming it, or left out and
    listed in the manifest under ``on_bad_record="skip"``."""

    NAME: ClassVar[str] = NAME

    sources: Any = SOURCES
    classes: Any = ()
    fs: int = 500
    seconds: float = 10.0
    no_scored_label: str = "keep"
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2)
    split_seed: int = 0
    patients_csv: str | None = None
    cache_name: str = NAME

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fs, self.seconds = _check_fs(self.fs, self.seconds)

    def cache_config(self) -> dict[str, Any]:
        return cache_config(self.sources, self.classes, self.fs, self.seconds, self.no_scored_label)

    def cache_path(self) -> Path:
        return cache_file(self.cache_dir, self.cache_name, self.cache_config())

    def selection(self) -> Selection:
        return select_records(self.root, self.sources, self.classes, self.no_scored_label)

    def fingerprint(self, sel: Selection | None = None) -> Fingerprint:
        return source_fingerprint(self.root, self.cache_config(), self.selection() if sel is None else sel)

    def contents(self) -> CacheContents:
        root, sel = Path(self.root), self.selection()
        config = self.cache_config()
        if not sel.names:
            raise DataError(f"{root}: no record of the sources {config['sources']}")
        return CacheContents(
            items=[(str(p), self.fs, self.seconds) for p in sel.paths],
            item_names=[str(p) for p in sel.paths],
            reader=_read_row,
            row_shape=(len(LEADS), int(round(self.fs * self.seconds))),
            dtype=np.float32,
            row_data={"y": sel.y, "name": np.array(sel.names, dtype=str), "source": np.array(sel.sources, dtype=str)},
            config=config,
            fingerprint=self.fingerprint(sel),
            source={"root": str(root.resolve()), "selection": sel.counts},
        )

    def patients(self) -> dict[str, str]:
        """Record name -> patient, from ``patients_csv`` (relative to ``root``, or absolute without one)."""
        if self.has_root:
            return read_patients(Path(self.root), self.patients_csv)
        if self.patients_csv in (None, "", "???"):
            return {}
        if not Path(str(self.patients_csv)).is_absolute():
            raise DataError(f"dataset.patients_csv: {self.patients_csv} is relative but dataset.root is not set")
        return read_patients(Path("."), self.patients_csv)

    def arrays(self, path: Path, manifest: dict) -> LabeledArrays:
        rows = read_row_data(path, ["y", "name", "source"])
        patients = self.patients()
        groups = [f"patient:{patients[n]}" if n in patients else f"record:{n}" for n in rows["name"]]
        splits = group_split(groups, self.split_fractions, self.split_seed)
        y = rows["y"].astype(np.float32)
        config = self.cache_config()
        return LabeledArrays(
            x=LazyH5Array(path, "x"),
            y=y,
            class_names=list(config["classes"]),
            splits=splits,
            info={
                "dataset": NAME,
                "cache": str(path),
                "records": int(len(y)),
                "sources": {s: int((rows["source"] == s).sum()) for s in config["sources"]},
                "no_scored_label": int((y.sum(axis=1) == 0).sum()),
                "patients_known": int(sum(n in patients for n in rows["name"])),
                "split_sizes": {k: int(len(v)) for k, v in splits.items()},
                "split_seed": int(self.split_seed),
                "skipped": len(manifest.get("skipped", [])),
                "selection": (manifest.get("source") or {}).get("selection"),
            },
        )


load = CinC2021.load  # load(root, cache_dir, sources=SOURCES, classes=(), fs=500, seconds=10.0, ...)
prepare = CinC2021.prepare  # prepare(root, cache_dir, sources=SOURCES, classes=(), fs=500, seconds=10.0, ...)
