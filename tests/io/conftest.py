"""Make the helper modules in this folder (such as ``imzml_factory``) importable from its tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A ``LocalCluster`` of 2 worker processes (1 thread each) and its client, per module."""
    distributed = pytest.importorskip("distributed")
    # Workers are separate processes: give them the tests' cache folder explicitly (the autouse
    # fixture sets it in this process only after module fixtures have started).
    cache = tmp_path_factory.getbasetemp() / "cache"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"SPATIALFUSE_CACHE_DIR": str(cache)},
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
