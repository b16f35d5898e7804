"""The output folder's lock: one run at a time, and a killed run's lock does not block the next."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from spatialfuse.errors import OutputLockedError
from spatialfuse.workflow._lock import LOCK_NAME, output_lock


def test_second_holder_is_refused_and_lock_is_released(tmp_path):
    with output_lock(tmp_path) as lock:
        assert lock.exists()
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputLockedError, match=f"process {os.getpid()}"):
            with output_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()
    with output_lock(tmp_path):
        pass


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname()}), encoding="utf-8"
    )
    with output_lock(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_unreadable_lock_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("garbage", encoding="utf-8")
    with pytest.raises(OutputLockedError, match="delete"):
        with output_lock(tmp_path):
            pass


def test_lock_is_released_when_the_run_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
