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
