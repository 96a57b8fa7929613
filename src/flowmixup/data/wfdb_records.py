"""Reading 12-lead WFDB records (PTB-XL's ``.hea`` + ``.dat``, the PhysioNet/CinC challenges' ``.hea`` + ``.mat``)
into float32 millivolts in the standard lead order, with one-line errors for the records a release can hold.

A record is bad (a :class:`DataError` naming the file) when: its header is missing or unreadable; the header does
not declare exactly the 12 standard leads (any order, any case: ``AVR`` and ``aVR`` are the same lead); the signal
file is missing; the signal file holds another number of samples than the header's leads x length (a truncated
file, or a header whose lead count or length disagrees with the signal); a sample is the WFDB "invalid" value or
not finite (NaN-filled); the units are neither mV nor uV.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from flowmixup.data.base import DataError

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_KEY = {lead.lower(): i for i, lead in enumerate(LEADS)}
# bytes per sample of the WFDB storage formats a 12-lead ECG release uses
_BYTES_PER_SAMPLE = {"8": 1.0, "16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5, "24": 3.0, "32": 4.0}
_INVALID_16 = -32768  # WFDB's "no sample" value of the 16-bit formats
_UNIT_SCALE = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3}


def header_path(record: str | os.PathLike) -> Path:
    """``<record>.hea`` for a record path without suffix."""
    return Path(f"{os.fspath(record)}.hea")


def read_header(record: str | os.PathLike):
    """The parsed WFDB header (``wfdb.Record`` without samples) of ``record`` (a path without suffix)."""
    import wfdb

    hea = header_path(record)
    if not hea.is_file():
        raise DataError(f"{hea}: header not found (expected a WFDB record {Path(record).name}.hea + its signal file)")
    try:
        return wfdb.rdheader(os.fspath(record))
    except Exception as err:  # wfdb raises bare ValueError/IndexError/... on a malformed header
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{hea}: unreadable WFDB header ({first})") from None


def lead_order(header, hea: Path) -> np.ndarray:
    """For each standard lead (:data:`LEADS` order), its row in the record's signals."""
    names = list(header.sig_name or [])
    if header.n_sig != len(LEADS) or len(names) != len(LEADS):
        raise DataError(
            f"{hea}: the header declares {header.n_sig} signals ({', '.join(names)}), expected the 12 standard leads"
        )
    keys = [_LEAD_KEY.get(str(n).strip().lower()) for n in names]
    missing = [LEADS[i] for i in range(len(LEADS)) if i not in keys]
    if missing:
        raise DataError(f"{hea}: leads {missing} missing (the header names {names}; expected {list(LEADS)})")
    order = np.empty(len(LEADS), dtype=np.int64)
    for row, key in enumerate(keys):
        order[key] = row
    return order


def _unit_scale(header, hea: Path) -> np.ndarray:
    units = [str(u or "mV").strip().lower() for u in (header.units or ["mV"] * header.n_sig)]
    bad = sorted({u for u in units if u not in _UNIT_SCALE})
    if bad:
        raise DataError(f"{hea}: signal units {bad}, expected mV or uV")
    return np.array([_UNIT_SCALE[u] for u in units])


def _signal_file(record: str | os.PathLike, header, hea: Path) -> Path:
    files = sorted(set(header.file_name or []))
    if len(files) != 1:
        raise DataError(f"{hea}: the signals are spread over {files}; expected one signal file per record")
    path = Path(os.fspath(record)).parent / files[0]
    if not path.is_file():
        raise DataError(f"{path}: signal file not found (named by {hea})")
    return path


def _check_dat_size(path: Path, header, hea: Path) -> None:
    fmts = sorted(set(str(f) for f in header.fmt))
    if len(fmts) != 1 or fmts[0] not in _BYTES_PER_SAMPLE:
        return  # an unusual layout: wfdb's own checks apply
    offsets = set(int(b or 0) for b in (header.byte_offset or [0]))
    offset = offsets.pop() if len(offsets) == 1 else 0
    expected = offset + int(np.ceil(header.n_sig * header.sig_len * _BYTES_PER_SAMPLE[fmts[0]]))
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DataError(
            f"{path}: {size} bytes, but {hea.name} declares {header.n_sig} leads x {header.sig_len} samples of format "
            f"{fmts[0]} ({expected} bytes): the signal file is {what} (lead count or length disagree)"
        )


def _finite(signal: np.ndarray, path: Path) -> np.ndarray:
    bad = ~np.isfinite(signal)
    if bad.any():
        lead = LEADS[int(np.flatnonzero(bad.any(axis=1))[0])]
        raise DataError(f"{path}: {int(bad.sum())} samples are missing or not finite (first in lead {lead})")
    return signal


def read_wfdb(record: str | os.PathLike) -> tuple[np.ndarray, Any]:
    """``(signal, header)``: the record ``record`` (a path without suffix) as float32 millivolts of shape
    (12, n) in :data:`LEADS` order, and its parsed header (``fs``, ``sig_len``, ``comments``...).

    ``.mat`` signal files (the challenges' packaging: a MATLAB ``val`` array of digital values, leads x samples) are
    read with scipy and converted as WFDB does, ``(digital - baseline) / gain``; other signal files with
    ``wfdb.rdsamp``. Bad records raise DataError (see the module docstring)."""
    hea = header_path(record)
    header = read_header(record)
    order = lead_order(header, hea)
    scale = _unit_scale(header, hea)
    path = _signal_file(record, header, hea)
    if header.sig_len is None or header.sig_len <= 0:
        raise DataError(f"{hea}: the header gives no signal length")
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            val = loadmat(os.fspath(path))["val"]
        except Exception as err:  # truncated or not a MATLAB file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"{path}: unreadable MATLAB signal file ({first})") from None
        if val.ndim != 2 or val.shape != (header.n_sig, header.sig_len):
            raise DataError(
                f"{path}: the signal array 'val' has shape {tuple(val.shape)}, but {hea.name} declares "
                f"{header.n_sig} leads x {header.sig_len} samples (lead count or length disagree)"
            )
        digital = val.astype(np.float64)
        if val.dtype.kind == "i" and val.dtype.itemsize == 2:
            digital[val == _INVALID_16] = np.nan
        gain = np.array([g if g else 200.0 for g in header.adc_gain], dtype=np.float64)[:, None]
        base = np.array([b or 0 for b in header.baseline], dtype=np.float64)[:, None]
        physical = (digital - base) / gain
    else:
        import wfdb

        _check_dat_size(path, header, hea)
        try:
            p_signal, _ = wfdb.rdsamp(os.fspath(record))
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"{path}: unreadable signal file ({first})") from None
        physical = np.asarray(p_signal, dtype=np.float64).T
    physical = physical * scale[:, None]
    signal = physical[order].astype(np.float32)
    return _finite(signal, path), header
