"""Plot example records of the embedded synth_ecg dataset, one per chosen label, leads II and V1.

python scripts/plot_synth_ecg.py [--out outputs/synth_ecg_examples.png] [--fs 250] [--duration 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flowmixup.data.synth_ecg import CLASSES, LEADS, sample_labels, synthesize_record

SHOWN = [
    "sinus_rhythm",
    "atrial_fibrillation",
    "sinus_tachycardia",
    "left_bundle_branch_block",
    "premature_ventricular_contraction",
    "st_elevation",
    "t_wave_inversion",
    "low_qrs_voltage",
]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/synth_ecg_examples.png")
    ap.add_argument("--fs", type=float, default=250.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    labels = sample_labels(4000, rng)
    fig = Figure(figsize=(12, 2.0 * len(SHOWN)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(SHOWN), 1, sharex=True)
    t = np.arange(int(args.fs * args.duration)) / args.fs
    for ax, name in zip(axes, SHOWN):
        c = CLASSES.index(name)
        candidates = np.flatnonzero(labels[:, c])
        row = labels[candidates[np.argmin(labels[candidates].sum(axis=1))]]  # the plainest record with this label
        x = synthesize_record(row, args.fs, args.duration, rng)
        for lead, offset in (("II", 0.0), ("V1", -2.0)):
            ax.plot(t, x[LEADS.index(lead)] + offset, lw=0.8, label=lead)
        ax.set_title(", ".join(CLASSES[i] for i in np.flatnonzero(row)), fontsize=9, loc="left")
        ax.set_ylabel("mV")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
