"""Shared pytest fixtures: paths to the project and to the real-data fixtures in ../shared/data."""
from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data fixtures folder; tests using it skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data fixtures not found at {SHARED_DATA} (they live in ../shared/data beside the project)")
    return SHARED_DATA


TINY = [
    "dataset.n_records=160",
    "dataset.sampling_rate=50",
    "dataset.duration=2.0",
    "dataset.variance_epochs=3",
    "backbone.blocks=[2,1,1,1]",
    "backbone.width=4",
    "trainer.epochs=2",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "trainer.device=cpu",
    # one thread: tiny models gain nothing from two, and on a loaded machine two threads spin-wait for each other
    # (epochs measured 30x slower) and their reduction order may change the last digits between runs
    "trainer.num_threads=1",
]


def compose_config(tmp_path: Path, overrides=(), tiny: bool = True):
    """The project's config as train.py would see it, at tiny size, with data cached under tmp_path."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[*(TINY if tiny else []), f"paths.data_dir={tmp_path / 'data'}", *overrides],
        )


@pytest.fixture
def tiny_config(tmp_path):
    return lambda *overrides: compose_config(tmp_path, overrides)
