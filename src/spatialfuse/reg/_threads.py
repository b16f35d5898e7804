"""Threads while registering: one BLAS thread, and independent pieces side by side.

Registration's linear algebra is small (SVDs of at most 20,000 × 2,000, QR of the footprint
design, 3 × 3 fits), and OpenBLAS's worker threads spin while they wait. On a 2-core machine
with anything else running that made these calls 3–20× slower: the issue-size registration
(300 × 300 MSI vs a 4004 × 3858 H&E) took 21.9 s with two BLAS threads and 9.5–10.6 s with one,
at a load average of 2.2 (``benchmarks/bench_real.py`` speed part; measured session 7). One
thread costs little when the machine is idle, because the calls are small.

The cores are used instead by running independent pieces of one registration at once
(:func:`ordered_map`): the two images, the screened starts, the finished starts, the probes of
the peak checks. SimpleITK, scipy.ndimage and numpy release the GIL in their long calls, so
threads suffice. Each piece is computed exactly as it would be alone (ITK runs single-threaded
inside each, ``reg/_itk.py``), so the result does not depend on the number of threads.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

F = TypeVar("F", bound=Callable)
T = TypeVar("T")
R = TypeVar("R")


def one_blas_thread(func: F) -> F:
    """Run ``func`` with BLAS limited to one thread (restored afterwards, also on errors)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ordered_map(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[func(item) for item in items]``, on up to :func:`available_cores` threads.

    The results come in the order of ``items``; the first exception (in that order) is raised.
    Each call runs in a copy of the caller's context, so context-local settings (the resource
    limits of :func:`spatialfuse._limits.limits`, such as ``max_block_bytes``) apply in the
    threads as they do in the caller.
    """
    items = list(items)
    workers = min(len(items), available_cores())
    if workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spatialfuse-reg") as pool:
        futures = [pool.submit(contextvars.copy_context().run, func, item) for item in items]
        return [future.result() for future in futures]
