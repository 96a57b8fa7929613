"""Train one configuration: ``python train.py regularizer=flowmixup noise=0.3`` (see conf/ and the README)."""
import sys

import hydra
from omegaconf import DictConfig

from flowmixup.cli import check_overrides, finish

check_overrides(sys.argv[1:])


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from flowmixup.training import run

    return finish(run(cfg))


if __name__ == "__main__":
    main()
