"""Train one configuration: ``python train.py regularizer=flowmixup noise=0.3`` (see conf/ and the README)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from flowmixup.cli import find_conf_dir, finish, guarded, preflight


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> float | None:
    from flowmixup.training import run

    return finish(run(cfg))


if __name__ == "__main__":
    preflight(sys.argv[1:], find_conf_dir(Path(__file__).resolve().parent))
    main()
