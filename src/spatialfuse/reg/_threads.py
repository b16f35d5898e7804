"""One BLAS thread while registering.

Registration's linear algebra is small (SVDs of at most 20,000 × 2,000, QR of the footprint
design, 3 × 3 fits), and OpenBLAS's worker threads spin while they wait. On a 2-core machine
with anything else running that made these calls 3–20× slower: the issue-size registration
(300 × 300 MSI vs a 4004 × 3858 H&E) took 21.9 s with two BLAS threads and 9.5–10.6 s with one,
at a load average of 2.2 (``benchmarks/bench_real.py`` speed part; measured session 7). One
thread costs little when the machine is idle, because the calls are small.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def one_blas_thread(func: F) -> F:
    """Run ``func`` with BLAS limited to one thread (restored afterwards, also on errors)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
