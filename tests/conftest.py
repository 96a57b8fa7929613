"""Shared pytest fixtures. Constants and helper functions live in plain modules beside this file
(project_config.py, wfdb_records.py, journey_layouts.py), which test modules import directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.plugins import Plugins

from project_config import SHARED_DATA, compose_config

# Hydra's first plugin scan executes every module under hydra_plugins again, in place, giving their classes new
# identities. Scan now, before any test module imports from hydra_plugins: otherwise a test module that did
# `from ...local_gpus_launcher import NoGpus` before the first compose of the session holds the old class, and
# `pytest.raises(NoGpus)` misses the new one the launcher raises (seen in the `-m "not slow"` selection).
Plugins.instance()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data fixtures folder; tests using it skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data fixtures not found at {SHARED_DATA} (they live in ../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(*overrides)``: :func:`project_config.compose_config` at tiny size with data under tmp_path."""
    return lambda *overrides: compose_config(tmp_path, overrides)
