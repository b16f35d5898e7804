"""Independent pieces of a registration run on threads; the result does not depend on them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from spatialfuse.reg import _threads, register

from .conftest import make_pair


def test_ordered_map_keeps_the_order_and_uses_threads(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    names = _threads.ordered_map(lambda i: (i, threading.current_thread().name), range(6))
    assert [i for i, _ in names] == list(range(6))
    assert all(name.startswith("spatialfuse-reg") for _, name in names)


def test_ordered_map_raises_the_first_error_in_order(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)

    def fail_on_odd(i):
        if i % 2:
            raise RuntimeError(f"item {i}")
        return i

    with pytest.raises(RuntimeError, match="item 1"):
        _threads.ordered_map(fail_on_odd, range(4))


def test_the_callers_limits_apply_in_the_threads(monkeypatch):
    """A run's ``max_block_bytes`` (a context variable) must hold inside the threads too: a
    thread started without the caller's context read the default and built the MSI image from
    the whole store-backed table (tests/workflow/test_pipeline_store.py caught it)."""
    from spatialfuse._limits import current_limits, limits

    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    with limits(max_block_bytes=12_345):
        seen = _threads.ordered_map(lambda _: current_limits().max_block_bytes, range(4))
    assert seen == [12_345] * 4


def test_one_core_runs_in_the_caller(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 1)
    names = _threads.ordered_map(lambda _: threading.current_thread().name, range(3))
    assert names == [threading.current_thread().name] * 3


@pytest.mark.parametrize("seed", [5, 6])
def test_registration_is_the_same_on_one_core_and_on_several(monkeypatch, seed):
    """Screened starts, finished starts and the peak checks' probes run side by side; each is
    computed as it would be alone (ITK single-threaded inside), so the result is bit-identical."""
    moving, fixed, _ = make_pair(seed)
    monkeypatch.setattr(_threads, "available_cores", lambda: 1)
    serial = register(moving, fixed)
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    threaded = register(moving, fixed)
    np.testing.assert_array_equal(serial.transform.matrix, threaded.transform.matrix)
    assert serial.ok == threaded.ok
    for key in ("nmi_final", "dice_final", "peak_sharpness", "best_neighbour_gain"):
        assert serial.metrics[key] == threaded.metrics[key], key
