"""GENERATED records in the two wfdb-based formats, shared by the data, journey and reproduce tests.

- PTB-XL (:func:`write_record`, :func:`build_ptbxl_tree`): WFDB format 16 records in the release's layout, under the
  REAL statements and rows of ../shared/data/ptbxl;
- PhysioNet/CinC 2021 (:func:`write_challenge_record`): the challenge's packaging, a MATLAB v4 ``.mat`` and its
  WFDB header.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

PTBXL_SLICE = "ptbxl_database.head520.csv"
# the leads as PTB-XL's headers name them
PTBXL_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_record(path_without_suffix: Path, fs: int, seconds: int = 10, seed: int = 0, n_leads: int = 12) -> np.ndarray:
    """A GENERATED record in PTB-XL's format (WFDB format 16, gain 1000/mV): a 1 Hz beat-like wave plus noise."""
    import wfdb

    rng = np.random.default_rng(seed)
    t = np.arange(fs * seconds) / fs
    beat = np.exp(-(((t % 1.0) - 0.3) ** 2) / 0.0008)
    sig = beat[:, None] * rng.uniform(0.3, 1.5, n_leads)[None] + 0.05 * rng.standard_normal((len(t), n_leads))
    sig = np.round(sig * 1000) / 1000  # exact at gain 1000
    path_without_suffix.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        path_without_suffix.name,
        fs=fs,
        units=["mV"] * n_leads,
        sig_name=PTBXL_LEADS[:n_leads],
        p_signal=sig,
        fmt=["16"] * n_leads,
        adc_gain=[1000.0] * n_leads,
        baseline=[0] * n_leads,
        write_dir=str(path_without_suffix.parent),
    )
    return sig


def build_ptbxl_tree(shared: Path, root: Path, n: int, rates=(100,)) -> pd.DataFrame:
    """A PTB-XL root in the release's layout: the REAL scp_statements.csv, the first ``n`` REAL rows of the slice
    (real scp_codes, patients and folds; their columns as the release writes them) as ptbxl_database.csv, and a
    GENERATED record at each row's filename_lr (and filename_hr for 500 Hz)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_bytes((shared / "ptbxl" / "scp_statements.csv").read_bytes())
    df = pd.read_csv(shared / "ptbxl" / PTBXL_SLICE, dtype=str, keep_default_na=False).iloc[:n]
    df.to_csv(root / "ptbxl_database.csv", index=False)
    for i, row in enumerate(df.itertuples()):
        if 100 in rates:
            write_record(root / row.filename_lr, 100, seed=i)
        if 500 in rates:
            write_record(root / row.filename_hr, 500, seed=i)
    return df


CINC_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_challenge_record(folder: Path, name: str, fs: int, n: int, dx: list[str], seed: int = 0) -> np.ndarray:
    """A GENERATED record in the challenge's packaging: a MATLAB v4 ``val`` int16 array (leads x samples) and a
    WFDB header naming it (format 16, 24-byte offset, gain 1000/mV), with Age/Sex/Dx/Rx/Hx/Sx comments."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    wave = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(200, 900, 12)[:, None]
    val = np.round(wave + 20 * rng.standard_normal((12, n))).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / f"{name}.mat", {"val": val}, format="4")
    lines = [f"{name} 12 {fs} {n}"]
    for lead, row in zip(CINC_LEADS, val):
        checksum = int(row.astype(np.int64).sum()) & 0xFFFF
        checksum = checksum - 65536 if checksum >= 32768 else checksum
        lines.append(f"{name}.mat 16x1+24 1000.0(0)/mV 16 0 {int(row[0])} {checksum} 0 {lead}")
    lines += ["# Age: 60", "# Sex: Female", f"# Dx: {','.join(dx)}", "# Rx: Unknown", "# Hx: Unknown", "# Sx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return val.astype(np.float64) / 1000.0
