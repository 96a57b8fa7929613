#!/usr/bin/env python
"""The measured label noise of ChestX-ray14: ``python scripts/noise_profile.py --metadata <dir> --expert <dir>``.

Compares the NIH (NLP-mined) labels of ``--metadata``'s ``Data_Entry_2017_v2020.csv[.gz]`` with the radiologists'
labels of Google's expert-label release in ``--expert`` (``test_labels.csv``, ``test_individual_readers.csv``;
Nabulsi et al., Scientific Reports 2021) on the 810 test images they share, class by class
(:mod:`flowmixup.analysis.noise_profile`). Writes to ``--out`` (default ``outputs/noise_profile``):

- ``noise_profile.csv``: class, images, expert_positive, nlp_positive, false_positive, false_negative, fp_rate,
  fn_rate with their 95% Wilson intervals (``_lo``, ``_hi``), and the readers' agreement (each reader against the
  majority of the others; Fleiss' kappa). ``corruption.profile=<this file>`` corrupts training labels with it;
- ``noise_profile.md``: the same as a Markdown table, with the citation;
- ``noise_profile.png`` and ``.pdf``: per-class fp/fn rates with their intervals, the readers' agreement beside.

Bad input (a missing folder or file, an unknown image id, a cell other than YES/NO/0/1, a missing column) stops
with one line ``error: ...`` naming the file, line and column, exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("flowmixup.noise_profile")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--metadata", type=Path, required=True, help="folder with Data_Entry_2017_v2020.csv (or .csv.gz)"
    )
    parser.add_argument("--expert", type=Path, required=True, help="the expert-label release's folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $FLOWMIXUP_OUTPUT_DIR or outputs, then /noise_profile)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    out = args.out or Path(os.environ.get("FLOWMIXUP_OUTPUT_DIR") or "outputs") / "noise_profile"

    from flowmixup.analysis.noise_profile import noise_profile, write_profile
    from flowmixup.data.base import DataError

    started = time.time()
    log.info("reading the NIH table in %s and the expert labels in %s", args.metadata, args.expert)
    try:
        profile = noise_profile(args.metadata, args.expert)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    t = profile.table
    readers = profile.expert.readers
    log.info(
        "%d expert-labelled images (%s), %d classes, %s readers",
        len(profile.expert.images),
        "all in the test split" if profile.not_test == 0 else f"{profile.not_test} outside the test split",
        len(t),
        "no" if readers is None else readers.shape[0],
    )
    for r in t.itertuples(index=False):
        log.info(
            "  %-18s expert+ %3d  NLP+ %3d  fp_rate %.3f  fn_rate %.3f",
            r[0],
            r.expert_positive,
            r.nlp_positive,
            r.fp_rate,
            r.fn_rate,
        )
    log.info("mean over classes: fp_rate %.3f, fn_rate %.3f", t["fp_rate"].mean(), t["fn_rate"].mean())
    try:
        paths = write_profile(profile, out)
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for p in paths:
        log.info("wrote %s", p)
    log.info("done in %.1fs", time.time() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
