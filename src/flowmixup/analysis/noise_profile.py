"""The measured label noise of ChestX-ray14: its NLP-mined labels against radiologists' labels of the same images.

For each class, on the images of the expert-label release (:mod:`flowmixup.data.expert_labels`; 810 PA images of
the official test split):

- a **false positive** is an image the NIH table marks positive and the expert majority negative; ``fp_rate`` =
  false positives / expert negatives;
- a **false negative** is an image the expert majority marks positive and the NIH table negative; ``fn_rate`` =
  false negatives / expert positives;

each with its 95% Wilson interval (``*_lo``, ``*_hi``). Beside them, how well the radiologists agree with each
other (the floor of what "clean" means): each reader against the majority of the other four (positive when at least
3 of the 4 say so, negative when at most 1 does; a 2-2 tie is left out), pooled over the five readers as
``reader_agreement``, ``reader_fp_rate`` and ``reader_fn_rate`` (comparable to the NLP's rates), and Fleiss' kappa
over the five readers.

:func:`noise_profile` computes the table, :func:`profile_markdown` and :func:`profile_figure` present it;
``scripts/noise_profile.py`` writes them.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.base import DataError
from ..data.expert_labels import CITATION, ExpertLabels, nih_labels, read_expert_labels

Z95 = 1.959963984540054
COLUMNS = [
    "class",
    "images",
    "expert_positive",
    "nlp_positive",
    "false_positive",
    "false_negative",
    "fp_rate",
    "fp_rate_lo",
    "fp_rate_hi",
    "fn_rate",
    "fn_rate_lo",
    "fn_rate_hi",
    "reader_agreement",
    "reader_fp_rate",
    "reader_fn_rate",
    "fleiss_kappa",
]


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (NaN for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def fleiss_kappa(votes: np.ndarray) -> float:
    """Fleiss' kappa of binary ratings: ``votes`` (R raters, n items) of 0/1. NaN when every rating is the same."""
    votes = np.asarray(votes, dtype=np.int64)
    r, n = votes.shape
    if n == 0 or r < 2:
        return float("nan")
    yes = votes.sum(axis=0)
    counts = np.stack([r - yes, yes], axis=1)  # n x 2
    p_item = ((counts**2).sum(axis=1) - r) / (r * (r - 1))
    p_cat = counts.sum(axis=0) / (n * r)
    pe = float((p_cat**2).sum())
    if pe >= 1.0:
        return float("nan")
    return float((p_item.mean() - pe) / (1 - pe))


def reader_vs_others(readers: np.ndarray) -> dict[str, np.ndarray]:
    """Each reader against the majority of the others, pooled over readers, per class: counts of agreements,
    comparisons, reader false positives / others' negatives, reader false negatives / others' positives.

    ``readers``: (R, n, C) 0/1. The others' majority is positive when more than half of them say so, negative when
    fewer than half do; a tie (2-2 of four) is left out."""
    readers = np.asarray(readers, dtype=np.int64)
    total = readers.sum(axis=0)  # n x C
    out = {k: np.zeros(readers.shape[2], np.int64) for k in ("agree", "compared", "fp", "neg", "fn", "pos")}
    others_n = readers.shape[0] - 1
    for own in readers:
        others = total - own
        pos, neg = 2 * others > others_n, 2 * others < others_n
        out["agree"] += ((own == 1) & pos).sum(axis=0) + ((own == 0) & neg).sum(axis=0)
        out["compared"] += (pos | neg).sum(axis=0)
        out["fp"] += ((own == 1) & neg).sum(axis=0)
        out["neg"] += neg.sum(axis=0)
        out["fn"] += ((own == 0) & pos).sum(axis=0)
        out["pos"] += pos.sum(axis=0)
    return out


@dataclass
class NoiseProfile:
    """The per-class table (:data:`COLUMNS`) and where it came from."""

    table: pd.DataFrame
    expert: ExpertLabels
    nih_table: Path
    not_test: int  # expert-labelled images the split lists put outside the test split (0 for the release)


def noise_profile(metadata_dir: str | os.PathLike, expert_dir: str | os.PathLike) -> NoiseProfile:
    """The noise profile of the NIH labels of ``metadata_dir``'s table against the release in ``expert_dir``."""
    nih, table = nih_labels(metadata_dir)
    nih = nih.set_index("Image Index")
    expert = read_expert_labels(expert_dir, set(nih.index), str(table))
    nlp = nih.loc[expert.images]
    not_test = int((nlp["split"].notna() & (nlp["split"] != "test")).sum())
    nlp_y = nlp[expert.classes].to_numpy(dtype=np.int64)
    exp_y = expert.majority.astype(np.int64)
    agreement = reader_vs_others(expert.readers) if expert.readers is not None else None
    rows = []
    n = len(expert.images)
    for c, name in enumerate(expert.classes):
        e, t = exp_y[:, c], nlp_y[:, c]
        pos, fp, fn = int(e.sum()), int(((t == 1) & (e == 0)).sum()), int(((t == 0) & (e == 1)).sum())
        neg = n - pos
        row = {
            "class": name,
            "images": n,
            "expert_positive": pos,
            "nlp_positive": int(t.sum()),
            "false_positive": fp,
            "false_negative": fn,
            "fp_rate": fp / neg if neg else float("nan"),
            "fn_rate": fn / pos if pos else float("nan"),
        }
        row["fp_rate_lo"], row["fp_rate_hi"] = wilson(fp, neg)
        row["fn_rate_lo"], row["fn_rate_hi"] = wilson(fn, pos)
        if agreement is not None:
            a = {k: int(v[c]) for k, v in agreement.items()}
            row["reader_agreement"] = a["agree"] / a["compared"] if a["compared"] else float("nan")
            row["reader_fp_rate"] = a["fp"] / a["neg"] if a["neg"] else float("nan")
            row["reader_fn_rate"] = a["fn"] / a["pos"] if a["pos"] else float("nan")
            row["fleiss_kappa"] = fleiss_kappa(expert.readers[:, :, c])
        rows.append(row)
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    return NoiseProfile(frame, expert, table, not_test)


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}f}"


def profile_markdown(profile: NoiseProfile) -> str:
    """The profile as a Markdown table with its caption and citation."""
    t = profile.table
    readers = profile.expert.readers
    lines = [
        f"ChestX-ray14 label noise on {int(t['images'].iloc[0])} expert-labelled test images (PA): NLP-mined labels "
        f"({profile.nih_table.name}) against the expert majority ({profile.expert.folder.name}/test_labels.csv). "
        "fp_rate = NLP positive, expert negative / expert negatives; fn_rate = NLP negative, expert positive / "
        "expert positives; [95% Wilson interval]. Readers: each of the "
        f"{0 if readers is None else readers.shape[0]} radiologists against the majority of the others (pooled), "
        "and Fleiss' kappa.",
        "",
        "| Class | Expert + | NLP + | FP | FN | fp_rate [95% CI] | fn_rate [95% CI] | Reader agreement | "
        "Reader fp | Reader fn | Fleiss κ |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in t.itertuples(index=False):
        lines.append(
            f"| {r[0]} | {r.expert_positive} | {r.nlp_positive} | {r.false_positive} | {r.false_negative} | "
            f"{_f(r.fp_rate)} [{_f(r.fp_rate_lo)}, {_f(r.fp_rate_hi)}] | "
            f"{_f(r.fn_rate)} [{_f(r.fn_rate_lo)}, {_f(r.fn_rate_hi)}] | {_f(r.reader_agreement)} | "
            f"{_f(r.reader_fp_rate)} | {_f(r.reader_fn_rate)} | {_f(r.fleiss_kappa)} |"
        )
    lines += [
        "",
        f"Mean over the {len(t)} classes: fp_rate {_f(t['fp_rate'].mean())}, fn_rate {_f(t['fn_rate'].mean())}.",
        "",
        f"Expert labels: {CITATION}.",
        "",
    ]
    return "\n".join(lines)


def profile_figure(profile: NoiseProfile) -> tuple[bytes, bytes]:
    """(PNG, PDF): per class the NLP labels' fp and fn rates with their 95% intervals; beside, the readers' own
    fp/fn rates against the others' majority and Fleiss' kappa."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = profile.table
    y = np.arange(len(t))[::-1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 0.38 * len(t) + 2.2), sharey=True)
    for col, offset, color, label in (
        ("fn_rate", 0.17, "tab:red", "NLP fn_rate"),
        ("fp_rate", -0.17, "tab:blue", "NLP fp_rate"),
    ):
        v = t[col].to_numpy(float)
        err = np.vstack([v - t[col + "_lo"].to_numpy(float), t[col + "_hi"].to_numpy(float) - v])
        ax1.errorbar(v, y + offset, xerr=err, fmt="o", color=color, label=label, capsize=2, ms=4)
    if t["reader_fn_rate"].notna().any():
        ax1.plot(t["reader_fn_rate"], y + 0.17, "x", color="tab:red", alpha=0.6, label="reader fn_rate (vs others)")
        ax1.plot(t["reader_fp_rate"], y - 0.17, "x", color="tab:blue", alpha=0.6, label="reader fp_rate (vs others)")
    ax1.set_yticks(y)
    ax1.set_yticklabels([f"{c} ({p}+)" for c, p in zip(t["class"], t["expert_positive"])])
    ax1.set_xlim(0, 1.02)
    ax1.set_xlabel("rate against the expert majority (95% Wilson interval)")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2)
    ax1.grid(axis="x", alpha=0.3)
    ax2.barh(y, t["fleiss_kappa"].fillna(0).to_numpy(float), color="tab:gray", height=0.5, label="Fleiss' kappa")
    ax2.plot(t["reader_agreement"], y, "D", color="black", ms=4, label="reader agreement")
    ax2.set_xlim(0, 1.02)
    ax2.set_xlabel("agreement between the radiologists")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2)
    ax2.grid(axis="x", alpha=0.3)
    fig.suptitle(f"ChestX-ray14: NLP labels vs radiologists on {int(t['images'].iloc[0])} test images", fontsize=10)
    fig.tight_layout()
    out = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, metadata={"CreationDate": None} if fmt == "pdf" else None)
        out.append(buf.getvalue())
    plt.close(fig)
    return out[0], out[1]


def write_profile(profile: NoiseProfile, out_dir: str | os.PathLike) -> list[Path]:
    """noise_profile.csv, noise_profile.md, noise_profile.png and .pdf in ``out_dir``; their paths."""
    from ..io import write_bytes, write_text

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{out}: cannot create the output folder ({err.strerror})") from None
    png, pdf = profile_figure(profile)
    paths = [out / "noise_profile.csv", out / "noise_profile.md", out / "noise_profile.png", out / "noise_profile.pdf"]
    write_text(paths[0], profile.table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    write_text(paths[1], profile_markdown(profile))
    write_bytes(paths[2], png)
    write_bytes(paths[3], pdf)
    return paths
