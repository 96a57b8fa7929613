"""What the tests share besides fixtures: the project's paths, the tiny-size overrides and the config composed as
``train.py`` would see it.

A plain module (tests/ is on ``sys.path``: pyproject's ``[tool.pytest.ini_options] pythonpath``), imported by test
modules and by conftest.py's fixtures alike: ``from project_config import PROJECT_ROOT, TINY, compose_config``.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"  # the real-data fixtures; tests take them through `shared_data`

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
