"""``synth_ecg``: a seeded generator of 8-lead ECG-like records with 15 co-occurring abnormality labels.

It exists so that a first run needs no download, and so that the regularizers meet the structure they are meant
for: multi-label targets whose classes are partly exclusive, partly correlated, partly independent, with
prevalences from common to rare. It is a teaching set, not a physiological simulator.

Signal model
------------
Leads I, II, V1..V6 (the 8 independent leads of the Tianchi data), in millivolts. A record is a sum of Gaussian
waves (P, Q, R, S, an ST-segment bump and T) placed at each beat time, with a per-lead amplitude vector for each
wave; beat times follow the rhythm's RR process. On top: a per-record gain (0.8-1.2) and per-lead gain jitter,
baseline wander (0.15-0.4 Hz, 0.05-0.15 mV), white noise (0.02-0.05 mV) and a random start phase.

Labels (prevalence before interactions) and how each changes the signal
-----------------------------------------------------------------------
Rhythm, exactly one per record (mutually exclusive):
  sinus_rhythm (~60%)            HR 60-100 bpm, RR jitter 3%
  sinus_tachycardia (~13%)       HR 105-150 bpm
  sinus_bradycardia (~13%)       HR 40-55 bpm
  atrial_fibrillation (~14%)     no P waves, irregular RR (x0.6-1.4 of a 70-130 bpm mean), 5-7 Hz f-waves
Conduction:
  first_degree_av_block          PR 0.26-0.34 s instead of 0.12-0.20 s; never with AF, 3x likelier with bradycardia
  right_bundle_branch_block      QRS ~130 ms, late R' in V1-V2, broad S in I, V5, V6 (8%)
  left_bundle_branch_block       QRS ~140 ms, deep broad S in V1-V3, broad notched R in I, V5, V6 with discordant
                                 (inverted) T there (4%); exclusive with RBBB
Ectopy:
  premature_ventricular_contraction  1-2 early (coupling 0.55-0.7 RR) wide beats without P, T opposite to QRS,
                                 compensatory pause (10%, 20% with AF)
  premature_atrial_contraction   1-2 early (0.65-0.8 RR) narrow beats with an inverted P (8%, never with AF)
Repolarisation:
  st_elevation                   +0.15-0.3 mV ST in II, V2-V5 (5%)
  st_depression                  -0.1 to -0.2 mV ST in I, II, V4-V6 (8%, 50% with LVH); exclusive with st_elevation
  t_wave_inversion               T x(-0.4 to -1) in I, V4-V6 (8%, 55% with ST depression)
Voltage and axis:
  low_qrs_voltage                QRS x0.3-0.45 in all leads (7%), independent of everything else
  left_ventricular_hypertrophy   R in V5-V6 and S in V1-V2 x1.8-2.4 (6%); exclusive with low voltage
  left_axis_deviation            QRS in II turns predominantly negative (6%, 40% with LBBB)

So rhythm classes are mutually exclusive, LVH -> ST depression -> T inversion and LBBB -> left axis and
AF -> PVC are correlated chains, and low voltage is independent: the kinds of structure the paper's
"correlation conflicts" are about.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..io import atomic_path
from .base import LabeledArrays, random_split_indices

CLASSES = [
    "sinus_rhythm",
    "sinus_tachycardia",
    "sinus_bradycardia",
    "atrial_fibrillation",
    "first_degree_av_block",
    "right_bundle_branch_block",
    "left_bundle_branch_block",
    "premature_ventricular_contraction",
    "premature_atrial_contraction",
    "st_elevation",
    "st_depression",
    "t_wave_inversion",
    "low_qrs_voltage",
    "left_ventricular_hypertrophy",
    "left_axis_deviation",
]
LEADS = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
_C = {name: i for i, name in enumerate(CLASSES)}

# per-lead amplitudes (mV) of the normal beat's waves: I, II, V1, V2, V3, V4, V5, V6
_P = np.array([0.10, 0.15, 0.05, 0.08, 0.08, 0.10, 0.10, 0.08])
_Q = np.array([-0.05, -0.08, 0.0, 0.0, -0.02, -0.05, -0.08, -0.08])
_R = np.array([0.60, 1.00, 0.25, 0.50, 0.80, 1.20, 1.30, 1.10])
_S = np.array([-0.10, -0.20, -1.00, -1.20, -0.80, -0.40, -0.20, -0.10])
_T = np.array([0.20, 0.30, 0.05, 0.40, 0.40, 0.35, 0.30, 0.25])
_LEADSET = {
    name: np.array([lead in group for lead in LEADS], dtype=float)
    for name, group in {
        "ste": ("II", "V2", "V3", "V4", "V5"),
        "std": ("I", "II", "V4", "V5", "V6"),
        "twi": ("I", "V4", "V5", "V6"),
        "left": ("I", "V5", "V6"),
        "right": ("V1", "V2"),
        "v1v3": ("V1", "V2", "V3"),
    }.items()
}


def sample_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw the n x 15 label matrix with the dependencies described in the module docstring."""
    y = np.zeros((n, len(CLASSES)), dtype=np.uint8)
    u = lambda: rng.random(n)  # noqa: E731
    rhythm = rng.choice(4, size=n, p=[0.60, 0.13, 0.13, 0.14])
    y[np.arange(n), rhythm] = 1
    af = rhythm == 3
    brady = rhythm == 2
    y[:, _C["first_degree_av_block"]] = (~af) & (u() < np.where(brady, 0.18, 0.06))
    rbbb = u() < 0.08
    lbbb = (~rbbb) & (u() < 0.045)
    y[:, _C["right_bundle_branch_block"]] = rbbb
    y[:, _C["left_bundle_branch_block"]] = lbbb
    y[:, _C["premature_ventricular_contraction"]] = u() < np.where(af, 0.20, 0.10)
    y[:, _C["premature_atrial_contraction"]] = (~af) & (u() < 0.08)
    low = u() < 0.07
    lvh = (~low) & (u() < 0.065)
    y[:, _C["low_qrs_voltage"]] = low
    y[:, _C["left_ventricular_hypertrophy"]] = lvh
    std = u() < np.where(lvh, 0.50, 0.07)
    ste = (~std) & (u() < 0.05)
    y[:, _C["st_depression"]] = std
    y[:, _C["st_elevation"]] = ste
    y[:, _C["t_wave_inversion"]] = u() < np.where(std, 0.55, 0.06)
    y[:, _C["left_axis_deviation"]] = u() < np.where(lbbb, 0.40, 0.05)
    return y


def _beat_times(labels: np.ndarray, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Beat times (s) and beat kinds (0 normal, 1 PVC, 2 PAC) for one record."""
    if labels[_C["sinus_tachycardia"]]:
        hr = rng.uniform(105, 150)
    elif labels[_C["sinus_bradycardia"]]:
        hr = rng.uniform(40, 55)
    elif labels[_C["atrial_fibrillation"]]:
        hr = rng.uniform(70, 130)
    else:
        hr = rng.uniform(60, 100)
    rr = 60.0 / hr
    af = bool(labels[_C["atrial_fibrillation"]])
    n_beats = int(duration / (0.6 * rr)) + 4
    rrs = rr * (rng.uniform(0.6, 1.4, n_beats) if af else 1.0 + 0.03 * rng.standard_normal(n_beats))
    kinds = np.zeros(n_beats, dtype=int)
    for kind, cls, lo, hi, pause in (
        (1, "premature_ventricular_contraction", 0.55, 0.7, True),
        (2, "premature_atrial_contraction", 0.65, 0.8, False),
    ):
        if labels[_C[cls]]:
            for idx in rng.choice(np.arange(2, n_beats - 2), size=rng.integers(1, 3), replace=False):
                if kinds[idx] == 0:
                    kinds[idx] = kind
                    coupling = rng.uniform(lo, hi)
                    rrs[idx - 1] *= coupling  # the interval BEFORE the ectopic beat is short
                    if pause:
                        rrs[idx] *= 2.0 - coupling  # compensatory pause
    times = -rng.uniform(0, rr) + np.concatenate([[0.0], np.cumsum(rrs[:-1])])
    return times, kinds


@dataclass
class _Shapes:
    """The wave shapes of one record's normal beats, after its conduction, voltage and repolarisation labels."""

    qrs_scale: float
    r_amp: np.ndarray
    s_amp: np.ndarray
    t_amp: np.ndarray
    qrs_w: float
    extra: list[tuple[float, float, np.ndarray]]  # extra QRS waves: (offset from R, sigma, amplitudes)
    st: np.ndarray
    pr: float


def _shapes(has: Callable[[str], bool], rng: np.random.Generator) -> _Shapes:
    qrs_scale = 1.0
    if has("low_qrs_voltage"):
        qrs_scale = rng.uniform(0.3, 0.45)
    r_amp, s_amp, t_amp = _R.copy(), _S.copy(), _T.copy()
    if has("left_ventricular_hypertrophy"):
        k = rng.uniform(1.8, 2.4)
        r_amp[6:8] *= k
        s_amp[2:4] *= k
    if has("left_axis_deviation"):
        r_amp[1] *= 0.3
        s_amp[1] = -0.9
        r_amp[0] *= 1.3
    qrs_w = 0.012
    extra: list[tuple[float, float, np.ndarray]] = []
    if has("right_bundle_branch_block"):
        qrs_w = 0.02
        extra.append((0.06, 0.018, 0.6 * _LEADSET["right"]))
        extra.append((0.055, 0.02, -0.35 * _LEADSET["left"]))
    if has("left_bundle_branch_block"):
        qrs_w = 0.024
        extra.append((0.03, 0.03, -0.9 * _LEADSET["v1v3"]))
        extra.append((0.035, 0.02, 0.7 * _LEADSET["left"]))
        t_amp = t_amp * np.where(_LEADSET["left"] > 0, -0.8, 1.0)
    st = np.zeros(len(LEADS))
    if has("st_elevation"):
        st += rng.uniform(0.15, 0.3) * _LEADSET["ste"]
    if has("st_depression"):
        st -= rng.uniform(0.1, 0.2) * _LEADSET["std"]
    if has("t_wave_inversion"):
        t_amp = t_amp * np.where(_LEADSET["twi"] > 0, -rng.uniform(0.4, 1.0), 1.0)
    pr = rng.uniform(0.26, 0.34) if has("first_degree_av_block") else rng.uniform(0.12, 0.20)
    return _Shapes(qrs_scale, r_amp, s_amp, t_amp, qrs_w, extra, st, pr)


def _waves(times: np.ndarray, kinds: np.ndarray, sh: _Shapes, af: bool) -> tuple[list, list, list]:
    """(centres, sigmas, per-lead amplitudes) of every Gaussian wave of the record's beats."""
    centers, sigmas, amps = [], [], []

    def wave(c: float, s: float, a: np.ndarray) -> None:
        centers.append(c)
        sigmas.append(s)
        amps.append(a)

    rr_mean = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    qt = 0.30 * np.sqrt(rr_mean)
    pvc_sign = np.sign(_R + _S + 1e-9)
    for tb, kind in zip(times, kinds):
        if kind == 1:  # PVC: wide, bizarre, no P, discordant T
            wave(tb, 0.035, -0.8 * sh.qrs_scale * (_R + _S) * pvc_sign * np.array([1, 1, -1, -1, 1, 1, 1, 1]))
            wave(tb + qt, 0.07, -0.6 * pvc_sign * np.abs(_T) * 1.5)
            continue
        if not af:
            wave(tb - sh.pr, 0.025, -_P if kind == 2 else _P)
        wave(tb - 0.025, 0.010, _Q * sh.qrs_scale)
        wave(tb, sh.qrs_w, sh.r_amp * sh.qrs_scale)
        wave(tb + 0.03 + (sh.qrs_w - 0.012), sh.qrs_w, sh.s_amp * sh.qrs_scale)
        for off, sg, a in sh.extra:
            wave(tb + off, sg, a * sh.qrs_scale)
        if sh.st.any():
            wave(tb + 0.12, 0.045, sh.st)
        wave(tb + qt, 0.05, sh.t_amp)
    return centers, sigmas, amps


def synthesize_record(labels: np.ndarray, fs: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """One (8, round(fs * duration)) float32 record in mV for the label vector ``labels``."""
    has = lambda name: bool(labels[_C[name]])  # noqa: E731
    t = np.arange(int(round(fs * duration))) / fs
    times, kinds = _beat_times(labels, duration, rng)
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, len(LEADS))
    shapes = _shapes(has, rng)
    af = has("atrial_fibrillation")
    centers, sigmas, amps = _waves(times, kinds, shapes, af)
    c = np.asarray(centers)[:, None]
    s = np.asarray(sigmas)[:, None]
    basis = np.exp(-0.5 * ((t[None, :] - c) / s) ** 2)  # (K, T)
    x = np.asarray(amps).T @ basis  # (8, T)
    if af:
        f = rng.uniform(5, 7)
        fw = rng.uniform(0.03, 0.06) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        x += np.outer(np.array([0.3, 0.6, 1.0, 0.7, 0.4, 0.3, 0.2, 0.2]), fw)
    x *= gain[:, None]
    wander_f = rng.uniform(0.15, 0.4)
    x += rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * wander_f * t + rng.uniform(0, 2 * np.pi, (len(LEADS), 1)))
    x += rng.uniform(0.02, 0.05) * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def generate(n_records: int, sampling_rate: float, duration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (x: (n, 8, T) float32 mV, y: (n, 15) uint8), deterministic for ``seed``."""
    if n_records < 10:
        raise ValueError(f"dataset.n_records must be at least 10, got {n_records}")
    if sampling_rate < 50 or duration < 2:
        raise ValueError(
            f"dataset.sampling_rate must be >= 50 Hz and dataset.duration >= 2 s, got {sampling_rate}, {duration}"
        )
    rng = np.random.default_rng(seed)
    y = sample_labels(n_records, rng)
    x = np.stack([synthesize_record(row, sampling_rate, duration, rng) for row in y])
    return x, y


def load(
    n_records: int = 4000,
    sampling_rate: float = 100.0,
    duration: float = 5.0,
    seed: int = 0,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    cache_dir: str = "data/synth_ecg",
) -> LabeledArrays:
    """Generate (once per configuration, cached as ``.npz`` under ``cache_dir``) and split the dataset."""
    params = {
        "n_records": int(n_records),
        "sampling_rate": float(sampling_rate),
        "duration": float(duration),
        "seed": int(seed),
        "version": 1,
    }
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cache_dir) / f"synth_ecg_{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            x, y = data["x"], data["y"]
    else:
        x, y = generate(n_records, sampling_rate, duration, seed)
        from .cache import DATA_DIR_HINT

        with atomic_path(path, suffix=".npz", what="writing the generated dataset", todo=DATA_DIR_HINT) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, y=y, params=json.dumps(params))
    return LabeledArrays(
        x=x,
        y=y,
        class_names=list(CLASSES),
        splits=random_split_indices(len(y), split, split_seed),
        info={"cache": str(path), "sampling_rate": float(sampling_rate), "duration": float(duration)},
    )
