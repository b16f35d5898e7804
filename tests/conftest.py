from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real third-party test files; tests using it skip where it is absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set SPATIALFUSE_TEST_DATA)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep spatialfuse's on-disk caches out of the user's home during tests."""
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
