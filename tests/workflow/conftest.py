"""Fixtures for the workflow tests: a headless Chromium for checking HTML reports in a browser."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from headless_chromium import Chromium, find_chromium, install_chromium  # noqa: E402


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of a system Chromium; installed with apt where missing and possible, else skip."""
    path = find_chromium()
    if path is None:
        path, why = install_chromium()
        if path is None:
            pytest.skip(f"no headless browser for the report checks: {why}")
    return path


@pytest.fixture(scope="session")
def chromium(chromium_executable):
    """One headless Chromium for the session (each page load opens its own tab)."""
    try:
        browser = Chromium(chromium_executable)
    except (OSError, RuntimeError, TimeoutError) as error:
        pytest.skip(f"{chromium_executable} would not start headless: {error}")
    with browser:
        yield browser
