"""A reader stand-in whose cases end in known categories: the runner's own test.

Each case (chosen by :func:`behaviour` from its seed) reads correctly, raises a spatialfuse error,
raises a foreign exception, returns a wrong value, hangs, allocates far too much memory or kills
its process, so ``tests/fuzz`` can check that each is counted where it belongs (and that hangs and
memory blow-ups are bounded).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from sf_fuzz.runner import Case, CheckFailed

BEHAVIOURS = ("read", "error", "other_exception", "wrong_read", "timeout", "memory_limit", "crash")


def setup(workdir: Path) -> dict:
    return {}


def describe_bases(ctx) -> list[str]:
    return ["selftest"]


def base_reads(ctx, name: str) -> bool:
    return True


def behaviour(seed: int) -> str:
    """What the case with case seed ``seed`` does."""
    return BEHAVIOURS[int(np.random.default_rng(seed).integers(len(BEHAVIOURS)))]


def make_case(ctx, rng: np.random.Generator) -> Case:
    kind = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
    return Case(
        files={"input.txt": b"x"},
        target="input.txt",
        base="selftest",
        mutations=[kind],
        extra={"behaviour": kind},
    )


def exercise(ctx, case: Case, target: Path, rng: np.random.Generator) -> str:
    from spatialfuse.errors import FileFormatError

    kind = case.extra["behaviour"]
    if kind == "error":
        raise FileFormatError(target, "a deliberate error")
    if kind == "other_exception":
        raise KeyError("a deliberate foreign exception")
    if kind == "wrong_read":
        raise CheckFailed("wrong_read", "a deliberate wrong value")
    if kind == "timeout":
        time.sleep(3600)
    if kind == "memory_limit":
        np.ones(2 << 30, dtype=np.uint8)  # 2 GiB: succeeds here unless the limit holds
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    return "read"
