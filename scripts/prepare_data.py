"""Build a dataset's HDF5 cache once, before training (training never parses raw PNG or text files).

    python scripts/prepare_data.py dataset=chestxray14 dataset.root=/data/ChestX-ray14
    python scripts/prepare_data.py dataset=ecg55 dataset.root=/data/tianchi
    python scripts/prepare_data.py dataset=ecg12 dataset.root=/data/tianchi dataset.on_bad_record=skip

The cache goes to ``${paths.data_dir}/<dataset>/`` (``FLOWMIXUP_DATA_DIR``, default ``data/``); an interrupted run
continues where it stopped, a complete cache is reused. Layouts and selection rules: docs/datasets.md.

One builder per cache: a second prepare of the same cache (two SLURM jobs starting together) waits for the first and
then finds the cache ready; ``--no-wait`` makes it stop at once instead (exit 1, one line naming the builder).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from flowmixup.cli import available_options, fail, find_conf_dir, guarded, preflight

log = logging.getLogger("prepare_data")
CONF_DIR = find_conf_dir(Path(__file__).resolve().parents[1])


def has_prepare(name: str) -> bool:
    """Whether dataset ``name``, as Hydra composes it (its defaults list included), has a prepare node."""
    from hydra import compose

    return "prepare" in compose(config_name="config", overrides=[f"dataset={name}"]).dataset


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    if "prepare" not in cfg.dataset:
        with_prepare = [name for name in available_options("dataset", CONF_DIR) if has_prepare(name)]
        fail(
            f"dataset: {cfg.dataset.name} has no prepare step (it is generated on first use); allowed: "
            f"{', '.join(with_prepare)}",
            2,
        )
    if cfg.dataset.get("root") in (None, ""):
        fail(
            f"dataset.root: is not set; allowed: the folder of the raw {cfg.dataset.name} data (dataset.root=/path)", 2
        )
    from flowmixup.training.build import instantiate  # lets the reader's own one-line DataError through

    path = instantiate(cfg.dataset.prepare)
    log.info("dataset=%s: cache ready at %s", cfg.dataset.name, path)
    print(path)


if __name__ == "__main__":
    if "--no-wait" in sys.argv:
        from flowmixup.data import cache

        sys.argv.remove("--no-wait")
        cache.WAIT_FOR_BUILDER = False
    preflight(sys.argv[1:], CONF_DIR)
    main()
