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


@pytest.fixture
def writable_shared_copy(shared_data, tmp_path):
    """``copy(relative)``: a writable copy of ``shared_data / relative`` under ``tmp_path``.

    Skips where that folder is not in the shared data (the shared files are read-only).
    """
    import shutil

    def copy(relative: str) -> Path:
        source = shared_data / relative
        if not source.is_dir():
            pytest.skip(f"{source} not in the shared data")
        folder = tmp_path / Path(relative).name
        shutil.copytree(source, folder)
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        return folder

    return copy


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep spatialfuse's on-disk caches out of the user's home during tests."""
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
